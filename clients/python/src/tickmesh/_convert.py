"""Conversions between Python / pandas values and tickmesh's wire types."""

from __future__ import annotations

import datetime as _dt
from typing import Dict, Union

import pandas as pd

from tickmesh.v1 import market_pb2

TimeLike = Union[_dt.datetime, _dt.date, pd.Timestamp, str, int, None]

INTERVALS: Dict[str, "market_pb2.Interval.ValueType"] = {
    "1s": market_pb2.INTERVAL_1S,
    "1m": market_pb2.INTERVAL_1M,
    "5m": market_pb2.INTERVAL_5M,
    "15m": market_pb2.INTERVAL_15M,
    "1h": market_pb2.INTERVAL_1H,
    "4h": market_pb2.INTERVAL_4H,
    "1d": market_pb2.INTERVAL_1D,
}
INTERVAL_NAMES = {v: k for k, v in INTERVALS.items()}


def interval(value: str) -> "market_pb2.Interval.ValueType":
    """`"1d"`, `"4h"`, ... as the wire enum (ValueError for anything else)."""
    try:
        return INTERVALS[value.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown interval {value!r}: one of {', '.join(INTERVALS)}") from None


def time_us(value: TimeLike) -> int:
    """A datetime, date, pandas Timestamp, ISO string or integer microseconds as microseconds
    since the epoch (naive times are UTC); None is 0 (unbounded)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1000)


def timestamp(us: int) -> pd.Timestamp:
    return pd.Timestamp(us * 1000, unit="ns", tz="UTC")

