#!/usr/bin/env python3
"""Smoke-test client for one tickmesh server port, written the way a Python user would.

It uses the message classes and stubs that ship in the `tickmesh` package (clients/python,
generated from proto/ by `buf generate`; install it with `pip install ./clients/python`), then:

1. checks grpc.health.v1.Health/Check is SERVING for service "" and for --service,
2. calls tickmesh.v1.ConfigService/GetConfig and checks the circuit breaker settings,
3. prints a short summary of the running PerformanceOptimizationConfig.

Exit code 0 means every check passed; otherwise the reason is printed to stderr.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

try:
    from tickmesh.v1 import config_pb2, config_pb2_grpc
except ImportError:
    sys.exit("the tickmesh package is not installed: pip install ./clients/python")

CONFIG_MESSAGE = "tickmesh.v1.PerformanceOptimizationConfig"


class CheckFailed(Exception):
    """A check against the server did not hold; the message says which and why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addr", default="127.0.0.1:7404", help="server address host:port (default: %(default)s)"
    )
    parser.add_argument(
        "--service",
        default="tickmesh.v1.QueryService",
        help="full service name the port serves, checked with Health/Check (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="deadline in seconds for connecting and for each call (default: %(default)s)",
    )
    return parser.parse_args(argv)


def rpc(call, request, timeout: float, what: str):
    """Make one unary call with a deadline, turning an RPC error into a readable failure."""
    try:
        return call(request, timeout=timeout)
    except grpc.RpcError as err:  # raised errors are also grpc.Call objects
        raise CheckFailed(
            f"{what} failed: {err.code().name}: {err.details() or '(no details)'}"
        ) from None


def check_health(channel: grpc.Channel, services: list[str], timeout: float) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in services:
        shown = repr(service) if service else '"" (whole server)'
        resp = rpc(
            stub.Check,
            health_pb2.HealthCheckRequest(service=service),
            timeout,
            f"grpc.health.v1.Health/Check for {shown}",
        )
        if resp.status != serving:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            raise CheckFailed(f"health of {shown} is {status}, want SERVING")
        print(f"health {shown}: SERVING")


def enum_fields_summary(config) -> list[str]:
    """name=VALUE for each top-level enum field (the four strategy enums), in field order."""
    parts = []
    for field in sorted(config.DESCRIPTOR.fields, key=lambda f: f.number):
        if field.enum_type is None or field.is_repeated:
            continue
        number = getattr(config, field.name)
        value = field.enum_type.values_by_number.get(number)
        parts.append(f"{field.name}={value.name if value else number}")
    return parts


def check_config(channel: grpc.Channel, timeout: float) -> None:
    stub = config_pb2_grpc.ConfigServiceStub(channel)
    resp = rpc(
        stub.GetConfig,
        config_pb2.GetConfigRequest(),
        timeout,
        "tickmesh.v1.ConfigService/GetConfig",
    )
    if not resp.HasField("config"):
        raise CheckFailed("GetConfig returned no config")
    config = resp.config
    if config.DESCRIPTOR.full_name != CONFIG_MESSAGE:
        raise CheckFailed(f"GetConfig returned a {config.DESCRIPTOR.full_name}, want {CONFIG_MESSAGE}")
    if not config.HasField("circuit_breaker"):
        raise CheckFailed("config.circuit_breaker is not set")
    breaker = config.circuit_breaker
    if breaker.failure_threshold < 1:
        raise CheckFailed(
            f"config.circuit_breaker.failure_threshold is {breaker.failure_threshold}, want >= 1"
        )

    enums = enum_fields_summary(config)
    open_for = breaker.open_duration.ToTimedelta().total_seconds()
    print("config: " + (", ".join(enums) if enums else "(no strategy enums)"))
    print(
        "circuit breaker: "
        f"failure_threshold={breaker.failure_threshold}, "
        f"success_threshold={breaker.success_threshold}, "
        f"open_duration={open_for:g}s"
    )


def run(args: argparse.Namespace) -> None:
    with grpc.insecure_channel(args.addr) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            raise CheckFailed(f"could not connect to {args.addr} within {args.timeout:g}s") from None
        check_health(channel, ["", args.service], args.timeout)
        check_config(channel, args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except CheckFailed as err:
        print(f"FAIL ({args.addr}): {err}", file=sys.stderr)
        return 1
    print(f"OK: all checks passed against {args.addr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
