"""A subscriber for services/tickmesh/tests/it/sdk_python.rs: follows the candles of a symbol
through `Client.stream` (which resumes across restarts of the mesh) and prints one JSON line per
event, flushed, until it has `count` events.

Usage: stream_resume.py QUERY_ADDR SYMBOL RESUME_FROM_US COUNT
"""

import json
import sys

import tickmesh


def main() -> int:
    target, symbol, resume_from, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # The test's addresses are all the query port: this subscriber only streams.
    with tickmesh.Client(target, ingestion=target, computation=target) as client:
        print(json.dumps({"ready": True}), flush=True)
        events = client.stream([symbol], kinds=["candle"], resume_from=resume_from, reconnect_for=30)
        for n, event in enumerate(events, start=1):
            print(
                json.dumps(
                    {"id": event.event_id, "time_us": event.time_us, "historical": event.historical}
                ),
                flush=True,
            )
            if n == count:
                return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
