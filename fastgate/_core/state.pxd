# cython: language_level=3
"""Declarations of the compiled bases of the gateway, its config snapshot and a compiled
route (state.pyx): the fields the request path reads on every request, as C struct members."""
from fastgate._core.router cimport Router


cdef class RouteCore:
    cdef public object name
    cdef public object target
    cdef public tuple access
    cdef public tuple chunk
    cdef public tuple body
    cdef public tuple response
    cdef public tuple response_body
    cdef public tuple log
    cdef public object max_body_bytes
    cdef public frozenset drop_request_headers
    cdef public frozenset drop_response_headers


cdef class SnapshotCore:
    cdef public Router router
    cdef public tuple reroutes
    cdef public object body_ceiling
    cdef object _limits
    # copies of limits' fields, taken when limits is set
    cdef readonly double header_timeout_s
    cdef readonly double body_timeout_s
    cdef readonly double keepalive_timeout_s
    cdef readonly object max_body_bytes


cdef class GatewayCore:
    cdef public SnapshotCore snapshot
    cdef public bint draining
    cdef object _metrics
    cdef object _access_log
    # what the log phase reads of them, taken when they are set
    cdef readonly dict metric_routes
    cdef readonly dict usage_requests
    cdef readonly bint access_log_on


cdef class PhaseFn:
    """A policy phase compiled to C (auth with a cached token, a local rate limit): the
    exchange calls ``run`` through the vtable; Python callers call the object."""
    cdef object run(self, object ctx)


cdef class BodyPhaseFn:
    """The same for the request-body phase (the WAF's body scan): ``run_body(ctx, body)``."""
    cdef object run_body(self, object ctx, object body)
