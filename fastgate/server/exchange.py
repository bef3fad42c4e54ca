"""One request and its answer: routing, the policy phases, the target, the log phase.

The request path, as one straight line:

    begin: normalize_path, router (404/405; the snapshot's reroute hooks may claim a miss)
      -> access phase      route.access: sync None / Reject / Respond, or an awaitable
                           (reading pauses, the chain resumes where it stopped)
      -> request body      route.body: policies that need the whole body (buffered up to
                           the route's max_body_bytes, 413 beyond), run once it is complete
      -> target            route.target.open(exchange): upstream, respond, ... (targets/)
      <- response head     route.response: policy(ctx, head) before the head is written
      <- response body     route.response_body: policy(ctx, data, last) -> bytes, chunk by
                           chunk (the response is then re-framed chunked); nothing is held
      -> log phase         metrics + access log (Gateway.record), then route.log policies

The exchange is the request's context (RequestContext): policies get it as ``ctx``.
A target's call talks back through ``send_head`` / ``send_body`` / ``send_end`` /
``flush_output`` / ``target_failed`` / ``start_tunnel``.
"""
from __future__ import annotations

import asyncio
import logging
import time

from fastgate._core.router import MATCH, METHOD_NOT_ALLOWED, normalize_path
from fastgate._core.writer import header_lines, join_head
from fastgate.observe.ids import request_id_from
from fastgate.policies.base import Reject, Respond
from fastgate.server.context import RequestContext
from fastgate.server.responses import (
    CONTINUE_100, ERROR_CODES, build_response, error_body, status_line,
)

log = logging.getLogger("fastgate")

# Reasons a connection's reading is paused (bits: each resume clears only its own)
P_UPSTREAM_FULL = 1                # the peer (upstream) transport is over its high-water mark
P_WAITING = 2                      # an awaitable policy, a connect or a full pending queue
PENDING_BODY_LIMIT = 256 * 1024
DISCARD_BODY_LIMIT = 1024 * 1024   # unread body we swallow to keep a connection after a local answer

_monotonic = time.monotonic
_time = time.time


class Exchange(RequestContext):
    __slots__ = (
        "conn", "call", "path", "keep_alive", "body_done", "waiting", "policy_index",
        "pending", "pending_bytes", "buffering", "discarding", "resp_started",
        "resp_flushed", "resp_chunked", "resp_hdr_mark", "wbuf", "resp_filters", "finished",
        "held",
    )

    def __init__(self, conn, head):
        # RequestContext's fields, set here in one place (no second object per request).
        now = _monotonic()
        self.conn = conn
        self.head = head
        self.snapshot = conn.gateway.snapshot
        self.start = now
        self.start_wall = _time()
        self.route = None
        self.route_name = "_none"
        self.params = None
        self.query = None
        self.client_ip = conn.client_ip
        self.client_port = conn.client_port
        self.tls = conn.tls
        self.peer_cert = conn.peer_cert
        rid = self.request_id = request_id_from(head.get(b"x-request-id") if head else None)
        self.request_id_b = rid.encode()
        self.traceparent = None
        self.consumer = None
        self.consumer_groups = ()
        self.claims = None
        self.upstream_headers = []
        self.response_headers = []
        self.req_drop = None
        self.resp_drop = None
        self.request_body = None
        self.status = 0
        self.error_code = None
        self.bytes_in = head.head_bytes if head is not None else 0
        self.bytes_out = 0
        self.upstream_name = None
        self.upstream_target = None
        self.upstream_duration = None
        self.plugin_state = None
        # the exchange's own state
        self.call = None                # the target's per-request object
        self.path = b""
        self.keep_alive = head is not None and head.keep_alive and not conn.gateway.draining
        self.body_done = False
        self.waiting = None             # task of an awaitable policy
        self.policy_index = 0
        self.pending = None             # body chunks received before the target was ready
        self.pending_bytes = 0
        self.buffering = False          # collecting the body for request-body policies
        self.discarding = False         # answered locally; swallowing the rest of the body
        self.resp_started = False
        self.resp_flushed = False       # some response bytes went to the client
        self.resp_chunked = False       # re-frame the response body as chunked
        self.resp_hdr_mark = 0
        self.wbuf = None                # response bytes gathered during one target read
        self.resp_filters = None        # the route's response-body policies, when they run
        self.finished = False
        self.held = None                # body chunks (None = the end) awaiting the head

    @classmethod
    def detached(cls, conn):
        """An exchange for input that never made a request (a malformed head, a timeout)."""
        return cls(conn, None)

    # ------------------------------------------------------------------ request head
    def begin(self):
        head = self.head
        snap = self.snapshot
        try:
            path = normalize_path(head.path)
        except ValueError:
            self.answer_error(400, "bad_request", "invalid request path")
            return
        kind, value, params = snap.router.match(head.method, head.host, path)
        if kind != MATCH and snap.reroutes:
            for hook in snap.reroutes:
                found = hook(snap, head, path, kind)
                if found is not None:
                    kind, value, params = found
                    break
        if kind != MATCH:
            if kind == METHOD_NOT_ALLOWED:
                self.answer_error(405, "method_not_allowed", "method not allowed for this route",
                                  [(b"allow", value)])
            else:
                self.answer_error(404, "not_found", "no route matches this request")
            return
        route = value
        self.route = route
        self.route_name = route.name
        self.params = params
        self.path = path
        if not self.body_done:
            limit = route.max_body_bytes
            if limit is None:
                limit = snap.limits.max_body_bytes
            if head.content_length > limit:
                self.answer_error(413, "payload_too_large", "request body too large")
                return
            self.conn.set_body_limit(limit)
        self._run_access()

    # ------------------------------------------------------------------ access phase
    def _run_access(self):
        policies = self.route.access
        i = self.policy_index
        n = len(policies)
        while i < n:
            try:
                result = policies[i](self)
            except Exception as exc:
                self.internal_error(exc)
                return
            i += 1
            if result is None:
                continue
            if self._answered(result):
                return
            # Must wait (JWKS fetch, redis, introspection): stop reading, resume later.
            self.policy_index = i
            self.conn.pause(P_WAITING)
            self.waiting = asyncio.ensure_future(self._await_policy(result, self._run_access))
            return
        self._proceed()

    async def _await_policy(self, awaitable, then):
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a policy failing must answer, never hang the client
            self.waiting = None
            self.internal_error(exc)
            return
        self.waiting = None
        if self.finished or self.conn.ex is not self:
            return
        self.conn.resume(P_WAITING)
        try:
            if result is None or not self._answered(result):
                then()
        except Exception as exc:
            self.internal_error(exc)

    def _answered(self, result) -> bool:
        """Answer a policy's Reject or Respond; False for anything else (an awaitable)."""
        cls = result.__class__
        if cls is Reject or isinstance(result, Reject):
            self.answer_error(result.status, result.code, result.message, list(result.headers))
            return True
        if cls is Respond or isinstance(result, Respond):
            self.answer_local(result.status, list(result.headers), result.body)
            return True
        return False

    def _proceed(self):
        route = self.route
        target = route.target
        if target.takes_body and not self.body_done and self.head.expect_continue:
            self.conn.write(CONTINUE_100)
        if route.body:
            if not self.body_done:
                self.buffering = True      # the body phase runs once it is all here
                if self.pending:
                    self.conn.resume(P_WAITING)
                return
            self._run_body()
            return
        self.call = target.open(self)

    # ------------------------------------------------------------------ request body
    def on_body(self, data):
        if self.finished:
            return
        self.bytes_in += len(data)
        if self.discarding:
            return  # we already answered locally; swallow the rest of the body
        call = self.call
        if call is not None and call.attached:
            call.body(data)
            return
        pending = self.pending
        if pending is None:
            pending = self.pending = []
        pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes > PENDING_BODY_LIMIT and not self.buffering:
            self.conn.pause(P_WAITING)

    def on_body_end(self):
        if self.finished:
            return
        self.body_done = True
        if self.discarding:
            # A local answer was sent before the body ended: the exchange is over now.
            self._finish()
            return
        if self.buffering:
            self.buffering = False
            self._run_body()
            return
        call = self.call
        if call is not None and call.attached:
            call.body_end()

    def take_pending(self):
        """The body chunks that arrived before the target was ready (for its call)."""
        pending = self.pending
        if pending:
            self.pending = None
            self.pending_bytes = 0
            self.conn.resume(P_WAITING)
        return pending

    def _run_body(self):
        pending = self.take_pending()
        self.request_body = b"".join(pending) if pending else b""
        self.policy_index = 0
        self._run_body_policies()

    def _run_body_policies(self):
        policies = self.route.body
        i = self.policy_index
        n = len(policies)
        while i < n:
            try:
                result = policies[i](self, self.request_body)
            except Exception as exc:
                self.internal_error(exc)
                return
            i += 1
            if result is None:
                continue
            if self._answered(result):
                return
            self.policy_index = i
            self.conn.pause(P_WAITING)
            self.waiting = asyncio.ensure_future(
                self._await_policy(result, self._run_body_policies))
            return
        self.call = self.route.target.open(self)

    # ------------------------------------------------------------------ for targets
    def send_head(self, head, drop):
        """The target's response head (``head``: status, headers, content_length,
        keep_alive, connection_tokens); ``drop``: header names not to pass on."""
        self.status = head.status
        self.resp_hdr_mark = len(self.response_headers)
        if self.route.response:
            try:
                waiting = self._response_phase(head, 0)
            except Exception as exc:
                self.phase_failed(exc)
                return
            if waiting is not None:
                # An async response policy: the head waits for it, and so does the body
                # (held, with the target's reading paused) -- never written half-decided.
                self.held = []
                call = self.call
                if call is not None:
                    call.pause_reading()
                self.waiting = asyncio.ensure_future(
                    self._await_response(head, waiting, self._write_head, head, drop))
                return
        self._write_head(head, drop)

    def _response_phase(self, head, i):
        """Run the response-head policies from ``i``; None when all ran, else (the
        awaitable one returned, the index to go on from)."""
        policies = self.route.response
        n = len(policies)
        while i < n:
            r = policies[i](self, head)
            i += 1
            if r is not None:
                return r, i
        return None

    def phase_failed(self, exc):
        """A policy or plugin raised in a response phase: 500 when nothing went out yet
        (its target dropped), else the connection is aborted. Logged either way."""
        log.error("policy failed on route %s", self.route_name, exc_info=exc)
        if self.finished:
            return
        self.drop_target()
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        self.conn.resume(P_WAITING)
        if self.resp_flushed:
            self.status = self.status or 500
            self.finished = True
            self.log()
            self.conn.abort()
            return
        self.wbuf = None
        self.held = None
        self.resp_started = False
        self.resp_chunked = False
        self.resp_filters = None
        self.keep_alive = False
        self.error_code = "internal_error"
        self._write_local(500, [(b"content-type", b"application/json")],
                          error_body(500, "internal_error", "internal error", self.request_id))

    async def _await_response(self, head, waiting, then, *args):
        try:
            while waiting is not None:
                await waiting[0]
                waiting = self._response_phase(head, waiting[1])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.waiting = None
            self.phase_failed(exc)
            return
        self.waiting = None
        if self.finished:
            return
        then(*args)
        held, self.held = self.held, None
        if held is None:
            return
        end = False
        for data in held:
            if data is None:
                end = True
            else:
                self.send_body(data)
        if end:
            self.send_end()
            return
        self.flush_output()
        call = self.call
        if call is not None:
            call.resume_reading()

    def _write_head(self, head, drop):
        status = head.status
        route = self.route
        tail = [b"x-request-id: ", self.request_id_b, b"\r\n"]
        if self.response_headers:
            tail.append(header_lines(self.response_headers))
        no_body = self.head.method == b"HEAD" or status in (204, 304) or status < 200
        length = head.content_length
        if route.response_body and not no_body:
            self.resp_filters = route.response_body
            length = -1                     # rewritten chunks: the length is not known
        if length >= 0:
            if status != 204:
                tail.append(b"content-length: %d\r\n" % length)
        elif not no_body:
            if self.head.version == 11:
                self.resp_chunked = True
                tail.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 client: the body ends when we close
        if not self.keep_alive or not self.body_done:
            # A target answering before the request body ended: close after, since the
            # rest of that body would otherwise be read as the next request.
            self.keep_alive = False
            tail.append(b"connection: close\r\n")
        tail.append(b"\r\n")
        if self.resp_drop is not None:
            drop = drop | self.resp_drop
        data = join_head(status_line(status), head.headers, drop, head.connection_tokens, tail)
        self.bytes_out += len(data)
        self.resp_started = True
        # Held until the end of this target read (flush_output) so that a head and the
        # body that came with it leave in one write: one syscall per response, not two.
        self.wbuf = [data]

    def send_body(self, data):
        if self.finished:
            return
        if self.held is not None:
            self.held.append(data)
            return
        filters = self.resp_filters
        if filters is not None:
            try:
                for f in filters:
                    data = f(self, data, False)
            except Exception as exc:
                self.phase_failed(exc)
                return
            if not data:
                return
        n = len(data)
        self.bytes_out += n
        wbuf = self.wbuf
        if wbuf is None:
            wbuf = self.wbuf = []
        if self.resp_chunked:
            wbuf += (b"%x\r\n" % n, data, b"\r\n")
        else:
            wbuf.append(data)

    def send_end(self):
        """The response is complete: last chunk, flush, log, next request."""
        if self.finished:
            return
        if self.held is not None:
            self.held.append(None)          # the end, after the held body
            return
        filters = self.resp_filters
        if filters is not None:
            # Each filter's last call may release what it held back; later filters see it.
            self.resp_filters = None
            tail = b""
            try:
                for f in filters:
                    tail = f(self, tail, True)
            except Exception as exc:
                self.phase_failed(exc)
                return
            if tail:
                self.send_body(tail)
        if self.resp_chunked:
            if self.wbuf is None:
                self.wbuf = []
            self.wbuf.append(b"0\r\n\r\n")
            self.bytes_out += 5
        self.flush_output()
        self.call = None
        if not self.body_done:
            self.keep_alive = False
        self._finish()

    def flush_output(self):
        wbuf = self.wbuf
        if wbuf and self.held is None:
            self.wbuf = None
            self.resp_flushed = True
            self.conn.writelines(wbuf)

    def target_failed(self, status, code, message):
        """The target cannot answer (``status``/``code``/``message`` say why): a clean error
        when nothing went out yet, else the connection is aborted."""
        self.call = None
        if self.finished:
            return
        if self.resp_started and not self.resp_flushed:
            # The head (and any body) is still in our buffer: the client can get a clean
            # error instead of a truncated response.
            self.wbuf = None
            self.resp_started = False
            self.resp_chunked = False
            self.resp_filters = None
            self.status = 0
            del self.response_headers[self.resp_hdr_mark:]  # keep the access-phase ones
        if self.resp_started:
            # Part of the response already went out: the only honest signal is to abort.
            self.status = self.status or status
            self.log()
            self.finished = True
            self.conn.abort()
            return
        self.conn.resume(P_WAITING)
        self.answer_error(status, code, message)

    def start_tunnel(self, head_bytes: bytes, peer_transport, leftover: bytes):
        """An accepted upgrade: the 101 head goes out, then raw bytes both ways."""
        self.status = 101
        self.resp_started = True
        self.conn.write(head_bytes)
        self.call = None
        self.log()
        self.finished = True
        self.conn.start_tunnel(peer_transport, leftover)

    # ------------------------------------------------------------------ local answers
    def answer_error(self, status, code, message, headers=None):
        self.error_code = code
        body = error_body(status, code, message, self.request_id)
        hdrs = [(b"content-type", b"application/json")]
        if headers:
            hdrs += headers
        self.answer_local(status, hdrs, body)

    def answer_local(self, status, headers, body):
        if self.finished:
            return
        self.status = status
        if self.error_code is None and status >= 400:
            self.error_code = ERROR_CODES.get(status, "error")
        route = self.route
        if route is not None and route.response:
            try:
                waiting = self._response_phase(None, 0)
            except Exception as exc:
                self.phase_failed(exc)
                return
            if waiting is not None:
                self.waiting = asyncio.ensure_future(self._await_response(
                    None, waiting, self._write_local, status, headers, body))
                return
        self._write_local(status, headers, body)

    def _write_local(self, status, headers, body):
        headers.append((b"x-request-id", self.request_id_b))
        headers += self.response_headers
        if self.resp_drop is not None:
            drop = self.resp_drop
            headers = [h for h in headers if h[0] not in drop]
        head = self.head
        discard = False
        if not self.body_done and self.keep_alive:
            # The rest of the body is unread. Small, framed remainders are swallowed so the
            # connection stays usable; otherwise close (a client that sent Expect:
            # 100-continue without getting a 100 never sends it).
            remaining = head.content_length - (self.bytes_in - head.head_bytes)
            discard = (status != 413 and not head.chunked and not head.expect_continue
                       and 0 <= remaining <= DISCARD_BODY_LIMIT)
            if not discard:
                self.keep_alive = False
        data = build_response(status, headers, body, close=not self.keep_alive,
                              head_only=head.method == b"HEAD")
        self.bytes_out += len(data)
        self.resp_started = True
        self.conn.write(data)
        if discard:
            self.discarding = True
            self.buffering = False
            self.pending = None
            return
        self._finish()

    def internal_error(self, exc):
        """A bug or an unexpected failure: log it with its traceback, answer 500 if nothing
        was sent yet, and never leave the client hanging."""
        log.error("internal error on route %s", self.route_name, exc_info=exc)
        if self.finished:
            return
        self.drop_target()
        self.conn.resume(P_WAITING)
        if self.resp_started:
            self.finished = True
            self.log()
            self.conn.abort()
        else:
            self.keep_alive = False
            self.answer_error(500, "internal_error", "internal error")

    # ------------------------------------------------------------------ connection events
    def client_closed(self, was_active):
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        self.drop_target()
        if was_active and not self.finished and not self.status:
            self.status = 499  # client closed before the response (nginx's convention)
            self.finished = True
            self.log()

    def client_pause_writing(self):
        call = self.call
        if call is not None:
            call.pause_reading()

    def client_resume_writing(self):
        call = self.call
        if call is not None:
            call.resume_reading()

    def upstream_timed_out(self):
        call = self.call
        if call is not None:
            call.timed_out()

    def body_timed_out(self):
        log.warning("client body timeout on route %s", self.route_name)
        if self.resp_started:
            self.status = self.status or 408
            self.finished = True
            self.log()
            self.conn.abort()
            return
        self.drop_target()
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        self.keep_alive = False         # the rest of that body is not coming: close after
        self.answer_error(408, "request_timeout", "request body not received in time")

    def drop_target(self):
        call, self.call = self.call, None
        if call is not None:
            call.cancel()

    # ------------------------------------------------------------------ the end
    def _finish(self):
        if self.finished:
            return
        self.finished = True
        self.log()
        self.conn.finish(self.keep_alive and self.body_done)

    def log(self):
        """Log phase: after the last byte of a response (or a refusal)."""
        self.conn.gateway.record(self)
        route = self.route
        if route is not None and route.log:
            for policy in route.log:
                try:
                    policy(self)
                except Exception:  # noqa: BLE001 - logging must never break serving
                    log.exception("log phase of route %s failed", self.route_name)
