# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The WAF's fast path as compiled policy phases (``routes[].waf``, fastgate.policies.waf).

A benign request ends in the fast path: its head (and, in the body phase, its body) is
decoded into one view (fastgate._core.wafdecode.view_of) and scanned once by the
prefilter's stop-at-first-match database. ``WafAccess`` and ``WafBody`` do that without a
Python frame and answer None when nothing matched; a request the scan flagged goes to the
policy's ``flagged_head`` / ``flagged_body`` (the precise stage, in Python), and anything
unusual (a route with exclusions, a context that is not the gateway's, a monitor-mode
request whose head already matched) to the policy's own methods, which decide it from the
start. Both answer exactly as ``WafPolicy.access`` and ``WafBodyPolicy.request_body`` do.
"""

from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE

from fastgate._core.conn cimport RequestContext
from fastgate._core.http cimport RequestHead
from fastgate._core.state cimport BodyPhaseFn, PhaseFn
from fastgate._core.wafdecode cimport USED_MAX, remember_used, view_of

cdef list _NO_HEADERS = []

cdef enum:
    CLEAN_ENTRIES = 4096    # the header table's bounds (as wafdecode.remember_clean's)
    CLEAN_LEN = 1024


cdef class _Fast:
    """What both phases scan with (the engine's ``fast_path()``), and whether the route
    excludes paths (the policy's methods decide those)."""

    cdef object scan            # the prefilter's any-scan: sets hit[0] on a match
    cdef list hit
    cdef frozenset skip
    cdef dict clean
    cdef Py_ssize_t body_limit
    cdef bint excluding

    def __init__(self, policy):
        scan, hit, skip, clean, body_limit = policy.engine.fast_path()
        self.excluding = bool(policy.prefixes or policy.exact)
        self.scan = scan
        self.hit = hit
        self.skip = skip
        self.clean = clean
        self.body_limit = body_limit

    cdef bint matched(self, bytes view) except -1:
        cdef list hit = self.hit
        hit[0] = False
        self.scan(view)
        return hit[0] is not False


cdef class WafAccess(PhaseFn):
    """``WafPolicy.access``: the head's view scanned; ``flagged_head(ctx, target)`` when
    something matched."""

    cdef _Fast fast
    cdef object slow
    cdef object flagged

    def __init__(self, policy):
        self.fast = _Fast(policy)
        self.slow = policy.access
        self.flagged = policy.flagged_head

    cdef object run(self, object ctx):
        cdef RequestContext c
        cdef RequestHead head
        cdef bytes target
        cdef bytes view
        cdef unsigned char used[USED_MAX]
        if self.fast.excluding or not isinstance(ctx, RequestContext):
            return self.slow(ctx)
        c = <RequestContext>ctx
        if not isinstance(c.head, RequestHead):
            return self.slow(ctx)
        head = <RequestHead>c.head
        target = head.path + b"?" + head.query if head.query else head.path
        try:
            view = view_of(target, head.headers, None, self.fast.skip, self.fast.body_limit,
                           self.fast.clean, used)
            if not self.fast.matched(view):
                remember_used(head.headers, self.fast.clean, used, CLEAN_ENTRIES, CLEAN_LEN)
                return None
        except Exception:   # noqa - the Python path fails closed on the same error
            return self.slow(ctx)
        return self.flagged(ctx, target)


cdef class WafBody(BodyPhaseFn):
    """``WafBodyPolicy.request_body``: the body's view (its first ``inspect_body_bytes``)
    scanned; ``flagged_body(ctx, body)`` when something matched."""

    cdef _Fast fast
    cdef object slow
    cdef object flagged
    cdef Py_ssize_t body_bytes

    def __init__(self, policy):
        self.fast = _Fast(policy)
        self.slow = policy.request_body
        self.flagged = policy.flagged_body
        self.body_bytes = policy.body_bytes

    cdef object run_body(self, object ctx, object body):
        cdef RequestContext c
        cdef bytes b
        if not body:
            return None
        if self.fast.excluding or not isinstance(ctx, RequestContext) or not PyBytes_CheckExact(body):
            return self.slow(ctx, body)
        c = <RequestContext>ctx
        if c.log_fields is not None:
            return self.slow(ctx, body)     # (monitor mode: the head may have matched)
        b = <bytes>body
        if PyBytes_GET_SIZE(b) > self.body_bytes:
            b = b[:self.body_bytes]
        try:
            if not self.fast.matched(view_of(b"/", _NO_HEADERS, b, self.fast.skip,
                                             self.fast.body_limit, None, NULL)):
                return None
        except Exception:   # noqa - the Python path fails closed on the same error
            return self.slow(ctx, body)
        return self.flagged(ctx, b)
