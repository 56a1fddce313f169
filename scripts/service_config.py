#!/usr/bin/env python3
"""Generates the gRPC service config every tickmesh client applies (gRFC A6 retries) from the
contracts: each method whose `idempotency_level` is NO_SIDE_EFFECTS or IDEMPOTENT is retried on
UNAVAILABLE with exponential backoff; every other method (the streams, UpdateConfig) is not.

The methods come from the descriptors `buf build` compiles from proto/, so the file changes only
when the protos do. It is written twice: clients/service_config.json (for any grpcio / grpc-js /
grpc-go user) and the copy inside the Python package, which applies it by default.

Usage: scripts/service_config.py [--check]
  --check   write nothing; exit 1 when a committed file differs from what the protos give
"""

import json
import os
import subprocess
import sys

from google.protobuf import descriptor_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUF = os.path.join(ROOT, "scripts", "tools", "buf")
OUTPUTS = [
    os.path.join("clients", "service_config.json"),
    os.path.join("clients", "python", "src", "tickmesh", "service_config.json"),
]
RETRYABLE = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
}
# Five attempts, 0.1 s doubling to at most 2 s between them (gRPC adds jitter): a restart of a
# service (a few seconds) is ridden out, a service that stays down fails the call in ~4 s.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def descriptors() -> descriptor_pb2.FileDescriptorSet:
    built = subprocess.run([BUF, "build", "-o", "-#format=binpb"], cwd=ROOT, capture_output=True)
    if built.returncode != 0:
        sys.stderr.write(built.stderr.decode())
        sys.exit(f"scripts/service_config.py: buf build failed (exit {built.returncode})")
    return descriptor_pb2.FileDescriptorSet.FromString(built.stdout)


def service_config() -> dict:
    names = []
    for file in sorted(descriptors().file, key=lambda f: f.name):
        for service in file.service:
            for method in service.method:
                if method.options.idempotency_level in RETRYABLE:
                    names.append({"service": f"{file.package}.{service.name}", "method": method.name})
    return {"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]}


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] and not check:
        sys.exit(__doc__)
    text = json.dumps(service_config(), indent=2) + "\n"
    stale = []
    for out in OUTPUTS:
        path = os.path.join(ROOT, out)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        if check:
            stale.append(out)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {out}")
    if stale:
        print(
            f"out of date with proto/: {', '.join(stale)}; run scripts/service_config.py",
            file=sys.stderr,
        )
        return 1
    if check:
        print(f"service config: up to date ({', '.join(OUTPUTS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
