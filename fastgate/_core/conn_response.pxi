# Included by conn.pyx.
cdef class ResponseSide(RequestContext):
    """The response side of an exchange: what a target's call (and a local answer) goes
    through on the way to the client, and the end of the exchange.

        send_head(head, drop)   response-head phase (route.response; a policy may await:
                                the body is held meanwhile), then the head, framed
        send_body(data)         response-body phase (route.response_body filters), framing
        flush_output()          what one target read brought leaves in one write
        send_end()              last chunk, flush, log phase, the connection's next request
        target_failed(...)      a clean error while nothing went out, else an abort
        start_tunnel(...)       an accepted upgrade
        answer_local(...)       a gateway-made answer (errors, static responses, Respond)

    The base of Exchange (conn_exchange.pxi), which adds the request side; its attributes
    are declared here (conn.pxd)."""

    cpdef send_head(self, head, drop, bint decided=False):
        """The target's response head (``head``: status, headers, content_length,
        keep_alive, connection_tokens); ``drop``: header names not to pass on. The
        response-head phase runs first (``decided``: it already has)."""
        cdef RouteCore route = self.route
        cdef RequestHead req = <RequestHead?>self.head
        cdef ResponseHead rh
        cdef int status
        cdef long long length
        if not decided:
            self.status = head.status
            self.resp_hdr_mark = len(self.response_headers)
            if route.response and self._head_phase(head, drop):
                return
        if type(head) is ResponseHead:
            rh = <ResponseHead>head
            status = rh.status
            length = rh.content_length
            headers = rh.headers
            tokens = rh.connection_tokens
        else:                               # another target's head object (the AI call's)
            status = head.status
            length = head.content_length
            headers = head.headers
            tokens = head.connection_tokens
        tail = list_with_room(8)
        push(tail, b"x-request-id: ")
        push(tail, self.request_id_b)
        push(tail, b"\r\n")
        if self.response_headers:
            push(tail, header_lines(self.response_headers))
        no_body = req.method == b"HEAD" or status == 204 or status == 304 or status < 200
        if route.response_body and not no_body:
            self.resp_filters = route.response_body
            length = -1                     # rewritten chunks: the length is not known
        if length >= 0:
            if status != 204:
                push(tail, _content_length_line(length))
        elif not no_body:
            if req.version == 11:
                self.resp_chunked = True
                push(tail, b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 client: the body ends when we close
        if not self.keep_alive or not self.body_done:
            # A target answering before the request body ended: close after, since the
            # rest of that body would otherwise be read as the next request.
            self.keep_alive = False
            push(tail, b"connection: close\r\n")
        push(tail, b"\r\n")
        if self.resp_drop is not None:
            drop = drop | self.resp_drop
        line = _STATUS_LINES.get(status)
        if line is None:
            line = status_line(status)
        data = join_head(line, headers, drop, tokens, tail)
        self.bytes_out += len(data)
        self.resp_started = True
        # Held until the end of this target read (flush_output) so that a head and the
        # body that came with it leave in one write: one syscall per response, not two.
        self.wbuf = [data]

    def _head_phase(self, head, drop) -> bool:
        """Run the response-head policies; True when the head must not be written now (an
        async policy is awaited, the body held meanwhile; or a policy failed)."""
        try:
            waiting = self._response_phase(head, 0)
        except Exception as exc:
            self.phase_failed(exc)
            return True
        if waiting is None:
            return False
        # The head waits for it, and so does the body (held, with the target's reading
        # paused): never written half-decided.
        self.held = []
        call = self.call
        if call is not None:
            call.pause_reading()
        self.waiting = asyncio.ensure_future(
            self._await_response(head, waiting, self.send_head, head, drop, True))
        return True

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
        self.conn.resume(_P_WAITING)
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

    cpdef send_body(self, data):
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
            wbuf = self.wbuf = list_with_room(4)
        if self.resp_chunked:
            wbuf += (b"%x\r\n" % n, data, b"\r\n")
        else:
            push(wbuf, data)

    cpdef send_end(self):
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

    cpdef flush_output(self):
        wbuf = self.wbuf
        if wbuf and self.held is None:
            if self.resp_filters is not None and not self.resp_flushed and len(wbuf) == 1:
                # Only the head so far, on a filtered route: it waits for the first filtered
                # bytes, so a filter that fails at once still gets a clean 500.
                return
            self.wbuf = None
            self.resp_flushed = True
            conn = self.conn
            if conn.state != _S_CLOSED:
                conn.write(_one_piece(wbuf)) if _small(wbuf) else conn.writelines(wbuf)

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
        self.conn.resume(_P_WAITING)
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
    cpdef answer_error(self, status, code, message, headers=None):
        self.error_code = code
        body = error_body(status, code, message, self.request_id)
        hdrs = [(b"content-type", b"application/json")]
        if headers:
            hdrs += headers
        self.answer_local(status, hdrs, body)

    cpdef answer_local(self, status, headers, body):
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

    cpdef _write_local(self, status, headers, body):
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

    cpdef drop_target(self):
        call, self.call = self.call, None
        if call is not None:
            call.cancel()

    # ------------------------------------------------------------------ the end
    cpdef _finish(self):
        if self.finished:
            return
        self.finished = True
        self.log()
        self.conn.finish(self.keep_alive and self.body_done)

    cpdef log(self):
        """Log phase: after the last byte of a response (or a refusal)."""
        record(self.conn.gateway, self)
        cdef RouteCore route = self.route
        if route is not None and route.log:
            for policy in route.log:
                try:
                    policy(self)
                except Exception:  # noqa: BLE001 - logging must never break serving
                    log.exception("log phase of route %s failed", self.route_name)


cdef bytes _content_length_line(long long n):
    """b"content-length: N\\r\\n" without a format call."""
    cdef char buf[48]
    cdef char digits[24]
    cdef int nd = 0, i
    memcpy(buf, b"content-length: ", 16)
    if n == 0:
        digits[0] = 48
        nd = 1
    while n > 0:
        digits[nd] = 48 + <int>(n % 10)
        n //= 10
        nd += 1
    for i in range(nd):
        buf[16 + i] = digits[nd - 1 - i]
    buf[16 + nd] = 13
    buf[17 + nd] = 10
    return PyBytes_FromStringAndSize(buf, 18 + nd)


cdef inline bint _small(list pieces) noexcept:
    """A few pieces of at most _JOIN_MAX bytes in all (a head and a small body): sent as one
    bytes, so the transport writes it with one write() instead of a gathered write with
    its per-call bookkeeping."""
    cdef Py_ssize_t i, n = len(pieces), total = 0
    if n > 4:
        return False
    for i in range(n):
        total += PyBytes_GET_SIZE(<bytes>pieces[i]) if type(pieces[i]) is bytes \
            else _JOIN_MAX + 1
    return total <= _JOIN_MAX


cdef inline bytes _one_piece(list pieces):
    return <bytes>pieces[0] if len(pieces) == 1 else b"".join(pieces)


cpdef record(GatewayCore gateway, RequestContext ctx):
    """Metrics and the access log of one finished request (or refusal), after its last byte
    (``Gateway.record`` is this)."""
    cdef double now = _mono()
    head = ctx.head
    request_done(gateway.metric_routes, ctx.route_name,
                 (<RequestHead>head).method if head is not None else b"OTHER", ctx.status,
                 now - ctx.start, ctx.bytes_in, ctx.bytes_out, ctx.upstream_name,
                 ctx.upstream_duration)
    if ctx.consumer is not None and gateway.usage_requests is not None:
        count_usage(gateway.usage_requests, ctx.consumer, ctx.route_name, _wall())
    if gateway.access_log_on:
        access_log = gateway.access_log
        access_log.log(access_log.entry(ctx, now))
