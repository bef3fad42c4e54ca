# Included by conn.pyx.
cdef class RequestContext:
    """Per-request state handed to policies, targets and the log phase.

    The exchange *is* the request context of its request (one object per request, no second
    allocation); this base class declares what policies may read and set (conn.pxd):

        head              fastgate._core.http.RequestHead
        route             compiled route (fastgate.config.compile.CompiledRoute) or None
        route_name        str; "_none" when no route matched
        params            dict[str, str] of {param} path segments, or None
        query             bytes: query string to send upstream instead of head.query, or None
        client_ip         str
        client_port       int
        tls               bool: arrived over TLS
        peer_cert         dict from ssl getpeercert() when a client certificate was verified
        request_id        str
        request_id_b      the same, as bytes (what the headers carry; the str is made from
                          it when first read)
        traceparent       str sent upstream (None before the upstream call is made)
        traceparent_b     the same, as bytes
        consumer          str or None, set by auth
        consumer_groups   tuple[str, ...]
        claims            dict or None: verified token claims / introspection result
        upstream_headers  list[(bytes, bytes)]: extra headers policies add for the upstream
        response_headers  list[(bytes, bytes)]: extra headers policies add for the client
        req_drop          frozenset of request header names (lower-case bytes) not to
                          forward as received, beyond the route's, or None
        resp_drop         the same for the response to the client
        request_body      bytes: the whole request body, for routes whose policies asked
                          for it (a body policy may replace it), else None
        status            int: status sent to the client
        error_code        str or None: SPEC error code when the gateway answered itself
        bytes_in          int: request bytes received (head + body)
        bytes_out         int: response bytes sent (head + body)
        start             float: time.monotonic() when the head was parsed (None: never)
        start_wall        float: time.time() at the same moment (for logs)
        upstream_name     str or None
        upstream_target   str or None: "host:port" that served it
        upstream_duration float seconds or None
        snapshot          the config snapshot this request runs under
        plugin_state      per-request state of plugin views (fastgate.plugin), or None
        log_fields        dict or None: fields a target or policy adds to the access log
                          line (the AI model and its usage, the WAF's rule and part)

    Code that drives a policy directly (tests, benchmarks) builds a bare RequestContext:
    head, request_id, start and the others only its maker knows stay None.
    """

    @property
    def request_id(self):
        rid = self._request_id
        if rid is None and self.request_id_b is not None:
            rid = self._request_id = self.request_id_b.decode("ascii")
        return rid

    @request_id.setter
    def request_id(self, value):
        self._request_id = value
        self.request_id_b = value.encode() if value is not None else None

    @property
    def traceparent(self):
        tp = self._traceparent
        if tp is None and self.traceparent_b is not None:
            tp = self._traceparent = self.traceparent_b.decode("ascii")
        return tp

    @traceparent.setter
    def traceparent(self, value):
        self._traceparent = value
        self.traceparent_b = value.encode() if value is not None else None

    def __init__(self):
        self.route = None
        self.route_name = "_none"
        self.params = None
        self.query = None
        self.tls = False
        self.peer_cert = None
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
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_name = None
        self.upstream_target = None
        self.upstream_duration = None
        self.plugin_state = None
        self.log_fields = None
