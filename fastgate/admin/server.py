"""The admin listener: health, readiness, Prometheus metrics and the (redacted) config.

Requests are framed by the compiled ``RequestParser``, the proxy listener's own parser, so
both listeners agree on what a valid HTTP/1.1 message is. On top of it the admin is stricter,
as it is off the hot path and trusts nothing: one request per connection (``Connection:
close``), origin-form targets only, a single plain-digits Content-Length, no chunked bodies
(501), a 2 KiB request line and a 16 KiB header section, a bounded body, deadlines on the
head, the body and the answer's write, and a cap on concurrent connections. Whatever the
parser refuses is answered with its status and the connection is closed.

Only ``/healthz`` and ``/readyz`` are open; everything else, including unknown paths (so
they cannot be probed), needs ``Authorization: Bearer <token>`` of ``admin.token`` or of one
of ``admin.users`` (fastgate.admin.identity), checked before any body byte is accepted; a
role without the right gets 403. Changes go through the control plane
(fastgate.admin.control).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from urllib.parse import parse_qs

import orjson

from fastgate._core.http import HttpError, RequestParser
from fastgate.errors import default_message, error_body, error_code
from fastgate.observe.ids import new_request_id
from fastgate.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fastgate.observe.metrics import render
from fastgate.server.responses import status_line

from .documents import REDACTED, redact
from .identity import READ, WRITE, Identities

__all__ = ["AdminServer", "redact_config", "REDACTED"]

_log = logging.getLogger("fastgate.admin")

MAX_REQUEST_LINE_BYTES = 2048
MAX_HEAD_BYTES = 16 * 1024           # the header section, as the parser counts it
MAX_BODY_BYTES = 4 * 1024 * 1024     # a config document; anything larger is not one
MAX_HEADERS = 100
MAX_CONNECTIONS = 64
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
_OPEN_PATHS = frozenset(("/healthz", "/readyz"))
MAX_SIGN_IN_BYTES = 4096
# The parser's own body ceiling is far above MAX_BODY_BYTES: a stranger announcing a huge
# body must get its 401, not a 413 that tells it the endpoint exists and takes bodies.
_PARSER_BODY_CEILING = 1 << 62


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class _Request:
    """What an endpoint sees: ``headers`` is the parser's RequestHead (``get(lname)``)."""

    __slots__ = ("method", "path", "query", "headers", "body", "actor")


def redact_config(value):
    """A deep copy of a config document with every secret replaced by ``***``."""
    return redact(value)


def _json_error(status: int, message: str, request_id: str) -> bytes:
    return error_body(status, error_code(status), message, request_id)


class AdminServer:
    """The admin HTTP listener.

    ``metrics_source()`` returns the (merged) metrics snapshot to render, or an awaitable of
    it (the supervisor gathers worker snapshots asynchronously). ``config_getter()`` returns
    the running ``Config`` (its ``raw`` document is shown) or a plain dict. ``ready_getter()``
    is False while draining, which turns /readyz into a 503.
    """

    def __init__(self, *, host, port, token=None, metrics_source, config_getter, ready_getter,
                 control=None):
        self.host = host
        self.port = port
        self.control = control
        from .portal import Portal
        self.portal = Portal(self)
        if control is None:   # a bare admin (tests): the one token, no changes
            from fastgate.config.schema import Admin
            self._identities = Identities(Admin(bind="", host=host, port=port, token=token), {})
        self._metrics_source = metrics_source
        self._config_getter = config_getter
        self._ready_getter = ready_getter
        self._server = None
        self._conns: set = set()
        self.sockets = ()

    @property
    def address(self):
        """(host, port) actually bound (port resolved when 0 was asked for)."""
        if not self.sockets:
            return None
        return self.sockets[0].getsockname()[:2]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _AdminConnection(self), self.host, self.port,
            reuse_address=True, backlog=128)
        self.sockets = tuple(self._server.sockets)
        if self.port == 0 and self.sockets:
            self.port = self.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            tasks = []
            for conn in list(self._conns):   # do not wait for slow or silent peers
                if conn.task is not None:
                    tasks.append(conn.task)
                conn.abort()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # -- endpoints ----------------------------------------------------------------------------
    @property
    def identities(self):
        return self.control.identities if self.control is not None else self._identities

    async def _dispatch(self, req: _Request):
        path, method = req.path, req.method
        actor = req.actor
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
            control = self.control
            if method == "PUT":
                _need(actor, WRITE)
                if control is None:
                    raise _HttpError(501, "PUT /config is not implemented without the control plane")
                from .control import ApplyError
                try:
                    version = await control.put(req.body, actor, req.headers.get(b"if-match"))
                except ApplyError as err:
                    return _json(err.status, {"errors": err.errors}, err.headers)
                return _json(200, {"version": version}, [(b"etag", control.etag())])
            if control is not None:
                return _json(200, await control.shown(), [(b"etag", control.etag())])
            cfg = self._config_getter()
            raw = cfg if isinstance(cfg, dict) else getattr(cfg, "raw", None)
            return _json(200, redact_config(raw or {}))
        if path == "/audit":
            _allow(method, ("GET", "HEAD"))
            if self.control is None:
                raise _HttpError(501, "GET /audit is not implemented without the control plane")
            since, limit = _audit_query(req.query)
            entries = await self.control.audit(since, limit)
            return _json(200, {"entries": [dict(e) for e in entries]})
        if path == "/portal":
            return 308, [(b"location", b"/portal/")], b""
        if path.startswith("/portal/"):
            if self.control is None:
                raise _HttpError(501, "the portal is not implemented without the control plane")
            return await self.portal.handle(req)
        if path in ("/catalog", "/usage") or path.startswith("/subscriptions"):
            from .apim import dispatch
            answer = await dispatch(self, req)
            if answer is not None:
                return answer
        raise _HttpError(404, "no such admin endpoint")

    def _authorize(self, req: _Request) -> None:
        value = req.headers.get(b"authorization")
        actor = None
        if value is not None:
            scheme, _, cred = value.partition(b" ")
            cred = cred.strip(b" \t")
            if scheme.lower() == b"bearer" and cred:
                actor = self.identities.authenticate(cred)
        if actor is None:
            hdr = b'Bearer realm="fastgate-admin"'
            if value is not None:
                hdr += b', error="invalid_token"'
            raise _HttpError(401, "admin token required" if value is None
                             else "invalid admin token", [(b"www-authenticate", hdr)])
        req.actor = actor


# connection phases, each with its own deadline
_HEAD, _BODY, _DISPATCH, _WRITE, _CLOSED = range(5)


class _AdminConnection(asyncio.Protocol):
    """One admin connection: a request framed by RequestParser, one answer, then close.

    The parser's callbacks raise ``_HttpError`` for what the admin refuses on top of the
    parser; the parser stores it, stops, and ``feed()`` re-raises it here."""

    __slots__ = ("server", "transport", "parser", "request_id", "req", "body", "phase",
                 "timer", "task")

    def __init__(self, server: AdminServer):
        self.server = server
        self.transport = None
        self.parser = None
        self.request_id = new_request_id()
        self.req = None
        self.body = []
        self.phase = _HEAD
        self.timer = None
        self.task = None

    # -- transport events ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        if len(self.server._conns) >= MAX_CONNECTIONS:
            self.phase = _CLOSED
            transport.abort()
            return
        self.server._conns.add(self)
        self.parser = RequestParser(
            self, max_request_line_bytes=MAX_REQUEST_LINE_BYTES,
            max_header_bytes=MAX_HEAD_BYTES, max_headers=MAX_HEADERS,
            max_body_bytes=_PARSER_BODY_CEILING)
        self._deadline(HEAD_TIMEOUT_S, "request head not received in time")

    def data_received(self, data):
        if self.phase > _BODY:
            return      # one request per connection: what follows it is never read
        try:
            self.parser.feed(data)
        except HttpError as exc:         # refused by the parser
            self._answer_error(exc.status, exc.message)
        except _HttpError as err:        # refused by the checks in on_request
            self._answer_error(err.status, err.message, err.headers)
        except Exception:                # a bug must not leave the peer without an answer
            _log.exception("admin request handling failed")
            self._answer_error(500, default_message(500))

    def eof_received(self):
        if self.phase == _HEAD and self.parser.in_head:
            self._answer_error(400, "incomplete request head")
        elif self.phase == _BODY:
            self._answer_error(400, "body shorter than Content-Length")
        elif self.phase == _HEAD:       # connected and left without a request: no answer
            self.phase = _CLOSED
            self._cancel_deadline()
            self.transport.close()
        return True         # keep the transport: an answer may still be on its way

    def connection_lost(self, exc):
        self.phase = _CLOSED
        self._cancel_deadline()
        self.server._conns.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def abort(self):
        self.phase = _CLOSED
        self._cancel_deadline()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- parser callbacks ---------------------------------------------------------------------
    def on_request(self, head):
        target = head.target
        if target[:1] != b"/":
            raise _HttpError(400, "request target must be an absolute path")
        # The parser accepts a list of equal Content-Length values (RFC 9110 8.6); here the
        # one honest form is required, and one Authorization.
        lengths = head.get_all(b"content-length")
        if len(lengths) > 1:
            raise _HttpError(400, "duplicate content-length header")
        if lengths and not lengths[0].isdigit():
            raise _HttpError(400, "invalid Content-Length")
        if len(head.get_all(b"authorization")) > 1:
            raise _HttpError(400, "duplicate authorization header")
        req = _Request()
        req.method = head.method.decode("ascii")
        req.path = head.path.decode("ascii")
        req.query = head.query.decode("ascii")
        req.headers = head
        req.body = b""
        req.actor = None
        self.req = req
        if req.path == "/portal" or req.path.startswith("/portal/"):
            # the portal signs in by a session cookie (fastgate.admin.portal); a stranger's
            # body can only be the sign-in form
            req.actor = self.server.portal.session(head)[0]
            if req.actor is None and head.content_length > MAX_SIGN_IN_BYTES:
                raise _HttpError(413, "sign in first")
        elif req.path not in _OPEN_PATHS:
            self.server._authorize(req)     # before any body byte: strangers get no buffer
        if head.chunked:
            raise _HttpError(501, "Transfer-Encoding is not supported here; send Content-Length")
        if head.content_length > MAX_BODY_BYTES:
            raise _HttpError(413, f"body exceeds {MAX_BODY_BYTES} bytes")
        self.parser.set_body_limit(MAX_BODY_BYTES)
        if head.content_length > 0:
            self.phase = _BODY
            self._deadline(BODY_TIMEOUT_S, "request body not received in time")

    def on_body(self, data):
        self.body.append(data)

    def on_request_complete(self):
        self.phase = _DISPATCH
        self._cancel_deadline()
        self.transport.pause_reading()
        self.req.body = b"".join(self.body)
        self.body = None
        self.task = asyncio.get_running_loop().create_task(self._serve(self.req))

    # -- answering ----------------------------------------------------------------------------
    async def _serve(self, req):
        try:
            status, headers, body = await self.server._dispatch(req)
        except _HttpError as err:
            self._answer_error(err.status, err.message, err.headers)
            return
        except Exception:   # a bug or a failing getter must not kill the listener
            _log.exception("admin %s %s failed", req.method, req.path)
            self._answer_error(500, default_message(500))
            return
        self._respond(status, headers, body, head_only=req.method == "HEAD")

    def _answer_error(self, status, message, headers=()):
        headers = list(headers)
        headers.append((b"content-type", b"application/json"))
        self._respond(status, headers, _json_error(status, message, self.request_id),
                      head_only=self.req is not None and self.req.method == "HEAD")

    def _respond(self, status, headers, body, head_only=False):
        if self.phase >= _WRITE:
            return
        self.phase = _WRITE
        lines = [status_line(status)]
        for name, value in headers:
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"x-request-id: " + self.request_id.encode("ascii") + b"\r\n")
        lines.append(b"cache-control: no-store\r\nx-content-type-options: nosniff\r\n"
                     b"connection: close\r\n\r\n")
        if not head_only:
            lines.append(body)
        transport = self.transport
        transport.write(b"".join(lines))
        if transport.can_write_eof():
            transport.write_eof()
        transport.close()   # after the buffer is flushed, unless the peer stops reading:
        self._deadline(WRITE_TIMEOUT_S, None)

    def _deadline(self, seconds, message):
        self._cancel_deadline()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expired, message)

    def _cancel_deadline(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self, message):
        self.timer = None
        if message is None or self.phase > _BODY:
            self.abort()    # the answer could not be written in time
        else:
            self._answer_error(408, message)


def _allow(method: str, allowed: tuple) -> None:
    if method not in allowed:
        raise _HttpError(405, f"method {method} not allowed",
                         [(b"allow", ", ".join(allowed).encode())])


def _json(status: int, doc, headers=()) -> tuple:
    return status, [(b"content-type", b"application/json"), *headers], orjson.dumps(doc)


def _need(actor, right: str) -> None:
    if not actor.may(right):
        raise _HttpError(403, f"{actor.name} ({actor.role}) may not do this")


MAX_AUDIT_LIMIT = 1000


def _audit_query(query: str) -> tuple[int, int]:
    try:
        q = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _HttpError(400, "malformed query string") from None
    out = []
    for name, default, lo, hi in (("since", 0, 0, 1 << 62), ("limit", 100, 1, MAX_AUDIT_LIMIT)):
        values = q.get(name)
        if not values:
            out.append(default)
            continue
        v = values[-1]
        if len(values) > 1 or not v.isdigit() or not lo <= int(v) <= hi:
            raise _HttpError(400, f"{name} must be one integer from {lo} to {hi}")
        out.append(int(v))
    return out[0], out[1]
