"""`tickmesh.Client`: tickmesh's query, computation and ingestion services as one-line calls
that hand back pandas DataFrames."""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time as _time
from dataclasses import dataclass, field
from importlib import resources
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import grpc
import numpy as np
import pandas as pd

from tickmesh import _convert
from tickmesh._convert import TimeLike
from tickmesh.errors import from_rpc_error
from tickmesh.v1 import (
    computation_pb2,
    computation_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    market_pb2,
    query_pb2,
    query_pb2_grpc,
)

__all__ = [
    "AsyncClient",
    "Client",
    "Event",
    "IngestSummary",
    "RejectedRow",
    "IndicatorParams",
    "default_service_config",
    "peer_addresses",
    "to_polars",
]

# Most rows GetCandles / GetSignals return per page (the server's maximum): fewer round trips.
PAGE_SIZE = 5000
# ExportCandles' largest page (query.proto).
EXPORT_PAGE_ROWS = 32_768
# Rows per ingestion call: half the server's default `ingestion.max_batch_rows` (10,000).
BATCH_ROWS = 5000

IndicatorParams = Union[None, int, Sequence[Union[int, float]], Mapping[str, Union[int, float]]]
T = TypeVar("T")


def default_service_config() -> str:
    """The shipped gRPC service config (retries on UNAVAILABLE for the idempotent methods),
    generated from the protos' idempotency options: scripts/service_config.py."""
    return resources.files("tickmesh").joinpath("service_config.json").read_text(encoding="utf-8")


def to_polars(frame: pd.DataFrame) -> Any:
    """A frame the client returned as a polars DataFrame: its index first as a column ("time"
    as a UTC `Datetime("us")`, "symbol" as strings), then its columns, without going through
    pyarrow. Needs polars: `pip install './clients/python[polars]'`."""
    try:
        import polars as pl
    except ImportError:
        raise ImportError(
            "tickmesh.to_polars needs polars: pip install './clients/python[polars]'"
        ) from None
    columns: List[Any] = []
    index = frame.index
    name = str(index.name or "index")
    if isinstance(index, pd.DatetimeIndex):
        micros = np.asarray(index.tz_convert("UTC").as_unit("us").asi8, dtype=np.int64)
        columns.append(pl.Series(name, micros).cast(pl.Datetime("us", "UTC")))
    else:
        columns.append(pl.Series(name, list(index)))
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind in "fiub":
            columns.append(pl.Series(str(column), values.to_numpy()))
        elif isinstance(values.dtype, pd.DatetimeTZDtype):
            micros = np.asarray(
                pd.DatetimeIndex(values).tz_convert("UTC").as_unit("us").asi8, dtype=np.int64
            )
            columns.append(pl.Series(str(column), micros).cast(pl.Datetime("us", "UTC")))
        else:
            columns.append(pl.Series(str(column), list(values)))
    return pl.DataFrame(columns)


def peer_addresses(target: str) -> Tuple[str, str]:
    """The ingestion and computation addresses next to a query address, in `tickmesh up`'s
    layout: ingestion on the query port - 3, computation on the query port - 2
    (`127.0.0.1:7404` -> `127.0.0.1:7401`, `127.0.0.1:7402`)."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(
            f"cannot derive the ingestion / computation addresses from {target!r}: "
            "pass ingestion= and computation="
        )
    return f"{host}:{int(port) - 3}", f"{host}:{int(port) - 2}"


@dataclass(frozen=True)
class RejectedRow:
    """A row the server did not store: `row` is its position in the frame given."""

    row: int
    field: str
    reason: str


@dataclass
class IngestSummary:
    """What an ingestion call did, over all its batches."""

    stored: int = 0
    duplicates: int = 0
    rejected_count: int = 0
    batches: int = 0
    rejected: List[RejectedRow] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """One market event of a stream. `kind` is "tick", "candle" or "signal"; `payload` the
    message itself; `time` the tick's time, the candle's open time or the signal's bar time."""

    kind: str
    event_id: str
    symbol: str
    time: pd.Timestamp
    time_us: int
    historical: bool
    payload: Union[market_pb2.Tick, market_pb2.Candle, market_pb2.Signal]


_KINDS = {
    name[len("INDICATOR_KIND_") :].lower(): value
    for name, value in market_pb2.IndicatorKind.items()
    if value != market_pb2.INDICATOR_KIND_UNSPECIFIED
}
# TA-Lib's output names for the multi-output indicators, by the server's output names.
_TALIB_OUTPUTS = {
    market_pb2.INDICATOR_KIND_MACD: {"macd": "macd", "signal": "macdsignal", "hist": "macdhist"},
    market_pb2.INDICATOR_KIND_BBANDS: {
        "upper": "upperband",
        "middle": "middleband",
        "lower": "lowerband",
    },
    market_pb2.INDICATOR_KIND_STOCH: {"k": "slowk", "d": "slowd"},
}
# Positional parameters by kind: (12, 26, 9) for MACD, (20, 2.0) for BBANDS, ...
_POSITIONAL = {
    market_pb2.INDICATOR_KIND_MACD: ("fast_period", "slow_period", "signal_period"),
    market_pb2.INDICATOR_KIND_BBANDS: ("period", "deviations"),
    market_pb2.INDICATOR_KIND_STDDEV: ("period", "deviations"),
    market_pb2.INDICATOR_KIND_STOCH: ("period", "fast_period", "slow_period"),
}


def _indicator_spec(name: str, params: IndicatorParams) -> market_pb2.IndicatorSpec:
    key = name.lower()
    kind = _KINDS.get(key)
    if kind is None:
        base, _, suffix = key.rpartition("_")
        if base in _KINDS and suffix.isdigit():  # "sma_50"
            kind = _KINDS[base]
            if params is None:
                params = int(suffix)
    if kind is None:
        raise ValueError(f"unknown indicator {name!r}: one of {', '.join(sorted(_KINDS))}")
    spec = market_pb2.IndicatorSpec(kind=kind)
    if params is None:
        return spec
    if isinstance(params, Mapping):
        for k, v in params.items():
            setattr(spec, k, v)
    elif isinstance(params, (int, float)):
        spec.period = int(params)
    else:
        names = _POSITIONAL.get(kind, ("period",))
        if len(params) > len(names):
            raise ValueError(f"{name}: at most {len(names)} parameters ({', '.join(names)})")
        for k, v in zip(names, params):
            setattr(spec, k, float(v) if k == "deviations" else int(v))
    return spec


def _indicator_columns(series: market_pb2.IndicatorSeries) -> Dict[str, List[float]]:
    spec = series.spec
    kind_name = market_pb2.IndicatorKind.Name(spec.kind)[len("INDICATOR_KIND_") :].lower()
    renames = _TALIB_OUTPUTS.get(spec.kind)
    out: Dict[str, List[float]] = {}
    for output in series.outputs:
        if renames is not None:
            name = renames.get(output.name, output.name)
        else:
            name = f"{kind_name}_{spec.period}" if spec.period else kind_name
        out[name] = list(output.values)
    return out


def _enum(enum: Any, prefix: str, value: Union[str, int]) -> Any:
    """The wire value of an enum member given by its short name (`"rsi"` for STRATEGY_RSI)."""
    if isinstance(value, int):
        return value
    try:
        return enum.Value(prefix + value.upper())
    except ValueError:
        raise ValueError(f"unknown {prefix.lower().rstrip('_')} {value!r}") from None


def _enum_name(enum: Any, prefix: str, value: int) -> str:
    try:
        return str(enum.Name(value))[len(prefix) :].lower()
    except ValueError:
        return str(value)


def _event(response: query_pb2.StreamMarketDataResponse) -> Optional[Event]:
    event = response.event
    kind = event.WhichOneof("payload")
    payload: Union[market_pb2.Tick, market_pb2.Candle, market_pb2.Signal]
    if kind == "tick":
        payload, us = event.tick, event.tick.time_us
    elif kind == "candle":
        payload, us = event.candle, event.candle.open_time_us
    elif kind == "signal":
        payload, us = event.signal, event.signal.time_us
    else:
        return None
    return Event(
        kind=kind,
        event_id=event.event_id,
        symbol=payload.symbol,
        time=_convert.timestamp(us),
        time_us=us,
        historical=response.historical,
        payload=payload,
    )


def _frame_times(df: pd.DataFrame) -> "np.ndarray[Any, np.dtype[np.int64]]":
    """Microseconds since the epoch of each row: the DatetimeIndex, else a time / date column."""
    if isinstance(df.index, pd.DatetimeIndex):
        times = df.index
    else:
        columns = {c.lower(): c for c in map(str, df.columns)}
        for name in ("time", "open_time", "date", "datetime", "timestamp"):
            if name in columns:
                times = pd.DatetimeIndex(pd.to_datetime(df[columns[name]]))
                break
        else:
            raise ValueError("the frame needs a DatetimeIndex or a time / date column")
    if times.tz is None:
        times = times.tz_localize("UTC")
    return np.asarray(times.as_unit("us").asi8, dtype=np.int64)


def _column(df: pd.DataFrame, *names: str) -> Optional["pd.Series[Any]"]:
    columns = {str(c).lower(): c for c in df.columns}
    for name in names:
        if name in columns:
            return df[columns[name]]
    return None


def _required(df: pd.DataFrame, name: str, *aliases: str) -> "np.ndarray[Any, np.dtype[np.float64]]":
    column = _column(df, name, *aliases)
    if column is None:
        raise ValueError(f"the frame has no {name!r} column (columns: {list(df.columns)})")
    return np.asarray(column, dtype=np.float64)


# -- requests and results, shared by Client and AsyncClient ----------------------------------


def _export_request(
    symbol: str, interval: str, start: TimeLike, end: TimeLike, page_size: int
) -> query_pb2.ExportCandlesRequest:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    return query_pb2.ExportCandlesRequest(
        symbol=symbol,
        interval=_convert.interval(interval),
        start_time_us=_convert.time_us(start),
        end_time_us=_convert.time_us(end),
        page_size=min(page_size, EXPORT_PAGE_ROWS),
    )


def _bars_request(
    symbol: str,
    interval: str,
    start: TimeLike,
    end: TimeLike,
    time_zone: Optional[str],
    session: Optional[str],
) -> query_pb2.GetCandlesRequest:
    """GetCandles resampling to `interval` as a bar size (pages ascending, the largest size)."""
    return query_pb2.GetCandlesRequest(
        symbol=symbol,
        bar=_convert.bar(interval),
        time_zone=time_zone or "",
        session=session or "",
        start_time_us=_convert.time_us(start),
        end_time_us=_convert.time_us(end),
        page_size=PAGE_SIZE,
        order=query_pb2.SORT_ORDER_ASCENDING,
    )


def _bars_frame(rows: Sequence[market_pb2.Candle]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            k: np.asarray([getattr(c, k) for c in rows], dtype=np.float64)
            for k in ("open", "high", "low", "close", "volume")
        },
        index=_utc_index([c.open_time_us for c in rows]),
    )


def _utc_index(times: "Union[Sequence[int], np.ndarray[Any, Any]]") -> pd.DatetimeIndex:
    return pd.DatetimeIndex(
        pd.to_datetime(np.asarray(times, dtype=np.int64), unit="us", utc=True), name="time"
    )


class _CandleColumns:
    """The pages of an ExportCandles walk: packed columns, joined once at the end."""

    def __init__(self) -> None:
        self.pages: List[query_pb2.ExportCandlesResponse] = []

    def add(self, page: query_pb2.ExportCandlesResponse) -> None:
        self.pages.append(page)

    def _column(self, name: str, dtype: Any) -> "np.ndarray[Any, Any]":
        parts = [np.asarray(getattr(page, name), dtype=dtype) for page in self.pages]
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {k: self._column(k, np.float64) for k in ("open", "high", "low", "close", "volume")},
            index=_utc_index(self._column("time_us", np.int64)),
        )


def _latest_frame(response: query_pb2.GetLatestPricesResponse) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "price": np.asarray([p.price for p in response.prices], dtype=np.float64),
            "time": pd.to_datetime(
                np.asarray([p.time_us for p in response.prices], dtype=np.int64),
                unit="us",
                utc=True,
            ),
        },
        index=pd.Index([p.symbol for p in response.prices], name="symbol"),
    )
    frame.attrs["missing_symbols"] = list(response.missing_symbols)
    return frame


def _indicators_request(
    symbol: str,
    interval: str,
    indicators: Mapping[str, IndicatorParams],
    start: TimeLike,
    end: TimeLike,
    limit: int,
    time_zone: Optional[str] = None,
    session: Optional[str] = None,
) -> query_pb2.GetIndicatorsRequest:
    request = query_pb2.GetIndicatorsRequest(
        symbol=symbol,
        indicators=[_indicator_spec(k, v) for k, v in indicators.items()],
        start_time_us=_convert.time_us(start),
        end_time_us=_convert.time_us(end),
        limit=limit,
    )
    if _convert.resampled(interval, time_zone, session):
        request.bar = _convert.bar(interval)
        request.time_zone = time_zone or ""
        request.session = session or ""
    else:
        request.interval = _convert.interval(interval)
    return request


def _indicators_frame(response: query_pb2.GetIndicatorsResponse) -> pd.DataFrame:
    frames = [
        pd.DataFrame(_indicator_columns(s), index=_utc_index(s.time_us), dtype=np.float64)
        for s in response.series
    ]
    if not frames:
        frame = pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="time"))
    else:
        frame = pd.concat(frames, axis=1)
    frame.attrs["cache_hit"] = response.cache_hit
    return frame


def _signals_request(
    symbols: Optional[Iterable[str]],
    strategies: Optional[Iterable[Union[str, int]]],
    actions: Optional[Iterable[Union[str, int]]],
    start: TimeLike,
    end: TimeLike,
    min_confidence: float,
    limit: Optional[int],
) -> query_pb2.GetSignalsRequest:
    return query_pb2.GetSignalsRequest(
        symbols=list(symbols or []),
        strategies=[_enum(market_pb2.Strategy, "STRATEGY_", s) for s in strategies or []],
        actions=[_enum(market_pb2.SignalAction, "SIGNAL_ACTION_", a) for a in actions or []],
        start_time_us=_convert.time_us(start),
        end_time_us=_convert.time_us(end),
        min_confidence=min_confidence,
        page_size=min(PAGE_SIZE, limit) if limit else PAGE_SIZE,
    )


def _signals_frame(rows: Sequence[market_pb2.Signal]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": [s.symbol for s in rows],
            "interval": [_convert.INTERVAL_NAMES.get(s.interval, "") for s in rows],
            "strategy": [_enum_name(market_pb2.Strategy, "STRATEGY_", s.strategy) for s in rows],
            "action": [
                _enum_name(market_pb2.SignalAction, "SIGNAL_ACTION_", s.action) for s in rows
            ],
            "confidence": np.asarray([s.confidence for s in rows], dtype=np.float64),
            "price": np.asarray([s.price for s in rows], dtype=np.float64),
            "indicators": [dict(s.indicators) for s in rows],
        },
        index=_utc_index([s.time_us for s in rows]),
    )


def _optimize_request(
    symbols: Iterable[str],
    interval: str,
    objective: str,
    lookback_bars: int,
    bounds: Optional[Mapping[str, Tuple[float, float]]],
    risk_free_rate: float,
) -> computation_pb2.OptimizePortfolioRequest:
    return computation_pb2.OptimizePortfolioRequest(
        symbols=list(symbols),
        interval=_convert.interval(interval),
        lookback_bars=lookback_bars,
        objective=_enum(computation_pb2.PortfolioObjective, "PORTFOLIO_OBJECTIVE_", objective),
        bounds=[
            computation_pb2.WeightBound(symbol=s, min_weight=lo, max_weight=hi)
            for s, (lo, hi) in (bounds or {}).items()
        ],
        risk_free_rate=risk_free_rate,
    )


def _weights(response: computation_pb2.OptimizePortfolioResponse) -> "pd.Series[float]":
    weights = pd.Series(
        [w.weight for w in response.weights],
        index=pd.Index([w.symbol for w in response.weights], name="symbol"),
        name="weight",
        dtype=np.float64,
    )
    weights.attrs.update(
        expected_return=response.expected_return,
        volatility=response.volatility,
        sharpe_ratio=response.sharpe_ratio,
        observations=response.observations,
        risk_contribution={w.symbol: w.risk_contribution for w in response.weights},
    )
    return weights


class _Resume:
    """A stream's position, for resubscribing after a break without gaps or duplicates."""

    def __init__(
        self,
        symbols: Iterable[str],
        kinds: Optional[Iterable[str]],
        resume_from: TimeLike,
        intervals: Optional[Iterable[str]],
        reconnect_for: float,
    ) -> None:
        self.request = query_pb2.StreamMarketDataRequest(
            symbols=list(symbols),
            kinds=[_enum(query_pb2.EventKind, "EVENT_KIND_", k) for k in kinds or []],
            intervals=[_convert.interval(i) for i in intervals or []],
            resume_from_time_us=_convert.time_us(resume_from),
        )
        self.floor = self.request.resume_from_time_us or int(_time.time() * 1_000_000)
        self.last: Dict[Tuple[str, str], int] = {}
        self.seen: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self.reconnect_for = reconnect_for
        self.failing_since: Optional[float] = None
        self.backoff = 0.1

    def accept(self, response: query_pb2.StreamMarketDataResponse) -> Optional[Event]:
        """The event to yield, or None for one already yielded."""
        self.failing_since, self.backoff = None, 0.1
        event = _event(response)
        if event is None or event.event_id in self.seen:
            return None
        self.seen[event.event_id] = None
        if len(self.seen) > 200_000:
            self.seen.popitem(last=False)
        key = (event.symbol, event.kind)
        self.last[key] = max(self.last.get(key, event.time_us), event.time_us)
        return event

    def failed(self, error: grpc.RpcError) -> float:
        """Seconds to wait before resubscribing after `error`; raises when it is not worth it."""
        code = error.code()
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            raise from_rpc_error(error) from None
        now = _time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since > self.reconnect_for:
            raise from_rpc_error(error) from None
        wait = self.backoff
        self.backoff = min(self.backoff * 2, 2.0)
        return wait

    def next_request(self) -> query_pb2.StreamMarketDataRequest:
        self.request.resume_from_time_us = min(self.last.values()) if self.last else self.floor
        return self.request


# Pause before resubscribing to a stream the server ended with OK (it shut down), so a server
# that keeps ending streams is not called in a tight loop.
_ENDED_PAUSE = 0.1


class _Batches:
    """A frame's rows as ingestion requests of `batch_rows`, and the summary of their answers."""

    def __init__(self, rows: int, make: Callable[[int, int], Any], batch_rows: int) -> None:
        self.ranges = [(s, min(s + batch_rows, rows)) for s in range(0, rows, batch_rows)]
        self.rows = rows
        self.make = make
        self.summary = IngestSummary()

    def add(self, start: int, response: Any) -> None:
        s = response.summary
        summary = self.summary
        summary.stored += s.stored
        summary.duplicates += s.duplicates
        summary.rejected_count += s.rejected_count
        summary.batches += 1
        summary.rejected.extend(
            RejectedRow(row=start + r.row_index, field=r.field, reason=r.reason) for r in s.rejected
        )


def _candle_batches(
    df: pd.DataFrame, symbol: str, interval: str, source: str, batch_rows: int
) -> _Batches:
    times = _frame_times(df)
    o, h, l, c = (_required(df, k) for k in ("open", "high", "low", "close"))
    v = _required(df, "volume")
    wire_interval = _convert.interval(interval)

    def make(start: int, stop: int) -> ingestion_pb2.IngestCandlesRequest:
        return ingestion_pb2.IngestCandlesRequest(
            source=source,
            candles=[
                market_pb2.Candle(
                    symbol=symbol,
                    interval=wire_interval,
                    open_time_us=int(times[i]),
                    open=float(o[i]),
                    high=float(h[i]),
                    low=float(l[i]),
                    close=float(c[i]),
                    volume=float(v[i]),
                    closed=True,
                )
                for i in range(start, stop)
            ],
        )

    return _Batches(len(df), make, batch_rows)


_SIDES = {
    "buy": market_pb2.SIDE_BUY,
    "b": market_pb2.SIDE_BUY,
    "sell": market_pb2.SIDE_SELL,
    "s": market_pb2.SIDE_SELL,
}


def _tick_batches(df: pd.DataFrame, symbol: str, source: str, batch_rows: int) -> _Batches:
    times = _frame_times(df)
    price = _required(df, "price")
    size = _required(df, "size", "volume", "qty", "quantity")
    side_column = _column(df, "side")
    sides = (
        [_SIDES.get(str(x).strip().lower(), market_pb2.SIDE_UNSPECIFIED) for x in side_column]
        if side_column is not None
        else None
    )
    id_column = _column(df, "trade_id", "id")
    ids = [str(x) for x in id_column] if id_column is not None else None

    def make(start: int, stop: int) -> ingestion_pb2.IngestTickBatchRequest:
        return ingestion_pb2.IngestTickBatchRequest(
            source=source,
            ticks=[
                market_pb2.Tick(
                    symbol=symbol,
                    time_us=int(times[i]),
                    trade_id=ids[i] if ids is not None else str(i),
                    price=float(price[i]),
                    size=float(size[i]),
                    side=sides[i] if sides is not None else market_pb2.SIDE_UNSPECIFIED,
                )
                for i in range(start, stop)
            ],
        )

    return _Batches(len(df), make, batch_rows)


class _Channels:
    """Addresses, call options and channel settings common to Client and AsyncClient."""

    def __init__(
        self,
        target: str,
        api_key: Optional[str],
        tls: Union[None, bool, grpc.ChannelCredentials],
        timeout: Optional[float],
        ingestion: Optional[str],
        computation: Optional[str],
        service_config: Union[None, bool, str, Mapping[str, Any]],
        options: Sequence[Tuple[str, Any]],
    ) -> None:
        self.target = target
        if ingestion is None or computation is None:
            default_ingestion, default_computation = peer_addresses(target)
            ingestion = ingestion or default_ingestion
            computation = computation or default_computation
        self.ingestion_target: str = ingestion
        self.computation_target: str = computation
        self.timeout = timeout
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        channel_options: List[Tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        if service_config is None or service_config is True:
            channel_options.append(("grpc.service_config", default_service_config()))
        elif isinstance(service_config, str):
            channel_options.append(("grpc.service_config", service_config))
        elif isinstance(service_config, Mapping):
            channel_options.append(("grpc.service_config", json.dumps(service_config)))
        channel_options.extend(options)
        if not any(name == "grpc.compression_enabled_algorithms_bitset" for name, _ in options):
            # Accept identity only, so the server sends responses uncompressed: on a LAN gzip
            # costs more to make and undo than its bytes save (benches/export_decode.py:
            # 100,000 bars 11.1x faster than GetCandles rows uncompressed, 1.76x with gzip).
            # Over a slow link pass options=[("grpc.compression_enabled_algorithms_bitset", 7)].
            channel_options.append(("grpc.compression_enabled_algorithms_bitset", 1))
        self._options = channel_options
        self._credentials: Optional[grpc.ChannelCredentials]
        if tls is True:
            self._credentials = grpc.ssl_channel_credentials()
        elif tls is None or tls is False:
            self._credentials = None
        else:
            self._credentials = tls


class Client(_Channels):
    """A synchronous client of a tickmesh mesh; use it as a context manager.

    `target` is the query service (`"127.0.0.1:7404"`). Ingestion and computation are at
    `ingestion=` / `computation=`, else next to it in `tickmesh up`'s layout (query port - 3 and
    - 2, see `peer_addresses`). `api_key` is sent as `authorization: Bearer <key>`. `tls`: None
    or False for plaintext, True for TLS with the system roots, or `grpc.ChannelCredentials`.
    `timeout` (seconds) bounds every unary call; streams are unbounded. `service_config`: the
    shipped retry config by default, a JSON string / dict of your own, or False for none.
    """

    def __init__(
        self,
        target: str,
        api_key: Optional[str] = None,
        tls: Union[None, bool, grpc.ChannelCredentials] = None,
        timeout: Optional[float] = 30.0,
        *,
        ingestion: Optional[str] = None,
        computation: Optional[str] = None,
        service_config: Union[None, bool, str, Mapping[str, Any]] = None,
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        super().__init__(
            target, api_key, tls, timeout, ingestion, computation, service_config, options
        )

        def channel(addr: str) -> grpc.Channel:
            if self._credentials is None:
                return grpc.insecure_channel(addr, options=self._options)
            return grpc.secure_channel(addr, self._credentials, options=self._options)

        self._channels = [channel(self.target), channel(self.ingestion_target), channel(self.computation_target)]
        self.query = query_pb2_grpc.QueryServiceStub(self._channels[0])
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self._channels[1])
        self.computation = computation_pb2_grpc.ComputationServiceStub(self._channels[2])

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    # -- reads ----------------------------------------------------------------------------------

    def candles(
        self,
        symbol: str,
        interval: str,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        page_size: int = EXPORT_PAGE_ROWS,
        time_zone: Optional[str] = None,
        session: Optional[str] = None,
    ) -> pd.DataFrame:
        """Bars of `symbol` with open times in [start, end) (None: unbounded), oldest first, every
        page: columns open, high, low, close, volume; a UTC DatetimeIndex named "time".

        `interval` is a stored interval ("1m", "1h", "1d", ...), read with ExportCandles: pages
        of packed columns (`page_size` rows each, at most 32,768), which decode many times
        faster than GetCandles' Candle messages. Any other bar size ("2h", "1w", "1mo", "90s")
        is resampled by the query service from the stored bars (open first, high max, low min,
        close last, volume summed; weeks from Monday; periods without rows absent), with days,
        weeks and months in `time_zone` ("America/New_York") or as the regular sessions of
        `session` ("XNYS", labelled with the session's open) instead of UTC."""
        if _convert.resampled(interval, time_zone, session):
            bars = _bars_request(symbol, interval, start, end, time_zone, session)
            rows: List[market_pb2.Candle] = []
            while True:
                got = self._call(self.query.GetCandles, bars)
                rows.extend(got.candles)
                if not got.next_page_token:
                    return _bars_frame(rows)
                bars.page_token = got.next_page_token
        request = _export_request(symbol, interval, start, end, page_size)
        pages = _CandleColumns()
        while True:
            page = self._call(self.query.ExportCandles, request)
            pages.add(page)
            if not page.next_page_token:
                return pages.frame()
            request.page_token = page.next_page_token

    def latest_prices(self, symbols: Iterable[str]) -> pd.DataFrame:
        """The last price of each symbol: index symbol, columns price and time (UTC; the newest
        tick's, else the end of the newest candle, whose close it is). Symbols without data are
        left out and listed in `frame.attrs["missing_symbols"]`."""
        request = query_pb2.GetLatestPricesRequest(symbols=list(symbols))
        return _latest_frame(self._call(self.query.GetLatestPrices, request))

    def indicators(
        self,
        symbol: str,
        interval: str,
        indicators: Mapping[str, IndicatorParams],
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        limit: int = 0,
        time_zone: Optional[str] = None,
        session: Optional[str] = None,
    ) -> pd.DataFrame:
        """Indicator values by bar (UTC DatetimeIndex "time"), computed by the mesh with TA-Lib's
        definitions and cached. `indicators` maps a name to its parameters:
        `{"rsi": 14, "sma_50": None, "macd": (12, 26, 9), "bbands": (20, 2.0)}` (None: TA-Lib's
        defaults; a dict names IndicatorSpec fields). Columns as TA-Lib names its outputs:
        `rsi_14`, `sma_50`, `macd`, `macdsignal`, `macdhist`, `upperband`, `middleband`,
        `lowerband`, `slowk`, `slowd`. `limit`: only the last N bars (0: all);
        `frame.attrs["cache_hit"]` says whether the mesh answered from its cache. `interval`,
        `time_zone` and `session` as for `candles` (over resampled bars when not stored)."""
        request = _indicators_request(
            symbol, interval, indicators, start, end, limit, time_zone, session
        )
        return _indicators_frame(self._call(self.query.GetIndicators, request))

    def signals(
        self,
        symbols: Optional[Iterable[str]] = None,
        *,
        strategies: Optional[Iterable[Union[str, int]]] = None,
        actions: Optional[Iterable[Union[str, int]]] = None,
        start: TimeLike = None,
        end: TimeLike = None,
        min_confidence: float = 0.0,
        limit: Optional[int] = None,
    ) -> pd.DataFrame:
        """Stored signals, newest first, every page (or the first `limit`): index time (UTC);
        columns symbol, interval, strategy, action, confidence, price, indicators (a dict).
        Strategies as "ma_crossover", "rsi", "macd", "bollinger", "combined"; actions as "buy",
        "sell", "hold"."""
        request = _signals_request(symbols, strategies, actions, start, end, min_confidence, limit)
        rows: List[market_pb2.Signal] = []
        while limit is None or len(rows) < limit:
            page = self._call(self.query.GetSignals, request)
            rows.extend(page.signals)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        return _signals_frame(rows[:limit] if limit is not None else rows)

    def optimize_portfolio(
        self,
        symbols: Iterable[str],
        interval: str = "1d",
        *,
        objective: str = "min_variance",
        lookback_bars: int = 0,
        bounds: Optional[Mapping[str, Tuple[float, float]]] = None,
        risk_free_rate: float = 0.0,
    ) -> "pd.Series[float]":
        """Portfolio weights by symbol (a Series named "weight"; `attrs` holds expected_return,
        volatility, sharpe_ratio, observations and risk_contribution by symbol). `objective`:
        "min_variance", "max_sharpe" or "risk_parity"; `bounds`: {symbol: (min, max)}."""
        request = _optimize_request(symbols, interval, objective, lookback_bars, bounds, risk_free_rate)
        return _weights(self._call(self.computation.OptimizePortfolio, request))

    # -- live -----------------------------------------------------------------------------------

    def stream(
        self,
        symbols: Iterable[str],
        kinds: Optional[Iterable[str]] = None,
        resume_from: TimeLike = None,
        *,
        intervals: Optional[Iterable[str]] = None,
        reconnect_for: float = 30.0,
    ) -> Iterator[Event]:
        """Market events of `symbols` as they happen (`kinds`: "tick", "candle", "signal"; None:
        all), after the stored ones from `resume_from` if given (`event.historical`).

        When the stream breaks with UNAVAILABLE (the query service is down), RESOURCE_EXHAUSTED
        (this subscriber fell behind) or ends (with OK: the query service shut down for a
        restart), it resubscribes with `resume_from_time_us` at the oldest last-seen time per
        (symbol, kind) and drops events it already yielded (by event id): nothing missed, nothing
        twice. It gives up with `tickmesh.Unavailable` after `reconnect_for` seconds without
        getting through. Events whose time is before the stream's start are only replayed when
        `resume_from` covers them (resume works on the events' market times)."""
        state = _Resume(symbols, kinds, resume_from, intervals, reconnect_for)
        request = state.request
        while True:
            call = self.query.StreamMarketData(request, metadata=self._metadata)
            try:
                for response in call:
                    event = state.accept(response)
                    if event is not None:
                        yield event
                _time.sleep(_ENDED_PAUSE)
            except grpc.RpcError as e:
                _time.sleep(state.failed(e))
            finally:
                call.cancel()
            request = state.next_request()

    # -- writes ---------------------------------------------------------------------------------

    def _ingest(
        self,
        method: Callable[..., Any],
        batches: _Batches,
        progress: Union[bool, Callable[[int, int], None]],
    ) -> IngestSummary:
        report = _progress(progress, batches.rows)
        for start, stop in batches.ranges:
            batches.add(start, self._call(method, batches.make(start, stop)))
            report(stop)
        report(-1)
        return batches.summary

    def ingest_candles(
        self,
        df: pd.DataFrame,
        symbol: str,
        interval: str,
        *,
        source: str = "python",
        batch_rows: int = BATCH_ROWS,
        progress: Union[bool, Callable[[int, int], None]] = False,
    ) -> IngestSummary:
        """Stores the bars of `df` (columns open, high, low, close, volume in any case; times
        from its DatetimeIndex or a time / date column, naive = UTC) as closed candles, in
        batches of `batch_rows` (within the server's `ingestion.max_batch_rows`). Idempotent:
        sending the same frame again counts duplicates and changes nothing. `progress`: True for
        a progress bar on stderr (tqdm's if installed), or a callable(done, total)."""
        batches = _candle_batches(df, symbol, interval, source, batch_rows)
        return self._ingest(self.ingestion.IngestCandles, batches, progress)

    def ingest_ticks(
        self,
        df: pd.DataFrame,
        symbol: str,
        *,
        source: str = "python",
        batch_rows: int = BATCH_ROWS,
        progress: Union[bool, Callable[[int, int], None]] = False,
    ) -> IngestSummary:
        """Stores the trades of `df`: columns price, size (or volume), optional side ("buy" /
        "sell") and trade_id (else the row's position, as `tickmesh replay` numbers CSV lines);
        times as for `ingest_candles`. Batched and idempotent likewise."""
        batches = _tick_batches(df, symbol, source, batch_rows)
        return self._ingest(self.ingestion.IngestTickBatch, batches, progress)



class AsyncClient(_Channels):
    """The same client on grpc.aio: every call is a coroutine and `stream` an async iterator;
    use it as an async context manager (`async with tickmesh.AsyncClient(...) as client`)."""

    def __init__(
        self,
        target: str,
        api_key: Optional[str] = None,
        tls: Union[None, bool, grpc.ChannelCredentials] = None,
        timeout: Optional[float] = 30.0,
        *,
        ingestion: Optional[str] = None,
        computation: Optional[str] = None,
        service_config: Union[None, bool, str, Mapping[str, Any]] = None,
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        super().__init__(
            target, api_key, tls, timeout, ingestion, computation, service_config, options
        )

        def channel(addr: str) -> grpc.aio.Channel:
            if self._credentials is None:
                return grpc.aio.insecure_channel(addr, options=self._options)
            return grpc.aio.secure_channel(addr, self._credentials, options=self._options)

        self._channels = [channel(self.target), channel(self.ingestion_target), channel(self.computation_target)]
        self.query = query_pb2_grpc.QueryServiceStub(self._channels[0])
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self._channels[1])
        self.computation = computation_pb2_grpc.ComputationServiceStub(self._channels[2])

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def candles(
        self,
        symbol: str,
        interval: str,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        page_size: int = EXPORT_PAGE_ROWS,
        time_zone: Optional[str] = None,
        session: Optional[str] = None,
    ) -> pd.DataFrame:
        """As `Client.candles`."""
        if _convert.resampled(interval, time_zone, session):
            bars = _bars_request(symbol, interval, start, end, time_zone, session)
            rows: List[market_pb2.Candle] = []
            while True:
                got: query_pb2.GetCandlesResponse = await self._call(self.query.GetCandles, bars)
                rows.extend(got.candles)
                if not got.next_page_token:
                    return _bars_frame(rows)
                bars.page_token = got.next_page_token
        request = _export_request(symbol, interval, start, end, page_size)
        pages = _CandleColumns()
        while True:
            page: query_pb2.ExportCandlesResponse = await self._call(
                self.query.ExportCandles, request
            )
            pages.add(page)
            if not page.next_page_token:
                return pages.frame()
            request.page_token = page.next_page_token

    async def latest_prices(self, symbols: Iterable[str]) -> pd.DataFrame:
        """As `Client.latest_prices`."""
        request = query_pb2.GetLatestPricesRequest(symbols=list(symbols))
        return _latest_frame(await self._call(self.query.GetLatestPrices, request))

    async def indicators(
        self,
        symbol: str,
        interval: str,
        indicators: Mapping[str, IndicatorParams],
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        limit: int = 0,
        time_zone: Optional[str] = None,
        session: Optional[str] = None,
    ) -> pd.DataFrame:
        """As `Client.indicators`."""
        request = _indicators_request(
            symbol, interval, indicators, start, end, limit, time_zone, session
        )
        return _indicators_frame(await self._call(self.query.GetIndicators, request))

    async def signals(
        self,
        symbols: Optional[Iterable[str]] = None,
        *,
        strategies: Optional[Iterable[Union[str, int]]] = None,
        actions: Optional[Iterable[Union[str, int]]] = None,
        start: TimeLike = None,
        end: TimeLike = None,
        min_confidence: float = 0.0,
        limit: Optional[int] = None,
    ) -> pd.DataFrame:
        """As `Client.signals`."""
        request = _signals_request(symbols, strategies, actions, start, end, min_confidence, limit)
        rows: List[market_pb2.Signal] = []
        while limit is None or len(rows) < limit:
            page: query_pb2.GetSignalsResponse = await self._call(self.query.GetSignals, request)
            rows.extend(page.signals)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        return _signals_frame(rows[:limit] if limit is not None else rows)

    async def optimize_portfolio(
        self,
        symbols: Iterable[str],
        interval: str = "1d",
        *,
        objective: str = "min_variance",
        lookback_bars: int = 0,
        bounds: Optional[Mapping[str, Tuple[float, float]]] = None,
        risk_free_rate: float = 0.0,
    ) -> "pd.Series[float]":
        """As `Client.optimize_portfolio`."""
        request = _optimize_request(symbols, interval, objective, lookback_bars, bounds, risk_free_rate)
        return _weights(await self._call(self.computation.OptimizePortfolio, request))

    async def stream(
        self,
        symbols: Iterable[str],
        kinds: Optional[Iterable[str]] = None,
        resume_from: TimeLike = None,
        *,
        intervals: Optional[Iterable[str]] = None,
        reconnect_for: float = 30.0,
    ) -> AsyncIterator[Event]:
        """As `Client.stream`, for `async for`."""
        state = _Resume(symbols, kinds, resume_from, intervals, reconnect_for)
        request = state.request
        while True:
            call = self.query.StreamMarketData(request, metadata=self._metadata)
            try:
                async for response in call:  # type: ignore[attr-defined, unused-ignore]
                    event = state.accept(response)
                    if event is not None:
                        yield event
                await asyncio.sleep(_ENDED_PAUSE)
            except grpc.RpcError as e:
                await asyncio.sleep(state.failed(e))
            finally:
                call.cancel()
            request = state.next_request()

    async def _ingest(
        self,
        method: Callable[..., Any],
        batches: _Batches,
        progress: Union[bool, Callable[[int, int], None]],
    ) -> IngestSummary:
        report = _progress(progress, batches.rows)
        for start, stop in batches.ranges:
            batches.add(start, await self._call(method, batches.make(start, stop)))
            report(stop)
        report(-1)
        return batches.summary

    async def ingest_candles(
        self,
        df: pd.DataFrame,
        symbol: str,
        interval: str,
        *,
        source: str = "python",
        batch_rows: int = BATCH_ROWS,
        progress: Union[bool, Callable[[int, int], None]] = False,
    ) -> IngestSummary:
        """As `Client.ingest_candles`."""
        batches = _candle_batches(df, symbol, interval, source, batch_rows)
        return await self._ingest(self.ingestion.IngestCandles, batches, progress)

    async def ingest_ticks(
        self,
        df: pd.DataFrame,
        symbol: str,
        *,
        source: str = "python",
        batch_rows: int = BATCH_ROWS,
        progress: Union[bool, Callable[[int, int], None]] = False,
    ) -> IngestSummary:
        """As `Client.ingest_ticks`."""
        batches = _tick_batches(df, symbol, source, batch_rows)
        return await self._ingest(self.ingestion.IngestTickBatch, batches, progress)




def _progress(progress: Union[bool, Callable[[int, int], None]], total: int) -> Callable[[int], None]:
    """A callback taking rows done so far (-1: finished)."""
    if callable(progress):
        user = progress
        return lambda done: None if done < 0 else user(done, total)
    if not progress:
        return lambda done: None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, import-not-found, unused-ignore]

        bar = tqdm(total=total, unit="rows")
        state = {"done": 0}

        def update(done: int) -> None:
            if done < 0:
                bar.close()
                return
            bar.update(done - state["done"])
            state["done"] = done

        return update
    except ImportError:

        def line(done: int) -> None:
            if done < 0:
                sys.stderr.write("\n")
            else:
                sys.stderr.write(f"\r{done:,}/{total:,} rows")
            sys.stderr.flush()

        return line

