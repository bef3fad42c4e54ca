# Included by conn.pyx.
cdef class ClientConnection(ParserHandler):
    """One per accepted socket: bytes, framing, flow control, deadlines, pipelining,
    tunnels. It knows nothing of routes, policies or targets: each request head the parser
    delivers starts an ``Exchange``, which answers through the small interface below and
    hands the connection back with ``finish``.

    Connection -> exchange:  ``begin()``; ``on_body(data)``, ``on_body_end()``;
                             ``client_closed()``; ``client_pause_writing()`` /
                             ``client_resume_writing()``; ``body_timed_out()``,
                             ``upstream_timed_out()``.
    Exchange -> connection:  ``write(data)`` / ``writelines(parts)``; ``pause(reason)`` /
                             ``resume(reason)``; ``set_body_limit(n)``; ``up_deadline`` (a
                             target's read deadline, checked by the sweep);
                             ``defer_flush(f)`` (bytes for an upstream leave when the parser
                             call returns cleanly); ``finish(keep_alive)``;
                             ``linger_close()``; ``abort()``; ``start_tunnel(peer, leftover)``.

    Pipelined requests wait, already buffered in the parser (which pauses itself after each
    message), and are answered in order. Reading is paused for independent reasons held as
    bits, each resume clears only its own.
    """

    def __init__(self, gateway, tls: bool = False):
        self._setup(gateway, tls)

    cdef int _setup(self, gateway, bint tls) except -1:
        self.gateway = gateway
        self.tls = tls
        self.transport = None
        self.parser = None
        self.state = _S_IDLE
        self.deadline = 0.0
        self.deadline_kind = _D_NONE
        self.up_deadline = 0.0          # a target's read deadline (0 = none)
        self.read_paused = 0
        self.write_paused = False
        self.head_seen = False          # any byte of the current head arrived
        self.in_parser = False          # inside parser.feed()/resume(): no re-entrant resume
        self.resume_pending = False
        self.flush_pending = None       # a target call whose queued bytes leave after feed()
        self.client_ip = ""
        self.client_ip_b = b""
        self.client_port = 0
        self.peer_cert = None           # verified client certificate (TLS listeners)
        self.ex = None                  # the exchange in progress
        self.tunnel = None              # the peer transport of an upgraded connection
        self.admitted = False           # admit_connection said yes (release_connection due)
        self.sock = None                # a RawSocket (plain TCP, owned here), else uvloop's
        return 0

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        cdef GatewayCore gw = self.gateway
        cdef SnapshotCore snap
        peer = transport.get_extra_info("peername")
        if peer:
            ip = peer[0]
            pair = _PEER_IPS.get(ip)
            if pair is None:
                if len(_PEER_IPS) >= _PEER_IPS_MAX:
                    _PEER_IPS.clear()
                pair = (ip, ip.encode())
                _PEER_IPS[ip] = pair
            self.client_ip = (<tuple>pair)[0]
            self.client_ip_b = (<tuple>pair)[1]
            self.client_port = peer[1]
        if self.tls:
            self.peer_cert = transport.get_extra_info("peercert") or None
        if not self.gateway.admit_connection(self):
            transport.write(build_response(
                503, [(b"content-type", b"application/json")],
                error_body(503, "overloaded", "too many connections", None), close=True))
            transport.close()
            self.state = _S_CLOSED
            return
        self.admitted = True
        # The parser is made by the first byte (_new_parser): a connection that sends
        # nothing, or has been idle for PARSER_IDLE_S, holds none.
        self.deadline_kind = _D_HEADER
        self.deadline = _mono() + gw.snapshot.limits.header_timeout_s

    cdef RequestParser _new_parser(self):
        cdef SnapshotCore snap = self.gateway.snapshot
        limits = snap.limits
        self.parser = RequestParser(
            self,
            max_request_line_bytes=limits.max_request_line_bytes,
            max_header_bytes=limits.max_header_bytes,
            max_headers=limits.max_headers,
            max_body_bytes=snap.body_ceiling,
        )
        return self.parser

    def connection_lost(self, exc):
        if not self.admitted:
            return
        self.admitted = False
        was_active = self.state in (_S_ACTIVE, _S_TUNNEL)
        self.state = _S_CLOSED
        self.deadline_kind = _D_NONE
        self.up_deadline = 0.0
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.close()
        ex = self.ex
        if ex is not None:
            self.ex = None
            ex.client_closed(was_active)
        self.gateway.release_connection(self)

    def data_received(self, data):
        self._received(data)

    cdef _received(self, object data):
        state = self.state
        if state == _S_TUNNEL:
            tunnel = self.tunnel
            if tunnel is not None:
                tunnel.write(data)
            return
        if state == _S_CLOSED:
            return  # lingering after an error answer: input is discarded
        kind = self.deadline_kind
        if kind == _D_KEEPALIVE:
            self.deadline_kind = _D_HEADER
            self.deadline = _mono() + self.gateway.snapshot.header_timeout_s
        elif kind == _D_BODY:
            self.deadline = _mono() + self.ex.snapshot.body_timeout_s
        self.head_seen = True
        cdef RequestParser parser = self.parser
        if parser is None:
            parser = self._new_parser()
        self.in_parser = True
        try:
            parser.feed(data)
            while self.resume_pending:
                self.resume_pending = False
                self.parser.resume()
        except HttpError as exc:
            self.in_parser = False
            self.resume_pending = False
            self.flush_pending = None
            self._reject_malformed(exc)
            return
        except Exception as exc:
            self.in_parser = False
            self.resume_pending = False
            self.flush_pending = None
            if self.ex is not None:
                self.ex.internal_error(exc)
            else:
                log.error("internal error on a connection", exc_info=exc)
            self._close()
            return
        self.in_parser = False
        f = self.flush_pending
        if f is not None:
            self.flush_pending = None
            if type(f) is UpstreamCall:
                (<UpstreamCall>f).flush_up()
            else:
                f.flush_up()
        if self.state == _S_ACTIVE and self.parser._unconsumed() > PIPELINE_BUFFER_LIMIT:
            self.pause(_P_PIPELINE)

    def eof_received(self):
        # Half-close from the client: finish what is in flight if the request is complete,
        # else nothing more can come.
        if self.state == _S_IDLE or self.state == _S_CLOSED:
            return False
        ex = self.ex
        if self.state == _S_ACTIVE and ex is not None and ex.body_done:
            ex.keep_alive = False
            return True  # keep the transport open to write the response
        return False

    def pause_writing(self):
        self.write_paused = True
        ex = self.ex
        if ex is not None:
            ex.client_pause_writing()

    def resume_writing(self):
        self.write_paused = False
        ex = self.ex
        if ex is not None:
            ex.client_resume_writing()

    # ------------------------------------------------------------------ parser handler
    # The compiled parser calls these through the vtable (ParserHandler); on_request,
    # on_body and on_request_complete are the same events for Python callers.
    cdef int handle_head(self, object head) except -1:
        cdef RequestHead h = <RequestHead>head
        cdef Exchange ex = Exchange.__new__(Exchange)
        self.state = _S_ACTIVE
        self.head_seen = False
        ex._init(self, h)
        self.ex = ex
        if h.chunked or h.content_length > 0:
            self.deadline_kind = _D_BODY
            self.deadline = ex.start + ex.snapshot.body_timeout_s
        else:
            self.deadline_kind = _D_NONE
            ex.body_done = True  # nothing to read; on_request_complete follows at once
        ex.begin()
        return 0

    cdef int handle_body(self, object data) except -1:
        ex = self.ex
        if ex is not None:
            ex.on_body(data)
        return 0

    cdef int handle_end(self) except -1:
        if self.deadline_kind == _D_BODY:
            self.deadline_kind = _D_NONE
        ex = self.ex
        if ex is not None and not ex.body_done:    # a request without a body is done already
            ex.on_body_end()
        return 0

    def on_request(self, RequestHead head):
        self.handle_head(head)

    def on_body(self, data):
        self.handle_body(data)

    def on_request_complete(self):
        self.handle_end()

    # ------------------------------------------------------------------ for the exchange
    cpdef write(self, data):
        if self.state != _S_CLOSED:
            if self.sock is not None:
                self.sock._write(data)
            else:
                self.transport.write(data)

    cpdef writelines(self, parts):
        if self.state != _S_CLOSED:
            if self.sock is not None:
                self.sock._writelines(parts)
            else:
                self.transport.writelines(parts)

    cpdef pause(self, int reason):
        if not self.read_paused and self.state != _S_CLOSED:
            if self.sock is not None:
                self.sock._pause_reading()
            else:
                self.transport.pause_reading()
        self.read_paused |= reason

    cpdef resume(self, int reason):
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and self.state != _S_CLOSED:
                if self.sock is not None:
                    self.sock._resume_reading()
                else:
                    self.transport.resume_reading()

    def set_body_limit(self, limit: int):
        self.parser.set_body_limit(limit)

    def defer_flush(self, call):
        """``call.flush_up()`` runs when the current parser call returns without error, or
        now when no parser call is running."""
        if self.in_parser:
            self.flush_pending = call
        else:
            call.flush_up()

    cpdef finish(self, bint keep_alive):
        """The exchange is over: close, or wait for (or parse) the next request."""
        self.ex = None
        self.up_deadline = 0.0
        if not keep_alive or self.gateway.draining:
            # Half-close and discard what else arrives: closing with unread input (an
            # HTTP/1.0 request with more pipelined behind it) would send an RST, and the
            # client's kernel would drop the answer it has not read yet. Found by the live
            # fuzzer (tests/fuzz/live.py).
            self.linger_close()
            return
        self.state = _S_IDLE
        cdef SnapshotCore snap = self.gateway.snapshot
        cdef RequestParser parser = self.parser
        if parser is not None and parser._unconsumed():
            self.deadline_kind = _D_HEADER
            self.deadline = _mono() + snap.header_timeout_s
        else:
            self.deadline_kind = _D_KEEPALIVE
            self.deadline = _mono() + snap.keepalive_timeout_s
        self.resume(_P_PIPELINE)
        if parser is None:
            return
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
            self.flush_pending = None
            self._reject_malformed(exc)
            return
        self.in_parser = False
        f = self.flush_pending
        if f is not None:
            self.flush_pending = None
            if type(f) is UpstreamCall:
                (<UpstreamCall>f).flush_up()
            else:
                f.flush_up()

    def start_tunnel(self, peer_transport, leftover: bytes):
        """Raw bytes both ways from now on (an accepted WebSocket upgrade)."""
        self.state = _S_TUNNEL
        self.deadline_kind = _D_NONE
        self.up_deadline = 0.0
        self.ex = None
        self.tunnel = peer_transport
        rest = self.parser.take_buffered()
        if rest:
            peer_transport.write(rest)
        if leftover:
            self.transport.write(leftover)
        self.resume(_P_PIPELINE | _P_WAITING)

    def close(self):
        self._close()

    cpdef abort(self):
        self.state = _S_CLOSED
        self.deadline_kind = _D_NONE
        self.transport.abort()

    cpdef linger_close(self):
        """Close after an error answer without resetting: stop sending, discard input for a
        moment so the client reads the answer instead of an RST."""
        if self.state == _S_CLOSED:
            return
        self.state = _S_CLOSED
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            if self.read_paused:
                self.read_paused = 0
                transport.resume_reading()
            self.deadline_kind = _D_LINGER
            self.deadline = _mono() + LINGER_S
        else:
            self.deadline_kind = _D_NONE
            transport.close()

    # ------------------------------------------------------------------ internals
    cdef int _close(self) except -1:
        if self.state != _S_CLOSED:
            self.state = _S_CLOSED
            self.deadline_kind = _D_NONE
            self.transport.close()
        return 0

    def _reject_malformed(self, exc):
        """The parser refused the bytes: answer with its status and close. Nothing of the
        request has reached (or will reach) an upstream."""
        if self.state == _S_CLOSED:
            return
        ex, self.ex = self.ex, None
        answer = True
        if ex is not None:
            ex.drop_target()
            if ex.resp_started:
                answer = False      # a response is under way: only closing can say it
                ex = None
        if ex is None:
            ex = Exchange.detached(self)
        ex.status = exc.status
        ex.error_code = exc.code
        if answer:
            self.transport.write(build_response(
                exc.status,
                [(b"content-type", b"application/json"), (b"x-request-id", ex.request_id_b)],
                error_body(exc.status, exc.code, exc.message, ex.request_id), close=True))
        ex.log()
        self.linger_close()

    # ------------------------------------------------------------------ timers (sweep)
    cpdef check_deadlines(self, double now):
        kind = self.deadline_kind
        if kind == _D_KEEPALIVE and now < self.deadline:
            # Idle between requests, nothing buffered (else the deadline would be a head's):
            # past PARSER_IDLE_S the parser and its buffer go; the next byte makes a new one.
            if (self.parser is not None and not self.in_parser and self.state == _S_IDLE
                    and self.deadline - now
                    <= self.gateway.snapshot.keepalive_timeout_s - PARSER_IDLE_S):
                self.parser = None
        elif kind and now >= self.deadline:
            if kind == _D_KEEPALIVE:
                self._close()
            elif kind == _D_LINGER:
                self.deadline_kind = _D_NONE
                self.transport.close()
            elif kind == _D_HEADER:
                if self.state == _S_IDLE:
                    self._reject_malformed(
                        HttpError(408, "request_timeout", "request head not received in time"))
            elif kind == _D_BODY:
                self.deadline_kind = _D_NONE
                if self.state == _S_ACTIVE and self.ex is not None:
                    self.ex.body_timed_out()
        if self.up_deadline and now >= self.up_deadline and self.state == _S_ACTIVE:
            self.up_deadline = 0.0
            ex = self.ex
            if ex is not None:
                ex.upstream_timed_out()

    def drain(self):
        """Graceful stop: idle connections close now, busy ones after their response."""
        if self.state == _S_IDLE and not self.head_seen:
            self._close()
        elif self.ex is not None:
            self.ex.keep_alive = False


def check_all_deadlines(connections, double now):
    """The sweep's walk over every connection (10,000 idle ones in well under a
    millisecond): only those with something due, or a parser to give back, are called."""
    cdef ClientConnection c
    cdef int kind
    for proto in list(connections):     # a check may close (and release) a connection
        c = <ClientConnection?>proto
        kind = c.deadline_kind
        if ((kind and (now >= c.deadline or (kind == _D_KEEPALIVE and c.parser is not None)))
                or (c.up_deadline and now >= c.up_deadline)):
            c.check_deadlines(now)


def shift_deadlines(connections, double lag):
    """Every deadline moves by ``lag``: the time the process stood still."""
    cdef ClientConnection c
    for proto in connections:
        c = <ClientConnection?>proto
        if c.deadline_kind:
            c.deadline += lag
        if c.up_deadline:
            c.up_deadline += lag



# Plaintext a TLS connection's records decrypt into: uvloop's SSL layer reads into the
# buffer a protocol lends it (get_buffer) and says how much it wrote (buffer_updated) in
# the same call, so one buffer serves every connection of the process. Without it uvloop
# allocates a 256 KiB bytes object per read and shrinks it: glibc serves that size with
# mmap, so every request paid mmap + mremap + munmap and a page fault.
cdef bytearray _TLS_PLAIN = bytearray(65536)
cdef object _TLS_PLAIN_VIEW = memoryview(_TLS_PLAIN)


cdef class TlsClientConnection(ClientConnection):
    """A ClientConnection on a TLS listener: the same connection, fed through the buffered
    protocol interface (``get_buffer`` / ``buffer_updated``) uvloop's SSL layer prefers."""

    def __init__(self, gateway, tls: bool = True):
        ClientConnection.__init__(self, gateway, True)

    def get_buffer(self, sizehint):
        return _TLS_PLAIN_VIEW

    def buffer_updated(self, nbytes):
        self._received(PyBytes_FromStringAndSize(PyByteArray_AS_STRING(_TLS_PLAIN), nbytes))
