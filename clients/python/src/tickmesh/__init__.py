"""tickmesh's Python SDK: the mesh's market data as pandas DataFrames.

    import tickmesh
    with tickmesh.Client("127.0.0.1:7404") as client:
        bars = client.candles("GOOG", "1d")

The generated messages and stubs are `tickmesh.v1.*_pb2` / `*_pb2_grpc` (from proto/ by
`buf generate`); `tickmesh.default_service_config()` is the retry config the client applies.
"""

from tickmesh.client import (
    AsyncClient,
    Client,
    Event,
    IndicatorParams,
    IngestSummary,
    RejectedRow,
    default_service_config,
    peer_addresses,
    to_polars,
)
from tickmesh.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    TickmeshError,
    Unauthenticated,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "Event",
    "FieldViolation",
    "IndicatorParams",
    "IngestSummary",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RejectedRow",
    "ResourceExhausted",
    "TickmeshError",
    "Unauthenticated",
    "Unavailable",
    "default_service_config",
    "peer_addresses",
    "to_polars",
]
