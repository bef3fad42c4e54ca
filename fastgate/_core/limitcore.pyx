# cython: language_level=3, boundscheck=False, wraparound=False
"""The rate-limit policy's common case in C (fastgate/policies/rate_limit).

``KeyBy`` makes the key a request counts under (rate limits and budgets). ``LocalLimitAccess``
is the access phase of a route with exactly one ``scope: local`` limit: take a token from the
shared bucket table and add the RateLimit-* headers, or answer 429 through the policy's
``_deny``, exactly as ``RateLimitPolicy.access`` does, without a Python call when admitted.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

import orjson

from fastgate._core.buckets cimport BucketPlan, TakeResult, TokenBucketTable
from fastgate._core.conn cimport RequestContext
from fastgate._core.state cimport PhaseFn

K_CONSUMER, K_IP, K_ROUTE, K_HEADER, K_CLAIM = range(5)
KINDS = {"consumer": K_CONSUMER, "ip": K_IP, "route": K_ROUTE, "header": K_HEADER,
         "claim": K_CLAIM}
cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef enum:
    _K_CONSUMER = 0
    _K_IP = 1
    _K_ROUTE = 2
    _K_HEADER = 3
    _K_CLAIM = 4

H_LIMIT = b"ratelimit-limit"
H_REMAINING = b"ratelimit-remaining"
H_RESET = b"ratelimit-reset"


def claim_bytes(v) -> bytes:
    """A claim's value as key bytes."""
    if isinstance(v, str):
        return v.encode("utf-8", "surrogatepass")
    if isinstance(v, (bool, int, float)):
        return str(v).encode()
    try:
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr(v).encode("utf-8", "surrogatepass")


cdef class KeyBy:
    """The key a request counts under for ``by`` (rate limits, and budgets in
    fastgate.policies.budget): ``ident`` names the counter family (route, position, by), so
    two families never share a key; the value, or the client IP in keys of their own when
    the request lacks it (leaving a header out must not be a way around the limit)."""

    cdef readonly int kind
    cdef readonly object name
    cdef readonly object name_b
    cdef readonly bytes prefix
    cdef readonly bytes fallback

    def __init__(self, bytes ident, by_kind, by_name):
        self.kind = KINDS[by_kind]
        self.name = by_name
        self.name_b = by_name.encode("latin-1") if by_name else None
        self.prefix = ident + b"\x00"
        self.fallback = ident + b"\x01ip\x00"    # never equal to a prefix + value key

    cpdef bytes key(self, ctx):
        cdef RequestContext c
        if isinstance(ctx, RequestContext):
            c = <RequestContext>ctx
            return self._key(c.client_ip, c.consumer, c.head, c.claims)
        return self._key(getattr(ctx, "client_ip", None), getattr(ctx, "consumer", None),
                         getattr(ctx, "head", None), getattr(ctx, "claims", None))

    cdef bytes _key(self, ip, consumer, head, claims):
        cdef int kind = self.kind
        if kind == _K_IP:
            return _ip(self.prefix, ip)
        if kind == _K_CONSUMER:
            if consumer:
                return _plus(self.prefix, consumer, True)
        elif kind == _K_ROUTE:
            return self.prefix
        elif kind == _K_HEADER:
            v = head.get(self.name_b) if head is not None else None
            if v:
                return self.prefix + v
        elif claims:
            v = claims.get(self.name)
            if v is not None and v != "":
                return self.prefix + claim_bytes(v)
        return _ip(self.fallback, ip)


cdef bytes _plus(bytes prefix, object s, bint surrogates):
    """``prefix + s.encode("utf-8"[, "surrogatepass"])``: one allocation and two copies
    when ``s`` is an ASCII str (client IPs, consumer names), the codec otherwise."""
    cdef Py_ssize_t lp, n
    cdef bytes out
    cdef char *p
    if type(s) is str and PyUnicode_IS_ASCII(s):
        lp = PyBytes_GET_SIZE(prefix)
        n = PyUnicode_GET_LENGTH(s)
        out = PyBytes_FromStringAndSize(NULL, lp + n)
        p = PyBytes_AS_STRING(out)
        memcpy(p, PyBytes_AS_STRING(prefix), lp)
        memcpy(p + lp, PyUnicode_DATA(s), n)
        return out
    return prefix + (s.encode("utf-8", "surrogatepass") if surrogates else s.encode())


cdef inline bytes _ip(bytes prefix, object ip):
    return _plus(prefix, ip or "", False)


@cython.final
cdef class LocalLimitAccess(PhaseFn):
    """``RateLimitPolicy.access`` for a route whose only limit is one local limit."""

    cdef KeyBy lim
    cdef TokenBucketTable table
    cdef BucketPlan plan
    cdef TakeResult r              # reused: read right after each take
    cdef object deny               # the policy's _deny (a 429 with its headers)
    cdef object slow               # the policy's access, for a context that is not compiled
    cdef bytes limit_b
    cdef double per_s

    def __init__(self, policy):
        limits, plan = policy.single
        self.lim = limits[0]
        self.table = policy.table
        self.plan = plan
        self.r = TakeResult.__new__(TakeResult)
        self.deny = policy._deny
        self.slow = policy.access
        self.limit_b = limits[0].limit_b
        self.per_s = limits[0].per_s

    cdef object run(self, object ctx):
        cdef RequestContext c
        cdef TakeResult r = self.r
        if not isinstance(ctx, RequestContext):
            return self.slow(ctx)
        c = <RequestContext>ctx
        self.table._take((self.lim.key(c),), self.plan, 1.0, -1, r)
        if not r.allowed:
            return self.deny(ctx, self.limit_b, r.retry_after_s, r.remaining, r.reset_s,
                             self.per_s)
        c.response_headers += ((H_LIMIT, self.limit_b), (H_REMAINING, r._remaining_b()),
                               (H_RESET, r._reset_b()))
        return None
