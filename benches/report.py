#!/usr/bin/env python3
"""Runs every tickmesh benchmark and regenerates the headline table of benches/README.md
(between the `report:begin` / `report:end` markers) and the latency chart benches/latency.svg.

    .venv/bin/python benches/report.py [--quick] [--skip STEP ...]

It builds nothing: it runs the release binaries already in `target/release/` (or
`$CARGO_TARGET_DIR/release/`) and the cache bench in `release/deps/`, in this order:
startup, stack, echo (load's own echo vs h2load), query paths (h2load against a `tickmesh up`
fed with candles through `tickmesh replay`, and against `load --serve-echo` answering as many
bytes, in turn), tracing (the same with OTLP export on), fan-out,
ingest, indicators, cache. Each tool writes JSON; the raw files and every tool's output go to
`target/bench-report/`. Every figure of the table is a ratio to its own baseline measured in
the same run. `--quick` shrinks counts and durations to check the whole pipeline in a few
minutes (its figures are noisy; the README says which mode made it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benches" / "README.md"
SVG = ROOT / "benches" / "latency.svg"
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
STEPS = ["startup", "stack", "echo", "query", "tracing", "fanout", "ingest", "indicators", "cache"]

# Counts and durations per mode.
FULL = {
    "startup_runs": 30,
    "stack_seconds": 1,
    "stack_rounds": 12,
    "load_seconds": 5,
    "load_warmup": 1,
    "h2load_requests": 200_000,
    "fan_subscribers": 1000,
    "fan_rate": 50,
    "fan_seconds": 10,
    "ingest_ticks": 1_000_000,
    "ingest_batch": 10000,
    "indicator_points": 1_000_000,
    "indicator_reps": 15,
    "indicator_rounds": 7,
}
QUICK = {
    "startup_runs": 5,
    "stack_seconds": 1,
    "stack_rounds": 2,
    "load_seconds": 2,
    "load_warmup": 0.5,
    "h2load_requests": 50_000,
    "fan_subscribers": 1000,
    "fan_rate": 50,
    "fan_seconds": 3,
    "ingest_ticks": 50_000,
    "ingest_batch": 10000,
    "indicator_points": 100_000,
    "indicator_reps": 3,
    "indicator_rounds": 1,
}

SYMBOL = "GOOG"
LATEST = ("tickmesh.v1.QueryService/GetLatestPrices", {"symbols": [SYMBOL]})
CANDLES = (
    "tickmesh.v1.QueryService/GetCandles",
    {"symbol": SYMBOL, "interval": "INTERVAL_1D", "pageSize": 500},
)
INDICATORS = (
    "tickmesh.v1.QueryService/GetIndicators",
    {
        "symbol": SYMBOL,
        "interval": "INTERVAL_1D",
        "indicators": [{"kind": "INDICATOR_KIND_RSI", "period": 14}],
        "limit": 50,
    },
)


class StepFailed(Exception):
    """A benchmark tool failed; the message says which and how."""


def release_dir() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else ROOT / "target") / "release"


class Runner:
    """Runs the tools, echoing their output (indented) and keeping it in a log."""

    def __init__(self, out: Path, quick: bool):
        self.out = out
        self.quick = quick
        self.log = (out / "report.log").open("w")
        self.busy_steps: list[str] = []
        self.started = time.monotonic()
        self.step = ""
        # Samples the machine every 2 s: a step during which rustc ran is reported as busy.
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            step = self.step
            if step:
                self.note_busy(step)
            time.sleep(2)

    def note_busy(self, step: str) -> None:
        """Remembers the steps that ran while a compiler was running on the machine."""
        if step not in self.busy_steps and compilers_running():
            self.busy_steps.append(step)

    def run(
        self,
        step: str,
        argv: list,
        env: dict | None = None,
        cwd: Path | None = None,
        merge_stderr: bool = False,
    ) -> str:
        """Runs a tool to completion; returns its stdout. With `merge_stderr`, its stderr goes
        to the log too, and its JSON log lines only there (not to the terminal)."""
        self.note_busy(step)
        shown = " ".join(str(a) for a in argv).replace(str(ROOT) + "/", "")
        print(f"    $ {shown}", flush=True)
        self.log.write(f"\n$ {shown}\n")
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=subprocess.PIPE,
            # Progress bars go straight to the terminal unless stderr is merged.
            stderr=subprocess.STDOUT if merge_stderr else None,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            self.log.write(line)
            if merge_stderr and line.startswith('{"timestamp"'):
                continue
            lines.append(line)
            print("      " + line, end="", flush=True)
        code = proc.wait()
        self.log.flush()
        self.note_busy(step)
        if code != 0:
            raise StepFailed(f"{shown} exited with {code}")
        return "".join(lines)


def compilers_running() -> bool:
    return subprocess.run(["pgrep", "-x", "rustc"], capture_output=True).returncode == 0


def need(path: Path, build: str) -> Path:
    if not path.exists():
        raise StepFailed(f"{path} not found: build it first with `{build}`")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Background:
    """A helper process (echo server, trace sink) whose first stdout line names its address."""

    def __init__(self, argv: list, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [str(a) for a in argv], stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"on (\d+\.\d+\.\d+\.\d+:\d+)", line)
        if not match:
            self.stop()
            raise StepFailed(f"{argv[0]} did not say where it listens: {line!r}")
        self.addr = match.group(1)

    def stop(self) -> str:
        """Stops the helper; what it printed after its first line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        assert self.proc.stdout is not None
        return self.proc.stdout.read()


class Mesh:
    """`tickmesh up` on free ports with a throwaway SQLite store, stopped with SIGTERM."""

    def __init__(self, tickmesh: Path, log: Path, env: dict | None = None):
        self.dir = tempfile.TemporaryDirectory(prefix="tickmesh-report-")
        ready = Path(self.dir.name) / "ready.json"
        # The per-caller rate limit (10,000 calls/s by default) far above any load here, as
        # `stack` sets it: the limiter runs on every call but never refuses one.
        config = Path(self.dir.name) / "bench-config.yaml"
        config.write_text(
            "rate_limits:\n  default_caller:\n    rate_per_second: 1000000000\n    burst: 1000000000\n"
        )
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [
                str(tickmesh),
                "--config",
                str(config),
                "up",
                "--base-port",
                "0",
                "--ready-file",
                str(ready),
                "--store",
                f"sqlite:{self.dir.name}/mesh.db",
            ],
            cwd=self.dir.name,
            env={
                **os.environ,
                "TICKMESH_METRICS_ADDR": "127.0.0.1:0",
                "TICKMESH_LOG": "warn",
                "TICKMESH_LOG_FORMAT": "text",
                **(env or {}),
            },
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StepFailed(f"tickmesh up did not start; see {log}")
            time.sleep(0.02)
        self.addrs = json.loads(ready.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.dir.cleanup()


def candles_csv(out: Path) -> tuple[Path, str]:
    """GOOG daily candles of the `backtesting` package when installed (2,148 real bars), else a
    synthetic daily random walk of 2,000 bars (said so in the report)."""
    try:
        import backtesting  # noqa: PLC0415

        goog = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
        if goog.exists():
            return goog, "GOOG daily candles of the `backtesting` package (2,148 bars)"
    except ImportError:
        pass
    path = out / "synthetic-daily.csv"
    price, seed, rows = 100.0, 0x2545F4914F6CDD1D, ["time,open,high,low,close,volume"]
    start = 1_104_537_600  # 2005-01-01
    for i in range(2000):
        seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
        step = ((seed >> 11) / 2**53 - 0.5) * 0.04
        open_, close = price, price * math.exp(step)
        rows.append(
            f"{start + i * 86400},{open_:.4f},{max(open_, close) * 1.005:.4f},"
            f"{min(open_, close) * 0.995:.4f},{close:.4f},{1000 + i}"
        )
        price = close
    path.write_text("\n".join(rows) + "\n")
    return path, "synthetic daily random walk (2,000 bars; `backtesting` not installed)"


def machine(tickmesh: Path) -> dict:
    def first(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0].strip() if text else "unknown"

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.system()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    try:
        import talib  # noqa: PLC0415

        talib_version = f"ta-lib {talib.__version__}"
    except ImportError:
        talib_version = "ta-lib not installed"
    commit = first(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "os": f"{os_name}, Linux {platform.release()}",
        "rustc": first(["rustc", "--version"]),
        "tickmesh": first([str(tickmesh), "--version"])
        + dt.datetime.fromtimestamp(tickmesh.stat().st_mtime, dt.timezone.utc).strftime(" (binary built %Y-%m-%d %H:%M UTC)"),
        "postgres": first(["postgres", "--version"]),
        "redis": first(["redis-server", "--version"]),
        "python": f"Python {platform.python_version()}, {talib_version}",
        "h2load": first(["h2load", "--version"]),
        "commit": commit + (" with uncommitted changes" if dirty else ""),
    }


# ---------------------------------------------------------------------------------------------
# Steps


def step_startup(r: Runner, s: dict, rel: Path) -> dict:
    out = r.out / "startup.json"
    r.run("startup", [need(rel / "startup", BUILD), "--runs", s["startup_runs"], "--json", out])
    return json.loads(out.read_text())


def step_stack(r: Runner, s: dict, rel: Path) -> dict:
    out = r.out / "stack.json"
    # stack logs every call as production does (JSON on stderr): into the log, not on screen.
    r.run(
        "stack",
        [need(rel / "stack", BUILD), "--seconds", s["stack_seconds"], "--rounds", s["stack_rounds"], "--json", out],
        merge_stderr=True,
    )
    return json.loads(out.read_text())


def load_args(s: dict, call: tuple, concurrency: int, connections: int) -> list:
    return [
        "--call",
        call[0],
        "--data",
        json.dumps(call[1], separators=(",", ":")),
        "-c",
        concurrency,
        "--connections",
        connections,
        "--duration",
        s["load_seconds"],
        "--warmup",
        s["load_warmup"],
    ]


def step_echo(r: Runner, s: dict, rel: Path) -> dict:
    load = need(rel / "load", BUILD)
    out = r.out / "echo.json"
    r.run("echo", [load, "--echo-only", *load_args(s, LATEST, 32, 4), "--json", out])
    result = {"load": json.loads(out.read_text())}
    h2load = shutil.which("h2load")
    if h2load is None:
        result["h2load"] = None
        print("    h2load not installed (Debian: nghttp2-client): no cross-check")
        return result
    echo = Background([load, "--serve-echo", "127.0.0.1:0"], r.out / "echo-server.log")
    try:
        # The same 11 bytes as load's request: the 5-byte gRPC frame header and the message.
        body = r.out / "echo-request.bin"
        body.write_bytes(b"\x00\x00\x00\x00\x06\x0a\x04GOOG")
        text = r.run(
            "echo",
            [
                h2load,
                "-n",
                s["h2load_requests"],
                "-c",
                4,
                "-m",
                8,
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-d",
                body,
                f"http://{echo.addr}/tickmesh.bench.Echo/Echo",
            ],
        )
    finally:
        echo.stop()
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    ok = re.search(r"(\d+) succeeded, (\d+) failed", text)
    if not rate or not ok or int(ok.group(2)) != 0:
        raise StepFailed("h2load: no request rate in its output, or failed requests")
    result["h2load"] = {"requests_per_second": float(rate.group(1)), "succeeded": int(ok.group(1))}
    return result


def replay(r: Runner, tickmesh: Path, mesh: Mesh, csv: Path, step: str) -> None:
    r.run(step, [tickmesh, "--log", "error", "replay", csv, "--symbol", SYMBOL, "--target", mesh.addrs["ingestion"]])


# h2load drives the query paths: 4 connections x 16 streams (64 calls in flight).
H2_CONNECTIONS, H2_STREAMS = 4, 16
PERCENTILES = [50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]


def h2load_bin() -> str:
    h2load = shutil.which("h2load")
    if h2load is None:
        raise StepFailed("h2load is not installed (Debian: apt-get install nghttp2-client); the query rows need it")
    return h2load


def grpc_frame(r: Runner, rel: Path, call: tuple) -> Path:
    """The request of `call` as one gRPC frame, for `h2load -d`."""
    path = r.out / f"{call[0].rsplit('/', 1)[1]}.request.bin"
    r.run(r.step, [need(rel / "load", BUILD), "--call", call[0], "--data", json.dumps(call[1]), "--encode-request", path])
    return path


def answer_bytes(addr: str, call: tuple, frame: Path) -> int:
    """The size of the message `call` answers (one real call through grpcio, which also checks
    that it succeeds)."""
    import grpc  # noqa: PLC0415

    with grpc.insecure_channel(addr) as channel:
        method = channel.unary_unary(f"/{call[0]}")
        return len(method(frame.read_bytes()[5:], timeout=10))


def percentile(sorted_values: list, pct: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


def h2load(r: Runner, s: dict, name: str, addr: str, path: str, frame: Path, rps: float | None = None) -> dict:
    """One h2load run for load_seconds after a warm-up: closed loop, or open loop at `rps` calls/s
    in all. Latencies from its per-request log (after the warm-up)."""
    log = r.out / f"{name}.h2load.tsv"
    log.unlink(missing_ok=True)
    argv = [
        h2load_bin(),
        "-c", H2_CONNECTIONS,
        "-m", H2_STREAMS,
        "-D", s["load_seconds"],
        "--warm-up-time", s["load_warmup"],
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        "-d", frame,
        "--log-file", log,
    ]
    if rps is not None:
        argv += ["--rps", f"{rps / H2_CONNECTIONS:.2f}"]
    text = r.run(r.step, [*argv, f"http://{addr}{path}"])
    ok = re.search(r"(\d+) succeeded, (\d+) failed", text)
    if not ok or int(ok.group(2)) != 0 or int(ok.group(1)) == 0:
        raise StepFailed(f"h2load {name}: failed requests or none succeeded:\n{text[-800:]}")
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    # Columns: start (µs since the epoch), HTTP status, µs to the end of the response.
    first = min(int(row[0]) for row in rows)
    kept = [int(row[2]) / 1000 for row in rows if int(row[0]) >= first + s["load_warmup"] * 1e6]
    kept.sort()
    span = (max(int(row[0]) for row in rows) - first) / 1e6 - s["load_warmup"]
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    return {
        "calls_per_second": float(rate.group(1)) if rate else len(kept) / max(span, 1e-9),
        "calls": int(ok.group(1)),
        "p50_ms": percentile(kept, 50),
        "p99_ms": percentile(kept, 99),
        "p999_ms": percentile(kept, 99.9),
        "distribution": [{"percentile": p, "ms": percentile(kept, p)} for p in PERCENTILES],
    }


def ok_calls(metrics_addr: str, method: str) -> dict:
    """Calls of `method` by status code, from the server's own /metrics."""
    import urllib.request  # noqa: PLC0415

    text = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10).read().decode()
    counts: dict = {}
    for line in text.splitlines():
        if line.startswith("rpc_server_call_duration_seconds_count{") and f'rpc_method="{method}"' in line:
            code = re.search(r'rpc_response_status_code="([A-Z_]+)"', line)
            counts[code.group(1) if code else "?"] = counts.get(code.group(1) if code else "?", 0) + float(line.rsplit(" ", 1)[1])
    return counts


def compared(r: Runner, s: dict, rel: Path, name: str, mesh: "Mesh", call: tuple, frame: Path, echo_bytes: int, rps: float | None = None) -> dict:
    """`call` on the mesh and the echo answering as many bytes, alternating (echo, mesh, echo,
    mesh; closed loop) or once each at `rps` (open loop); every mesh call checked OK on its
    /metrics."""
    echo = Background([need(rel / "load", BUILD), "--serve-echo", "127.0.0.1:0", "--reply-bytes", echo_bytes], r.out / f"{name}-echo.log")
    method = call[0]
    try:
        before = ok_calls(mesh.addrs["metrics"], method)
        rounds = 1 if rps is not None else 2
        targets, baselines = [], []
        for i in range(rounds):
            baselines.append(h2load(r, s, f"{name}-echo-{i}", echo.addr, "/tickmesh.bench.Echo/Echo", frame, rps))
            targets.append(h2load(r, s, f"{name}-{i}", mesh.addrs["query"], f"/{method}", frame, rps))
        after = ok_calls(mesh.addrs["metrics"], method)
    finally:
        echo.stop()
    failed = {code: after[code] - before.get(code, 0) for code in after if code != "OK" and after[code] != before.get(code, 0)}
    # When h2load's duration ends it closes its connections with calls in flight; the server
    # sees their request bodies cut and counts them UNKNOWN (or CANCELLED). At most the calls in
    # flight per run may end so; any other code, or more of them, is a failure.
    cut = sum(failed.pop(code, 0) for code in ("UNKNOWN", "CANCELLED"))
    in_flight = len(targets) * H2_CONNECTIONS * H2_STREAMS
    if failed or cut > in_flight:
        raise StepFailed(f"{name}: calls answered with an error status: {failed}, {cut} cut (at most {in_flight} in flight)")
    sent = sum(t["calls"] for t in targets)
    if after.get("OK", 0) - before.get("OK", 0) < sent:
        raise StepFailed(f"{name}: h2load counted {sent} calls, the server only {after.get('OK', 0) - before.get('OK', 0)} OK")
    best = lambda runs: max(runs, key=lambda run: run["calls_per_second"])  # noqa: E731
    t, b = best(targets), best(baselines)
    t["response_bytes"] = echo_bytes
    return {
        "driver": f"h2load, {H2_CONNECTIONS} connections x {H2_STREAMS} streams",
        "rate": rps,
        "target_result": t,
        "baseline_result": b,
        "rounds": {"target": [x["calls_per_second"] for x in targets], "echo": [x["calls_per_second"] for x in baselines]},
        "ratio_to_baseline": {
            "throughput": t["calls_per_second"] / b["calls_per_second"],
            "p50": t["p50_ms"] / b["p50_ms"],
            "p99": t["p99_ms"] / b["p99_ms"],
            "p999": t["p999_ms"] / b["p999_ms"],
        },
    }


def query_runs(r: Runner, s: dict, rel: Path, mesh: "Mesh", paths: list, half: set) -> dict:
    runs = {}
    for name, call in paths:
        frame = grpc_frame(r, rel, call)
        size = answer_bytes(mesh.addrs["query"], call, frame)
        # Warm: the first call loaded the history / the cached series.
        runs[name] = compared(r, s, rel, name, mesh, call, frame, size)
        if name in half:
            rate = runs[name]["target_result"]["calls_per_second"] / 2
            runs[f"{name}_half"] = compared(r, s, rel, f"{name}-half", mesh, call, frame, size, rps=rate)
    return runs


def step_query(r: Runner, s: dict, rel: Path, data: Path) -> dict:
    tickmesh = need(rel / "tickmesh", BUILD)
    mesh = Mesh(tickmesh, r.out / "mesh-query.log")
    try:
        replay(r, tickmesh, mesh, data, "query")
        return query_runs(
            r, s, rel, mesh,
            [("latest", LATEST), ("candles", CANDLES), ("indicators", INDICATORS)],
            half={"latest", "candles"},
        )
    finally:
        mesh.stop()


def step_tracing(r: Runner, s: dict, rel: Path, data: Path) -> dict:
    tickmesh = need(rel / "tickmesh", BUILD)
    sink = Background([need(rel / "load", BUILD), "--serve-sink", "127.0.0.1:0"], r.out / "otlp-sink.log")
    try:
        mesh = Mesh(
            tickmesh,
            r.out / "mesh-traced.log",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink.addr}", "OTEL_TRACES_SAMPLER": "always_on"},
        )
        try:
            replay(r, tickmesh, mesh, data, "tracing")
            result = query_runs(r, s, rel, mesh, [("latest-traced", LATEST)], half=set())["latest-traced"]
            # Every call has its server span; the replay's calls and the mesh's own add more.
            served = sum(ok_calls(mesh.addrs["metrics"], LATEST[0]).values())
        finally:
            # At exit the mesh exports the spans still queued.
            mesh.stop()
    finally:
        said = sink.stop()
    received = re.search(r"spans received: (\d+)", said)
    if not received:
        raise StepFailed(f"the trace sink did not say how many spans it received: {said!r}")
    spans = int(received.group(1))
    if spans < served:
        raise StepFailed(f"{served:.0f} GetLatestPrices calls served, only {spans} spans received: spans were dropped")
    result["spans_received"], result["calls_served"] = spans, served
    return result


def step_fanout(r: Runner, s: dict, rel: Path) -> dict:
    out = r.out / "fanout.json"
    r.run(
        "fanout",
        [
            need(rel / "fanout", BUILD),
            "--subscribers",
            s["fan_subscribers"],
            "--rate",
            s["fan_rate"],
            "--seconds",
            s["fan_seconds"],
            "--json",
            out,
        ],
    )
    return json.loads(out.read_text())


def step_ingest(r: Runner, s: dict, rel: Path) -> dict:
    out = r.out / "ingest.json"
    r.run(
        "ingest",
        [need(rel / "ingest", BUILD), "--ticks", s["ingest_ticks"], "--batch", s["ingest_batch"], "--json", out],
        env={"TICKMESH_LOG": "error"},
    )
    return json.loads(out.read_text())


def step_indicators(r: Runner, s: dict, rel: Path) -> list:
    text = r.run(
        "indicators",
        [
            need(rel / "indicators", BUILD),
            "--points",
            s["indicator_points"],
            "--reps",
            s["indicator_reps"],
            "--rounds",
            s["indicator_rounds"],
            "--json",
        ],
    )
    rows = json.loads(text)
    (r.out / "indicators.json").write_text(json.dumps(rows, indent=2))
    return rows


def cache_bench(rel: Path) -> Path:
    found = [
        p for p in (rel / "deps").glob("cache-*") if re.fullmatch(r"cache-[0-9a-f]{16}", p.name) and os.access(p, os.X_OK)
    ]
    if not found:
        raise StepFailed(f"no cache bench in {rel / 'deps'}: build it with `{BUILD_CACHE}`")
    return max(found, key=lambda p: p.stat().st_mtime)


def step_cache(r: Runner, s: dict, rel: Path) -> dict:
    # The filter `zipf` skips criterion's sequential groups (minutes); the paired
    # measurements (L1, L2) and the Zipf hit rates, which the table uses, always run.
    text = r.run(
        "cache",
        [cache_bench(rel), "--bench", "zipf"],
        cwd=ROOT / "shared" / "cache",
        env={"CRITERION_HOME": str(r.out / "criterion")},
    )
    l1 = re.search(r"paired l1_hit: moka_direct (\d+) ns, moka_like_l1 (\d+) ns, cache_get (\d+) ns", text)
    l2 = re.search(r"paired l2_hit: raw_get_same_pool ([\d.]+) us, cache_get ([\d.]+) us", text)
    zipf = re.search(
        r"zipf\(1\.0\) over (\d+) keys, L1 (\d+) entries.*cache L1 hit rate ([\d.]+), overall ([\d.]+) "
        r"\((\d+) loads\); plain LRU ([\d.]+)",
        text,
    )
    if not (l1 and l2 and zipf):
        raise StepFailed("cache bench: its paired or Zipf lines are missing from the output")
    result = {
        "l1_moka_direct_ns": float(l1.group(1)),
        "l1_cache_get_ns": float(l1.group(3)),
        "l2_raw_get_us": float(l2.group(1)),
        "l2_cache_get_us": float(l2.group(2)),
        "zipf_keys": int(zipf.group(1)),
        "zipf_l1_entries": int(zipf.group(2)),
        "zipf_l1_hit_rate": float(zipf.group(3)),
        "zipf_overall_hit_rate": float(zipf.group(4)),
        "zipf_lru_hit_rate": float(zipf.group(6)),
    }
    (r.out / "cache.json").write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------------
# Output


def n0(x: float) -> str:
    return f"{x:,.0f}"


def ms(x: float) -> str:
    return f"{x:.2f} ms" if x < 10 else f"{x:.1f} ms"


def ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def latency_row(name: str, run: dict) -> list[str]:
    t, b, q = run["target_result"], run["baseline_result"], run["ratio_to_baseline"]
    return [
        name,
        f"{n0(t['calls_per_second'])} calls/s; p50 / p99 / p99.9 {t['p50_ms']:.2f} / {t['p99_ms']:.2f} / {t['p999_ms']:.2f} ms",
        f"echo answering the same {t.get('response_bytes', 0):,} B, same driver: {n0(b['calls_per_second'])} calls/s; "
        f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} / {b['p999_ms']:.2f} ms",
        f"throughput **{q['throughput']:.2f}x**; p50 {ratio(q['p50'])}, p99 {ratio(q['p99'])}, p99.9 {ratio(q['p999'])}",
    ]


def half_row(name: str, run: dict) -> list[str]:
    t, b = run["target_result"], run["baseline_result"]
    return [
        f"{name} at half of its peak (open loop, h2load `--rps`, {n0(run['rate'])} calls/s)",
        f"p99 {ms(t['p99_ms'])} (p50 {ms(t['p50_ms'])})",
        f"echo of the same size at the same rate: p99 {ms(b['p99_ms'])} (p50 {ms(b['p50_ms'])})",
        f"p99 **{ratio(t['p99_ms'] / b['p99_ms'])}** (goal <= 1.2x)",
    ]


def table(res: dict, s: dict) -> list[list[str]]:
    rows = []
    if "startup" in res:
        st = res["startup"]
        base = st["baseline_version"]["median_ms"]
        rows.append([
            f"start-up of `tickmesh up` to 4x `SERVING` (median of {st['runs']})",
            ms(st["serving"]["median_ms"]),
            f"`tickmesh --version` {ms(base)}",
            ratio(st["ratio_serving_to_baseline"]),
        ])
        rows.append([
            "SIGTERM to exit 0 (the listeners stay open 500 ms, `DRAIN_LINGER`, so health checks see NOT_SERVING)",
            ms(st["sigterm_to_exit"]["median_ms"]),
            f"`tickmesh --version` {ms(base)}",
            ratio(st["ratio_exit_to_baseline"]),
        ])
    if "echo" in res:
        e = res["echo"]
        lr = e["load"]["target_result"]
        if e["h2load"]:
            h = e["h2load"]["requests_per_second"]
            rows.append([
                "echo RPC through `load` (32 callers, 4 connections)",
                f"{n0(lr['calls_per_second'])} calls/s, p50 {ms(lr['p50_ms'])}",
                f"h2load on the same echo server (4 connections x 8 streams): {n0(h)} req/s",
                ratio(lr["calls_per_second"] / h),
            ])
        else:
            rows.append([
                "echo RPC through `load` (32 callers, 4 connections)",
                f"{n0(lr['calls_per_second'])} calls/s, p50 {ms(lr['p50_ms'])}",
                "h2load not installed",
                "-",
            ])
    if "stack" in res:
        k = res["stack"]
        rows.append([
            f"mesh server stack on `GetConfig` ({k['concurrency']} callers, {k['connections']} connections)",
            f"{n0(k['full_stack']['calls_per_second'])} calls/s",
            f"bare tonic {n0(k['bare']['calls_per_second'])} calls/s",
            f"throughput **{k['ratio']['throughput']:.2f}x**, median of {k['rounds']} ABBA rounds' ratios {k['ratio'].get('throughput_median_of_rounds', float('nan')):.2f}x (goal >= 0.96x); p50 {ratio(k['ratio']['p50'])}, p99 {ratio(k['ratio']['p99'])}",
        ])
        if "metrics_only" in k:
            mr = k["metrics_ratio"]
            rows.append([
                "the metrics layer alone on `GetConfig` (bare tonic + `Metrics::layer`, same rounds)",
                f"{n0(k['metrics_only']['calls_per_second'])} calls/s",
                f"bare tonic {n0(k['bare']['calls_per_second'])} calls/s",
                f"throughput {mr['throughput']:.2f}x, median of rounds {mr['throughput_median_of_rounds']:.2f}x; p50 {ratio(mr['p50'])}, p99 {ratio(mr['p99'])}",
            ])
    if "query" in res:
        q = res["query"]
        drive = f"h2load, {H2_CONNECTIONS} connections x {H2_STREAMS} streams"
        rows.append(latency_row(f"`GetLatestPrices`, 1 symbol, cache warm ({drive}; goal >= 0.9x)", q["latest"]))
        rows.append(half_row("`GetLatestPrices`", q["latest_half"]))
        rows.append(latency_row(
            f"`GetCandles`, a page of 500 daily bars ({q['candles']['target_result']['response_bytes']:,} B) held in memory ({drive}; goal >= 0.5x)",
            q["candles"],
        ))
        rows.append(half_row("`GetCandles` 500 bars", q["candles_half"]))
        rows.append(latency_row(f"`GetIndicators` RSI 14, 50 points, cache warm ({drive}; goal >= 0.8x)", q["indicators"]))
    if "tracing" in res and "query" in res:
        tr = res["tracing"]
        t = tr["target_result"]
        off = res["query"]["latest"]["target_result"]
        counted = ""
        if "spans_received" in tr:
            counted = f"; the sink counted {n0(tr['spans_received'])} spans for {n0(tr['calls_served'])} calls"
        rows.append([
            "`GetLatestPrices` with tracing on (every span exported over OTLP to a local sink, goal >= 0.85x)",
            f"{n0(t['calls_per_second'])} calls/s, p99 {ms(t['p99_ms'])}{counted}",
            f"tracing off (row above): {n0(off['calls_per_second'])} calls/s, p99 {ms(off['p99_ms'])}",
            f"throughput {t['calls_per_second'] / off['calls_per_second']:.2f}x, p99 {ratio(t['p99_ms'] / off['p99_ms'])}; "
            f"vs echo {res['tracing']['ratio_to_baseline']['throughput']:.2f}x",
        ])
    if "fanout" in res:
        f = res["fanout"]
        fan, base, q = f["fanout"], f["baseline"], f["ratio_to_baseline"]
        rows.append([
            f"`StreamMarketData` fan-out: {fan['subscribers']:,} subscribers on one query process, "
            f"ticks ingested at {n0(fan['ticks_per_second'])}/s",
            f"{n0(fan['events_per_second'])} events/s delivered ({fan['delivered_fraction'] * 100:.1f} %), "
            f"lag p50 / p99 {fan['lag_p50_ms']:.1f} / {fan['lag_p99_ms']:.1f} ms",
            f"1 subscriber, same rate: {n0(base['events_per_second'])} events/s, lag {base['lag_p50_ms']:.1f} / {base['lag_p99_ms']:.1f} ms",
            f"events/s {q['events_per_second']:.0f}x (ideal {q['ideal_events_per_second']:.0f}x); lag p50 {ratio(q['lag_p50'])}, p99 {ratio(q['lag_p99'])}",
        ])
    if "ingest" in res:
        g = res["ingest"]
        rows.append([
            f"ingestion of {g['ticks']:,} ticks -> PostgreSQL (gRPC, batches of {g['batch']:,})",
            f"{n0(g['postgres']['grpc_ticks_per_s'])} ticks/s",
            f"`psql \\copy` {n0(g['postgres']['copy_ticks_per_s'])} rows/s",
            f"**{g['postgres']['ratio']:.2f}x** (goal 0.5x)",
        ])
        rows.append([
            f"ingestion of {g['ticks']:,} ticks -> SQLite",
            f"{n0(g['sqlite']['grpc_ticks_per_s'])} ticks/s",
            f"raw batched insert {n0(g['sqlite']['raw_ticks_per_s'])} rows/s",
            f"**{g['sqlite']['ratio']:.2f}x** (goal 0.5x)",
        ])
    if "indicators" in res:
        measured = [row for row in res["indicators"] if row["ratio"] is not None]
        ratios = sorted(row["ratio"] for row in measured)
        worst = max(measured, key=lambda row: row["ratio"])
        rows.append([
            f"indicators, batch over {s['indicator_points']:,} points ({len(ratios)} TA-Lib indicators, "
            f"default build, {s['indicator_rounds']} rounds; per indicator: \"Indicators vs TA-Lib\")",
            "time per point",
            "TA-Lib (C, from Python) on the same data",
            f"time ratio median {statistics.median(ratios):.2f}x, {min(ratios):.2f}x to {max(ratios):.2f}x "
            f"(highest: {worst['indicator'].upper()}) (goal <= 1.0x each)",
        ])
    if "cache" in res:
        c = res["cache"]
        rows.append([
            "cache L1 hit (`Cache::get`, paired)",
            f"{c['l1_cache_get_ns']:.0f} ns",
            f"moka used directly {c['l1_moka_direct_ns']:.0f} ns",
            f"{c['l1_cache_get_ns'] / c['l1_moka_direct_ns']:.2f}x (goal 1.5x)",
        ])
        rows.append([
            "cache L2 hit (Redis, no L1, paired)",
            f"{c['l2_cache_get_us']:.1f} µs",
            f"raw `GET` on the same pool {c['l2_raw_get_us']:.1f} µs",
            f"{c['l2_cache_get_us'] / c['l2_raw_get_us']:.2f}x (goal 1.3x)",
        ])
        rows.append([
            f"cache hit rate, Zipf(1.0), {c['zipf_keys']:,} keys, L1 {c['zipf_l1_entries']:,} entries",
            f"L1 {c['zipf_l1_hit_rate'] * 100:.1f} %, overall {c['zipf_overall_hit_rate'] * 100:.1f} %",
            f"plain LRU of the same size {c['zipf_lru_hit_rate'] * 100:.1f} %",
            f"L1 / LRU {c['zipf_l1_hit_rate'] / c['zipf_lru_hit_rate']:.2f}x",
        ])
    return rows


def markdown(res: dict, s: dict, info: dict, mode: str, busy: list[str], skipped: list[str], failed: dict, data_origin: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "<!-- Written by benches/report.py; edits between these markers are overwritten. -->",
        "",
        f"Generated {when} by `.venv/bin/python benches/report.py{' --quick' if mode == 'quick' else ''}` "
        f"({mode} mode{', counts and durations shrunk: noisy figures' if mode == 'quick' else ''}), commit {info['commit']}.",
        "Every row is a ratio to its own baseline measured in the same run on this machine; client,",
        "servers and databases share its cores.",
        "",
        f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, {info['os']}; "
        f"{info['rustc']}; {info['tickmesh']}; {info['postgres']}; {info['redis'].split(' sha=')[0]}; "
        f"{info['python']}; {info['h2load']}.",
        "",
    ]
    if busy:
        lines += [
            f"**Busy machine:** a compiler (rustc) was running during these steps: {', '.join(busy)}; "
            "their figures are less reliable.",
            "",
        ]
    if skipped or failed:
        parts = [f"skipped: {', '.join(skipped)}"] if skipped else []
        parts += [f"{k} failed ({v})" for k, v in failed.items()]
        lines += ["Not in this run: " + "; ".join(parts) + ".", ""]
    lines += ["| figure | result | baseline (same run) | ratio |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table(res, s)]
    if "query" in res:
        lines += [
            "",
            f"Query paths: `tickmesh up` (embedded SQLite store, in-process bus) fed with the {data_origin} "
            f"through `tickmesh replay`; driven by h2load ({H2_CONNECTIONS} connections x {H2_STREAMS} streams, "
            f"the request as a recorded gRPC frame), closed loop unless said, after a warm-up ({s['load_warmup']} s, "
            f"which also warms the caches), {s['load_seconds']} s measured per run, two rounds alternating with the "
            "baseline (best of each). The baseline of each row is `load --serve-echo --reply-bytes N`, a bare "
            "tonic server answering a message of the row's own answer size. Every call is checked on the "
            "mesh's /metrics: only OK, apart from the calls h2load cuts when its time is up. Open loop at half "
            "of peak: h2load `--rps`, half the closed-loop throughput of the row above, for both.",
            "",
            "![Latency distribution: echo vs each query path](latency.svg)",
        ]
    lines += ["", END]
    return "\n".join(lines)


def write_readme(block: str) -> None:
    text = README.read_text()
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        _, after = rest.split(END, 1)
        text = before + block + after
    else:
        raise StepFailed(f"{README} has no {BEGIN} / {END} markers")
    README.write_text(text)


COLORS = ["#555555", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def chart(res: dict, info: dict, mode: str) -> str:
    """Latency by percentile (p50 to p99.9) on log-log axes: x is 1 / (1 - percentile)."""
    q = res["query"]
    series = [
        ("echo (bare tonic, same run)", q["latest"]["baseline_result"]["distribution"]),
        ("echo answering 500 bars' bytes", q["candles"]["baseline_result"]["distribution"]),
        ("GetLatestPrices, 1 symbol", q["latest"]["target_result"]["distribution"]),
        ("GetCandles, 500 rows", q["candles"]["target_result"]["distribution"]),
        ("GetIndicators, RSI 14", q["indicators"]["target_result"]["distribution"]),
    ]
    if "tracing" in res:
        series.append(("GetLatestPrices, tracing on", res["tracing"]["target_result"]["distribution"]))
    series = [(name, [p for p in points if p["percentile"] <= 99.9 + 1e-9]) for name, points in series]

    width, height = 820, 500
    left, right, top, bottom = 70, 250, 60, 60
    pw, ph = width - left - right, height - top - bottom
    xmax = 3.0  # log10(1 / (1 - 0.999))
    xmin = math.log10(2)
    values = [p["ms"] for _, pts in series for p in pts if p["ms"] > 0]
    ylo = 10 ** math.floor(math.log10(min(values)))
    yhi = 10 ** math.ceil(math.log10(max(values)))

    def x(pct: float) -> float:
        v = math.log10(1 / max(1 - pct / 100, 1e-9))
        return left + (v - xmin) / (xmax - xmin) * pw

    def y(v: float) -> float:
        return top + ph - (math.log10(max(v, ylo)) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * ph

    def esc(t: str) -> str:
        return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="16" font-weight="bold">Latency by percentile: echo vs query paths</text>',
        f'<text x="{left}" y="44" fill="#444">h2load, {H2_CONNECTIONS} connections x {H2_STREAMS} streams, closed loop, '
        f"{esc(info['cpu'])}, {info['cores']} cores ({mode} run)</text>",
    ]
    for pct, label in [(50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p99.9")]:
        px = x(pct)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ph}" stroke="#ddd"/>')
        out.append(f'<text x="{px:.1f}" y="{top + ph + 18}" text-anchor="middle">{label}</text>')
    decade = ylo
    while decade <= yhi * 1.0001:
        for m in (1, 2, 5):
            v = decade * m
            if v > yhi * 1.0001:
                break
            py = y(v)
            out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{v:g}</text>')
        decade *= 10
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 18}" text-anchor="middle">percentile (log scale of 1 / (1 - p))</text>')
    out.append(
        f'<text x="18" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 18 {top + ph / 2})">latency, ms (log scale)</text>'
    )
    for i, (name, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{x(p['percentile']):.1f},{y(p['ms']):.1f}" for p in pts)
        dash = ' stroke-dasharray="6 4"' if i == 0 else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        ly = top + 10 + i * 22
        out.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 40}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{left + pw + 46}" y="{ly + 4}">{esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def check_svg(path: Path) -> str:
    ElementTree.parse(path)  # well-formed XML at least
    renderer = shutil.which("rsvg-convert")
    if renderer is None:
        return "well-formed XML (rsvg-convert not installed: Debian librsvg2-bin)"
    with tempfile.NamedTemporaryFile(suffix=".png") as png:
        done = subprocess.run([renderer, "-o", png.name, str(path)], capture_output=True, text=True)
        if done.returncode != 0 or Path(png.name).stat().st_size == 0:
            raise StepFailed(f"rsvg-convert cannot render {path}: {done.stderr.strip()}")
    return "renders with rsvg-convert"


BUILD = "cargo build --release -p tickmesh -p tickmesh-benches"
BUILD_CACHE = "cargo bench --no-run -p tickmesh-cache --bench cache"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and durations (a few minutes)")
    parser.add_argument("--skip", action="append", default=[], choices=STEPS, help="leave a step out (repeatable)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each step, wait up to this long for no rustc to be running (shared machines)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table; leave README and SVG alone")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    rel = release_dir()
    out = rel.parent / "bench-report"
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, args.quick)
    tickmesh = need(rel / "tickmesh", BUILD)
    info = machine(tickmesh)
    tickmesh_built = tickmesh.stat().st_mtime
    data, data_origin = candles_csv(out)
    if compilers_running():
        print("warning: rustc is running: figures taken now are less reliable (noted in the README)")

    todo = [step for step in STEPS if step not in args.skip]
    results: dict = {}
    failed: dict = {}
    actions = {
        "startup": lambda: step_startup(runner, settings, rel),
        "stack": lambda: step_stack(runner, settings, rel),
        "echo": lambda: step_echo(runner, settings, rel),
        "query": lambda: step_query(runner, settings, rel, data),
        "tracing": lambda: step_tracing(runner, settings, rel, data),
        "fanout": lambda: step_fanout(runner, settings, rel),
        "ingest": lambda: step_ingest(runner, settings, rel),
        "indicators": lambda: step_indicators(runner, settings, rel),
        "cache": lambda: step_cache(runner, settings, rel),
    }
    for i, step in enumerate(todo, 1):
        if args.wait_idle > 0 and compilers_running():
            print(f"    waiting up to {args.wait_idle:.0f} s for rustc to finish", flush=True)
            give_up = time.monotonic() + args.wait_idle
            while compilers_running() and time.monotonic() < give_up:
                time.sleep(5)
        runner.step = step
        started = time.monotonic()
        print(f"[{i}/{len(todo)}] {step} ({time.monotonic() - runner.started:.0f} s so far)", flush=True)
        try:
            results[step] = actions[step]()
        except StepFailed as e:
            failed[step] = str(e)
            print(f"    FAILED: {e}", flush=True)
            continue
        print(f"    done in {time.monotonic() - started:.1f} s", flush=True)

    (out / "report.json").write_text(json.dumps({"mode": mode, "machine": info, "settings": settings, "results": results}, indent=2))
    if tickmesh.stat().st_mtime != tickmesh_built:
        # Someone rebuilt it meanwhile: steps before and after ran different code.
        info["tickmesh"] += " (**rebuilt during this run**: steps compare different binaries)"
    block = markdown(results, settings, info, mode, runner.busy_steps, args.skip, failed, data_origin)
    if args.no_write:
        print(block)
    else:
        write_readme(block)
        print(f"table written to {README.relative_to(ROOT)}")
        if "query" in results:
            SVG.write_text(chart(results, info, mode))
            print(f"chart written to {SVG.relative_to(ROOT)} ({check_svg(SVG)})")
    print(f"raw JSON and logs in {out}; {time.monotonic() - runner.started:.0f} s in all")
    if failed:
        print("failed steps: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
