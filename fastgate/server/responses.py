"""Responses the gateway writes itself: JSON errors, static `respond:` answers, 100-continue.

Status lines are precomputed bytes; building an error costs one orjson call and a join. The
error codes and the JSON error body live in fastgate/errors.py (shared with the request
parser and the admin listener) and are re-exported here.
"""
from __future__ import annotations

from http import HTTPStatus

from fastgate.errors import ERROR_CODES, error_body  # noqa: F401  (the one error table)

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


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


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
