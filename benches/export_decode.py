#!/usr/bin/env python3
"""100,000 minute bars into a pandas DataFrame from Python, two ways, in the same run:
`QueryService.ExportCandles` (packed columns, pages of up to 32,768 rows) against
`QueryService.GetCandles` (one message per bar, pages of 5,000), each end to end (the calls,
protobuf decoding, and the DataFrame with a UTC DatetimeIndex), alternating rounds.

    .venv/bin/python benches/export_decode.py [--bars N] [--rounds R]

It runs `tickmesh up` from `$CARGO_TARGET_DIR/release/` (or `target/release/`) on a throwaway
SQLite store, ingests N synthetic minute bars through `IngestCandles`, checks that both ways
give the same frame, and prints the median time of each and their ratio (goal: export >= 5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
sys.path.insert(0, str(ROOT / "benches"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from report import Mesh  # noqa: E402
from tickmesh.v1 import (  # noqa: E402
    ingestion_pb2,
    ingestion_pb2_grpc,
    market_pb2,
    query_pb2,
    query_pb2_grpc,
)

MINUTE_US = 60_000_000
START_US = 1_599_999_960_000_000  # a multiple of a minute
COLUMNS = ["open", "high", "low", "close", "volume"]


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "release" / "tickmesh"
    if not path.exists():
        sys.exit(f"{path} is missing: build it first (cargo build --release)")
    return path


def ingest(channel: grpc.Channel, bars: int) -> None:
    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
    i = np.arange(bars)
    close = 100.0 + np.cumsum(np.sin(i * 0.01) * 0.1)
    for lo in range(0, bars, 10_000):
        batch = [
            market_pb2.Candle(
                symbol="BENCH",
                interval=market_pb2.INTERVAL_1M,
                open_time_us=START_US + int(k) * MINUTE_US,
                open=float(close[k]) - 0.1,
                high=float(close[k]) + 0.5,
                low=float(close[k]) - 0.5,
                close=float(close[k]),
                volume=1000.0 + float(k),
                closed=True,
            )
            for k in range(lo, min(lo + 10_000, bars))
        ]
        summary = stub.IngestCandles(ingestion_pb2.IngestCandlesRequest(candles=batch)).summary
        if summary.stored != len(batch):
            sys.exit(f"ingest stored {summary.stored} of {len(batch)}: {summary}")


def frame(time_us: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(time_us, unit="us", utc=True), name="time")
    return pd.DataFrame(values, index=index)


def by_export(stub: query_pb2_grpc.QueryServiceStub) -> pd.DataFrame:
    request = query_pb2.ExportCandlesRequest(symbol="BENCH", interval=market_pb2.INTERVAL_1M)
    pages = []
    while True:
        page = stub.ExportCandles(request)
        pages.append(page)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    time_us = np.concatenate([np.asarray(p.time_us, dtype=np.int64) for p in pages])
    values = {
        c: np.concatenate([np.asarray(getattr(p, c), dtype=np.float64) for p in pages]) for c in COLUMNS
    }
    return frame(time_us, values)


def by_rows(stub: query_pb2_grpc.QueryServiceStub) -> pd.DataFrame:
    request = query_pb2.GetCandlesRequest(symbol="BENCH", interval=market_pb2.INTERVAL_1M, page_size=5000)
    time_us: list[int] = []
    values: dict[str, list[float]] = {c: [] for c in COLUMNS}
    while True:
        page = stub.GetCandles(request)
        for c in page.candles:
            time_us.append(c.open_time_us)
            values["open"].append(c.open)
            values["high"].append(c.high)
            values["low"].append(c.low)
            values["close"].append(c.close)
            values["volume"].append(c.volume)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    return frame(np.asarray(time_us, dtype=np.int64), {c: np.asarray(v) for c, v in values.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh(binary(), Path(tmp) / "mesh.log")
        try:
            with grpc.insecure_channel(mesh.addrs["ingestion"]) as ch:
                ingest(ch, args.bars)
            # grpcio's default channel accepts gzip, and the server then compresses every
            # answer; the second channel accepts identity only.
            modes = {
                "grpcio defaults (gzip accepted)": [],
                "compression off (identity only)": [("grpc.compression_enabled_algorithms_bitset", 1)],
            }
            results = {}
            for mode, extra in modes.items():
                options = [("grpc.max_receive_message_length", 64 << 20), *extra]
                with grpc.insecure_channel(mesh.addrs["query"], options=options) as ch:
                    stub = query_pb2_grpc.QueryServiceStub(ch)
                    a, b = by_export(stub), by_rows(stub)
                    if len(a) != args.bars or not a.equals(b):
                        sys.exit(f"the two frames differ ({len(a)} and {len(b)} rows)")
                    times: dict[str, list[float]] = {"export": [], "rows": []}
                    for r in range(args.rounds):
                        order = [("export", by_export), ("rows", by_rows)]
                        for name, fn in order if r % 2 == 0 else order[::-1]:
                            t = time.perf_counter()
                            fn(stub)
                            times[name].append(time.perf_counter() - t)
                    results[mode] = (statistics.median(times["export"]), statistics.median(times["rows"]))
        finally:
            mesh.stop()
    print(f"{args.bars:,} bars into a DataFrame, median of {args.rounds} alternating rounds:")
    for mode, (export, rows) in results.items():
        print(f"  {mode}:")
        print(f"    ExportCandles (columns): {export * 1e3:8.1f} ms  ({args.bars / export:,.0f} bars/s)")
        print(f"    GetCandles (rows):       {rows * 1e3:8.1f} ms  ({args.bars / rows:,.0f} bars/s)")
        print(f"    export is {rows / export:.2f}x faster (goal >= 5x)")


if __name__ == "__main__":
    main()
