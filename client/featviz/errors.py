"""Typed exceptions for gRPC failures, so callers catch `Overloaded` rather than inspect codes.

The server explains a failure in the status message and, where it helps, in the standard
`google.rpc` details of the `grpc-status-details-bin` trailer: `BadRequest` field violations
for invalid input and `RetryInfo` for when to come back after RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"
_REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, as named by the server (e.g. ``channels[0]``)."""

    field: str
    description: str


class FeatvizError(Exception):
    """Base of every error the featviz server (or the network on the way) reports.

    Example::

        try:
            client.maximize("block9_conv1", 0)
        except featviz.FeatvizError as error:
            print(error.code.name, error.message)
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        request_id: str | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.request_id = request_id
        self.field_violations = field_violations
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(FeatvizError):
    """The request was rejected; `field_violations` names the offending fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(FeatvizError):
    """The bearer token is missing or wrong."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FeatvizError):
    """The caller is known but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Overloaded(FeatvizError):
    """RESOURCE_EXHAUSTED: the server's run slots and queue are full, or its device ran out of
    memory for a batch the run shared; `retry_delay` says when to come back (seconds, from
    `google.rpc.RetryInfo`). None: not a matter of time, e.g. a run too large for the device
    even alone."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(FeatvizError):
    """The server cannot be reached, is shutting down, or died during the call."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FeatvizError):
    """The call's timeout passed before the server finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(FeatvizError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class NotFound(FeatvizError):
    """The requested thing does not exist on the server."""

    code = grpc.StatusCode.NOT_FOUND


class Unimplemented(FeatvizError):
    """The server does not implement this call (an older or different server)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(FeatvizError):
    """The server failed; its log has the details under the error's `request_id`."""

    code = grpc.StatusCode.INTERNAL


class ChecksumMismatch(FeatvizError):
    """A download did not match the sha256 the server announced."""

    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[FeatvizError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        Overloaded,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        NotFound,
        Unimplemented,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> FeatvizError:
    """The typed exception for a failed call (sync `grpc.Call` or `grpc.aio.AioRpcError`)."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or code.name.lower()  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    request_id = _request_id(error, trailers)
    violations, retry_delay = _parse_details(trailers.get(_DETAILS_KEY))
    if code == grpc.StatusCode.INTERNAL and "RST_STREAM" in message:
        # A proxy (nginx) resets the stream when the replica behind it dies: the run was lost,
        # not refused, so treat it like an unreachable replica and let the retry policy resubmit.
        code = grpc.StatusCode.UNAVAILABLE
    cls = _BY_CODE.get(code, FeatvizError)
    return cls(
        message,
        code=code,
        request_id=request_id,
        field_violations=violations,
        retry_delay=retry_delay,
    )


def _request_id(error: grpc.RpcError, trailers: dict) -> str | None:
    """The server's `x-request-id`, from the trailing metadata or else the initial metadata
    (the featviz server sends it in both)."""
    initial = getattr(error, "initial_metadata", None)
    headers = dict((initial() if callable(initial) else None) or ())
    request_id = trailers.get(_REQUEST_ID_KEY) or headers.get(_REQUEST_ID_KEY)
    return request_id if isinstance(request_id, str) else None


def _parse_details(blob: str | bytes | None) -> tuple[tuple[FieldViolation, ...], float | None]:
    """Field violations and retry delay from a serialized `google.rpc.Status`, if any."""
    try:
        status = status_pb2.Status.FromString(blob) if isinstance(blob, bytes) else None
    except DecodeError:
        status = None
    if status is None:
        return (), None
    violations: list[FieldViolation] = []
    retry_delay = None
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(bad_request):
            violations += [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
        elif detail.Unpack(retry_info):
            retry_delay = retry_info.retry_delay.ToTimedelta().total_seconds()
    return tuple(violations), retry_delay
