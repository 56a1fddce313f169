"""Conversions between Python / pandas values and tickmesh's wire types."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Dict, Optional, Union

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


# A bar size the query service resamples to: a count and a unit (query.proto, GetCandlesRequest.bar).
_BAR = re.compile(r"^[1-9][0-9]*(s|m|h|d|w|mo)$")


def bar(value: str) -> str:
    """A bar size ("90s", "10m", "2h", "1w", "1mo") as the wire spells it (ValueError otherwise)."""
    text = value.lower() if isinstance(value, str) else ""
    if not _BAR.match(text):
        raise ValueError(
            f"unknown interval {value!r}: one of {', '.join(INTERVALS)}, "
            "or a bar size to resample to (a count and s, m, h, d, w or mo: '2h', '1w', '1mo')"
        )
    return text


def resampled(value: str, time_zone: Optional[str], session: Optional[str]) -> bool:
    """Whether bars of `value` are resampled by the query service (GetCandles' `bar`) rather than
    read as stored: a size that is not a stored interval, or days in a time zone / session."""
    return bool(time_zone or session) or (
        not isinstance(value, str) or value.lower() not in INTERVALS
    )


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

