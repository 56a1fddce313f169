"""A query client built from the generated Python stubs that ship in the tickmesh package
(clients/python): pages through GetCandles and reads StreamMarketData from a resume point, then prints what it saw as
JSON. Used by the end-to-end test, as any Python user of tickmesh would call it."""

import importlib
import json
import sys

import grpc



def main():
    addr, symbol, resume_from, stream_count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    query_pb2 = importlib.import_module("tickmesh.v1.query_pb2")
    market_pb2 = importlib.import_module("tickmesh.v1.market_pb2")
    query_grpc = importlib.import_module("tickmesh.v1.query_pb2_grpc")
    stub = query_grpc.QueryServiceStub(grpc.insecure_channel(addr))

    times, token, pages = [], "", 0
    while True:
        page = stub.GetCandles(
            query_pb2.GetCandlesRequest(
                symbol=symbol, interval=market_pb2.INTERVAL_1D, page_size=250, page_token=token
            ),
            timeout=30,
        )
        times.extend(c.open_time_us for c in page.candles)
        pages += 1
        token = page.next_page_token
        if not token:
            break

    stream = stub.StreamMarketData(
        query_pb2.StreamMarketDataRequest(
            symbols=[symbol],
            kinds=[query_pb2.EVENT_KIND_CANDLE],
            intervals=[market_pb2.INTERVAL_1D],
            resume_from_time_us=resume_from,
        ),
        timeout=60,
    )
    streamed = []
    for item in stream:
        streamed.append(item.event.candle.open_time_us)
        if len(streamed) == stream_count:
            stream.cancel()
            break
    json.dump({"pages": pages, "candles": times, "streamed": streamed}, sys.stdout)


if __name__ == "__main__":
    main()
