# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-route request statistics, counted once per finished request: compiled, because it is
on every request's path (fastgate/observe/metrics.py owns them, renders and merges them).

``BUCKETS`` are the histogram's upper bounds (le) in seconds: from a cached sub-millisecond
answer to a 30 s LLM call. Counts are per bucket (not cumulative); the last slot counts values
above 30 s (+Inf only).
"""

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
cdef double[17] _BOUNDS
cdef Py_ssize_t _i
for _i in range(17):
    _BOUNDS[_i] = BUCKETS[_i]
NBUCKETS = 18

_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
# str or bytes (as the parser hands it over) -> label; one dict probe also bounds cardinality
cdef dict _METHOD_LABEL = {**{m: m for m in _METHODS}, **{m.encode(): m for m in _METHODS}}


cdef inline Py_ssize_t _bucket(double v) noexcept:
    """The slot of ``v``: the first bound >= v (bisect_left), 17 above the last."""
    cdef Py_ssize_t i = 0
    while i < 17 and _BOUNDS[i] < v:
        i += 1
    return i


cdef class RouteStats:
    """Everything one route accumulates per finished request."""

    def __init__(self):
        self.codes = {}                 # (method label, code int) -> count
        self.hist = [0] * NBUCKETS
        self.dur_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstreams = {}             # upstream name -> Hist


cdef class Hist:
    def __init__(self):
        self.counts = [0] * NBUCKETS
        self.total = 0.0


cpdef request_done(dict routes, route, method, code, double duration_s, bytes_in, bytes_out,
                   upstream, upstream_duration_s):
    """Record one finished request in ``routes`` (route name -> RouteStats). ``route`` is
    "_none" unmatched; ``method`` may be str or the parser's bytes (anything outside the
    standard set counts as OTHER)."""
    cdef RouteStats r = routes.get(route)
    cdef Hist h
    cdef Py_ssize_t b
    if r is None:
        r = routes[route] = RouteStats()
    key = (_METHOD_LABEL.get(method, "OTHER"), code)
    codes = r.codes
    codes[key] = codes.get(key, 0) + 1
    b = _bucket(duration_s)
    r.hist[b] = r.hist[b] + 1
    r.dur_sum += duration_s
    r.bytes_in = r.bytes_in + bytes_in
    r.bytes_out = r.bytes_out + bytes_out
    if upstream_duration_s is not None and upstream is not None:
        h = r.upstreams.get(upstream)
        if h is None:
            h = r.upstreams[upstream] = Hist()
        b = _bucket(upstream_duration_s)
        h.counts[b] = h.counts[b] + 1
        h.total += upstream_duration_s
