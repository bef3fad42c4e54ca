# cython: language_level=3
"""The compiled bases of the gateway (fastgate/server/app.py), its config snapshot and a
compiled route (fastgate/config/compile.py).

The request path (fastgate/_core/conn.pyx) reads a handful of their fields on every request:
declared here, those reads are C struct accesses instead of attribute lookups on Python
objects. Everything else about these objects stays in their Python subclasses. A field
derived from another (a limit, the metrics' route table, whether the access log is on) is
taken when that other field is set, so it can never disagree with it.
"""

cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int fg_trim_heap(void) { return malloc_trim(0); }
    #else
    static int fg_trim_heap(void) { return 0; }
    #endif
    """
    int fg_trim_heap() nogil


def trim_heap():
    """Give the pages that start-up (config parsing, compiling) freed back to the system:
    glibc keeps freed memory in its arenas otherwise, and it counts in the RSS of an
    instance that may hold thousands of idle connections. No-op off glibc."""
    return fg_trim_heap()


cdef class RouteCore:
    """What the exchange reads of a route: its name, its target, the policy callables of
    each phase (tuples, empty when none) and its header drop sets."""

    def __init__(self):
        self.access = self.chunk = self.body = ()
        self.response = self.response_body = self.log = ()


cdef class SnapshotCore:
    """What the request path reads of a config snapshot: the router, the reroute hooks,
    the body ceiling and the limits (whose timeouts are copied as C doubles)."""

    def __init__(self):
        self.reroutes = ()

    @property
    def limits(self):
        return self._limits

    @limits.setter
    def limits(self, limits):
        self._limits = limits
        self.header_timeout_s = limits.header_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.keepalive_timeout_s = limits.keepalive_timeout_s
        self.max_body_bytes = limits.max_body_bytes


cdef class GatewayCore:
    """What the request path reads of the gateway: the current snapshot, whether it is
    draining, and the metrics and access log of the log phase."""

    @property
    def metrics(self):
        return self._metrics

    @metrics.setter
    def metrics(self, metrics):
        self._metrics = metrics
        self.metric_routes = metrics.routes if metrics is not None else None
        self.usage_requests = getattr(metrics, "usage_requests", None)

    @property
    def access_log(self):
        return self._access_log

    @access_log.setter
    def access_log(self, access_log):
        self._access_log = access_log
        self.access_log_on = access_log is not None and bool(access_log.enabled)


cdef class PhaseFn:
    """Base of a compiled policy phase. A policy offers one in its ``compiled`` dict
    (phase name -> PhaseFn) when it can do that phase in C for its config; the snapshot then
    puts it in the route's phase tuple instead of the bound method. It must answer exactly as
    the method would (it usually handles the common case itself and calls the method for
    every other)."""

    cdef object run(self, object ctx):
        raise NotImplementedError

    def __call__(self, ctx):
        return self.run(ctx)


cdef class BodyPhaseFn:
    """Base of a compiled request-body phase (``request_body`` in a policy's ``compiled``
    dict): the exchange calls ``run_body(ctx, body)`` through the vtable; it must answer
    exactly as the policy's ``request_body`` method would."""

    cdef object run_body(self, object ctx, object body):
        raise NotImplementedError

    def __call__(self, ctx, body):
        return self.run_body(ctx, body)
