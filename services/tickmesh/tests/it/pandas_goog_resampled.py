"""pandas' weekly (from Monday) and calendar-monthly bars of the GOOG daily CSV that the
`backtesting` package ships, as JSON on stdout: the outside reference for the SDKs' resampled
candles. {"1w": [[open_time_ms, open, high, low, close, volume], ...], "1mo": [...]}."""

import json
import os
import sys

import pandas as pd

import backtesting

path = os.path.join(os.path.dirname(backtesting.__file__), "test", "GOOG.csv")
frame = pd.read_csv(path, index_col=0, parse_dates=True).astype("float64")
frame.index = frame.index.tz_localize("UTC")
ohlcv = {"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"}
out = {}
for bar, rule in (("1w", "W-MON"), ("1mo", "MS")):
    bars = frame.resample(rule, label="left", closed="left").agg(ohlcv).dropna()
    out[bar] = [
        [int(t.value // 1_000_000), *(float(row[k]) for k in ohlcv)] for t, row in bars.iterrows()
    ]
json.dump(out, sys.stdout)
