"""A caching-service client built from the generated Python stubs that ship in the tickmesh
package (clients/python). Gets one key and prints the typed value as JSON, without knowing how the service stores it.
Used by the polyglot test, as any Python user of tickmesh would call it."""

import importlib
import json
import sys

import grpc
from google.protobuf import json_format



def main():
    addr, namespace, key = sys.argv[1], sys.argv[2], sys.argv[3]
    caching_pb2 = importlib.import_module("tickmesh.v1.caching_pb2")
    caching_grpc = importlib.import_module("tickmesh.v1.caching_pb2_grpc")
    stub = caching_grpc.CachingServiceStub(grpc.insecure_channel(addr))
    got = stub.Get(caching_pb2.GetRequest(namespace=namespace, key=key), timeout=30)
    kind = got.typed.WhichOneof("kind")
    value = getattr(got.typed, kind) if kind else None
    if isinstance(value, bytes):  # opaque: the caller's own format
        value = value.hex()
    elif value is not None:
        value = json_format.MessageToDict(value)
    print(
        json.dumps(
            {
                "found": got.found,
                "kind": kind,
                "value": value,
                "legacy_bytes": len(got.value),
            }
        )
    )


if __name__ == "__main__":
    main()
