# cython: language_level=3
"""Request ids and W3C trace-context (traceparent) for every proxied request, compiled
(fastgate/observe/ids.py re-exports them).

Both helpers run once per request, so they avoid regexes and per-call syscalls: random hex
comes from a pool filled by one ``os.urandom`` call per 256 request ids. The pool is discarded in a
forked child, otherwise every worker would hand out the same ids as its siblings.
"""


import os
import re

__all__ = ["request_id_from", "traceparent_from", "new_request_id", "new_trace_id", "new_span_id"]

# X-Request-ID values we pass on unchanged: short and made only of characters that cannot
# break a log line, a header or a shell. Anything else is replaced, never "cleaned".
_RID_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
_RID_MAX = 128

# version (never ff) - trace-id (not all zero) - parent-id (not all zero) - flags; lower-case
# hex only (W3C 3.2). ASCII-only classes so no Unicode digit can slip through.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-((?!0{32})[0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-([0-9a-f]{2})")
# A trace we start is marked sampled: downstream services that follow the parent's decision
# then record it, which is what someone who sends requests through a gateway expects.
_NEW_TRACE_FLAGS = "01"

# Flags we forward: sampled (0x01) and, from trace-context level 2, random (0x02). Other bits
# are reserved and must be sent as zero (W3C 3.2.2.5), so they are masked off here.
_FLAGS_OUT = {"%02x" % i: "%02x" % (i & 0x03) for i in range(256)}

_POOL_BYTES = 4096                 # one os.urandom call per 256 ids of 32 hex / 512 of 16
_ZERO16 = "0" * 16
_ZERO32 = "0" * 32
# list.pop() is the cheapest way to hand out pre-made strings; bytes.hex(sep).split() makes
# them in C. All-zero ids (invalid in trace-context) are dropped at fill time.
cdef list _pool16 = []
cdef list _pool32 = []


cdef _fill(list pool, int nbytes, str zero):
    pool[:] = os.urandom(_POOL_BYTES).hex(" ", nbytes).split()
    while zero in pool:
        pool.remove(zero)


def _reset_after_fork():
    _pool16.clear()
    _pool32.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


cpdef str new_span_id():
    """16 random lower-case hex characters, never all zero."""
    try:
        return _pool16.pop()
    except IndexError:
        _fill(_pool16, 8, _ZERO16)
        return _pool16.pop()


cpdef str new_request_id():
    """32 random lower-case hex characters, never all zero (so also a valid trace-id)."""
    try:
        return _pool32.pop()
    except IndexError:
        _fill(_pool32, 16, _ZERO32)
        return _pool32.pop()


def new_trace_id():
    return new_request_id()


cpdef str request_id_from(value):
    """The client's X-Request-ID when it is 1-128 chars of [A-Za-z0-9._:-], else a new id.

    ``value`` is the raw header value (bytes) or None when the header is absent.
    """
    if value is not None:
        if type(value) is str:
            try:
                value = value.encode("ascii")
            except UnicodeEncodeError:
                return new_request_id()
        n = len(value)
        # translate(None, allowed) deletes every allowed byte: anything left is disallowed
        if 0 < n <= _RID_MAX and not value.translate(None, _RID_CHARS):
            return value.decode("ascii")
    return new_request_id()


cpdef str traceparent_from(value):
    """The traceparent to send upstream for this request.

    A valid incoming header keeps its trace-id and flags and gets a new parent-id (our span);
    a missing or invalid one starts a new trace. Version ``ff`` and all-zero ids are invalid;
    a future version is accepted when its first four fields parse as version 00 (W3C 4.3).
    Reserved flag bits are cleared.
    """
    if value is not None:
        if type(value) is not str:
            # latin-1 never fails; any non-ASCII byte then simply fails the match
            value = value.decode("latin-1")
        m = _TRACEPARENT.match(value)
        if m is None:
            value = value.strip(" \t")
            m = _TRACEPARENT.match(value)
        if m is not None:
            n = len(value)
            if n == 55 or (value[55] == "-" and value[0:2] != "00"):
                trace, flags = m.groups()
                return f"00-{trace}-{new_span_id()}-{_FLAGS_OUT[flags]}"
    return f"00-{new_request_id()}-{new_span_id()}-{_NEW_TRACE_FLAGS}"


def trace_id_of(str traceparent):
    """The trace-id part of a traceparent produced by :func:`traceparent_from`."""
    return traceparent[3:35]
