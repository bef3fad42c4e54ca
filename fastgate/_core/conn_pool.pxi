# Included by conn.pyx.
# Response heads from upstreams may be larger than what clients may send us.
RESPONSE_MAX_HEADER_BYTES = 65536
RESPONSE_MAX_HEADERS = 200


cdef class UpstreamConnection(ParserHandler):
    """One TCP/TLS connection to an upstream target: idle in its target's pool or owned by
    exactly one call. Callbacks from the compiled response parser go straight to the owner.
    A connection that saw anything unexpected (bytes while idle, a response longer than
    declared, a parse error, a response before the request was fully sent) is closed, never
    returned to the pool, so a broken upstream cannot leak bytes into another client's
    response."""

    def __init__(self, TargetPool pool):
        self.pool = pool
        self.transport = None
        self.parser = ResponseParser(
            self, max_header_bytes=RESPONSE_MAX_HEADER_BYTES, max_headers=RESPONSE_MAX_HEADERS
        )
        self.owner = None
        self.closed = False
        self.reading_paused = False
        self.peer_paused = False  # our transport is over its high-water mark: owner pauses the client

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        owner = self.owner
        if owner is None:
            # Unsolicited bytes on an idle connection: it can never be trusted again.
            self.close()
            return
        parser = self.parser
        try:
            if type(parser) is ResponseParser:
                (<ResponseParser>parser).feed(data)
            else:
                parser.feed(data)         # a tunnel's raw relay
        except HttpError as exc:
            owner = self.owner
            self.close()
            if owner is not None:
                owner.upstream_error(self, exc)
            return
        owner = self.owner
        if type(owner) is UpstreamCall:
            (<UpstreamCall>owner).read_done()
        elif owner is not None:
            owner.read_done()

    def eof_received(self):
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc):
        self.closed = True
        self.pool.forget(self)
        owner = self.owner
        if owner is None:
            return
        if self.parser.expecting:
            try:
                self.parser.feed_eof()  # completes a close-delimited body
            except HttpError as err:
                owner = self.owner
                self.owner = None
                if owner is not None:
                    owner.upstream_error(self, err)
                return
        owner = self.owner
        self.owner = None
        if owner is not None:
            owner.upstream_closed(self)

    def pause_writing(self):
        self.peer_paused = True
        owner = self.owner
        if owner is not None:
            owner.upstream_pause_writing()

    def resume_writing(self):
        self.peer_paused = False
        owner = self.owner
        if owner is not None:
            owner.upstream_resume_writing()

    # -- response parser handler ------------------------------------------------------
    # The compiled parser calls these through the vtable (ParserHandler); the on_* methods
    # are the same events for Python callers.
    cdef int handle_informational(self, object head) except -1:
        return 0  # 1xx other than 101 are hop-local; the gateway answers 100-continue itself

    cdef int handle_head(self, object head) except -1:
        owner = self.owner
        if type(owner) is UpstreamCall:
            (<UpstreamCall>owner).on_upstream_response(self, head)
        elif owner is not None:   # None: closed by its owner inside this very read
            owner.on_upstream_response(self, head)
        return 0

    cdef int handle_body(self, object data) except -1:
        owner = self.owner
        if type(owner) is UpstreamCall:
            (<UpstreamCall>owner).on_upstream_body(data)
        elif owner is not None:
            owner.on_upstream_body(data)
        return 0

    cdef int handle_end(self) except -1:
        owner = self.owner
        if type(owner) is UpstreamCall:
            (<UpstreamCall>owner).on_upstream_complete(self)
        elif owner is not None:
            owner.on_upstream_complete(self)
        return 0

    def on_informational(self, head):
        pass

    def on_response(self, head):
        self.handle_head(head)

    def on_body(self, data):
        self.handle_body(data)

    def on_response_complete(self):
        self.handle_end()

    # -- control ----------------------------------------------------------------------
    cpdef pause_reading(self):
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    cpdef resume_reading(self):
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    cpdef close(self):
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            self.owner = None
            if self.transport is not None:
                self.transport.abort()


cdef class TargetPool:
    """Keep-alive connections to one target (scheme, host, port)."""

    def __init__(self, scheme: str, host: str, port: int, keepalive: int,
                 ssl_context: _ssl.SSLContext | None, loop=None):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.server_hostname = host if ssl_context is not None else None
        self.keepalive = keepalive
        self.idle = []  # LIFO: the warmest connection first
        self.active = 0  # connections owned by exchanges (for least_conn)
        self.loop = loop
        self.label = f"{host}:{port}"
        self.failures = 0
        self.down_until = 0.0
        self.healthy = True
        self.host_header = b"host: %s\r\n\r\n" % self.label.encode()

    cpdef UpstreamConnection acquire_idle(self):
        cdef UpstreamConnection conn
        cdef list idle = self.idle
        while idle:
            conn = <UpstreamConnection?>idle[len(idle) - 1]
            drop_last(idle)         # keeps the list's room: no reallocation per request
            # A peer close is seen by the transport before connection_lost runs.
            if not conn.closed and not conn.transport.is_closing():
                self.active += 1
                return conn
            conn.close()
        return None

    async def connect(self, timeout):
        loop = self.loop or asyncio.get_running_loop()
        conn = UpstreamConnection(self)
        await asyncio.wait_for(
            loop.create_connection(
                lambda: conn, self.host, self.port, ssl=self.ssl,
                server_hostname=self.server_hostname,
            ),
            timeout,
        )
        self.active += 1
        self.failures = 0
        return conn

    cpdef release(self, UpstreamConnection conn, bint reusable):
        """Give a connection back after an exchange; reusable only if fully clean."""
        self.active -= 1
        conn.owner = None
        if (not reusable or conn.closed or (<ResponseParser?>conn.parser)._unconsumed()
                or len(self.idle) >= self.keepalive or conn.reading_paused):
            conn.close()
            return
        push(self.idle, conn)

    cpdef detach(self, UpstreamConnection conn):
        """An owned connection leaves the pool for good (tunnel, error)."""
        self.active -= 1

    cpdef forget(self, UpstreamConnection conn):
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def mark_failure(self, now: float):
        self.failures += 1
        # Passive health: a target refusing connections is skipped briefly by the balancer
        # (while another target is available), so retries don't hammer it.
        if self.failures >= 2:
            self.down_until = now + min(10.0, 0.5 * self.failures)

    def close_idle(self):
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class PoolRegistry:
    """Target pools keyed by (scheme, host, port, tls settings), kept across reloads so a
    reload does not drop warm keep-alive connections."""

    def __init__(self):
        self.pools: dict = {}

    def get(self, scheme, host, port, keepalive, ssl_context, ssl_key) -> TargetPool:
        key = (scheme, host, port, ssl_key)
        pool = self.pools.get(key)
        if pool is None:
            pool = TargetPool(scheme, host, port, keepalive, ssl_context)
            self.pools[key] = pool
        else:
            pool.keepalive = keepalive
        return pool

    def prune(self, keep: set):
        for key in list(self.pools):
            if key not in keep:
                self.pools.pop(key).close_idle()

    def close_all(self):
        for pool in self.pools.values():
            pool.close_idle()
