# Included by conn.pyx.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_TUNNEL_SKIP = frozenset((b"content-length", b"transfer-encoding", b"keep-alive",
                          b"x-request-id"))


def _is_websocket(upgrade: bytes) -> bool:
    return upgrade.strip().lower() == b"websocket"


_PARAM = re.compile(r"\{([^{}]+)\}")


def _rewrite_parts(template: str):
    parts = []
    pos = 0
    for m in _PARAM.finditer(template):
        parts.append((template[pos:m.start()].encode(), m.group(1)))
        pos = m.end()
    parts.append((template[pos:].encode(), None))
    return tuple(parts)


cdef class UpstreamTarget:
    """An ``upstream:`` route's target: prefix stripping, rewrite, Host, read timeout; each
    request it opens is an UpstreamCall."""
    takes_body = True

    def __init__(self, route_cfg, upstream):
        self.upstream = upstream
        # read per request: the upstream's name and its targets' base paths (both settled
        # when the snapshot is compiled, before its routes' targets are made)
        self.upstream_name = upstream.name
        self.prefixes = upstream.prefixes
        self.strip_prefix = (route_cfg.strip_prefix.rstrip("/").encode()
                             if route_cfg.strip_prefix else None)
        self.rewrite_parts = _rewrite_parts(route_cfg.rewrite) if route_cfg.rewrite else None
        self.preserve_host = route_cfg.preserve_host
        self.read_timeout = (route_cfg.timeout_s if route_cfg.timeout_s is not None
                             else upstream.read_timeout)

    cpdef open(self, ex):
        cdef UpstreamCall call = UpstreamCall.__new__(UpstreamCall)
        call._init(self, ex)
        call.dispatch(None)
        return call

    def render_rewrite(self, params) -> bytes:
        out = []
        for literal, param in self.rewrite_parts:
            out.append(literal)
            if param is not None:
                out.append((params or {}).get(param, "").encode("latin-1"))
        return b"".join(out)


cdef class UpstreamCall:
    """The ``upstream`` target's call for one request: pick a target (``Upstream.pick``),
    take a warm pooled connection or connect, send the head built once (hop-by-hop dropped,
    X-Forwarded-*, X-Request-ID, traceparent), stream the body (re-framed: Content-Length
    stays, chunked stays chunked), relay the response to the exchange as it arrives, and
    give the connection back to its pool only when everything was clean.

    Retries: connect failures on any method (nothing was sent); a connection lost before any
    response byte only for idempotent methods without a body. Bytes for the upstream are
    queued while the client parser runs and leave when that parser call returns cleanly
    (``ClientConnection.defer_flush``): a request rejected later in the same read sends
    nothing upstream, even over a warm pooled connection."""

    def __init__(self, UpstreamTarget target, Exchange ex):
        self._init(target, ex)

    cdef int _init(self, UpstreamTarget target, Exchange ex) except -1:
        # A new call's other fields start as None / 0 / False (conn.pxd): pool, conn (the
        # UpstreamConnection owned by this call), tries, body_sent_any, sent_at,
        # resp_keepalive, up_wbuf (request bytes gathered during one parser call), attached,
        # waiting (the connect task), cancelled.
        cdef RequestHead head = <RequestHead>ex.head
        cdef list headers = head.headers
        cdef list tail
        self.target = target
        self.ex = ex
        self.upstream = target.upstream
        self.read_timeout = target.read_timeout
        # What the upstream head is made of, settled once (the head itself is written per
        # try, with the chosen target's prefix and Host): the path (and query) sent
        # upstream, before the target's prefix, and the gateway's own header lines.
        path = ex.path
        prefix = target.strip_prefix
        if prefix is not None:
            if path == prefix:
                path = b"/"
            elif path.startswith(prefix) and path[len(prefix):len(prefix) + 1] == b"/":
                path = path[len(prefix):]
        if target.rewrite_parts is not None:
            path = target.render_rewrite(ex.params)
        query = head.query if ex.query is None else ex.query
        self.path = path + b"?" + query if query else path
        self.req_chunked = head.chunked
        client_ip = ex.conn.client_ip_b
        xff = _find(headers, b"x-forwarded-for", None, True)
        tail = list_with_room(16)
        push(tail, b"x-forwarded-for: ")
        push(tail, b", ".join(xff) + b", " + client_ip if xff else client_ip)
        push(tail, b"\r\nx-forwarded-proto: https\r\n" if ex.tls else
                    b"\r\nx-forwarded-proto: http\r\n")
        host = head.host
        if host:
            push(tail, b"x-forwarded-host: ")
            push(tail, host)
            push(tail, b"\r\n")
            if target.preserve_host:
                push(tail, b"host: ")
                push(tail, host)
                push(tail, b"\r\n")
        # else: the chosen target's Host line is added per try (_attach)
        ex.traceparent_b = tp = traceparent_b_from(_find(headers, b"traceparent", None, False))
        push(tail, b"x-request-id: ")
        push(tail, ex.request_id_b)
        push(tail, b"\r\ntraceparent: ")
        push(tail, tp)
        push(tail, b"\r\n")
        if ex.upstream_headers:
            push(tail, header_lines(ex.upstream_headers))
        if head.upgrade is not None and _is_websocket(head.upgrade):
            # Only WebSocket is tunnelled. Forwarding other upgrades (h2c above all) would
            # let a client open a raw HTTP/2 channel to the upstream behind every route
            # check of the gateway ("h2c smuggling"); they are dropped like any hop header.
            tail += (b"connection: upgrade\r\nupgrade: ", head.upgrade, b"\r\n")
        body = ex.request_body
        if body is not None:
            # Buffered for the body phase: sent whole, with its (possibly new) length.
            self.req_chunked = False
            push(tail, b"content-length: %d\r\n" % len(body))
        elif head.chunked:
            push(tail, b"transfer-encoding: chunked\r\n")
        elif head.content_length >= 0:
            push(tail, b"content-length: %d\r\n" % head.content_length)
        elif head.method in (b"POST", b"PUT", b"PATCH"):
            push(tail, b"content-length: 0\r\n")
        self.head_tail = tail
        return 0

    cpdef dispatch(self, failed_pool):
        """Pick a target and send the request: from the warm pool synchronously, else via
        a connect task."""
        cdef TargetPool pool
        upstream = self.upstream
        ex = self.ex
        single = upstream._single
        if single is not None:
            # Upstream.pick's answer for a one-target upstream, without the Python call
            pool = single if (<TargetPool?>single).healthy else None
        else:
            pool = upstream.pick(ex, failed_pool)
        if pool is None:
            ex.target_failed(503, "no_healthy_upstream",
                             f"no healthy target in upstream {upstream.name}")
            return
        self.pool = pool
        self.tries += 1
        conn = pool.acquire_idle()
        if conn is not None:
            self._attach(conn)
            return
        ex.conn.pause(_P_WAITING)
        self.waiting = asyncio.ensure_future(self._connect(pool))

    async def _connect(self, pool):
        upstream = self.upstream
        ex = self.ex
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
            if self.cancelled:
                return
            pool.mark_failure(_mono())
            # Nothing was sent: a retry on another target is safe for any method.
            if self.tries <= upstream.retries and not self.body_sent_any:
                self.dispatch(pool)
                return
            log.warning("upstream %s connect to %s failed: %r", upstream.name, pool.label, exc)
            if isinstance(exc, asyncio.TimeoutError):
                ex.target_failed(504, "gateway_timeout", "upstream connect timed out")
            else:
                ex.target_failed(502, "bad_gateway", "upstream connection failed")
            return
        except Exception as exc:  # never leave the client without an answer
            self.waiting = None
            ex.internal_error(exc)
            return
        self.waiting = None
        if self.cancelled:
            pool.release(conn, True)
            return
        ex.conn.resume(_P_WAITING)
        try:
            self._attach(conn)
        except Exception as exc:
            ex.internal_error(exc)

    cdef int _attach(self, UpstreamConnection conn) except -1:
        cdef Exchange ex = self.ex
        cdef RequestHead head = <RequestHead>ex.head
        cdef ClientConnection client = ex.conn
        cdef TargetPool pool = self.pool
        self.conn = conn
        conn.owner = self
        ex.upstream_name = self.target.upstream_name
        ex.upstream_target = pool.label
        (<ResponseParser?>conn.parser).start(head.method == b"HEAD")
        prefixes = self.target.prefixes
        line = _request_line(head.method, prefixes.get(pool, b"") if prefixes else b"",
                             self.path)
        drop = ex.route.drop_request_headers
        if ex.req_drop is not None:
            drop = drop | ex.req_drop
        tail = self.head_tail
        # the head ends with the chosen target's Host line (and the blank line)
        push(tail, b"\r\n" if self.target.preserve_host and head.host else pool.host_header)
        self._up_send((join_head(line, head.headers, drop, head.connection_tokens, tail),))
        drop_last(tail)
        self.sent_at = _mono()
        ex.conn.up_deadline = self.sent_at + self.read_timeout
        self.attached = True
        body = ex.request_body
        if body is not None:
            self.body_sent_any = True
            if body:
                self._up_send((body,))
        else:
            pending = ex.take_pending() if ex.pending else None
            if pending:
                self.body_sent_any = True
                if self.req_chunked:
                    for data in pending:
                        self._up_send((b"%x\r\n" % len(data), data, b"\r\n"))
                else:
                    self._up_send(tuple(pending))
            if ex.body_done and self.req_chunked:
                self._up_send((b"0\r\n\r\n",))
        if client.in_parser:
            client.flush_pending = self     # leaves when the parser call returns cleanly
        else:
            self.flush_up()
        if conn.peer_paused:
            client.pause(_P_UPSTREAM_FULL)
        if client.write_paused:
            conn.pause_reading()

    cpdef body(self, data):
        if self.req_chunked:
            self._up_send((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self._up_send((data,))
        self.body_sent_any = True
        client = self.ex.conn
        if client.in_parser:
            client.flush_pending = self
        else:
            self.flush_up()

    cpdef body_end(self):
        if self.req_chunked:
            self._up_send((b"0\r\n\r\n",))
            self.ex.conn.defer_flush(self)

    cdef int _up_send(self, tuple pieces) except -1:
        """Queue bytes for the upstream; they leave in flush_up()."""
        buf = self.up_wbuf
        if buf is None:
            self.up_wbuf = list(pieces)
        else:
            buf.extend(pieces)
        return 0

    cpdef flush_up(self):
        cdef list buf = self.up_wbuf
        if buf is not None:
            self.up_wbuf = None
            conn = self.conn
            if conn is not None and not conn.closed:
                if len(buf) == 1:
                    conn.transport.write(buf[0])
                else:
                    conn.transport.writelines(buf)

    # ------------------------------------------------------------------ client side events
    cpdef cancel(self):
        self.cancelled = True
        self.up_wbuf = None
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            if self.pool is not None:
                self.pool.detach(conn)
            conn.close()

    cpdef pause_reading(self):
        if self.conn is not None:
            self.conn.pause_reading()

    cpdef resume_reading(self):
        if self.conn is not None:
            self.conn.resume_reading()

    def timed_out(self):
        conn = self.conn
        if conn is not None:
            self._failed(conn, "upstream read timed out", timeout=True)

    # ------------------------------------------------------------------ upstream events
    cpdef on_upstream_response(self, UpstreamConnection conn, ResponseHead head):
        cdef Exchange ex = self.ex
        now = _mono()
        ex.upstream_duration = now - self.sent_at
        ex.conn.up_deadline = now + self.read_timeout
        if head.status == 101:
            if ex.head.upgrade is None or not _is_websocket(ex.head.upgrade):
                self._failed(conn, "unexpected 101 from upstream")
                return
            self._start_tunnel(conn, head)
            return
        self.resp_keepalive = head.keep_alive
        ex.send_head(head, ex.route.drop_response_headers)

    cpdef on_upstream_body(self, data):
        cdef Exchange ex = self.ex
        ex.send_body(data)
        ex.conn.up_deadline = _mono() + self.read_timeout

    cpdef read_done(self):
        """End of one upstream read: what it brought leaves in one write."""
        cdef Exchange ex = self.ex
        if ex.wbuf:
            ex.flush_output()

    cpdef on_upstream_complete(self, UpstreamConnection conn):
        cdef Exchange ex = self.ex
        self.conn = None
        ex.conn.up_deadline = 0.0
        reusable = (ex.body_done and self.resp_keepalive
                    and (<ResponseParser?>conn.parser)._unconsumed() == 0)
        self.pool.release(conn, reusable)
        ex.send_end()

    def upstream_error(self, conn, exc):
        self._failed(conn, f"invalid upstream response: {exc.message}")

    def upstream_closed(self, conn):
        self._failed(conn, "upstream closed the connection")

    def upstream_pause_writing(self):
        self.ex.conn.pause(_P_UPSTREAM_FULL)

    def upstream_resume_writing(self):
        self.ex.conn.resume(_P_UPSTREAM_FULL)

    def _failed(self, conn, reason, timeout=False):
        ex = self.ex
        if self.conn is conn:
            self.conn = None
            self.pool.detach(conn)
        conn.close()
        ex.conn.up_deadline = 0.0
        if self.cancelled or ex.finished:
            return
        if ex.resp_flushed:
            log.warning("upstream %s failed mid-response: %s", ex.upstream_name, reason)
            ex.target_failed(502, "bad_gateway", "upstream failed")
            return
        head = ex.head
        retry_ok = (
            not timeout
            and not ex.resp_started
            and self.tries <= self.upstream.retries
            and head.method in IDEMPOTENT
            and not self.body_sent_any and head.content_length <= 0 and not head.chunked
        )
        if retry_ok:
            self.attached = False
            self.dispatch(self.pool)
            return
        log.warning("upstream %s (%s): %s", ex.upstream_name, ex.upstream_target, reason)
        if timeout:
            ex.target_failed(504, "gateway_timeout", "upstream timed out")
        else:
            ex.target_failed(502, "bad_gateway", "upstream failed")

    # ------------------------------------------------------------------ tunnel (Upgrade)
    def _start_tunnel(self, conn, head):
        ex = self.ex
        parts = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        for name, value in head.headers:
            if name in _TUNNEL_SKIP:
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"x-request-id: ", ex.request_id_b, b"\r\n\r\n")
        self.pool.detach(conn)
        self.conn = None
        client = ex.conn
        conn.owner = _TunnelEnd(client)     # upstream bytes go straight to the client now
        leftover = conn.parser.take_buffered()
        conn.parser = _RawRelay(client)
        ex.start_tunnel(b"".join(parts), _PeerTransport(conn), leftover)


cdef bytes _request_line(bytes method, bytes prefix, bytes path):
    """method SP prefix path SP HTTP/1.1 CRLF, in one allocation."""
    cdef Py_ssize_t lm = len(method), lp = len(prefix), lpath = len(path)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, lm + 1 + lp + lpath + 11)
    cdef char* o = PyBytes_AS_STRING(out)
    memcpy(o, PyBytes_AS_STRING(method), lm)
    o += lm
    o[0] = 32
    o += 1
    memcpy(o, PyBytes_AS_STRING(prefix), lp)
    o += lp
    memcpy(o, PyBytes_AS_STRING(path), lpath)
    o += lpath
    memcpy(o, b" HTTP/1.1\r\n", 11)
    return out


class _PeerTransport:
    """What the client side writes to in a tunnel: the upstream connection's transport."""

    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    def write(self, data):
        conn = self.conn
        if not conn.closed:
            conn.transport.write(data)

    def close(self):
        self.conn.close()


class _TunnelEnd:
    """Owner of an upgraded upstream connection: relays its events to the client side."""

    __slots__ = ("client",)

    def __init__(self, client):
        self.client = client

    def read_done(self):
        pass

    def upstream_error(self, conn, exc):
        self.client.close()

    def upstream_closed(self, conn):
        self.client.close()

    def upstream_pause_writing(self):
        self.client.pause(_P_UPSTREAM_FULL)

    def upstream_resume_writing(self):
        self.client.resume(_P_UPSTREAM_FULL)


class _RawRelay:
    """Stands in for the response parser once a connection is a tunnel: bytes pass as-is."""

    __slots__ = ("client",)
    buffered = 0
    expecting = False

    def __init__(self, client):
        self.client = client

    def feed(self, data):
        self.client.write(data)

    def feed_eof(self):
        pass
