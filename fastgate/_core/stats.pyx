# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-route request statistics, counted once per finished request: compiled, because it is
on every request's path (fastgate/observe/metrics.py owns them, renders and merges them).

Every count is a C integer: a request costs a few array increments, not dict and tuple
operations. The scrape side reads them as Python values (``codes``, ``hist``, ``counts``).

``BUCKETS`` are the histogram's upper bounds (le) in seconds: from a cached sub-millisecond
answer to a 30 s LLM call. Counts are per bucket (not cumulative); the last slot counts values
above 30 s (+Inf only).
"""
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.math cimport floor, fmod

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
cdef double[17] _BOUNDS
cdef Py_ssize_t _i
for _i in range(17):
    _BOUNDS[_i] = BUCKETS[_i]
NBUCKETS = _NB

# Method labels by index; index 0 is OTHER (anything outside the standard set, which also
# bounds the label's cardinality).
_LABELS = ("OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT",
           "TRACE")
# str or bytes (as the parser hands it over) -> index
cdef dict _METHOD_INDEX = {**{m: i for i, m in enumerate(_LABELS) if i},
                           **{m.encode(): i for i, m in enumerate(_LABELS) if i}}


cdef inline Py_ssize_t _bucket(double v) noexcept:
    """The slot of ``v``: the first bound >= v (bisect_left), 17 above the last."""
    cdef Py_ssize_t i = 0
    while i < 17 and _BOUNDS[i] < v:
        i += 1
    return i


cdef class RouteStats:
    """Everything one route accumulates per finished request."""

    def __init__(self):
        self._more = {}
        self.upstreams = {}             # upstream name -> Hist

    cdef void _count(self, int key) noexcept:
        # open addressing over 32 slots (a route sees a handful of method/code pairs);
        # the rare ones past that go to a dict
        cdef unsigned int h = (<unsigned int>key * 2654435761u) >> 27
        cdef int n
        for n in range(_NSLOTS):
            if self._slots[h].key == key:
                self._slots[h].count += 1
                return
            if self._slots[h].key == 0:
                self._slots[h].key = key
                self._slots[h].count = 1
                return
            h = (h + 1) & (_NSLOTS - 1)
        pair = (_LABELS[key >> 10], key & 1023)
        self._more[pair] = self._more.get(pair, 0) + 1

    @property
    def codes(self):
        """{(method label, code int): count}."""
        out = dict(self._more)
        cdef int i, key
        for i in range(_NSLOTS):
            key = self._slots[i].key
            if key:
                out[(_LABELS[key >> 10], key & 1023)] = self._slots[i].count
        return out

    @property
    def hist(self):
        return [self._hist[i] for i in range(_NB)]


cdef class Hist:
    @property
    def counts(self):
        return [self._counts[i] for i in range(_NB)]


cpdef count_usage(dict usage, consumer, route, double now):
    """One request of a known consumer, counted in ``usage`` under (consumer, route, UTC
    day) (``Metrics.usage_requests``; the log phase calls this from C)."""
    # int(now // 86400), as Python's float floor division computes it
    cdef double mod = fmod(now, 86400.0)
    if mod != 0.0 and mod < 0.0:
        mod += 86400.0
    cdef double div = (now - mod) / 86400.0
    cdef double fd = floor(div)
    if div - fd > 0.5:
        fd += 1.0
    cdef long long day = <long long>fd
    key = (consumer, route, day)
    cdef PyObject *n = PyDict_GetItem(usage, key)
    usage[key] = 1 if n == NULL else <object>n + 1


cpdef request_done(dict routes, route, method, int code, double duration_s,
                   long long bytes_in, long long bytes_out, upstream, upstream_duration_s):
    """Record one finished request in ``routes`` (route name -> RouteStats). ``route`` is
    "_none" unmatched; ``method`` may be str or the parser's bytes (anything outside the
    standard set counts as OTHER)."""
    cdef RouteStats r = routes.get(route)
    cdef Hist h
    cdef Py_ssize_t b
    cdef object mi
    if r is None:
        r = routes[route] = RouteStats()
    mi = _METHOD_INDEX.get(method)
    if 0 < code < 1024:
        r._count(((<int>mi if mi is not None else 0) << 10) | code)
    else:       # not a status a response can carry; counted all the same
        pair = (_LABELS[<int>mi if mi is not None else 0], code)
        r._more[pair] = r._more.get(pair, 0) + 1
    r._hist[_bucket(duration_s)] += 1
    r.dur_sum += duration_s
    r.bytes_in += bytes_in
    r.bytes_out += bytes_out
    if upstream_duration_s is not None and upstream is not None:
        h = r.upstreams.get(upstream)
        if h is None:
            h = r.upstreams[upstream] = Hist()
        h._counts[_bucket(upstream_duration_s)] += 1
        h.total += upstream_duration_s
