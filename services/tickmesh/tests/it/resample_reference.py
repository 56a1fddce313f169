"""pandas' answer for the resampling test (tests/it/resample.rs): the input bars (GOOG daily and
EURUSD hourly from the `backtesting` package, a made-up 15-minute series around the 2017 New
York DST change) and, per case, the bars pandas makes of them. One JSON document on stdout.

Times are microseconds since the epoch, UTC; the CSVs' naive times are read as UTC.
"""

import json
import os
import sys

import backtesting
import numpy as np
import pandas as pd
import talib

OHLCV = {"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"}
NY = "America/New_York"


def micros(index: pd.DatetimeIndex) -> list[int]:
    utc = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    return [int(t.value // 1000) for t in utc]


def rows(df: pd.DataFrame) -> list[list[float]]:
    df = df.dropna(subset=["Open"])
    return [[t, *map(float, r)] for t, r in zip(micros(df.index), df[list(OHLCV)].to_numpy())]


def csv(name: str) -> pd.DataFrame:
    path = os.path.join(os.path.dirname(backtesting.__file__), "test", name)
    df = pd.read_csv(path, index_col=0, parse_dates=True)[list(OHLCV)].astype(float)
    df.index = df.index.tz_localize("UTC")
    return df


def synthetic() -> pd.DataFrame:
    # Two weeks of 15-minute bars around the clock, Sunday 2017-10-29 to Saturday 2017-11-11
    # (New York leaves daylight saving on 2017-11-05), a seeded random walk.
    index = pd.date_range("2017-10-29", "2017-11-12", freq="15min", inclusive="left", tz="UTC")
    rng = np.random.default_rng(20171105)
    close = 100 + np.cumsum(rng.normal(0, 0.2, len(index)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.1, len(index)))
    return pd.DataFrame(
        {
            "Open": open_,
            "High": np.maximum(open_, close) + spread,
            "Low": np.minimum(open_, close) - spread,
            "Close": close,
            "Volume": rng.integers(1, 1000, len(index)).astype(float),
        },
        index=index,
    )


def session_days(df: pd.DataFrame) -> pd.DataFrame:
    """XNYS sessions: 09:30-16:00 New York on weekdays, labelled with the session's open."""
    local = df.tz_convert(NY)
    minutes = local.index.hour * 60 + local.index.minute
    inside = local[(local.index.day_of_week < 5) & (minutes >= 570) & (minutes < 960)]
    days = inside.groupby(inside.index.date).agg(OHLCV)
    days.index = pd.DatetimeIndex(
        [pd.Timestamp(d).tz_localize(NY) + pd.Timedelta(hours=9, minutes=30) for d in days.index]
    )
    return days


def main() -> None:
    goog, eurusd, syn = csv("GOOG.csv"), csv("EURUSD.csv"), synthetic()
    weekly = {"rule": "W-MON", "label": "left", "closed": "left"}
    cases = [
        ("GOOG", "1w", "", "", goog.resample(**weekly).agg(OHLCV)),
        ("GOOG", "1mo", "", "", goog.resample("MS").agg(OHLCV)),
        # Day rules ignore `origin` on a zone-aware index: resample the naive one.
        ("GOOG", "2d", "", "", goog.tz_localize(None).resample("2D", origin="epoch").agg(OHLCV)),
        ("EURUSD", "4h", "", "", eurusd.resample("4h", origin="epoch").agg(OHLCV)),
        ("EURUSD", "1d", NY, "", eurusd.tz_convert(NY).resample("1D").agg(OHLCV)),
        ("EURUSD", "1w", NY, "", eurusd.tz_convert(NY).resample(**weekly).agg(OHLCV)),
        ("EURUSD", "1mo", "", "", eurusd.resample("MS").agg(OHLCV)),
        ("SYN", "1d", "", "XNYS", session_days(syn)),
        ("SYN", "1d", NY, "", syn.tz_convert(NY).resample("1D").agg(OHLCV)),
    ]
    # TA-Lib over pandas' bars: RSI(14) of GOOG's weeks, SMA(10) of EURUSD's New York days.
    goog_weeks = goog.resample(**weekly).agg(OHLCV).dropna(subset=["Open"])
    ny_days = eurusd.tz_convert(NY).resample("1D").agg(OHLCV).dropna(subset=["Open"])
    indicators = [
        ("GOOG", "1w", "", "RSI", 14, goog_weeks, talib.RSI(goog_weeks["Close"].to_numpy(), 14)),
        ("EURUSD", "1d", NY, "SMA", 10, ny_days, talib.SMA(ny_days["Close"].to_numpy(), 10)),
    ]
    json.dump(
        {
            "indicators": [
                {"symbol": s, "bar": b, "time_zone": tz, "kind": k, "period": p,
                 "time_us": micros(df.index), "values": [None if np.isnan(v) else float(v) for v in values]}
                for s, b, tz, k, p, df, values in indicators
            ],
            "input": {
                "GOOG": {"interval": "INTERVAL_1D", "rows": rows(goog)},
                "EURUSD": {"interval": "INTERVAL_1H", "rows": rows(eurusd)},
                "SYN": {"interval": "INTERVAL_15M", "rows": rows(syn)},
            },
            "cases": [
                {"symbol": s, "bar": b, "time_zone": tz, "session": se, "bars": rows(df)}
                for s, b, tz, se, df in cases
            ],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
