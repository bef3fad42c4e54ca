# cython: language_level=3, boundscheck=False, wraparound=False
"""Request ids and W3C trace-context (traceparent) for every proxied request, compiled
(fastgate/observe/ids.py re-exports them).

Both run once per request, in C: random hex is written straight from a pool of random bytes
filled by one ``os.urandom`` call per 256 request ids, and an incoming X-Request-ID or
traceparent is checked byte by byte. The pool is discarded in a forked child, otherwise
every worker would hand out the same ids as its siblings. The request path takes the bytes
forms (``request_id_b_from``, ``traceparent_b_from``: what goes into the headers); the str
forms are for Python callers.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcpy

import os

__all__ = ["request_id_from", "traceparent_from", "new_request_id", "new_trace_id", "new_span_id"]

# X-Request-ID values we pass on unchanged: short and made only of characters that cannot
# break a log line, a header or a shell. Anything else is replaced, never "cleaned".
_RID_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
DEF _RID_MAX = 128
cdef unsigned char _RID_OK[256]
cdef Py_ssize_t _k
for _k in range(256):
    _RID_OK[_k] = 0
for _k in _RID_CHARS:
    _RID_OK[_k] = 1

# lower-case hex digit -> its value, anything else -> 255 (W3C 3.2: lower-case only)
cdef unsigned char _HEXVAL[256]
for _k in range(256):
    _HEXVAL[_k] = 255
for _k in range(10):
    _HEXVAL[48 + _k] = _k
for _k in range(6):
    _HEXVAL[97 + _k] = 10 + _k
cdef const char* _HEX = b"0123456789abcdef"
cdef char _HEX2[512]            # byte -> its two hex characters
for _k in range(256):
    _HEX2[2 * _k] = _HEX[_k >> 4]
    _HEX2[2 * _k + 1] = _HEX[_k & 15]

DEF _POOL = 4096                    # one os.urandom call per 256 ids of 32 hex
cdef unsigned char _rand[_POOL]
cdef Py_ssize_t _rpos = _POOL


def _reset_after_fork():
    global _rpos
    _rpos = _POOL


os.register_at_fork(after_in_child=_reset_after_fork)


cdef int _random_hex(char* out, Py_ssize_t nbytes) except -1:
    """2*nbytes random lower-case hex characters into ``out``, never all zero (an all-zero
    trace-id or parent-id is invalid in trace-context)."""
    global _rpos
    cdef const unsigned char* p
    cdef unsigned char b, seen
    cdef Py_ssize_t i
    while True:
        if _rpos + nbytes > _POOL:
            data = os.urandom(_POOL)
            memcpy(_rand, PyBytes_AS_STRING(data), _POOL)
            _rpos = 0
        p = _rand + _rpos
        _rpos += nbytes
        seen = 0
        for i in range(nbytes):
            b = p[i]
            seen |= b
            memcpy(out + 2 * i, &_HEX2[2 * b], 2)
        if seen:
            return 0


cdef bytes _new_id_b():
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 32)
    _random_hex(PyBytes_AS_STRING(out), 16)
    return out


cpdef str new_span_id():
    """16 random lower-case hex characters, never all zero."""
    cdef char buf[16]
    _random_hex(buf, 8)
    return PyUnicode_DecodeLatin1(buf, 16, NULL)


cpdef str new_request_id():
    """32 random lower-case hex characters, never all zero (so also a valid trace-id)."""
    cdef char buf[32]
    _random_hex(buf, 16)
    return PyUnicode_DecodeLatin1(buf, 32, NULL)


def new_trace_id():
    return new_request_id()


cdef bytes request_id_b_from(object value):
    """The client's X-Request-ID (bytes, or None when absent) when it is 1-128 bytes of
    [A-Za-z0-9._:-], else a new id."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, i
    if value is not None:
        n = PyBytes_GET_SIZE(value)
        if 0 < n <= _RID_MAX:
            p = <const unsigned char*>PyBytes_AS_STRING(value)
            for i in range(n):
                if not _RID_OK[p[i]]:
                    return _new_id_b()
            return value
    return _new_id_b()


cdef object _as_bytes(value):
    """A header value a Python caller gave as str, as the parser's bytes; None when it
    cannot be a valid value at all (a character past latin-1)."""
    if value is None or type(value) is bytes:
        return value
    try:
        return str(value).encode("latin-1")
    except UnicodeEncodeError:
        return None


cpdef str request_id_from(value):
    """The client's X-Request-ID when it is 1-128 chars of [A-Za-z0-9._:-], else a new id.

    ``value`` is the raw header value (bytes or str) or None when the header is absent.
    """
    return request_id_b_from(_as_bytes(value)).decode("ascii")


cdef inline bint _hex_run(const unsigned char* p, Py_ssize_t n, bint nonzero) noexcept:
    """``p[:n]`` is lower-case hex (and, with ``nonzero``, not all '0')."""
    cdef Py_ssize_t i
    cdef unsigned char any_digit = 0
    for i in range(n):
        if _HEXVAL[p[i]] == 255:
            return False
        any_digit |= _HEXVAL[p[i]]
    return any_digit != 0 or not nonzero


cdef bytes traceparent_b_from(object value):
    """The traceparent to send upstream for this request (bytes, 55 long).

    A valid incoming header (bytes, or None when absent) keeps its trace-id and flags and
    gets a new parent-id (our span); a missing or invalid one starts a new, sampled trace.
    Version ``ff`` and all-zero ids are invalid; a future version is accepted when its first
    four fields parse as version 00 (W3C 4.3). Reserved flag bits are cleared; surrounding
    blanks are tolerated.
    """
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 55)
    cdef char* o = PyBytes_AS_STRING(out)
    if value is not None:
        p = <const unsigned char*>PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
        while n and (p[0] == 32 or p[0] == 9):
            p += 1
            n -= 1
        while n and (p[n - 1] == 32 or p[n - 1] == 9):
            n -= 1
        if (n >= 55 and _hex_run(p, 2, False) and not (p[0] == 102 and p[1] == 102)
                and p[2] == 45 and _hex_run(p + 3, 32, True) and p[35] == 45
                and _hex_run(p + 36, 16, True) and p[52] == 45 and _hex_run(p + 53, 2, False)
                and (n == 55 or (p[55] == 45 and not (p[0] == 48 and p[1] == 48)))):
            memcpy(o, b"00-", 3)
            memcpy(o + 3, p + 3, 32)
            o[35] = 45
            _random_hex(o + 36, 8)
            o[52] = 45
            o[53] = 48
            o[54] = _HEX[_HEXVAL[p[54]] & 3]   # sampled (1) and random (2) only
            return out
    memcpy(o, b"00-", 3)
    _random_hex(o + 3, 16)
    o[35] = 45
    _random_hex(o + 36, 8)
    # A trace we start is marked sampled: downstream services that follow the parent's
    # decision then record it, which is what someone who sends requests through a gateway
    # expects.
    memcpy(o + 52, b"-01", 3)
    return out


cpdef str traceparent_from(value):
    """The traceparent to send upstream for this request (see traceparent_b_from); ``value``
    is the raw header value, bytes or str, or None."""
    return traceparent_b_from(_as_bytes(value)).decode("ascii")


def trace_id_of(str traceparent):
    """The trace-id part of a traceparent produced by :func:`traceparent_from`."""
    return traceparent[3:35]
