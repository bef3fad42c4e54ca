"""The errors FastGate answers itself, in one place: HTTP status -> (code, default message), and
the JSON body they travel in (SPEC "HTTP behaviour"):

    {"error": {"status": 429, "code": "rate_limited", "message": "...", "request_id": "..."}}

The table gives a status's default code: what the request parser's refusals carry
(fastgate._core.http reads this table), what the admin listener answers, and the proxy's code
for a local answer that names none. Answers with a more precise reason pass their own code
with the same status: ``overloaded`` (503, with Retry-After), ``no_healthy_upstream`` and
``idp_unavailable`` (503), ``waf_blocked`` (403), ``invalid_request`` and ``model_not_found``
(400). Codes are part of the user contract: never rename one.
"""
from __future__ import annotations

from typing import NamedTuple

import orjson

__all__ = ("ERRORS", "ERROR_CODES", "ErrorKind", "default_message", "error_body", "error_code")


class ErrorKind(NamedTuple):
    code: str
    message: str


ERRORS: dict[int, ErrorKind] = {
    400: ErrorKind("bad_request", "malformed request"),
    401: ErrorKind("unauthorized", "missing or invalid credentials"),
    402: ErrorKind("payment_required", "budget spent"),
    403: ErrorKind("forbidden", "not allowed"),
    404: ErrorKind("not_found", "not found"),
    405: ErrorKind("method_not_allowed", "method not allowed"),
    408: ErrorKind("request_timeout", "request not received in time"),
    410: ErrorKind("gone", "gone"),
    413: ErrorKind("payload_too_large", "request body too large"),
    414: ErrorKind("uri_too_long", "request line too long"),
    429: ErrorKind("rate_limited", "rate limit exceeded; retry later"),
    431: ErrorKind("header_too_large", "header section too large"),
    500: ErrorKind("internal_error", "internal error"),
    501: ErrorKind("not_implemented", "not implemented"),
    502: ErrorKind("bad_gateway", "upstream failed"),
    503: ErrorKind("service_unavailable", "service unavailable"),
    504: ErrorKind("gateway_timeout", "upstream timed out"),
    505: ErrorKind("version_not_supported", "HTTP version not supported"),
}

ERROR_CODES: dict[int, str] = {status: kind.code for status, kind in ERRORS.items()}

_UNKNOWN = ErrorKind("error", "error")


def error_code(status: int) -> str:
    return ERRORS.get(status, _UNKNOWN).code


def default_message(status: int) -> str:
    return ERRORS.get(status, _UNKNOWN).message


def error_body(status: int, code: str, message: str, request_id: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"status": status, "code": code, "message": message, "request_id": request_id}}
    )
