"""The SDK against a live mesh (services/tickmesh/tests/it/sdk_python.rs starts `tickmesh up` and
runs this with the addresses in TICKMESH_QUERY / TICKMESH_INGESTION / TICKMESH_COMPUTATION and
the GOOG daily CSV of the `backtesting` package in GOOG_CSV)."""

from __future__ import annotations

import asyncio
import json
import time
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest

import tickmesh


@pytest.fixture(scope="module")
def client() -> Iterator[tickmesh.Client]:
    with tickmesh.Client(
        os.environ["TICKMESH_QUERY"],
        ingestion=os.environ["TICKMESH_INGESTION"],
        computation=os.environ["TICKMESH_COMPUTATION"],
        timeout=30,
    ) as c:
        yield c


@pytest.fixture(scope="module")
def goog() -> pd.DataFrame:
    """The CSV as a user reads it: Date index (UTC), lower-case columns."""
    df = pd.read_csv(os.environ["GOOG_CSV"], index_col=0, parse_dates=True)
    df.index = pd.DatetimeIndex(df.index, name="time").tz_localize("UTC")
    df.columns = [c.lower() for c in df.columns]
    return df.astype("float64")


@pytest.fixture(scope="module")
def ingested(client: tickmesh.Client, goog: pd.DataFrame) -> tickmesh.IngestSummary:
    # Batches of 500: the 2,148 bars take 5 calls, so batching and row offsets are exercised.
    return client.ingest_candles(goog, "GOOG", "1d", batch_rows=500)


def test_goog_daily_bars_round_trip_equal_to_the_csv(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    assert ingested.stored == len(goog)
    assert ingested.batches == -(-len(goog) // 500)
    assert ingested.rejected_count == 0 and ingested.rejected == []
    # Pages of 300 rows: paging is the client's job, every row must come back once.
    bars = client.candles("GOOG", "1d", page_size=300)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert isinstance(bars.index, pd.DatetimeIndex) and str(bars.index.tz) == "UTC"
    pd.testing.assert_frame_equal(bars, goog, check_freq=False)
    # The default (server's maximum page) gives the same frame.
    pd.testing.assert_frame_equal(client.candles("GOOG", "1d"), bars)


def test_candles_range_takes_datetimes_timestamps_and_iso_strings(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    want = goog.loc["2010-01-01":"2010-12-31"]
    got = client.candles("GOOG", "1d", start="2010-01-01", end=pd.Timestamp("2011-01-01", tz="UTC"))
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    assert client.candles("GOOG", "1d", start="2030-01-01").empty


def test_bar_sizes_not_stored_are_resampled_equal_to_pandas(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    ohlcv = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    # Weeks from Monday and calendar months, labelled with their first day; no empty periods.
    for bar, rule in (("1w", "W-MON"), ("1mo", "MS")):
        want = goog.resample(rule, label="left", closed="left").agg(ohlcv).dropna()
        got = client.candles("GOOG", bar)
        assert len(got) == len(want) > 100, bar
        pd.testing.assert_frame_equal(got, want, check_freq=False, check_names=False)
    # A range selects the stored bars; indicators over resampled bars take the same sizes.
    weekly = client.candles("GOOG", "1w", start="2010-01-04", end="2011-01-03")
    assert weekly.index[0] == pd.Timestamp("2010-01-04", tz="UTC") and len(weekly) == 52
    rsi = client.indicators("GOOG", "1w", {"rsi": 14})
    assert list(rsi.columns) == ["rsi_14"] and len(rsi) == len(client.candles("GOOG", "1w"))


def test_to_polars_equals_polars_reading_the_csv(
    client: tickmesh.Client, ingested: tickmesh.IngestSummary
) -> None:
    pl = pytest.importorskip("polars")
    got = tickmesh.to_polars(client.candles("GOOG", "1d"))
    assert got.columns == ["time", "open", "high", "low", "close", "volume"]
    assert got.schema["time"] == pl.Datetime("us", "UTC")
    # polars' own CSV reader on the same file: the outside reference.
    want = (
        pl.read_csv(os.environ["GOOG_CSV"], try_parse_dates=True)
        .rename({"": "time", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"})
        .with_columns(
            pl.col("time").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            pl.col("open", "high", "low", "close", "volume").cast(pl.Float64),
        )
    )
    assert got.equals(want), (got.head(), want.head())


def test_ingesting_the_same_frame_again_counts_duplicates(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    again = client.ingest_candles(goog.iloc[:700], "GOOG", "1d")
    assert (again.stored, again.duplicates, again.rejected_count) == (0, 700, 0)


def test_rejected_rows_are_reported_with_their_position_in_the_frame(client: tickmesh.Client) -> None:
    times = pd.date_range("2020-01-01", periods=6, freq="D", tz="UTC")
    df = pd.DataFrame(
        {"Open": 10.0, "High": 11.0, "Low": 9.0, "Close": 10.5, "Volume": 100.0}, index=times
    )
    df.iloc[4, 0] = float("nan")  # row 4 (second batch of 3): open is NaN
    summary = client.ingest_candles(df, "REJ", "1d", batch_rows=3)
    assert summary.stored == 5 and summary.rejected_count == 1, summary
    assert [(r.row, r.field) for r in summary.rejected] == [(4, "open")], summary


def test_latest_prices(client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary) -> None:
    prices = client.latest_prices(["GOOG", "NODATA"])
    assert list(prices.index) == ["GOOG"]
    assert prices.loc["GOOG", "price"] == goog["close"].iloc[-1]
    # No ticks, so the close of the newest bar: its time is the bar's end.
    assert prices.loc["GOOG", "time"] == goog.index[-1] + pd.Timedelta(days=1)
    assert prices.attrs["missing_symbols"] == ["NODATA"]


def test_indicators_equal_talib_with_talib_column_names(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    talib = pytest.importorskip("talib")
    got = client.indicators("GOOG", "1d", {"rsi": 14, "macd": (12, 26, 9), "sma_50": None})
    assert list(got.columns) == ["rsi_14", "macd", "macdsignal", "macdhist", "sma_50"]
    close = goog["close"].to_numpy()
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    want = pd.DataFrame(
        {
            "rsi_14": talib.RSI(close, 14),
            "macd": macd,
            "macdsignal": signal,
            "macdhist": hist,
            "sma_50": talib.SMA(close, 50),
        },
        index=goog.index,
    )
    pd.testing.assert_frame_equal(got, want, check_freq=False, rtol=1e-9, atol=1e-9)
    # Asked again: the same frame, from the cache.
    again = client.indicators("GOOG", "1d", {"rsi": 14, "macd": (12, 26, 9), "sma_50": None})
    assert again.attrs["cache_hit"] is True
    pd.testing.assert_frame_equal(again, got)


def test_a_bad_symbol_is_invalid_argument_naming_the_field(client: tickmesh.Client) -> None:
    with pytest.raises(tickmesh.InvalidArgument) as raised:
        client.candles("not a symbol!", "1d")
    assert raised.value.fields == ["symbol"], raised.value.field_violations
    assert raised.value.field_violations[0].description
    with pytest.raises(tickmesh.InvalidArgument) as raised:
        client.latest_prices(["GOOG", "bad symbol"])
    assert raised.value.fields == ["symbols[1]"], raised.value.field_violations
    with pytest.raises(ValueError, match="unknown interval"):
        client.candles("GOOG", "7y")


def test_an_unreachable_service_is_unavailable() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once. The shipped
    # service config retries GetCandles (NO_SIDE_EFFECTS) ~4 times with backoff, then gives up.
    with tickmesh.Client("127.0.0.1:1", ingestion="127.0.0.1:1", computation="127.0.0.1:1", timeout=20) as c:
        with pytest.raises(tickmesh.Unavailable):
            c.candles("GOOG", "1d")


def test_the_shipped_service_config_retries_every_idempotent_method() -> None:
    config = json.loads(tickmesh.default_service_config())
    shipped = Path(__file__).resolve().parents[2] / "service_config.json"
    assert config == json.loads(shipped.read_text())
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert ("tickmesh.v1.QueryService", "GetCandles") in names
    assert ("tickmesh.v1.IngestionService", "IngestCandles") in names
    # Streams and UpdateConfig declare no idempotency: never retried.
    assert ("tickmesh.v1.QueryService", "StreamMarketData") not in names
    assert ("tickmesh.v1.ConfigService", "UpdateConfig") not in names
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_stream_replays_stored_candles_then_goes_live(client: tickmesh.Client, goog: pd.DataFrame) -> None:
    # Its own symbol, so the GOOG frame the other tests compare stays the CSV.
    client.ingest_candles(goog.iloc[-3:], "STRM", "1d")
    events = client.stream(["STRM"], kinds=["candle"], resume_from=goog.index[-3])
    got = [next(events) for _ in range(3)]
    assert [e.time for e in got] == list(goog.index[-3:])
    assert all(e.historical and e.kind == "candle" and e.symbol == "STRM" for e in got)
    # A live bar after them.
    new_time = goog.index[-1] + pd.Timedelta(days=1)
    bar = pd.DataFrame(
        {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0},
        index=pd.DatetimeIndex([new_time]),
    )
    client.ingest_candles(bar, "STRM", "1d")
    live = next(events)
    assert (live.time, live.historical) == (new_time, False)
    assert isinstance(live.payload, tickmesh.v1.market_pb2.Candle) and live.payload.close == 1.5
    events.close()  # type: ignore[attr-defined]


def test_async_client_gives_the_same_frames(client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary) -> None:
    async def main() -> None:
        async with tickmesh.AsyncClient(
            os.environ["TICKMESH_QUERY"],
            ingestion=os.environ["TICKMESH_INGESTION"],
            computation=os.environ["TICKMESH_COMPUTATION"],
        ) as aclient:
            bars = await aclient.candles("GOOG", "1d", page_size=1000)
            pd.testing.assert_frame_equal(bars, goog, check_freq=False)
            pd.testing.assert_frame_equal(
                await aclient.latest_prices(["GOOG"]), client.latest_prices(["GOOG"])
            )
            summary = await aclient.ingest_candles(goog.iloc[:10], "GOOG", "1d")
            assert (summary.stored, summary.duplicates) == (0, 10)
            with pytest.raises(tickmesh.InvalidArgument) as raised:
                await aclient.candles("bad symbol", "1d")
            assert raised.value.fields == ["symbol"]
            got = []
            async for event in aclient.stream(["GOOG"], kinds=["candle"], resume_from=goog.index[-2]):
                got.append(event.time)
                if len(got) == 2:
                    break
            assert got == list(goog.index[-2:])

    asyncio.run(main())


def test_bbands_columns_equal_talib_and_stoch_is_named_like_talib(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    talib = pytest.importorskip("talib")
    got = client.indicators("GOOG", "1d", {"bbands": (20, 2.0), "stoch": (5, 3, 3)}, limit=200)
    assert list(got.columns) == ["upperband", "middleband", "lowerband", "slowk", "slowd"]
    assert len(got) == 200 and got.index[-1] == goog.index[-1]
    upper, middle, lower = talib.BBANDS(goog["close"].to_numpy(), 20, 2.0, 2.0)
    want = pd.DataFrame(
        {"upperband": upper, "middleband": middle, "lowerband": lower}, index=goog.index
    ).iloc[-200:]
    pd.testing.assert_frame_equal(got[want.columns], want, check_freq=False, rtol=1e-9, atol=1e-9)
    assert got[["slowk", "slowd"]].notna().all().all()


def test_signals_from_the_ingested_bars_newest_first(
    client: tickmesh.Client, ingested: tickmesh.IngestSummary
) -> None:
    # The computation service makes them from the bus after the candles were committed: poll.
    # 20 s: it takes well under a second on an idle machine; a loaded 2-core CI box is slower.
    deadline = time.monotonic() + 20
    while (signals := client.signals(["GOOG"], limit=5)).empty:
        assert time.monotonic() < deadline, "no signal for GOOG in 20 s"
        time.sleep(0.1)
    assert list(signals.columns) == [
        "symbol", "interval", "strategy", "action", "confidence", "price", "indicators"
    ]
    assert 1 <= len(signals) <= 5
    assert signals.index.is_monotonic_decreasing
    assert set(signals["symbol"]) == {"GOOG"} and set(signals["interval"]) == {"1d"}
    assert set(signals["action"]) <= {"buy", "sell", "hold"}
    assert signals["confidence"].between(0, 1).all()


def test_ingest_ticks_then_latest_price_is_the_last_trade(client: tickmesh.Client) -> None:
    times = pd.to_datetime(["2024-01-02 14:30:00", "2024-01-02 14:30:01", "2024-01-02 14:30:02"])
    ticks = pd.DataFrame({"Price": [101.5, 101.6, 101.4], "Size": [10.0, 3.0, 1.0], "side": ["buy", "sell", "b"]}, index=times)
    first = client.ingest_ticks(ticks, "TCK", batch_rows=2)
    assert (first.stored, first.duplicates, first.batches) == (3, 0, 2), first
    again = client.ingest_ticks(ticks, "TCK")
    assert (again.stored, again.duplicates) == (0, 3), again
    prices = client.latest_prices(["TCK"])
    assert prices.loc["TCK", "price"] == 101.4
    assert prices.loc["TCK", "time"] == pd.Timestamp("2024-01-02 14:30:02", tz="UTC")


def test_optimize_portfolio_weights_sum_to_one(
    client: tickmesh.Client, goog: pd.DataFrame, ingested: tickmesh.IngestSummary
) -> None:
    # A second asset: GOOG's bars times a seeded random walk (not collinear with GOOG).
    walk = np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.01, len(goog))))
    other = goog.mul(walk, axis=0).assign(volume=goog["volume"])
    client.ingest_candles(other, "PF2", "1d")
    weights = client.optimize_portfolio(["GOOG", "PF2"], "1d", objective="min_variance", lookback_bars=250)
    assert list(weights.index) == ["GOOG", "PF2"]
    assert weights.sum() == pytest.approx(1.0)
    assert ((weights >= 0) & (weights <= 1)).all()
    assert weights.attrs["observations"] == 250
