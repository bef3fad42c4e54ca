"""Responses the gateway writes itself: JSON errors, static `respond:` answers, 100-continue.

Status lines and the JSON error framing are precomputed bytes; building an error costs one
orjson call and a join.
"""
from __future__ import annotations

from http import HTTPStatus

import orjson

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {499: "Client Closed Request"}.get(status, "Unknown")


STATUS_LINES = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code).encode())
    for code in range(100, 600)
}

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    410: "gone",
    413: "payload_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    431: "header_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
    505: "version_not_supported",
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


def error_body(status: int, code: str, message: str, request_id: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"status": status, "code": code, "message": message, "request_id": request_id}}
    )


def build_response(status: int, headers, body: bytes, *, close: bool, head_only: bool = False) -> bytes:
    """A complete response with a Content-Length body. `headers`: iterable of (name, value)
    bytes pairs (lower-case names)."""
    parts = [status_line(status)]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only and body:
        parts.append(body)
    return b"".join(parts)
