"""The downstream (client-facing) protocol: one object per client connection.

One request is handled at a time per connection; pipelined requests wait, already buffered
in the compiled parser (which pauses itself after each message), and are answered in order.
The request path is a straight line:

  data_received -> RequestParser -> on_request: router -> policies -> upstream pool
  UpstreamConnection -> ResponseParser -> on_upstream_* -> client transport
  -> _finish (log phase) -> parser.resume() for the next pipelined request

Backpressure is wired peer to peer: a transport over its high-water mark pauses reading on the
other side; every pause/resume is guarded by a flag (reasons are bits so independent causes
of pausing do not resume each other's pauses).
"""
from __future__ import annotations

import asyncio
import time

from fastgate._core.http import HttpError, RequestParser
from fastgate._core.router import MATCH, METHOD_NOT_ALLOWED, normalize_path
from fastgate._core.writer import header_lines, join_head
from fastgate.observe.ids import request_id_from, traceparent_from
from fastgate.policies.base import Reject, Respond
from fastgate.server.context import RequestContext
from fastgate.server.responses import (
    CONTINUE_100, ERROR_CODES, build_response, error_body, status_line,
)

# Connection states
S_IDLE = 0      # waiting for (the rest of) a request head
S_ACTIVE = 1    # a request is in progress
S_TUNNEL = 2    # upgraded: raw bytes both ways
S_CLOSED = 3

# Deadline kinds (checked by the gateway's periodic sweep: no timer object per request)
D_NONE = 0
D_HEADER = 1
D_KEEPALIVE = 2
D_BODY = 3
D_LINGER = 4    # after an error answer: discard input briefly so the client reads our answer

# Reasons the client side's reading is paused (bitmask)
P_UPSTREAM_FULL = 1   # the upstream transport is over its high-water mark
P_WAITING = 2         # an awaitable policy or an upstream connect is pending
P_PIPELINE = 4        # too many pipelined bytes buffered behind the current request

PIPELINE_BUFFER_LIMIT = 256 * 1024
PENDING_BODY_LIMIT = 256 * 1024
DISCARD_BODY_LIMIT = 1024 * 1024   # unread body we swallow to keep a connection after a local answer
LINGER_S = 2.0
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

_monotonic = time.monotonic


def _is_websocket(upgrade: bytes) -> bool:
    return upgrade.strip().lower() == b"websocket"


class ClientProtocol(asyncio.Protocol):
    # Slots: thousands of idle keep-alive connections each hold one of these.
    __slots__ = (
        "body_done", "body_sent_any", "client_ip", "client_ip_b", "client_port", "ctx",
        "deadline", "deadline_kind", "discarding", "gateway", "head_seen", "in_parser",
        "keep_alive", "parser", "path", "peer_cert", "pending", "pending_bytes", "policy_index",
        "read_paused", "req_chunked", "resp_chunked", "resp_keepalive",
        "resp_flushed", "resp_hdr_mark", "resp_started", "resume_pending", "state", "tls", "transport", "tries", "up",
        "up_deadline", "up_head", "up_pool", "up_sent_at", "up_wbuf", "upstream", "waiting", "wbuf",
        "write_paused", "__weakref__",
    )

    def __init__(self, gateway, tls: bool = False):
        self.gateway = gateway
        self.tls = tls
        self.transport = None
        self.parser = None
        self.state = S_IDLE
        self.deadline = 0.0
        self.deadline_kind = D_NONE
        self.up_deadline = 0.0          # upstream read deadline (0 = none)
        self.read_paused = 0
        self.write_paused = False
        self.head_seen = False          # any byte of the current head arrived
        self.in_parser = False          # inside parser.feed()/resume(): no re-entrant resume
        self.resume_pending = False
        self.client_ip = ""
        self.client_ip_b = b""
        self.client_port = 0
        self.peer_cert = None           # verified client certificate (TLS listeners)
        self._reset_exchange()

    def _reset_exchange(self):
        self.ctx = None
        self.up = None                  # UpstreamConnection owned by this exchange
        self.up_pool = None
        self.up_head = None             # serialized upstream request head (kept for a retry)
        self.upstream = None            # compiled Upstream
        self.tries = 0
        self.pending = None             # body chunks received before the upstream was ready
        self.pending_bytes = 0
        self.req_chunked = False        # re-frame the request body as chunked upstream
        self.body_done = False
        self.body_sent_any = False
        self.resp_started = False
        self.resp_chunked = False       # re-frame the response body as chunked to the client
        self.keep_alive = False
        self.waiting = None             # task of an awaitable policy / connect
        self.policy_index = 0
        self.resp_keepalive = False
        self.wbuf = None                # response bytes gathered during one upstream read
        self.resp_flushed = False       # some response bytes went to the client
        self.up_wbuf = None             # request bytes gathered during one parser call
        self.discarding = False         # answered locally; swallowing the rest of the body

    # ------------------------------------------------------------------ connection events
    def connection_made(self, transport):
        self.transport = transport
        gw = self.gateway
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
            self.client_port = peer[1]
            self.client_ip_b = peer[0].encode()
        if self.tls:
            self.peer_cert = transport.get_extra_info("peercert") or None
        limits = gw.snapshot.limits
        if not gw.admit_connection(self):
            transport.write(build_response(
                503, [(b"content-type", b"application/json")],
                error_body(503, "overloaded", "too many connections", None), close=True))
            transport.close()
            self.state = S_CLOSED
            return
        self.parser = RequestParser(
            self,
            max_request_line_bytes=limits.max_request_line_bytes,
            max_header_bytes=limits.max_header_bytes,
            max_headers=limits.max_headers,
            max_body_bytes=gw.snapshot.body_ceiling,
        )
        self.deadline_kind = D_HEADER
        self.deadline = _monotonic() + limits.header_timeout_s

    def connection_lost(self, exc):
        if self.state == S_CLOSED and self.parser is None:
            return
        was_active = self.state in (S_ACTIVE, S_TUNNEL)
        self.state = S_CLOSED
        self.deadline_kind = D_NONE
        self.up_deadline = 0.0
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        self._drop_upstream()
        ctx = self.ctx
        if was_active and ctx is not None and not ctx.status:
            ctx.status = 499  # client closed before the response (nginx's convention)
            self._log(ctx)
        self.gateway.release_connection(self)

    def data_received(self, data):
        state = self.state
        if state == S_TUNNEL:
            up = self.up
            if up is not None and not up.closed:
                up.transport.write(data)
            return
        if state == S_CLOSED:
            return  # lingering after an error answer: input is discarded
        if self.deadline_kind == D_KEEPALIVE:
            self.deadline_kind = D_HEADER
            self.deadline = _monotonic() + self.gateway.snapshot.limits.header_timeout_s
        elif self.deadline_kind == D_BODY:
            self.deadline = _monotonic() + self.ctx.snapshot.limits.body_timeout_s
        self.head_seen = True
        self.in_parser = True
        try:
            self.parser.feed(data)
            while self.resume_pending:
                self.resume_pending = False
                self.parser.resume()
        except HttpError as exc:
            self.in_parser = False
            self.resume_pending = False
            self._reject_malformed(exc)
            return
        except Exception as exc:
            self.in_parser = False
            self.resume_pending = False
            self._internal_error(exc)
            self._close()
            return
        self.in_parser = False
        if self.up_wbuf is not None:
            self._flush_up()
        if self.state == S_ACTIVE and self.parser.buffered > PIPELINE_BUFFER_LIMIT:
            self._pause_reading(P_PIPELINE)

    def eof_received(self):
        # Half-close from the client: finish what is in flight if the request is complete,
        # else nothing more can come.
        if self.state == S_IDLE or self.state == S_CLOSED:
            return False
        if self.state == S_ACTIVE and self.body_done:
            self.keep_alive = False
            return True  # keep the transport open to write the response
        return False

    def pause_writing(self):
        self.write_paused = True
        up = self.up
        if up is not None:
            up.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        up = self.up
        if up is not None:
            up.resume_reading()

    # ---------------------------------------------------------------- flow control helpers
    def _pause_reading(self, reason):
        if not self.read_paused and self.state != S_CLOSED:
            self.transport.pause_reading()
        self.read_paused |= reason

    def _resume_reading(self, reason):
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and self.state != S_CLOSED:
                self.transport.resume_reading()

    def upstream_pause_writing(self):
        self._pause_reading(P_UPSTREAM_FULL)

    def upstream_resume_writing(self):
        self._resume_reading(P_UPSTREAM_FULL)

    # ---------------------------------------------------------------- request parser events
    def on_request(self, head):
        now = _monotonic()
        gw = self.gateway
        snap = gw.snapshot
        self.state = S_ACTIVE
        self.head_seen = False
        ctx = RequestContext()
        ctx.head = head
        ctx.snapshot = snap
        ctx.start = now
        ctx.start_wall = time.time()
        ctx.client_ip = self.client_ip
        ctx.client_port = self.client_port
        ctx.tls = self.tls
        ctx.peer_cert = self.peer_cert
        ctx.bytes_in = head.head_bytes
        ctx.request_id = request_id_from(head.get(b"x-request-id"))
        self.ctx = ctx
        self.keep_alive = head.keep_alive and not gw.draining
        has_body = head.chunked or head.content_length > 0
        if has_body:
            self.deadline_kind = D_BODY
            self.deadline = now + snap.limits.body_timeout_s
        else:
            self.deadline_kind = D_NONE
            self.body_done = True  # nothing to read; on_request_complete follows at once

        try:
            path = normalize_path(head.path)
        except ValueError:
            self._answer_error(400, "bad_request", "invalid request path")
            return
        kind, value, params = snap.router.match(head.method, head.host, path)
        if kind == METHOD_NOT_ALLOWED and head.method == b"OPTIONS":
            # A CORS preflight asks about another method: route it as that method, and
            # let the route answer it if one of its policies handles preflights.
            asked = head.get(b"access-control-request-method")
            if asked is not None:
                k2, v2, p2 = snap.router.match(asked, head.host, path)
                if k2 == MATCH and v2.answers_preflight:
                    kind, value, params = k2, v2, p2
        if kind != MATCH:
            if kind == METHOD_NOT_ALLOWED:
                self._answer_error(405, "method_not_allowed", "method not allowed for this route",
                                   [(b"allow", value)])
            else:
                self._answer_error(404, "not_found", "no route matches this request")
            return
        route = value
        ctx.route = route
        ctx.route_name = route.name
        ctx.params = params
        self.path = path
        if has_body:
            limit = route.max_body_bytes
            if limit is None:
                limit = snap.limits.max_body_bytes
            if head.content_length > limit:
                self._answer_error(413, "payload_too_large", "request body too large")
                return
            self.parser.set_body_limit(limit)
        self.policy_index = 0
        self._run_access()

    def _run_access(self):
        ctx = self.ctx
        policies = ctx.route.access
        i = self.policy_index
        n = len(policies)
        while i < n:
            result = policies[i](ctx)
            i += 1
            if result is None:
                continue
            if self._answered(result):
                return
            # Must wait (JWKS fetch, redis, introspection): stop reading, resume later.
            self.policy_index = i
            self._pause_reading(P_WAITING)
            self.waiting = asyncio.ensure_future(self._await_policy(result))
            return
        self._proceed()

    async def _await_policy(self, awaitable):
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a policy failing must answer, never hang the client
            self.waiting = None
            self._internal_error(exc)
            return
        self.waiting = None
        if self.state != S_ACTIVE:
            return
        self._resume_reading(P_WAITING)
        try:
            if result is None or not self._answered(result):
                self._run_access()
        except Exception as exc:
            self._internal_error(exc)

    def _answered(self, result) -> bool:
        """Answer a policy's Reject or Respond; False for anything else (an awaitable)."""
        if isinstance(result, Reject):
            self._answer_reject(result)
            return True
        if isinstance(result, Respond):
            self._answer_local(result.status, list(result.headers), result.body)
            return True
        return False

    def _proceed(self):
        ctx = self.ctx
        route = ctx.route
        head = ctx.head
        if route.respond is not None:
            status, headers, body = route.respond
            self._answer_local(status, list(headers), body)
            return
        if head.expect_continue and not self.body_done:
            self.transport.write(CONTINUE_100)
        self.upstream = route.upstream
        self.up_head = self._build_upstream_head(ctx, route)
        self._dispatch(None)

    def on_body(self, data):
        if self.state != S_ACTIVE:
            return
        ctx = self.ctx
        ctx.bytes_in += len(data)
        if self.discarding:
            return  # we already answered locally; swallow the rest of the body
        if self.up is not None and self.up_head is None:
            if self.req_chunked:
                self._up_send(b"%x\r\n" % len(data), data, b"\r\n")
            else:
                self._up_send(data)
            self.body_sent_any = True
            return
        if self.pending is None:
            self.pending = []
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes > PENDING_BODY_LIMIT:
            self._pause_reading(P_WAITING)

    def on_request_complete(self):
        if self.state != S_ACTIVE:
            return
        self.body_done = True
        if self.deadline_kind == D_BODY:
            self.deadline_kind = D_NONE
        if self.discarding:
            # A local answer was sent before the body ended: the exchange is over now.
            self._finish()
            return
        if self.up is not None and self.up_head is None and self.req_chunked:
            self._up_send(b"0\r\n\r\n")

    # ---------------------------------------------------------------- upstream request
    def _build_upstream_head(self, ctx, route) -> bytes:
        head = ctx.head
        path = self.path
        if route.strip_prefix is not None:
            prefix = route.strip_prefix
            if path == prefix:
                path = b"/"
            elif path.startswith(prefix) and path[len(prefix):len(prefix) + 1] == b"/":
                path = path[len(prefix):]
        if route.rewrite is not None:
            path = route.render_rewrite(ctx.params)
        prefix = self.upstream.path_prefix
        if prefix:
            path = prefix + path
        query = head.query if ctx.query is None else ctx.query
        target = path + b"?" + query if query else path
        self.req_chunked = head.chunked
        client_ip = self.client_ip_b
        xff = head.get_all(b"x-forwarded-for")
        tail = [b"x-forwarded-for: ",
                b", ".join(xff) + b", " + client_ip if xff else client_ip,
                b"\r\nx-forwarded-proto: https\r\n" if ctx.tls else b"\r\nx-forwarded-proto: http\r\n"]
        host = head.host
        if host:
            tail += (b"x-forwarded-host: ", host, b"\r\n")
            if route.preserve_host:
                tail += (b"host: ", host, b"\r\n")
        # else: the chosen target's Host line is added per try (_attach)
        ctx.traceparent = tp = traceparent_from(head.get(b"traceparent"))
        tail += (b"x-request-id: ", ctx.request_id.encode(), b"\r\ntraceparent: ", tp.encode(),
                 b"\r\n")
        if ctx.upstream_headers:
            tail.append(header_lines(ctx.upstream_headers))
        if head.upgrade is not None and _is_websocket(head.upgrade):
            # Only WebSocket is tunnelled. Forwarding other upgrades (h2c above all) would
            # let a client open a raw HTTP/2 channel to the upstream behind every route
            # check of the gateway ("h2c smuggling"); they are dropped like any hop header.
            tail += (b"connection: upgrade\r\nupgrade: ", head.upgrade, b"\r\n")
        if head.chunked:
            tail.append(b"transfer-encoding: chunked\r\n")
        elif head.content_length >= 0:
            tail.append(b"content-length: %d\r\n" % head.content_length)
        elif head.method in (b"POST", b"PUT", b"PATCH"):
            tail.append(b"content-length: 0\r\n")
        return join_head(head.method + b" " + target + b" HTTP/1.1\r\n", head.headers,
                         route.drop_request_headers, head.connection_tokens, tail)

    def _dispatch(self, failed_pool):
        """Pick a target and send the request: from the warm pool synchronously, else via
        a connect task."""
        upstream = self.upstream
        pool = upstream.pick(self.ctx, failed_pool)
        if pool is None:
            self._resume_reading(P_WAITING)
            self._answer_error(503, "no_healthy_upstream",
                               f"no healthy target in upstream {upstream.name}")
            return
        self.up_pool = pool
        self.tries += 1
        conn = pool.acquire_idle()
        if conn is not None:
            self._attach(conn)
            return
        self._pause_reading(P_WAITING)
        self.waiting = asyncio.ensure_future(self._connect(pool))

    async def _connect(self, pool):
        upstream = self.upstream
        try:
            conn = await pool.connect(upstream.connect_timeout)
            if conn.closed or conn.transport.is_closing():
                # Accepted then dropped at once (an upstream out of connection slots).
                pool.detach(conn)
                conn.close()
                raise ConnectionResetError("upstream closed the new connection")
        except asyncio.CancelledError:
            raise
        except (OSError, asyncio.TimeoutError) as exc:
            self.waiting = None
            if self.state != S_ACTIVE:
                return
            pool.mark_failure(_monotonic())
            timeout = isinstance(exc, asyncio.TimeoutError)
            # Nothing was sent: a retry on another target is safe for any method.
            if self.tries <= upstream.retries and not self.body_sent_any:
                self._dispatch(pool)
                return
            self._resume_reading(P_WAITING)
            self.gateway.log_error("upstream %s connect to %s failed: %r",
                                   upstream.name, pool.label, exc)
            if timeout:
                self._answer_error(504, "gateway_timeout", "upstream connect timed out")
            else:
                self._answer_error(502, "bad_gateway", "upstream connection failed")
            return
        except Exception as exc:  # never leave the client without an answer
            self.waiting = None
            self._internal_error(exc)
            return
        self.waiting = None
        if self.state != S_ACTIVE:
            pool.release(conn, True)
            return
        self._resume_reading(P_WAITING)
        try:
            self._attach(conn)
        except Exception as exc:
            self._internal_error(exc)

    def _internal_error(self, exc):
        """A bug or an unexpected failure: log it with its traceback, answer 500 if nothing
        was sent yet, and never leave the client hanging."""
        import logging
        logging.getLogger("fastgate").error("internal error on route %s",
                                            self.ctx.route_name if self.ctx else "-",
                                            exc_info=exc)
        if self.state != S_ACTIVE:
            return
        self._drop_upstream()
        self._resume_reading(P_WAITING)
        if self.resp_started:
            self._abort()
        else:
            self.keep_alive = False
            self._answer_error(500, "internal_error", "internal error")

    def _attach(self, conn):
        ctx = self.ctx
        self.up = conn
        conn.owner = self
        conn.requests += 1
        pool = self.up_pool
        ctx.upstream_name = self.upstream.name
        ctx.upstream_target = pool.label
        head = ctx.head
        conn.parser.start(head.method == b"HEAD")
        up_head = self.up_head
        if ctx.route.preserve_host and head.host:
            self._up_send(up_head, b"\r\n")
        else:
            self._up_send(up_head, pool.host_header)
        self.up_head = None
        self.up_sent_at = _monotonic()
        self.up_deadline = self.up_sent_at + self.upstream_read_timeout()
        pending = self.pending
        if pending:
            self.pending = None
            self.pending_bytes = 0
            self.body_sent_any = True
            if self.req_chunked:
                for data in pending:
                    self._up_send(b"%x\r\n" % len(data), data, b"\r\n")
            else:
                self._up_send(*pending)
            self._resume_reading(P_WAITING)
        if self.body_done and self.req_chunked:
            self._up_send(b"0\r\n\r\n")
        if not self.in_parser:
            self._flush_up()
        if conn.peer_paused:
            self._pause_reading(P_UPSTREAM_FULL)
        if self.write_paused:
            conn.pause_reading()

    def _up_send(self, *pieces):
        """Queue bytes for the upstream. They leave when the current parser call returns
        without error (_flush_up): if the parser rejects something later in the same read,
        nothing of that request has reached the upstream."""
        buf = self.up_wbuf
        if buf is None:
            self.up_wbuf = list(pieces)
        else:
            buf.extend(pieces)

    def _flush_up(self):
        buf = self.up_wbuf
        if buf is not None:
            self.up_wbuf = None
            up = self.up
            if up is not None and not up.closed:
                up.transport.writelines(buf)

    def upstream_read_timeout(self):
        route = self.ctx.route
        return route.timeout_s if route.timeout_s is not None else self.upstream.read_timeout

    # ---------------------------------------------------------------- upstream response
    def on_upstream_response(self, conn, head):
        ctx = self.ctx
        now = _monotonic()
        ctx.upstream_duration = now - self.up_sent_at
        self.up_deadline = now + self.upstream_read_timeout()
        status = head.status
        if status == 101:
            if ctx.head.upgrade is None or not _is_websocket(ctx.head.upgrade):
                self._upstream_failed(conn, "unexpected 101 from upstream")
                return
            self._start_tunnel(conn, head)
            return
        ctx.status = status
        self.resp_keepalive = head.keep_alive
        self.resp_hdr_mark = len(ctx.response_headers)
        route = ctx.route
        for policy in route.response:
            policy(ctx, head)
        tail = [b"x-request-id: ", ctx.request_id.encode(), b"\r\n"]
        if ctx.response_headers:
            tail.append(header_lines(ctx.response_headers))
        no_body = ctx.head.method == b"HEAD" or status in (204, 304) or status < 200
        if head.content_length >= 0:
            if status != 204:
                tail.append(b"content-length: %d\r\n" % head.content_length)
        elif not no_body:
            if ctx.head.version == 11:
                self.resp_chunked = True
                tail.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 client: the body ends when we close
        if not self.keep_alive or not self.body_done:
            # An upstream answering before the request body ended: close after, since the
            # rest of that body would otherwise be read as the next request.
            self.keep_alive = False
            tail.append(b"connection: close\r\n")
        tail.append(b"\r\n")
        data = join_head(status_line(status), head.headers, route.drop_response_headers,
                         head.connection_tokens, tail)
        ctx.bytes_out += len(data)
        self.resp_started = True
        # Held until the end of this upstream read (flush_output) so that a head and the
        # body that came with it leave in one write: one syscall per response, not two.
        self.wbuf = [data]

    def on_upstream_body(self, data):
        n = len(data)
        ctx = self.ctx
        ctx.bytes_out += n
        wbuf = self.wbuf
        if wbuf is None:
            wbuf = self.wbuf = []
        if self.resp_chunked:
            wbuf += (b"%x\r\n" % n, data, b"\r\n")
        else:
            wbuf.append(data)
        self.up_deadline = _monotonic() + self.upstream_read_timeout()

    def flush_output(self):
        wbuf = self.wbuf
        if wbuf:
            self.wbuf = None
            self.resp_flushed = True
            if self.state != S_CLOSED:
                self.transport.writelines(wbuf)

    def on_upstream_complete(self, conn):
        if self.resp_chunked:
            if self.wbuf is None:
                self.wbuf = []
            self.wbuf.append(b"0\r\n\r\n")
            self.ctx.bytes_out += 5
        self.flush_output()
        self.up = None
        self.up_deadline = 0.0
        reusable = self.body_done and self.resp_keepalive and conn.parser.buffered == 0
        self.up_pool.release(conn, reusable)
        if not self.body_done:
            self.keep_alive = False
        self._finish()

    def upstream_error(self, conn, exc):
        self._upstream_failed(conn, f"invalid upstream response: {exc.message}")

    def upstream_closed(self, conn):
        self._upstream_failed(conn, "upstream closed the connection")

    def _upstream_failed(self, conn, reason, timeout=False):
        if self.up is conn:
            self.up = None
            self.up_pool.detach(conn)
        conn.close()
        self.up_deadline = 0.0
        if self.state != S_ACTIVE:
            return
        if self.resp_started and not self.resp_flushed:
            # The head (and any body) is still in our buffer: the client can get a clean
            # 502 instead of a truncated response.
            self.wbuf = None
            self.resp_started = False
            self.resp_chunked = False
            self.ctx.status = 0
            del self.ctx.response_headers[self.resp_hdr_mark:]  # keep the access-phase ones
        if self.resp_started:
            # Part of the response already went out: the only honest signal is to abort.
            self.gateway.log_error("upstream %s failed mid-response: %s",
                                   self.ctx.upstream_name, reason)
            self.ctx.status = self.ctx.status or 502
            self._log(self.ctx)
            self._abort()
            return
        head = self.ctx.head
        retry_ok = (
            not timeout
            and self.tries <= self.upstream.retries
            and head.method in IDEMPOTENT
            and not self.body_sent_any and head.content_length <= 0 and not head.chunked
        )
        if retry_ok:
            self.up_head = self._build_upstream_head(self.ctx, self.ctx.route)
            self._dispatch(self.up_pool)
            return
        self.gateway.log_error("upstream %s (%s): %s", self.ctx.upstream_name,
                               self.ctx.upstream_target, reason)
        if timeout:
            self._answer_error(504, "gateway_timeout", "upstream timed out")
        else:
            self._answer_error(502, "bad_gateway", "upstream failed")

    def upstream_timed_out(self):
        conn = self.up
        if conn is not None:
            self._upstream_failed(conn, "upstream read timed out", timeout=True)

    # ---------------------------------------------------------------- tunnel (Upgrade)
    def _start_tunnel(self, conn, head):
        ctx = self.ctx
        ctx.status = 101
        parts = [status_line(101)]
        for name, value in head.headers:
            if name in (b"content-length", b"transfer-encoding", b"keep-alive", b"x-request-id"):
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"x-request-id: ", ctx.request_id.encode(), b"\r\n\r\n")
        data = b"".join(parts)
        self.transport.write(data)
        self.resp_started = True
        self.state = S_TUNNEL
        self.deadline_kind = D_NONE
        self.up_deadline = 0.0
        self.up_pool.detach(conn)
        self.up_pool = None  # a tunnel belongs to no pool any more
        conn.owner = _TunnelEnd(self)  # upstream bytes go straight to the client now
        leftover_up = conn.parser.take_buffered()
        if leftover_up:
            self.transport.write(leftover_up)
        leftover_client = self.parser.take_buffered()
        if leftover_client:
            conn.transport.write(leftover_client)
        conn.parser = _RawRelay(self)
        self._log(ctx)
        self._resume_reading(P_PIPELINE | P_WAITING)

    # ---------------------------------------------------------------- local answers
    def _answer_reject(self, reject):
        self._answer_error(reject.status, reject.code, reject.message, list(reject.headers))

    def _answer_error(self, status, code, message, headers=None):
        ctx = self.ctx
        ctx.error_code = code
        body = error_body(status, code, message, ctx.request_id)
        hdrs = [(b"content-type", b"application/json")]
        if headers:
            hdrs += headers
        self._answer_local(status, hdrs, body)

    def _answer_local(self, status, headers, body):
        ctx = self.ctx
        ctx.status = status
        if ctx.error_code is None and status >= 400:
            ctx.error_code = ERROR_CODES.get(status, "error")
        if ctx.route is not None:
            for policy in ctx.route.response:
                policy(ctx, None)
        headers.append((b"x-request-id", ctx.request_id.encode()))
        headers += ctx.response_headers
        head = ctx.head
        discard = False
        if not self.body_done and self.keep_alive:
            # The rest of the body is unread. Small, framed remainders are swallowed so the
            # connection stays usable; otherwise close (a client that sent Expect:
            # 100-continue without getting a 100 never sends it).
            remaining = head.content_length - (ctx.bytes_in - head.head_bytes)
            discard = (status != 413 and not head.chunked and not head.expect_continue
                       and 0 <= remaining <= DISCARD_BODY_LIMIT)
            if not discard:
                self.keep_alive = False
        data = build_response(status, headers, body, close=not self.keep_alive,
                              head_only=head.method == b"HEAD")
        ctx.bytes_out += len(data)
        self.resp_started = True
        self.transport.write(data)
        if discard:
            self.discarding = True
            return
        self._finish()

    def _reject_malformed(self, exc):
        """The parser refused the bytes: answer with its status and close. Nothing of the
        request has reached (or will reach) an upstream."""
        if self.state == S_CLOSED:
            return
        ctx = self.ctx
        if ctx is None or self.resp_started:
            ctx = RequestContext()
            ctx.snapshot = self.gateway.snapshot
            ctx.start = _monotonic()
            ctx.start_wall = time.time()
            ctx.client_ip = self.client_ip
            ctx.client_port = self.client_port
            ctx.request_id = request_id_from(None)
            ctx.head = None
        self._drop_upstream()
        ctx.status = exc.status
        ctx.error_code = exc.code
        self.ctx = ctx
        if not self.resp_started:
            body = error_body(exc.status, exc.code, exc.message, ctx.request_id)
            self.transport.write(build_response(
                exc.status,
                [(b"content-type", b"application/json"),
                 (b"x-request-id", ctx.request_id.encode())],
                body, close=True))
        self._log(ctx)
        self._linger_close()

    # ---------------------------------------------------------------- end of an exchange
    def _finish(self):
        ctx = self.ctx
        self._log(ctx)
        keep_alive = self.keep_alive and self.body_done and not self.gateway.draining
        self._reset_exchange()
        if not keep_alive:
            self._close()
            return
        self.state = S_IDLE
        limits = self.gateway.snapshot.limits
        parser = self.parser
        if parser.buffered:
            self.deadline_kind = D_HEADER
            self.deadline = _monotonic() + limits.header_timeout_s
        else:
            self.deadline_kind = D_KEEPALIVE
            self.deadline = _monotonic() + limits.keepalive_timeout_s
        self._resume_reading(P_PIPELINE)
        if self.in_parser:
            # Called from inside a parser callback (a local answer): resume once feed returns.
            self.resume_pending = True
            return
        self.in_parser = True
        try:
            parser.resume()
            while self.resume_pending:
                self.resume_pending = False
                parser.resume()
        except HttpError as exc:
            self.in_parser = False
            self.resume_pending = False
            self._reject_malformed(exc)
            return
        self.in_parser = False
        if self.up_wbuf is not None:
            self._flush_up()

    def _log(self, ctx):
        gw = self.gateway
        gw.record(ctx)

    def _drop_upstream(self):
        self.up_wbuf = None
        up = self.up
        if up is not None:
            self.up = None
            if self.up_pool is not None:
                self.up_pool.detach(up)
            up.close()

    def _close(self):
        if self.state != S_CLOSED:
            self.state = S_CLOSED
            self.deadline_kind = D_NONE
            self.transport.close()

    def _linger_close(self):
        """Close after an error answer without resetting: stop sending, discard input for a
        moment so the client reads the answer instead of an RST."""
        if self.state == S_CLOSED:
            return
        self.state = S_CLOSED
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            if self.read_paused:
                self.read_paused = 0
                transport.resume_reading()
            self.deadline_kind = D_LINGER
            self.deadline = _monotonic() + LINGER_S
        else:
            self.deadline_kind = D_NONE
            transport.close()

    def _abort(self):
        self.state = S_CLOSED
        self.deadline_kind = D_NONE
        self.transport.abort()

    # ---------------------------------------------------------------- timers (sweep)
    def check_deadlines(self, now):
        kind = self.deadline_kind
        if kind and now >= self.deadline:
            if kind == D_KEEPALIVE:
                self._close()
            elif kind == D_LINGER:
                self.deadline_kind = D_NONE
                self.transport.close()
            elif kind == D_HEADER:
                self._timeout_head()
            elif kind == D_BODY:
                self._timeout_body()
        if self.up_deadline and now >= self.up_deadline and self.state == S_ACTIVE:
            self.upstream_timed_out()

    def _timeout_head(self):
        if self.state != S_IDLE:
            return
        self._reject_malformed(HttpError(408, "request_timeout", "request head not received in time"))

    def _timeout_body(self):
        if self.state != S_ACTIVE:
            return
        ctx = self.ctx
        self.gateway.log_error("client body timeout on route %s", ctx.route_name)
        if self.resp_started:
            ctx.status = ctx.status or 408
            self._log(ctx)
            self._abort()
            return
        self._drop_upstream()
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        self._answer_error(408, "request_timeout", "request body not received in time")

    def drain(self):
        """Graceful stop: idle connections close now, busy ones after their response."""
        if self.state == S_IDLE and not self.head_seen:
            self._close()
        else:
            self.keep_alive = False


class _TunnelEnd:
    """Owner of an upgraded upstream connection: relays its events to the client side."""

    __slots__ = ("client",)
    wbuf = None

    def __init__(self, client):
        self.client = client

    def upstream_error(self, conn, exc):
        self.client._close()

    def upstream_closed(self, conn):
        self.client._close()

    def upstream_pause_writing(self):
        self.client._pause_reading(P_UPSTREAM_FULL)

    def upstream_resume_writing(self):
        self.client._resume_reading(P_UPSTREAM_FULL)


class _RawRelay:
    """Stands in for the response parser once a connection is a tunnel: bytes pass as-is."""

    __slots__ = ("client",)
    buffered = 0
    expecting = False

    def __init__(self, client):
        self.client = client

    def feed(self, data):
        client = self.client
        if client.state == S_TUNNEL:
            client.transport.write(data)
