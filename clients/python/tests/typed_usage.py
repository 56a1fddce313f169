"""A user's script, type-checked with `mypy --strict` in the tests (never run there): every call
of the package, so its annotations and the generated stubs stay usable from strict code."""

from __future__ import annotations

import datetime as dt

import pandas as pd

import tickmesh
from tickmesh.v1 import market_pb2, query_pb2


def main() -> None:
    with tickmesh.Client("127.0.0.1:7404", api_key=None, timeout=10.0) as client:
        bars: pd.DataFrame = client.candles("GOOG", "1d", start=dt.datetime(2010, 1, 1), end="2011-01-01")
        closes: pd.Series[float] = bars["close"]
        print(closes.mean())
        prices: pd.DataFrame = client.latest_prices(["GOOG", "AAPL"])
        ind: pd.DataFrame = client.indicators("GOOG", "1d", {"rsi": 14, "macd": (12, 26, 9)})
        sig: pd.DataFrame = client.signals(["GOOG"], strategies=["rsi"], limit=10)
        weights: pd.Series[float] = client.optimize_portfolio(["GOOG", "AAPL"], objective="max_sharpe")
        summary: tickmesh.IngestSummary = client.ingest_candles(bars, "GOOG2", "1d")
        stored: int = summary.stored + summary.duplicates
        print(prices, ind, sig, weights, stored, [r.field for r in summary.rejected])
        for event in client.stream(["GOOG"], kinds=["candle", "tick"], resume_from="2013-01-01"):
            when: pd.Timestamp = event.time
            if isinstance(event.payload, market_pb2.Candle):
                close: float = event.payload.close
                print(when, close)
            break
        # The generated stubs are typed too.
        page: query_pb2.GetCandlesResponse = client.query.GetCandles(
            query_pb2.GetCandlesRequest(symbol="GOOG", interval=market_pb2.INTERVAL_1D)
        )
        print(len(page.candles))
    try:
        tickmesh.Client("127.0.0.1:7404").candles("", "1d")
    except tickmesh.InvalidArgument as e:
        fields: list[str] = e.fields
        print(fields, [v.description for v in e.field_violations])
    except tickmesh.RateLimited as e:
        delay: float | None = e.retry_delay
        print(delay)
    except (tickmesh.Unavailable, tickmesh.Unauthenticated, tickmesh.PermissionDenied) as e:
        print(e.code, e.message)


async def main_async() -> None:
    async with tickmesh.AsyncClient("127.0.0.1:7404", ingestion="127.0.0.1:7401", computation="127.0.0.1:7402") as client:
        bars: pd.DataFrame = await client.candles("GOOG", "1d")
        summary: tickmesh.IngestSummary = await client.ingest_candles(bars, "GOOG2", "1d")
        print(summary.batches, await client.indicators("GOOG", "1d", {"rsi": 14}))
        async for event in client.stream(["GOOG"], kinds=["tick"]):
            print(event.symbol, event.time_us)
            break


if __name__ == "__main__":
    main()
