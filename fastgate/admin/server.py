"""The admin listener: health, readiness, Prometheus metrics and the (redacted) config.

Off the hot path, so it is a small asyncio-streams server with its own strict HTTP/1.1
handling: one request per connection (``Connection: close``), a 16 KiB head limit, a bounded
body, deadlines on every read and write, and a cap on concurrent connections. It trusts
nothing it reads: any framing it does not fully understand is a 400 (or 501 for a transfer
coding) and the connection is closed.

Only ``/healthz`` and ``/readyz`` are open; everything else, including unknown paths (so
they cannot be probed), needs ``Authorization: Bearer <admin.token>``.
"""
from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import re

import orjson

from fastgate.observe.ids import new_request_id
from fastgate.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fastgate.observe.metrics import render

__all__ = ["AdminServer", "redact_config", "REDACTED"]

_log = logging.getLogger("fastgate.admin")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024     # a config document; anything larger is not one
MAX_HEADERS = 100
MAX_CONNECTIONS = 64
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
REDACTED = "***"
_OPEN_PATHS = frozenset(("/healthz", "/readyz"))

_TCHAR = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# origin-form target: visible ASCII, no spaces, starting with "/" (RFC 9112 3.2.1)
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(rb"[0-9]{1,18}")

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
            414: "URI Too Long", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}

_ERROR_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                414: "uri_too_long", 431: "headers_too_large", 500: "internal_error",
                501: "not_implemented", 503: "unavailable", 505: "http_version_not_supported"}

# Keys whose values are secrets wherever they appear in the config document.
_SECRET_KEYS = frozenset((
    "token", "secret", "client_secret", "api_key", "password", "passwd", "private_key",
    "access_token", "refresh_token", "api_secret", "secret_key",
    # header names in transforms (set_headers etc.) that carry credentials to an upstream
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
))
# Keys whose value is a list of secrets: every element is replaced.
_SECRET_LIST_KEYS = frozenset(("api_keys",))
_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/@?#]*)@")


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class _Request:
    __slots__ = ("method", "path", "query", "headers", "body")


def redact_config(value):
    """A deep copy of a config document with every secret replaced by ``***``.

    Secrets: values of keys named like a credential (``_SECRET_KEYS``, case-insensitive, or
    ending in ``_token``/``_secret``/``_password``), every element of ``api_keys``, and the
    user-info part of any URL (``redis://user:pw@host``).
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            lk = k.lower() if isinstance(k, str) else k
            if isinstance(lk, str) and (lk in _SECRET_LIST_KEYS) and isinstance(v, (list, tuple)):
                out[k] = [REDACTED for _ in v]
            elif isinstance(lk, str) and _is_secret_key(lk) and v is not None \
                    and not isinstance(v, (dict, list, tuple, bool)):
                out[k] = REDACTED
            else:
                out[k] = redact_config(v)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    if isinstance(value, str) and "@" in value:
        return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", value, count=1)
    return value


def _is_secret_key(lk: str) -> bool:
    return (lk in _SECRET_KEYS or lk in _SECRET_LIST_KEYS or lk.endswith("_token")
            or lk.endswith("_secret") or lk.endswith("_password") or lk.endswith("_api_key"))


def _json_error(status: int, message: str, request_id: str) -> bytes:
    return orjson.dumps({"error": {"status": status, "code": _ERROR_CODES.get(status, "error"),
                                   "message": message, "request_id": request_id}})


class AdminServer:
    """The admin HTTP listener.

    ``metrics_source()`` returns the (merged) metrics snapshot to render, or an awaitable of
    it (the supervisor gathers worker snapshots asynchronously). ``config_getter()`` returns
    the running ``Config`` (its ``raw`` document is shown) or a plain dict. ``ready_getter()``
    is False while draining, which turns /readyz into a 503.
    """

    def __init__(self, *, host, port, token, metrics_source, config_getter, ready_getter):
        self.host = host
        self.port = port
        # An empty token would make compare_digest(b"", b"") succeed: treat it as "nobody".
        self._token = token.encode("utf-8") if token else None
        self._metrics_source = metrics_source
        self._config_getter = config_getter
        self._ready_getter = ready_getter
        self._server = None
        self._tasks: set = set()
        self.sockets = ()

    @property
    def address(self):
        """(host, port) actually bound (port resolved when 0 was asked for)."""
        if not self.sockets:
            return None
        return self.sockets[0].getsockname()[:2]

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port,
            limit=MAX_HEAD_BYTES, reuse_address=True, backlog=128)
        self.sockets = tuple(self._server.sockets)
        if self.port == 0 and self.sockets:
            self.port = self.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # -- connection handling ------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()   # close(): do not wait for a slow peer
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader, writer) -> None:
        request_id = new_request_id()
        req = None
        try:
            try:
                async with asyncio.timeout(HEAD_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    return   # connected and left without a byte: nothing to answer
                raise _HttpError(400, "incomplete request head")
            except asyncio.LimitOverrunError:
                raise _HttpError(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
            except TimeoutError:
                raise _HttpError(408, "request head not received in time")
            req = _parse_head(head)
            if req.path not in _OPEN_PATHS:
                # before reading any body: strangers get no buffer space
                self._authorize(req)
            req.body = await _read_body(reader, req)
            status, headers, body = await self._dispatch(req)
        except _HttpError as err:
            status, headers = err.status, list(err.headers)
            headers.append((b"content-type", b"application/json"))
            body = _json_error(err.status, err.message, request_id)
        except ConnectionError:
            raise
        except Exception:   # a bug or a failing getter must not kill the listener
            _log.exception("admin %s %s failed", getattr(req, "method", "?"),
                           getattr(req, "path", "?"))
            status, headers = 500, [(b"content-type", b"application/json")]
            body = _json_error(500, "internal error", request_id)
        await self._respond(writer, status, headers, body, request_id,
                            head_only=req is not None and req.method == "HEAD")

    async def _respond(self, writer, status, headers, body, request_id, head_only=False):
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Unknown").encode())]
        for name, value in headers:
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"x-request-id: " + request_id.encode("ascii") + b"\r\n")
        lines.append(b"cache-control: no-store\r\nx-content-type-options: nosniff\r\n"
                     b"connection: close\r\n\r\n")
        writer.write(b"".join(lines))
        if not head_only:
            writer.write(body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    # -- endpoints ----------------------------------------------------------------------------
    async def _dispatch(self, req: _Request):
        path, method = req.path, req.method
        if path in _OPEN_PATHS:
            _allow(method, ("GET", "HEAD"))
            if path == "/healthz":
                return _json(200, {"status": "ok"})
            try:
                ready = bool(self._ready_getter())
            except Exception:
                ready = False
            return _json(200, {"status": "ready"}) if ready else \
                _json(503, {"status": "draining"})
        if path == "/metrics":
            _allow(method, ("GET", "HEAD"))
            snap = self._metrics_source()
            if inspect.isawaitable(snap):
                snap = await snap
            # prometheus_client formats ~5 us per line: on a thread, a big scrape yields the
            # GIL every few ms instead of stalling a worker's loop that shares this process
            text = await asyncio.to_thread(render, snap)
            return 200, [(b"content-type", METRICS_CONTENT_TYPE.encode())], text
        if path == "/config":
            _allow(method, ("GET", "HEAD", "PUT"))
            if method == "PUT":
                raise _HttpError(501, "PUT /config is not implemented yet")
            cfg = self._config_getter()
            raw = cfg if isinstance(cfg, dict) else getattr(cfg, "raw", None)
            if raw is None:
                raw = {}
            return _json(200, redact_config(raw))
        if path in ("/audit", "/catalog", "/usage"):
            _allow(method, ("GET", "HEAD"))
            raise _HttpError(501, f"GET {path} is not implemented yet")
        raise _HttpError(404, "no such admin endpoint")

    def _authorize(self, req: _Request) -> None:
        value = req.headers.get(b"authorization")
        ok = False
        if value is not None and self._token is not None:
            scheme, _, cred = value.partition(b" ")
            if scheme.lower() == b"bearer":
                ok = hmac.compare_digest(cred.strip(b" \t"), self._token)
        if not ok:
            hdr = b'Bearer realm="fastgate-admin"'
            if value is not None:
                hdr += b', error="invalid_token"'
            raise _HttpError(401, "admin token required" if value is None
                             else "invalid admin token", [(b"www-authenticate", hdr)])


def _allow(method: str, allowed: tuple) -> None:
    if method not in allowed:
        raise _HttpError(405, f"method {method} not allowed",
                         [(b"allow", ", ".join(allowed).encode())])


def _json(status: int, doc) -> tuple:
    return status, [(b"content-type", b"application/json")], orjson.dumps(doc)


def _parse_head(head: bytes) -> _Request:
    # head ends with CRLFCRLF; any bare CR or LF elsewhere is ambiguous framing
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise _HttpError(400, "bare CR or LF in request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TCHAR.fullmatch(method):
        raise _HttpError(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
            raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise _HttpError(400, "malformed HTTP version")
    if len(target) > 2048:
        raise _HttpError(414, "request target too long")
    if not _TARGET.fullmatch(target):
        raise _HttpError(400, "request target must be an absolute path")
    if len(lines) - 1 > MAX_HEADERS:
        raise _HttpError(431, f"more than {MAX_HEADERS} header fields")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise _HttpError(400, "obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TCHAR.fullmatch(name):
            raise _HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise _HttpError(400, "invalid byte in header value")
        lname = name.lower()
        if lname in headers:
            if lname in (b"host", b"content-length", b"authorization", b"transfer-encoding"):
                raise _HttpError(400, f"duplicate {lname.decode()} header")
            headers[lname] += b", " + value
        else:
            headers[lname] = value
    if version == b"HTTP/1.1" and b"host" not in headers:
        raise _HttpError(400, "missing Host header")
    req = _Request()
    req.method = method.decode("ascii")
    path, _, query = target.partition(b"?")
    req.path = path.decode("ascii")
    req.query = query.decode("ascii")
    req.headers = headers
    req.body = b""
    return req


async def _read_body(reader: asyncio.StreamReader, req: _Request) -> bytes:
    te = req.headers.get(b"transfer-encoding")
    cl = req.headers.get(b"content-length")
    if te is not None:
        if cl is not None:
            raise _HttpError(400, "both Content-Length and Transfer-Encoding")
        raise _HttpError(501, "Transfer-Encoding is not supported here; send Content-Length")
    if cl is None:
        return b""
    if not _DIGITS.fullmatch(cl):
        raise _HttpError(400, "invalid Content-Length")
    n = int(cl)
    if n > MAX_BODY_BYTES:
        raise _HttpError(413, f"body exceeds {MAX_BODY_BYTES} bytes")
    if n == 0:
        return b""
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise _HttpError(400, "body shorter than Content-Length")
    except TimeoutError:
        raise _HttpError(408, "request body not received in time")
