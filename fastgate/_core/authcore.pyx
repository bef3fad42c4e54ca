# cython: language_level=3, boundscheck=False, wraparound=False
"""The auth policy's common case in C (fastgate/policies/auth): a repeated JWT.

``Verified`` (an authenticated principal, shared by every request that repeats its token) and
``ConsumerInfo`` (a consumer as the policy hands it to the request) are compiled so their
fields are struct members. ``JwtAccess`` is the access phase of a route whose only
authenticator is a ``type: jwt`` one: for a request carrying exactly one Authorization value
that the authenticator's cache holds, unexpired, and that the route's groups, scopes and MFA
rules admit, it grants here, with the same effects as ``AuthPolicy.access``. Every other
request (no token, a new token, an expired one, a refusal) goes to that method, which decides
it from the start: the fast path has changed nothing by then.
"""
cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject, PyObject_RichCompareBool, Py_LE
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

from fastgate._core.conn cimport RequestContext
from fastgate._core.http cimport RequestHead, _find
from fastgate._core.state cimport PhaseFn

_AUTH = b"authorization"


cdef inline double _clock(int which) noexcept:
    cdef timespec ts
    clock_gettime(which, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


@cython.final
cdef class Verified:
    """An authenticated principal (cacheable: nothing request-specific in it). ``kind`` says
    which consumer map names it (common.BY_SUBJECT, BY_KEY, BY_NAME)."""

    cdef public int kind
    cdef public object subject      # str or None (no consumer_claim in the token)
    cdef public object claims       # dict (read-only by convention) or None
    cdef public object scopes       # frozenset[str]
    cdef public bint mfa            # amr shows a second factor
    cdef public object acr          # str or None
    cdef public object forward      # tuple of (lower-case name bytes, value bytes)
    cdef public double expires      # wall-clock time after which it must be re-checked

    def __init__(self, int kind, subject, claims=None, scopes=frozenset(), mfa=False,
                 acr=None, forward=(), expires=float("inf")):
        self.kind = kind
        self.subject = subject
        self.claims = claims
        self.scopes = scopes
        self.mfa = bool(mfa)
        self.acr = acr
        self.forward = forward
        self.expires = expires

    def __repr__(self):
        return f"Verified({self.kind}, {self.subject!r})"


@cython.final
cdef class ConsumerInfo:
    """A consumer as a granted request gets it: name, groups and the identity headers."""

    cdef readonly object name
    cdef readonly tuple groups
    cdef readonly frozenset group_set
    cdef readonly tuple headers      # (b"x-consumer-name", ...), (b"x-consumer-groups", ...)

    def __init__(self, c):
        self.name = c.name
        self.groups = tuple(c.groups)
        self.group_set = frozenset(c.groups)
        h = [(b"x-consumer-name", c.name.encode())]
        if c.groups:
            h.append((b"x-consumer-groups", ",".join(c.groups).encode()))
        self.headers = tuple(h)

    def __repr__(self):
        return f"ConsumerInfo({self.name!r})"


cdef enum:
    _MEMO_SLOTS = 64         # a power of two


@cython.final
cdef class TokenMemo:
    """The last tokens seen, in front of an authenticator's cache dict: a bearer token is
    hundreds of bytes, and hashing it for the dict costs more than the rest of the grant.
    A slot is chosen from the value's length and last eight bytes (a signature's, so they
    differ between tokens) and a hit is the whole value compared byte for byte: a collision
    can only cost a miss. It holds what the cache held; the authenticator clears both when
    its keys change, and the expiry is checked on every use."""

    cdef list keys
    cdef list values

    def __init__(self):
        self.keys = [None] * _MEMO_SLOTS
        self.values = [None] * _MEMO_SLOTS

    def clear(self):
        cdef int i
        for i in range(_MEMO_SLOTS):
            self.keys[i] = None
            self.values[i] = None

    cdef inline Py_ssize_t _slot(self, bytes value) noexcept:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
        cdef uint64_t w = <uint64_t>n
        if n >= 8:
            memcpy(&w, PyBytes_AS_STRING(value) + n - 8, 8)
            w ^= <uint64_t>n
        return <Py_ssize_t>((w * 0x9E3779B97F4A7C15ULL) >> 58) & (_MEMO_SLOTS - 1)

    cdef object get(self, bytes value):
        cdef Py_ssize_t i = self._slot(value)
        cdef object k = <object>PyList_GET_ITEM(self.keys, i)
        if k is None:
            return None
        if k is value or (PyBytes_GET_SIZE(<bytes>k) == PyBytes_GET_SIZE(value) and memcmp(
                PyBytes_AS_STRING(<bytes>k), PyBytes_AS_STRING(value),
                PyBytes_GET_SIZE(value)) == 0):
            return <object>PyList_GET_ITEM(self.values, i)
        return None

    cdef void put(self, bytes value, object verified):
        cdef Py_ssize_t i = self._slot(value)
        self.keys[i] = value
        self.values[i] = verified


@cython.final
cdef class JwtAccess(PhaseFn):
    """``AuthPolicy.access`` for a route with one jwt authenticator, a cached token granted
    here (see the module docstring); ``slow`` is that method, for everything else."""

    cdef object slow
    cdef dict cache          # the authenticator's token cache (the same dict it fills)
    cdef TokenMemo memo      # the authenticator's memo in front of it
    cdef object source       # its JWKS source (maybe_refresh), or None with a secret
    cdef tuple lookups       # consumer maps by Verified.kind
    cdef frozenset groups
    cdef frozenset scopes
    cdef bint mfa
    cdef frozenset acr_values

    def __init__(self, policy, authenticator):
        self.slow = policy.access
        self.cache = authenticator.cache
        self.memo = authenticator.memo
        self.source = authenticator.source
        self.lookups = tuple(policy.lookups)
        self.groups = policy.groups
        self.scopes = policy.scopes
        self.mfa = policy.mfa
        self.acr_values = policy.acr_values

    cdef object run(self, object ctx):
        cdef RequestContext c
        cdef Verified v
        cdef ConsumerInfo info = None
        cdef PyObject *hit
        cdef PyObject *found
        cdef list values
        if not isinstance(ctx, RequestContext):
            return self.slow(ctx)
        c = <RequestContext>ctx
        if not isinstance(c.head, RequestHead):
            return self.slow(ctx)
        values = <list>_find((<RequestHead>c.head).headers, _AUTH, None, True)
        if PyList_GET_SIZE(values) != 1:
            return self.slow(ctx)
        value = <object>PyList_GET_ITEM(values, 0)
        if not PyBytes_CheckExact(value):
            return self.slow(ctx)
        memo = self.memo.get(value)
        if memo is None:
            hit = PyDict_GetItem(self.cache, value)
            if hit == NULL or type(<object>hit) is not Verified:
                return self.slow(ctx)
            memo = <object>hit
            self.memo.put(value, memo)
        elif type(memo) is not Verified:
            return self.slow(ctx)
        v = <Verified>memo
        if not _clock(CLOCK_REALTIME) < v.expires:
            return self.slow(ctx)
        if 0 <= v.kind < len(self.lookups):
            found = PyDict_GetItem(<dict>PyTuple_GET_ITEM(self.lookups, v.kind), v.subject) \
                if v.subject is not None else NULL
            if found != NULL:
                if type(<object>found) is not ConsumerInfo:
                    return self.slow(ctx)
                info = <ConsumerInfo>found
        else:
            return self.slow(ctx)
        if info is None and v.kind != 0:
            return self.slow(ctx)        # an API key or certificate nobody owns: refused there
        if refusal(self.groups, self.scopes, self.mfa, self.acr_values, v, info) != _ADMITTED:
            return self.slow(ctx)
        if self.source is not None:
            mono = _clock(CLOCK_MONOTONIC)
            if not mono < self.source.refresh_due:      # a no-op call skipped otherwise
                self.source.maybe_refresh(mono)
        grant_to(c, v, info)
        return None


# What refusal() answers: the route's rules admit the principal, or which rule refuses it.
cdef enum:
    _ADMITTED = 0
    _NOT_IN_GROUP = 1
    _LACKS_SCOPE = 2
    _NEEDS_MFA = 3
ADMITTED, NOT_IN_GROUP, LACKS_SCOPE, NEEDS_MFA = _ADMITTED, _NOT_IN_GROUP, _LACKS_SCOPE, _NEEDS_MFA


cpdef int refusal(frozenset groups, frozenset scopes, bint mfa, frozenset acr_values,
                  Verified v, ConsumerInfo info):
    """The route's authorization of an authenticated principal (``info``: its consumer, or
    None): ``groups`` (the consumer in one of them), ``scopes`` (all granted), ``mfa`` (a
    second factor in ``amr``, or ``acr`` in ``acr_values``); the first rule that refuses."""
    if groups and (info is None or groups.isdisjoint(info.group_set)):
        return _NOT_IN_GROUP
    if scopes and not PyObject_RichCompareBool(scopes, v.scopes, Py_LE):
        return _LACKS_SCOPE
    if mfa and not (v.mfa or (v.acr is not None and v.acr in acr_values)):
        return _NEEDS_MFA
    return _ADMITTED


cpdef grant_to(RequestContext ctx, Verified v, ConsumerInfo info):
    """Let the request in as ``v`` (consumer ``info``, or None): its claims, consumer and
    groups, and the identity headers (and forwarded claims) for the upstream."""
    ctx.claims = v.claims
    if info is not None:
        ctx.consumer = info.name
        ctx.consumer_groups = info.groups
        ctx.upstream_headers += info.headers
    if v.forward:
        ctx.upstream_headers += v.forward
