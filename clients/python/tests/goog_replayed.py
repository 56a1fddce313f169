"""A new user's first three lines, for services/tickmesh/tests/it/sdk_mesh.rs: GOOG's daily bars,
replayed into the mesh with `tickmesh replay`, as a DataFrame, checked against the CSV as pandas
reads it.

Usage: goog_replayed.py QUERY_ADDR INGESTION_ADDR COMPUTATION_ADDR GOOG_CSV
"""

import sys

import pandas as pd

import tickmesh

query, ingestion, computation, csv = sys.argv[1:5]

# The three lines (the addresses are given here because the four-process mesh has its own).
with tickmesh.Client(query, ingestion=ingestion, computation=computation) as client:
    bars = client.candles("GOOG", "1d")

want = pd.read_csv(csv, index_col=0, parse_dates=True)
want.index = pd.DatetimeIndex(want.index, name="time").tz_localize("UTC")
want.columns = [c.lower() for c in want.columns]
pd.testing.assert_frame_equal(bars, want.astype("float64"), check_freq=False)
print(f"{len(bars)} bars equal to {csv}")
