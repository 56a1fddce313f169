"""Typed exceptions for tickmesh's gRPC statuses, with the details the server attaches
(`google.rpc.BadRequest` field violations, `google.rpc.RetryInfo` delays)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Type

import grpc
# googleapis-common-protos and grpcio-status ship no type information.
from google.rpc import error_details_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "TickmeshError",
    "InvalidArgument",
    "RateLimited",
    "Unavailable",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "ResourceExhausted",
    "DeadlineExceeded",
    "FieldViolation",
    "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: `field` as the server names it (`symbol`, `symbols[2]`)."""

    field: str
    description: str


class TickmeshError(Exception):
    """A call that failed; `code` is the gRPC status code, `message` the server's text."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field_violations: Optional[List[FieldViolation]] = None,
        retry_delay: Optional[float] = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations: List[FieldViolation] = list(field_violations or [])
        # Seconds to wait before retrying, from the server's google.rpc.RetryInfo (None: none sent).
        self.retry_delay = retry_delay


class InvalidArgument(TickmeshError):
    """The request was wrong; `field_violations` says which fields and why."""

    @property
    def fields(self) -> List[str]:
        return [v.field for v in self.field_violations]


class ResourceExhausted(TickmeshError):
    """A limit was hit (a stream fell too far behind, too many streams open, ...)."""


class RateLimited(ResourceExhausted):
    """The caller is over its rate limit or the server is shedding load; retry after
    `retry_delay` seconds."""


class Unavailable(TickmeshError):
    """The service could not be reached or refused for now (retried already where the method is
    idempotent)."""


class Unauthenticated(TickmeshError):
    """No API key, or one the mesh does not know."""


class PermissionDenied(TickmeshError):
    """The API key's scope does not cover the method."""


class NotFound(TickmeshError):
    """What was asked for does not exist."""


class DeadlineExceeded(TickmeshError):
    """The call's timeout passed."""


_BY_CODE: Dict[grpc.StatusCode, Type[TickmeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _details(error: grpc.RpcError) -> "tuple[List[FieldViolation], Optional[float]]":
    violations: List[FieldViolation] = []
    delay: Optional[float] = None
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # grpc-status-details-bin disagrees with the status: ignore the details
        status = None
    if status is None:
        return violations, delay
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return violations, delay


def from_rpc_error(error: grpc.RpcError) -> TickmeshError:
    """The typed exception for a failed call (a `RateLimited` when RESOURCE_EXHAUSTED comes with
    a RetryInfo)."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    violations, delay = _details(error)
    cls = _BY_CODE.get(code, TickmeshError)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
        cls = RateLimited
    return cls(code, message, field_violations=violations, retry_delay=delay)
