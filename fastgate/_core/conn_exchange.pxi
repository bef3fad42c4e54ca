# Included by conn.pyx.
cdef class Exchange(ResponseSide):
    """One request and its answer: routing, the policy phases, the target, the log phase.

        begin: normalize_path, router (404/405; the snapshot's reroute hooks may claim a miss)
          -> access phase      route.access: sync None / Reject / Respond, or an awaitable
                               (reading pauses, the chain resumes where it stopped)
          -> request body      route.chunk: each body chunk as it streams (inspection; a
                               refusal drops the target), and route.body: policies that need
                               the whole body (buffered up to max_body_bytes, 413 beyond),
                               run once complete
          -> target            route.target.open(exchange): upstream, respond, ai, ...
          <- response head     route.response: policy(ctx, head) before the head is written
          <- response body     route.response_body: policy(ctx, data, last) -> bytes
          -> log phase         metrics + access log (Gateway.record), then route.log

    The exchange is the request's context (RequestContext): policies get it as ``ctx``.
    A target's call talks back through the response side (conn_response.pxi).
    """

    def __init__(self, conn, head):
        self._init(conn, head)

    cdef int _init(self, ClientConnection conn, head) except -1:
        # RequestContext's fields, set here in one place (no second object per request).
        # A new object's fields start as None / False / 0 (conn.pxd): only the others are set.
        cdef RequestHead h = head       # None for a detached exchange
        cdef GatewayCore gw = conn.gateway
        self.conn = conn
        self.head = h
        self.snapshot = gw.snapshot
        self.start = _mono()
        self.start_wall = _wall()
        self.route_name = "_none"
        self.client_ip = conn.client_ip
        self.client_port = conn.client_port
        self.tls = conn.tls
        self.peer_cert = conn.peer_cert
        self.request_id_b = request_id_b_from(
            _find(h.headers, b"x-request-id", None, False) if h is not None else None)
        self.consumer_groups = ()
        self.upstream_headers = []
        self.response_headers = []
        self.status = 0
        self.bytes_in = h.head_bytes if h is not None else 0
        self.bytes_out = 0
        # the exchange's own state (conn.pxd): call (the target's per-request object),
        # waiting (task of an awaitable policy), pending (body chunks received before the
        # target was ready), buffering (collecting the body for request-body policies),
        # discarding (answered locally, swallowing the rest of the body), resp_flushed (some
        # response bytes went to the client), resp_chunked (re-frame the response body as
        # chunked), wbuf (response bytes gathered during one target read), resp_filters (the
        # route's response-body policies, when they run), held (body chunks, None = the end,
        # awaiting the head)
        self.path = b""
        self.keep_alive = h is not None and h.keep_alive and not gw.draining
        return 0

    @classmethod
    def detached(cls, conn):
        """An exchange for input that never made a request (a malformed head, a timeout)."""
        return cls(conn, None)

    # ------------------------------------------------------------------ request head
    cpdef begin(self):
        cdef RequestHead head = <RequestHead>self.head
        cdef SnapshotCore snap = self.snapshot
        cdef RouteCore route
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
        route = <RouteCore?>value
        self.route = route
        self.route_name = route.name
        self.params = params
        self.path = path
        if not self.body_done:
            limit = route.max_body_bytes
            if limit is None:
                limit = snap.max_body_bytes
            if head.content_length > limit:
                self.answer_error(413, "payload_too_large", "request body too large")
                return
            self.conn.set_body_limit(limit)
        self._run_access()

    # ------------------------------------------------------------------ access phase
    cpdef _run_access(self):
        if self._run_chain(self.route.access, False):
            self._proceed()

    cdef bint _run_chain(self, policies, bint with_body) except -1:
        """Run ``policies`` from ``policy_index``: True when all let the request on. A
        Reject/Respond is answered; an awaitable (JWKS fetch, Redis, introspection) pauses
        reading, and the chain resumes where it stopped once it is done (_run_access or
        _run_body_policies again)."""
        cdef Py_ssize_t i = self.policy_index
        cdef Py_ssize_t n
        n = len(policies)
        while i < n:
            p = policies[i]
            try:
                if with_body:
                    if isinstance(p, BodyPhaseFn):
                        result = (<BodyPhaseFn>p).run_body(self, self.request_body)
                    else:
                        result = p(self, self.request_body)
                elif isinstance(p, PhaseFn):
                    result = (<PhaseFn>p).run(self)      # compiled: no Python call
                else:
                    result = p(self)
            except Exception as exc:
                self.internal_error(exc)
                return False
            i += 1
            if result is None:
                continue
            if self._answered(result):
                return False
            self.policy_index = i
            self.conn.pause(_P_WAITING)
            again = self._run_body_policies if with_body else self._run_access
            self.waiting = asyncio.ensure_future(self._await_policy(result, again))
            return False
        return True

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
        self.conn.resume(_P_WAITING)
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

    cdef _proceed(self):
        cdef RouteCore route = self.route
        target = route.target
        if not self.body_done and (<RequestHead>self.head).expect_continue and target.takes_body:
            self.conn.write(CONTINUE_100)
        if route.body:
            if not self.body_done:
                self.buffering = True      # the body phase runs once it is all here
                if self.pending:
                    self.conn.resume(_P_WAITING)
                return
            self._run_body()
            return
        self.call = _open(target, self)

    # ------------------------------------------------------------------ request body
    cpdef on_body(self, data):
        if self.finished:
            return
        self.bytes_in += len(data)
        if self.discarding:
            return  # we already answered locally; swallow the rest of the body
        if self.route.chunk and self._inspect(data, False):
            return
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
            self.conn.pause(_P_WAITING)

    cpdef on_body_end(self):
        if self.finished:
            return
        self.body_done = True
        if self.discarding:
            # A local answer was sent before the body ended: the exchange is over now.
            self._finish()
            return
        if self.route.chunk and self._inspect(b"", True):
            return
        if self.buffering:
            self.buffering = False
            self._run_body()
            return
        call = self.call
        if call is not None and call.attached:
            call.body_end()

    def _inspect(self, data, last) -> bool:
        """Request-chunk phase: each body chunk as it streams (sync policies: None, or a
        Reject/Respond). True when one refused: the target is dropped (an upstream that got
        part of the body loses the connection, never sees a whole request) and the
        connection closes after the answer."""
        for policy in self.route.chunk:
            try:
                result = policy(self, data, last)
            except Exception as exc:
                self.keep_alive = False
                self.internal_error(exc)
                return True
            if result is not None:
                self.drop_target()
                if self.waiting is not None:
                    self.waiting.cancel()
                    self.waiting = None
                self.conn.resume(_P_WAITING)
                self.keep_alive = False
                self.buffering = False
                self.pending = None
                if not self.resp_started:
                    self._answered(result)
                return True
        return False

    def take_pending(self):
        """The body chunks that arrived before the target was ready (for its call)."""
        pending = self.pending
        if pending:
            self.pending = None
            self.pending_bytes = 0
            self.conn.resume(_P_WAITING)
        return pending

    def _run_body(self):
        pending = self.take_pending()
        self.request_body = b"".join(pending) if pending else b""
        self.policy_index = 0
        self._run_body_policies()

    def _run_body_policies(self):
        if self._run_chain(self.route.body, True):
            self.call = _open(self.route.target, self)

    def internal_error(self, exc):
        """A bug or an unexpected failure: log it with its traceback, answer 500 if nothing
        was sent yet, and never leave the client hanging."""
        log.error("internal error on route %s", self.route_name, exc_info=exc)
        if self.finished:
            return
        self.drop_target()
        self.conn.resume(_P_WAITING)
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
        if was_active and not self.finished:
            # Logged (and counted) with what went out: 499 when the client closed before the
            # response (nginx's convention), else the status of the head it was sent.
            self.status = self.status or 499
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



cdef inline _open(target, Exchange ex):
    """The target's call for this request (the upstream target's without a Python call)."""
    if type(target) is UpstreamTarget:
        return (<UpstreamTarget>target).open(ex)
    return target.open(ex)
