#!/usr/bin/env python3
"""100,000 minute bars into a pandas DataFrame, two ways, in the same run: the Python SDK
(`tickmesh.Client(query).candles(symbol, "1m")`) against `pandas.read_sql` on the same rows of
the mesh's own SQLite file, which is what a user would write without tickmesh. Each end to end,
from opening the connection (a `tickmesh.Client`, a `sqlite3.connect`) to the frame with its UTC
DatetimeIndex, alternating rounds.

    .venv/bin/python benches/sdk_read_sql.py [--bars N] [--rounds R]

It runs `tickmesh up` from `$CARGO_TARGET_DIR/release/` (or `target/release/`) on a throwaway
SQLite store, ingests N synthetic minute bars through `IngestCandles`, waits until the store
file stops changing (the mesh makes signals from new bars in the background), checks that both
ways give the same frame, and prints the median time of each and the ratio
read_sql / client (goal: >= 1.0, the client at least as fast).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
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
import tickmesh  # noqa: E402
from export_decode import binary, ingest  # noqa: E402
from report import Mesh  # noqa: E402
from tickmesh.v1 import market_pb2  # noqa: E402

SYMBOL = "BENCH"
# The store's code of an interval is its wire value (shared/store: candles.interval_code).
INTERVAL_CODE = market_pb2.INTERVAL_1M

# What a user would write against the store's table (shared/store/migrations/sqlite: prices and
# volume are DOUBLE columns, times integer microseconds since the epoch, UTC), so read_sql
# needs no conversion beyond the time column.
SQL = """
SELECT open_time_us, open, high, low, close, volume
FROM candles
WHERE symbol = ? AND interval_code = ?
ORDER BY open_time_us
"""


def store_files(db: Path) -> tuple:
    """Modification time and size of the store's files (the database and its WAL)."""
    files = [db, db.with_name(db.name + "-wal")]
    return tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files)


def wait_quiet(db: Path, quiet_for: float = 3.0, limit: float = 120.0) -> float:
    """Waits until the store's files have not changed for `quiet_for` seconds, so that the
    mesh's background writes after an ingestion (signals from the new bars, the outbox relay)
    are over before the baseline reads the file; returns the seconds waited."""
    started = time.monotonic()
    last, since = store_files(db), time.monotonic()
    while time.monotonic() - since < quiet_for:
        if time.monotonic() - started > limit:
            sys.exit(f"{db} still changing after {limit:.0f} s")
        time.sleep(0.2)
        now = store_files(db)
        if now != last:
            last, since = now, time.monotonic()
    return time.monotonic() - started


def compilers_running() -> bool:
    """Whether a rustc runs on the machine (a build on a shared box): figures less reliable."""
    return subprocess.run(["pgrep", "-x", "rustc"], capture_output=True).returncode == 0


def by_client(query: str) -> pd.DataFrame:
    with tickmesh.Client(query) as client:
        return client.candles(SYMBOL, "1m")


def by_read_sql(db: Path) -> pd.DataFrame:
    # Read-only: the file belongs to the running mesh.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        df = pd.read_sql(SQL, conn, params=(SYMBOL, INTERVAL_CODE), index_col="open_time_us")
    conn.close()  # the context manager only ends the transaction
    df.index = pd.DatetimeIndex(pd.to_datetime(df.index, unit="us", utc=True), name="time")
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh = Mesh(binary(), Path(tmp) / "mesh.log")
        try:
            db = Path(mesh.dir.name) / "mesh.db"  # Mesh's `--store sqlite:<dir>/mesh.db`
            with grpc.insecure_channel(mesh.addrs["ingestion"]) as channel:
                ingest(channel, args.bars)
            waited = wait_quiet(db)
            query = mesh.addrs["query"]
            # Same frame both ways, before any timing (also warms both paths: the server's
            # candle history and the OS's page cache of the file).
            a, b = by_client(query), by_read_sql(db)
            if len(a) != args.bars:
                sys.exit(f"the client gave {len(a)} rows, not {args.bars}")
            pd.testing.assert_frame_equal(a, b, check_freq=False)
            times: dict[str, list[float]] = {"client": [], "read_sql": []}
            order = [("client", lambda: by_client(query)), ("read_sql", lambda: by_read_sql(db))]
            before = store_files(db)
            busy = compilers_running()
            for r in range(args.rounds):
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
            quiet = store_files(db) == before
            busy = busy or compilers_running()
        finally:
            mesh.stop()
    client, read_sql = (statistics.median(times[k]) for k in ("client", "read_sql"))
    print(
        f"{args.bars:,} bars into a DataFrame, median of {args.rounds} alternating rounds "
        f"(store quiet after {waited:.1f} s; "
        f"{'unchanged' if quiet else 'CHANGED, figures suspect'} while timing):"
    )
    for key, name, median in (
        ("client", "tickmesh.Client.candles", client),
        ("read_sql", "pandas.read_sql (SQLite)", read_sql),
    ):
        rounds = ", ".join(f"{t * 1e3:.1f}" for t in sorted(times[key]))
        rate = args.bars / median
        print(f"  {name:25s} {median * 1e3:7.1f} ms  ({rate:,.0f} bars/s; rounds {rounds} ms)")
    ratio = read_sql / client
    print(f"  ratio read_sql / client: {ratio:.2f} (goal >= 1.0: the client at least as fast)")
    if busy:
        print("  warning: a rustc was running before or after the rounds: figures less reliable")


if __name__ == "__main__":
    main()
