# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Strict, incremental HTTP/1.1 parsers (RFC 9112) for the gateway's hot path.

Both parsers work on the ``char*`` of the bytes handed to ``feed()``; only the incomplete tail
of a line (or pipelined bytes while paused) is copied between feeds, so a message cut at any
byte boundary parses exactly like one delivered whole.

Everything that could let two HTTP implementations disagree about where a message ends is an
error here, never a guess: both Content-Length and Transfer-Encoding, differing lengths,
obs-fold, bare CR/LF, anything but a single ``chunked`` coding on requests, malformed chunk
lines. Requests fail with the status the client should get (400/413/414/431/505); upstream
responses fail with 502.

Size conventions (exact, so limits can be tested at their boundary):
* ``max_request_line_bytes``: the request line without its CRLF.
* ``max_header_bytes`` (requests): every header field line with its CRLF plus the final empty
  line; the request line is not counted. (responses): the status line is counted as well.
  Trailer sections of chunked bodies are held to the same limit, counted on their own.
* ``max_headers``: number of field lines (trailers counted on their own).
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, \
    PyBytes_CheckExact
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memchr, memcpy, memmove, memcmp
from libc.stdint cimport uint64_t

from fastgate._core.lists cimport list_with_room, push
from libc.stdlib cimport malloc, realloc, free

from fastgate.errors import ERROR_CODES as _ERROR_CODES

__all__ = ("HttpError", "RequestHead", "RequestParser", "ResponseHead", "ResponseParser")

# A chunk-size line (size + extensions) longer than this is refused: extensions carry nothing
# the gateway uses and an unbounded line would be unbounded buffering.
cdef enum:
    MAX_CHUNK_LINE = 4096
    NAME_CACHE_MAX = 40

cdef enum:
    S_START = 0        # request: before the request line (empty CRLF lines skipped)
    S_START_LF = 1     # request: CR of a leading empty line seen
    S_FIRST_LINE = 2   # request line / status line (line based)
    S_HEADER = 3       # field lines (line based)
    S_COMPLETE = 4     # head done, no body; message completes right after the head callback
    S_BODY_CL = 5
    S_CHUNK_SIZE = 6   # line based
    S_CHUNK_DATA = 7
    S_CHUNK_CR = 8
    S_CHUNK_LF = 9
    S_TRAILER = 10     # line based
    S_BODY_EOF = 11    # response body delimited by the connection close
    S_IDLE = 12        # response parser not armed
    S_UPGRADED = 13    # response 101: the rest belongs to the tunnel
    S_DONE = 14        # take_buffered() was called
    S_DEAD = 15        # an error was raised

cdef long long _NO_LIMIT = 0x7FFFFFFFFFFFFFFF


class HttpError(Exception):
    """A message that must not be processed.

    ``status`` is the HTTP status to answer (requests) or 502 (upstream responses), ``code``
    a short snake_case code for the JSON error body, ``message`` a human-readable reason.
    """

    def __init__(self, status, code, message):
        Exception.__init__(self, message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self):
        return f"HttpError({self.status!r}, {self.code!r}, {self.message!r})"


# The codes of the statuses requests fail with (400/413/414/431/505), from the one table of
# error answers; read only when a request is refused.
cdef dict _CODES = dict(_ERROR_CODES)

# ------------------------------------------------------------------------- byte tables
cdef unsigned char _TCHAR[256]     # token characters (RFC 9110 5.6.2)
cdef unsigned char _FIELD[256]     # field-value octets: HTAB, SP, VCHAR, obs-text
cdef unsigned char _TARGET[256]    # request-target octets: visible ASCII except '#'
cdef unsigned char _REGNAME[256]   # reg-name: unreserved / sub-delims ('%' handled apart)
cdef unsigned char _QDTEXT[256]    # quoted-string text (RFC 9110 5.6.4)
cdef unsigned char _LOWER[256]
cdef signed char _HEX[256]


cdef void _init_tables() except *:
    cdef int c
    for c in range(256):
        _LOWER[c] = c + 32 if 65 <= c <= 90 else c
        _TCHAR[c] = 1 if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) else 0
        _FIELD[c] = 1 if (c == 9 or 32 <= c <= 126 or c >= 128) else 0
        _TARGET[c] = 1 if (33 <= c <= 126 and c != 35) else 0
        _REGNAME[c] = 1 if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) else 0
        _QDTEXT[c] = 1 if (c == 9 or c == 32 or c == 33 or 35 <= c <= 91 or 93 <= c <= 126
                          or c >= 128) else 0
        if 48 <= c <= 57:
            _HEX[c] = c - 48
        elif 97 <= c <= 102:
            _HEX[c] = c - 87
        elif 65 <= c <= 70:
            _HEX[c] = c - 55
        else:
            _HEX[c] = -1
    for c in b"!#$%&'*+-.^_`|~":
        _TCHAR[c] = 1
    for c in b"-._~!$&'()*+,;=":
        _REGNAME[c] = 1


_init_tables()

# --------------------------------------------------- interned header names and methods
# Names seen on nearly every request are handed out as shared bytes objects instead of being
# allocated per header; identity with the special ones below replaces string comparison.
_COMMON_NAMES = [
    b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language",
    b"accept-charset", b"accept-ranges", b"connection", b"content-length", b"content-type",
    b"content-encoding", b"content-range", b"content-disposition", b"transfer-encoding",
    b"cookie", b"set-cookie", b"authorization", b"proxy-authorization", b"cache-control",
    b"pragma", b"referer", b"origin", b"upgrade", b"expect", b"te", b"trailer", b"keep-alive",
    b"proxy-connection", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
    b"x-forwarded-port", b"x-real-ip", b"x-request-id", b"x-api-key", b"x-requested-with",
    b"traceparent", b"tracestate", b"if-none-match", b"if-match", b"if-modified-since",
    b"if-unmodified-since", b"range", b"date", b"server", b"location", b"etag",
    b"last-modified", b"vary", b"via", b"forwarded", b"dnt", b"priority", b"age", b"expires",
    b"allow", b"retry-after", b"www-authenticate", b"sec-fetch-mode", b"sec-fetch-site",
    b"sec-fetch-dest", b"sec-fetch-user", b"sec-ch-ua", b"sec-ch-ua-mobile",
    b"sec-ch-ua-platform", b"upgrade-insecure-requests", b"sec-websocket-key",
    b"sec-websocket-version", b"sec-websocket-protocol", b"sec-websocket-extensions",
    b"sec-websocket-accept", b"access-control-request-method",
    b"access-control-request-headers", b"strict-transport-security", b"x-content-type-options",
    b"x-frame-options", b"close",
]
_COMMON_NAMES.sort(key=len)
cdef list _name_objs = list(_COMMON_NAMES)
cdef int _n_names = len(_name_objs)
cdef PyObject* _name_ptr[128]
cdef int _len_lo[NAME_CACHE_MAX + 1]
cdef int _len_hi[NAME_CACHE_MAX + 1]


cdef void _init_names() except *:
    cdef int i, l
    for l in range(NAME_CACHE_MAX + 1):
        _len_lo[l] = 0
        _len_hi[l] = 0
    for i in range(_n_names):
        _name_ptr[i] = <PyObject*>_name_objs[i]
        l = len(_name_objs[i])
        if _len_hi[l] == 0:
            _len_lo[l] = i
        _len_hi[l] = i + 1


_init_names()

cdef bytes _N_HOST = b"host"
cdef bytes _N_CONTENT_LENGTH = b"content-length"
cdef bytes _N_TRANSFER_ENCODING = b"transfer-encoding"
cdef bytes _N_CONNECTION = b"connection"
cdef bytes _N_EXPECT = b"expect"
cdef bytes _N_UPGRADE = b"upgrade"
cdef bytes _T_CLOSE = b"close"
cdef bytes _T_KEEP_ALIVE = b"keep-alive"


cdef bytes _interned(bytes name):
    cdef int i
    for i in range(_n_names):
        if <bytes>_name_ptr[i] == name:
            return <bytes>_name_ptr[i]
    raise AssertionError(name)


_N_HOST = _interned(_N_HOST)
_N_CONTENT_LENGTH = _interned(_N_CONTENT_LENGTH)
_N_TRANSFER_ENCODING = _interned(_N_TRANSFER_ENCODING)
_N_CONNECTION = _interned(_N_CONNECTION)
_N_EXPECT = _interned(_N_EXPECT)
_N_UPGRADE = _interned(_N_UPGRADE)
_T_CLOSE = _interned(_T_CLOSE)
_T_KEEP_ALIVE = _interned(_T_KEEP_ALIVE)

cdef bytes _EMPTY = b""
cdef tuple _NO_TOKENS = ()
cdef bytes _SLASH = b"/"
cdef bytes _ASTERISK = b"*"
cdef tuple _METHODS = (b"GET", b"PUT", b"POST", b"HEAD", b"PATCH", b"TRACE", b"DELETE",
                       b"OPTIONS", b"CONNECT")


cdef inline bytes _lower_name(const unsigned char* s, Py_ssize_t n):
    cdef unsigned char tmp[NAME_CACHE_MAX]
    cdef Py_ssize_t i
    cdef int j
    cdef bytes out
    cdef char* d
    if n <= NAME_CACHE_MAX:
        for i in range(n):
            tmp[i] = _LOWER[s[i]]
        for j in range(_len_lo[n], _len_hi[n]):
            if memcmp(tmp, PyBytes_AS_STRING(<object>_name_ptr[j]), n) == 0:
                return <bytes>_name_ptr[j]
        return PyBytes_FromStringAndSize(<char*>tmp, n)
    out = PyBytes_FromStringAndSize(NULL, n)
    d = PyBytes_AS_STRING(out)
    for i in range(n):
        d[i] = <char>_LOWER[s[i]]
    return out


cdef inline bytes _method(const unsigned char* s, Py_ssize_t n):
    cdef bytes m
    for m in _METHODS:
        if PyBytes_GET_SIZE(m) == n and memcmp(PyBytes_AS_STRING(m), s, n) == 0:
            return m
    return PyBytes_FromStringAndSize(<const char*>s, n)


cdef inline bint _ieq(const unsigned char* s, Py_ssize_t n, const char* lower,
                      Py_ssize_t ln) noexcept:
    """Case-insensitive comparison with an already lower-case ASCII literal."""
    cdef Py_ssize_t i
    if n != ln:
        return False
    for i in range(n):
        if _LOWER[s[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef inline bint _is_ows(unsigned char c) noexcept:
    return c == 32 or c == 9


cdef bint _valid_host(const unsigned char* s, Py_ssize_t n, bint need_port) noexcept:
    """uri-host [ ":" port ] (RFC 9110 7.2); IPv6 literals without zone ids."""
    cdef Py_ssize_t i = 0, d
    cdef unsigned char c
    if n == 0:
        return False
    if s[0] == 91:  # '['
        i = 1
        while i < n and s[i] != 93:
            c = s[i]
            if not (_HEX[c] >= 0 or c == 58 or c == 46):
                return False
            i += 1
        if i == n or i == 1:
            return False
        i += 1
    else:
        while i < n:
            c = s[i]
            if _REGNAME[c]:
                i += 1
            elif c == 37:  # pct-encoded
                if i + 2 >= n or _HEX[s[i + 1]] < 0 or _HEX[s[i + 2]] < 0:
                    return False
                i += 3
            else:
                break
        if i == 0:
            return False
    if i == n:
        return not need_port
    if s[i] != 58:
        return False
    i += 1
    d = n - i
    if d < 1 or d > 5:
        return False
    while i < n:
        if not (48 <= s[i] <= 57):
            return False
        i += 1
    return True


cdef inline bint _field_ok(const unsigned char* s, Py_ssize_t n) noexcept:
    """Every octet of s[:n] a field-value octet (_FIELD). Eight at a time: a word with no
    byte below 0x20 and none equal to 0x7f is all valid (the usual has-less-than and
    has-zero tests, exact as a yes/no); a word that has one (often an HTAB) is checked
    byte by byte. Long values (bearer tokens, cookies) cost about a fifth of a byte loop."""
    cdef Py_ssize_t i = 0, j
    cdef uint64_t w
    while i + 8 <= n:
        memcpy(&w, s + i, 8)
        if (((w - 0x2020202020202020ULL) & ~w)
                | (((w ^ 0x7f7f7f7f7f7f7f7fULL) - 0x0101010101010101ULL)
                   & ~(w ^ 0x7f7f7f7f7f7f7f7fULL))) & 0x8080808080808080ULL:
            for j in range(i, i + 8):
                if not _FIELD[s[j]]:
                    return False
        i += 8
    while i < n:
        if not _FIELD[s[i]]:
            return False
        i += 1
    return True


cdef object _find(list headers, object lname, object default, bint every):
    cdef Py_ssize_t i, n
    cdef object item
    cdef list out = None
    if isinstance(lname, str):
        lname = (<str>lname).encode("latin-1")
    n = PyList_GET_SIZE(headers)
    for i in range(n):
        item = <object>PyList_GET_ITEM(headers, i)
        if (<object>PyTuple_GET_ITEM(item, 0)) == lname:
            if not every:
                return <object>PyTuple_GET_ITEM(item, 1)
            if out is None:
                out = []
            out.append(<object>PyTuple_GET_ITEM(item, 1))
    if every:
        return out if out is not None else []
    return default


# --------------------------------------------------------------------------- handlers
cdef class ParserHandler:
    """Base of a compiled handler: the parser calls ``handle_head`` (on_request /
    on_response), ``handle_informational``, ``handle_body`` and ``handle_end`` (on_request_complete
    / on_response_complete) through the vtable, with no Python call per event. Any other
    handler object is called through its ``on_*`` methods."""

    cdef int handle_head(self, object head) except -1:
        return 0

    cdef int handle_informational(self, object head) except -1:
        return 0

    cdef int handle_body(self, object data) except -1:
        return 0

    cdef int handle_end(self) except -1:
        return 0


# ------------------------------------------------------------------------------ heads
@cython.freelist(64)
@cython.final
cdef class RequestHead:
    """A parsed request head (read-only). Header names are lower-case, values OWS-trimmed."""

    def get(self, lname, default=None):
        """First value of the header with this lower-case name."""
        return _find(self.headers, lname, default, False)

    def get_all(self, lname):
        """Every value of the header with this lower-case name, in arrival order."""
        return _find(self.headers, lname, None, True)

    def __repr__(self):
        return (f"<RequestHead {self.method.decode('latin-1')} "
                f"{self.target.decode('latin-1')} HTTP/{self.version // 10}.{self.version % 10}"
                f" headers={len(self.headers)}>")


@cython.freelist(32)
@cython.final
cdef class ResponseHead:
    """A parsed response head (read-only). ``content_length``/``chunked`` describe the fields
    sent; for HEAD, 1xx, 204 and 304 there is no body whatever they say."""

    def get(self, lname, default=None):
        return _find(self.headers, lname, default, False)

    def get_all(self, lname):
        return _find(self.headers, lname, None, True)

    def __repr__(self):
        return f"<ResponseHead {self.status} HTTP/{self.version // 10}.{self.version % 10}>"


# ---------------------------------------------------------------------- shared parser
cdef class _HttpParser:
    """Line/byte state machine shared by both directions (not instantiated directly)."""

    def __cinit__(self):
        self._buf = NULL
        self._bstart = 0
        self._blen = 0
        self._bcap = 0
        self._error = None
        self._paused = False
        self._processing = False
        self._scan = 0
        self._body_limit = _NO_LIMIT
        self._max_body = _NO_LIMIT

    def __dealloc__(self):
        if self._buf != NULL:
            free(self._buf)
            self._buf = NULL

    cdef int _reset_head(self) except -1:
        self._hbytes = 0
        self._head_bytes = 0
        self._nfields = 0
        self._headers = None        # made with the head, at its first line
        self._version = 11
        self._cl = -1
        self._te_seen = False
        self._te_bad = False
        self._te_last_chunked = False
        self._te_elems = 0
        self._te_chunked_count = 0
        self._host_count = 0
        self._host = None
        self._conn = None
        self._conn_close = False
        self._conn_keep_alive = False
        self._conn_upgrade = False
        self._expect_continue = False
        self._upgrade = None
        self._body_total = 0
        self._remaining = 0
        self._scan = 0
        return 0

    cdef int _fail(self, int status, str message) except -1:
        if self._is_request:
            raise HttpError(status, _CODES[status], message)
        raise HttpError(502, "bad_response", message)

    # ----------------------------------------------------------------- buffering
    cdef int _append(self, const char* p, Py_ssize_t n) except -1:
        cdef Py_ssize_t used = self._blen - self._bstart
        cdef Py_ssize_t cap
        cdef char* nb
        if n <= 0:
            return 0
        if self._bstart > 0 and self._blen + n > self._bcap:
            memmove(self._buf, self._buf + self._bstart, used)
            self._bstart = 0
            self._blen = used
        if self._blen + n > self._bcap:
            cap = self._bcap * 2
            if cap < self._blen + n:
                cap = self._blen + n
            if cap < 256:
                cap = 256
            nb = <char*>realloc(self._buf, cap)
            if nb == NULL:
                raise MemoryError()
            self._buf = nb
            self._bcap = cap
        memcpy(self._buf + self._blen, p, n)
        self._blen += n
        return 0

    cdef bytes _take(self):
        cdef bytes out
        if self._processing:
            # Called from a callback: what follows the current position is still in the input
            # being parsed (the fed bytes, or the buffer itself).
            out = PyBytes_FromStringAndSize(<const char*>self._cur + self._pos,
                                            self._cur_n - self._pos)
        else:
            out = PyBytes_FromStringAndSize(self._buf + self._bstart, self._blen - self._bstart)
        self._state = S_DONE
        self._paused = True
        if self._processing:
            # the running loop may still read the buffer until it sees S_DONE
            self._bstart = 0
            self._blen = 0
        else:
            self._release_buffer()
        return out

    cdef int _feed(self, const unsigned char* p, Py_ssize_t n, object whole) except -1:
        cdef Py_ssize_t c
        if self._error is not None:
            raise self._error
        if self._processing:
            raise RuntimeError("feed() called from inside a parser callback")
        if self._state == S_DONE:
            raise RuntimeError("parser finished: take_buffered() was called")
        if n == 0:
            return 0
        if self._paused or self._blen > self._bstart:
            self._append(<const char*>p, n)
            if not self._paused:
                self._run_buffer()
            return 0
        c = self._run(p, n, whole)
        if c < n and self._state != S_DONE:
            self._append(<const char*>p + c, n - c)
        return 0

    cdef int _run_buffer(self) except -1:
        cdef Py_ssize_t c
        c = self._run(<const unsigned char*>self._buf + self._bstart,
                      self._blen - self._bstart, None)
        if self._state == S_DONE:
            return 0
        self._bstart += c
        if self._bstart == self._blen:
            self._release_buffer()
        return 0

    cdef void _release_buffer(self) noexcept:
        self._bstart = 0
        self._blen = 0
        if self._bcap > 65536:
            # A burst of pipelined bytes must not pin its high-water mark for the
            # connection's lifetime.
            free(self._buf)
            self._buf = NULL
            self._bcap = 0

    cdef Py_ssize_t _run(self, const unsigned char* p, Py_ssize_t n, object whole) except -1:
        cdef Py_ssize_t c
        self._processing = True
        try:
            c = self._process(p, n, whole)
        except BaseException as exc:
            # The parser cannot know how much of the input a failing callback consumed.
            self._error = exc
            self._state = S_DEAD
            self._paused = True
            self._bstart = 0
            self._blen = 0
            raise
        finally:
            self._processing = False
        return c

    # ------------------------------------------------------------------ state machine
    cdef Py_ssize_t _process(self, const unsigned char* p, Py_ssize_t n, object whole) except -1:
        cdef Py_ssize_t pos = 0, k, take
        cdef const unsigned char* lf
        cdef int st
        cdef unsigned char c
        self._cur = p
        self._cur_n = n
        while pos < n:
            if self._paused:
                break
            st = self._state
            if st == S_BODY_CL or st == S_CHUNK_DATA:
                take = n - pos
                if take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                self._remaining -= take
                pos += take
                self._pos = pos
                self._emit_body(p + pos - take, take, whole if take == n else None)
                if self._state == S_DONE:
                    return pos
                if self._remaining == 0:
                    if st == S_BODY_CL:
                        self._message_done()
                        if self._state == S_DONE:
                            return pos
                    else:
                        self._state = S_CHUNK_CR
                continue
            if st == S_CHUNK_CR:
                if p[pos] != 13:
                    self._fail(400, "chunk data longer than its declared size")
                pos += 1
                self._state = S_CHUNK_LF
                continue
            if st == S_CHUNK_LF:
                if p[pos] != 10:
                    self._fail(400, "chunk data not followed by CRLF")
                pos += 1
                self._state = S_CHUNK_SIZE
                continue
            if st == S_START:
                c = p[pos]
                if c == 13:
                    pos += 1
                    self._state = S_START_LF
                    continue
                if c == 10:
                    self._fail(400, "bare LF line terminator")
                self._reset_head()
                self._state = S_FIRST_LINE
                continue
            if st == S_START_LF:
                if p[pos] != 10:
                    self._fail(400, "bare CR in the message head")
                pos += 1
                self._state = S_START
                continue
            if st == S_BODY_EOF:
                take = n - pos
                pos = n
                self._pos = pos
                self._emit_body(p + pos - take, take, whole if take == n else None)
                if self._state == S_DONE:
                    return pos
                continue
            if st == S_IDLE or st == S_UPGRADED or st == S_DONE or st == S_DEAD \
                    or st == S_COMPLETE:
                break
            # line-based states: S_FIRST_LINE, S_HEADER, S_CHUNK_SIZE, S_TRAILER
            lf = <const unsigned char*>memchr(p + pos + self._scan, 10, n - pos - self._scan)
            if lf == NULL:
                self._scan = n - pos
                self._partial(p + pos, n - pos)
                break
            self._scan = 0
            k = lf - p
            if k == pos or p[k - 1] != 13:
                # Limits first, exactly as if the LF had not arrived yet: the error must not
                # depend on where the reads were cut.
                if k > pos:
                    self._partial(p + pos, k - pos)
                self._fail(400, "bare LF line terminator")
            self._pos = k + 1
            self._line(p + pos, k - 1 - pos)
            pos = k + 1
            if self._state == S_DONE:
                return pos
        self._pos = pos
        return pos

    cdef int _partial(self, const unsigned char* s, Py_ssize_t m) except -1:
        """Limits on a line whose end has not arrived: never buffer without bound."""
        cdef Py_ssize_t content = m - (1 if s[m - 1] == 13 else 0)
        cdef int st = self._state
        if st == S_FIRST_LINE:
            if self._is_request:
                if content > self._max_line:
                    self._fail(414, "request line too long")
            elif content + 2 > self._max_header_bytes:
                self._fail(431, "status line too long")
        elif st == S_HEADER or st == S_TRAILER:
            # The message must not depend on where the reads were cut, so the checks go in
            # the order in which a growing line trips them: nothing more fits (not even the
            # final CRLF), then the count (trips at the first byte), then the size.
            if self._hbytes + 2 > self._max_header_bytes:
                self._fail(431, "header section too large" if st == S_HEADER
                           else "trailer section too large")
            if content > 0 and self._nfields >= self._max_headers:
                self._fail(431, "too many header fields" if st == S_HEADER
                           else "too many trailer fields")
            if self._hbytes + content + 2 > self._max_header_bytes:
                self._fail(431, "header section too large" if st == S_HEADER
                           else "trailer section too large")
        elif st == S_CHUNK_SIZE:
            if content > MAX_CHUNK_LINE:
                self._fail(400, "chunk size line too long")
        return 0

    cdef int _line(self, const unsigned char* s, Py_ssize_t n) except -1:
        """One complete line without its CRLF."""
        cdef int st = self._state
        cdef Py_ssize_t a, b, c
        if st == S_HEADER:
            # the order of _partial's checks
            if self._hbytes + 2 > self._max_header_bytes:
                self._fail(431, "header section too large")
            if n > 0 and self._nfields >= self._max_headers:
                self._fail(431, "too many header fields")
            self._hbytes += n + 2
            self._head_bytes += n + 2
            if self._hbytes > self._max_header_bytes:
                self._fail(431, "header section too large")
            if n == 0:
                return self._head_done()
            self._nfields += 1
            return self._header_line(s, n)
        if st == S_CHUNK_SIZE:
            if n > MAX_CHUNK_LINE:
                self._fail(400, "chunk size line too long")
            return self._chunk_size_line(s, n)
        if st == S_TRAILER:
            if self._hbytes + 2 > self._max_header_bytes:
                self._fail(431, "trailer section too large")
            if n > 0 and self._nfields >= self._max_headers:
                self._fail(431, "too many trailer fields")
            self._hbytes += n + 2
            if self._hbytes > self._max_header_bytes:
                self._fail(431, "trailer section too large")
            if n == 0:
                return self._message_done()
            self._nfields += 1
            # Trailers are validated like header fields and then dropped: nothing downstream
            # may be steered by fields that arrive after the head was acted upon.
            return self._split_field(s, n, &a, &b, &c)
        return self._first_line(s, n)

    cdef int _split_field(self, const unsigned char* s, Py_ssize_t n, Py_ssize_t* name_end,
                          Py_ssize_t* vstart, Py_ssize_t* vend) except -1:
        cdef Py_ssize_t i = 0, j, k
        cdef unsigned char c = s[0]
        if c == 32 or c == 9:
            self._fail(400, "obs-fold (line folding) is not allowed")
        while i < n and _TCHAR[s[i]]:
            i += 1
        if i == n or s[i] != 58:
            if i < n and (s[i] == 32 or s[i] == 9):
                self._fail(400, "whitespace between header name and colon")
            self._fail(400, "invalid character in header name")
        if i == 0:
            self._fail(400, "empty header name")
        j = i + 1
        while j < n and (s[j] == 32 or s[j] == 9):
            j += 1
        k = n
        while k > j and (s[k - 1] == 32 or s[k - 1] == 9):
            k -= 1
        if not _field_ok(s + j, k - j):
            self._fail(400, "invalid character in header value")
        name_end[0] = i
        vstart[0] = j
        vend[0] = k
        return 0

    cdef int _header_line(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef Py_ssize_t ne, vs, ve
        cdef bytes name, value
        self._split_field(s, n, &ne, &vs, &ve)
        name = _lower_name(s, ne)
        if ve > vs:
            value = PyBytes_FromStringAndSize(<const char*>s + vs, ve - vs)
        else:
            value = _EMPTY
        push(self._headers, (name, value))
        if name is _N_CONTENT_LENGTH:
            return self._content_length(s + vs, ve - vs)
        if name is _N_TRANSFER_ENCODING:
            return self._transfer_encoding(s + vs, ve - vs)
        if name is _N_CONNECTION:
            return self._connection(s + vs, ve - vs)
        if self._is_request:
            if name is _N_HOST:
                self._host_count += 1
                if self._host_count > 1:
                    self._fail(400, "more than one Host header")
                if ve > vs and not _valid_host(s + vs, ve - vs, False):
                    self._fail(400, "invalid Host header")
                self._host = value
            elif name is _N_EXPECT:
                return self._expect(s + vs, ve - vs)
            elif name is _N_UPGRADE:
                if self._upgrade is None:
                    self._upgrade = value
                else:
                    self._upgrade = self._upgrade + b", " + value
        return 0

    cdef int _content_length(self, const unsigned char* v, Py_ssize_t n) except -1:
        # 1*DIGIT, or a list of identical values (RFC 9110 8.6); nothing lenient: a sign,
        # space, hex or an empty element is how two parsers come to disagree on a length.
        cdef Py_ssize_t i = 0, start
        cdef long long val
        if n == 0:
            self._fail(400, "empty Content-Length")
        while True:
            start = i
            val = 0
            while i < n and 48 <= v[i] <= 57:
                if i - start >= 18:
                    self._fail(400, "Content-Length too large")
                val = val * 10 + (v[i] - 48)
                i += 1
            if i == start:
                self._fail(400, "invalid Content-Length")
            if self._cl >= 0 and val != self._cl:
                self._fail(400, "differing Content-Length values")
            self._cl = val
            while i < n and _is_ows(v[i]):
                i += 1
            if i == n:
                return 0
            if v[i] != 44:
                self._fail(400, "invalid Content-Length")
            i += 1
            while i < n and _is_ows(v[i]):
                i += 1

    cdef int _transfer_encoding(self, const unsigned char* v, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, st, e, t
        self._te_seen = True
        if n == 0:
            self._te_bad = True
            return 0
        while True:
            st = i
            while i < n and v[i] != 44:
                i += 1
            e = i
            while st < e and _is_ows(v[st]):
                st += 1
            while e > st and _is_ows(v[e - 1]):
                e -= 1
            if e == st:
                self._te_bad = True
            else:
                self._te_elems += 1
                t = st
                while t < e and _TCHAR[v[t]]:
                    t += 1
                if t == st:
                    self._te_bad = True
                if _ieq(v + st, t - st, "chunked", 7):
                    if t != e:
                        self._te_bad = True  # chunked takes no parameters
                    self._te_chunked_count += 1
                    self._te_last_chunked = True
                else:
                    self._te_last_chunked = False
                    while t < e and _is_ows(v[t]):
                        t += 1
                    if t < e and v[t] != 59:
                        self._te_bad = True
            if i == n:
                return 0
            i += 1

    cdef int _connection(self, const unsigned char* v, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, st, e
        cdef bytes tok
        while i < n:
            st = i
            while i < n and v[i] != 44:
                i += 1
            e = i
            i += 1
            while st < e and _is_ows(v[st]):
                st += 1
            while e > st and _is_ows(v[e - 1]):
                e -= 1
            if e == st:
                continue
            tok = _lower_name(v + st, e - st)
            if self._conn is None:
                self._conn = []
            self._conn.append(tok)
            if tok is _T_CLOSE:
                self._conn_close = True
            elif tok is _T_KEEP_ALIVE:
                self._conn_keep_alive = True
            elif tok is _N_UPGRADE:
                self._conn_upgrade = True
        return 0

    cdef int _expect(self, const unsigned char* v, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, st, e
        while i < n:
            st = i
            while i < n and v[i] != 44:
                i += 1
            e = i
            i += 1
            while st < e and _is_ows(v[st]):
                st += 1
            while e > st and _is_ows(v[e - 1]):
                e -= 1
            if _ieq(v + st, e - st, "100-continue", 12):
                self._expect_continue = True
        return 0

    cdef int _chunk_size_line(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, st
        cdef unsigned long long size = 0
        cdef signed char h
        cdef unsigned char c
        while i < n:
            h = _HEX[s[i]]
            if h < 0:
                break
            if i >= 16:
                self._fail(400, "chunk size has more than 16 hex digits")
            size = (size << 4) | <unsigned long long>h
            i += 1
        if i == 0:
            self._fail(400, "invalid chunk size")
        if size >= 0x8000000000000000ULL:
            self._fail(400, "chunk size too large")
        # chunk-ext = *( ";" ext-name [ "=" ( token / quoted-string ) ] ); no whitespace
        # anywhere, as lenient whitespace handling is a known smuggling vector.
        while i < n:
            if s[i] != 59:
                self._fail(400, "invalid chunk size line")
            i += 1
            st = i
            while i < n and _TCHAR[s[i]]:
                i += 1
            if i == st:
                self._fail(400, "invalid chunk extension")
            if i < n and s[i] == 61:
                i += 1
                if i < n and s[i] == 34:
                    i += 1
                    while True:
                        if i >= n:
                            self._fail(400, "unterminated quoted string in chunk extension")
                        c = s[i]
                        if c == 34:
                            i += 1
                            break
                        if c == 92:
                            i += 1
                            if i >= n or not (_FIELD[s[i]]):
                                self._fail(400, "invalid quoted-pair in chunk extension")
                            i += 1
                        elif _QDTEXT[c]:
                            i += 1
                        else:
                            self._fail(400, "invalid character in chunk extension")
                else:
                    st = i
                    while i < n and _TCHAR[s[i]]:
                        i += 1
                    if i == st:
                        self._fail(400, "invalid chunk extension value")
        if size == 0:
            self._state = S_TRAILER
            self._hbytes = 0
            self._nfields = 0
            return 0
        if <long long>size > self._body_limit - self._body_total:
            self._fail(413, "request body too large")
        self._remaining = <long long>size
        self._state = S_CHUNK_DATA
        return 0

    cdef int _emit_body(self, const unsigned char* p, Py_ssize_t n, object whole) except -1:
        self._body_total += n
        if self._body_total > self._body_limit:
            self._fail(413, "request body too large")
        if self._fast is not None:
            if whole is None:
                whole = PyBytes_FromStringAndSize(<const char*>p, n)
            self._fast.handle_body(whole)
        elif self._on_body is not None:
            if whole is None:
                whole = PyBytes_FromStringAndSize(<const char*>p, n)
            self._on_body(whole)
        return 0

    cdef int _first_line(self, const unsigned char* s, Py_ssize_t n) except -1:
        raise NotImplementedError

    cdef int _head_done(self) except -1:
        raise NotImplementedError

    cdef int _message_done(self) except -1:
        raise NotImplementedError

    # ------------------------------------------------------------- shared Python API
    cpdef feed(self, data):
        """Parse ``data`` (bytes-like); callbacks fire as events complete."""
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            self._feed(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                       data)
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._feed(<const unsigned char*>view.buf, view.len, None)
        finally:
            PyBuffer_Release(&view)

    def take_buffered(self):
        """The bytes received and not consumed; the parser is finished afterwards."""
        if self._state == S_DEAD:
            raise self._error
        return self._take()

    cdef Py_ssize_t _unconsumed(self):
        if self._processing:
            return self._cur_n - self._pos
        return self._blen - self._bstart

    @property
    def buffered(self):
        """Bytes held unconsumed."""
        return self._unconsumed()


# ------------------------------------------------------------------------- requests
@cython.final
cdef class RequestParser(_HttpParser):
    """Incremental parser for requests arriving from a client connection.

    Handler methods: ``on_request(head)``, ``on_body(bytes)`` (decoded), and
    ``on_request_complete()``, after which the parser pauses until ``resume()``.
    """

    def __init__(self, handler, *, max_request_line_bytes=8192, max_header_bytes=32768,
                 max_headers=100, max_body_bytes=10485760):
        if max_request_line_bytes < 1 or max_header_bytes < 2 or max_headers < 0 \
                or max_body_bytes < 0:
            raise ValueError("parser limits must be positive")
        self._is_request = True
        if isinstance(handler, ParserHandler):
            self._fast = handler
        else:
            self._on_request = getattr(handler, "on_request", None)
            self._on_body = getattr(handler, "on_body", None)
            self._on_request_complete = getattr(handler, "on_request_complete", None)
        self._max_line = max_request_line_bytes
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body = max_body_bytes
        self._body_limit = max_body_bytes
        self._state = S_START
        self._reset_head()

    cdef int _first_line(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, ts, te, q, a = 0, b
        cdef int major, minor
        cdef RequestHead head
        cdef bytes target, method
        cdef bint connect
        if n > self._max_line:
            self._fail(414, "request line too long")
        while i < n and _TCHAR[s[i]]:
            i += 1
        if i == 0 or i == n or s[i] != 32:
            self._fail(400, "malformed request line")
        method = _method(s, i)
        i += 1
        ts = i
        while i < n and _TARGET[s[i]]:
            i += 1
        te = i
        if te == ts:
            self._fail(400, "malformed request line")
        if i == n or s[i] != 32:
            self._fail(400, "invalid character in request target")
        i += 1
        if n - i != 8 or memcmp(s + i, b"HTTP/", 5) != 0 or not (48 <= s[i + 5] <= 57) \
                or s[i + 6] != 46 or not (48 <= s[i + 7] <= 57):
            self._fail(400, "malformed HTTP version")
        major = s[i + 5] - 48
        minor = s[i + 7] - 48
        if major != 1:
            self._fail(505, "HTTP version not supported")
        self._version = 10 if minor == 0 else 11

        head = RequestHead.__new__(RequestHead)
        head.method = method
        target = PyBytes_FromStringAndSize(<const char*>s + ts, te - ts)
        head.target = target
        head.version = self._version
        head.headers = self._headers = list_with_room(16)     # filled by _header_line
        head.query = _EMPTY
        self._target_host = None
        connect = method is _METHODS[8]
        if connect:
            # authority-form only: uri-host ":" port
            if not _valid_host(s + ts, te - ts, True):
                self._fail(400, "CONNECT needs a host:port target")
            head.path = target
        elif s[ts] == 47:  # origin-form
            q = ts
            while q < te and s[q] != 63:
                q += 1
            if q == te:
                head.path = target
            else:
                head.path = PyBytes_FromStringAndSize(<const char*>s + ts, q - ts)
                head.query = PyBytes_FromStringAndSize(<const char*>s + q + 1, te - q - 1)
        elif te - ts == 1 and s[ts] == 42:  # asterisk-form
            if method is not _METHODS[7]:
                self._fail(400, "'*' target is only valid for OPTIONS")
            head.path = _ASTERISK
        else:  # absolute-form: http(s)://authority[path][?query]
            if _ieq(s + ts, 7 if te - ts >= 7 else te - ts, "http://", 7):
                a = ts + 7
            elif _ieq(s + ts, 8 if te - ts >= 8 else te - ts, "https://", 8):
                a = ts + 8
            else:
                self._fail(400, "invalid request target")
            b = a
            while b < te and s[b] != 47 and s[b] != 63:
                b += 1
            if not _valid_host(s + a, b - a, False):
                self._fail(400, "invalid authority in request target")
            self._target_host = PyBytes_FromStringAndSize(<const char*>s + a, b - a)
            q = b
            while q < te and s[q] != 63:
                q += 1
            head.path = PyBytes_FromStringAndSize(<const char*>s + b, q - b) if q > b \
                else _SLASH
            if q < te:
                head.query = PyBytes_FromStringAndSize(<const char*>s + q + 1, te - q - 1)
        self._head = head
        self._head_bytes = n + 2
        self._hbytes = 0
        self._state = S_HEADER
        return 0

    cdef int _head_done(self) except -1:
        cdef RequestHead head = self._head
        cdef int version = self._version
        if version != 10 and self._host_count == 0:
            self._fail(400, "missing Host header")
        if self._te_seen:
            if self._cl >= 0:
                self._fail(400, "both Content-Length and Transfer-Encoding")
            if version == 10:
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            if self._te_bad or self._te_elems != 1 or self._te_chunked_count != 1:
                self._fail(400, "unsupported Transfer-Encoding (only a single chunked)")
            head.chunked = True
        else:
            head.chunked = False
        head.content_length = self._cl
        if self._cl > self._max_body:
            self._fail(413, "request body too large")
        if self._target_host is not None:
            head.host = self._target_host
        elif self._host is not None:
            head.host = self._host
        else:
            head.host = _EMPTY
        head.connection_tokens = tuple(self._conn) if self._conn is not None else _NO_TOKENS
        if version == 10:
            head.keep_alive = self._conn_keep_alive and not self._conn_close
            head.expect_continue = False
            head.upgrade = None
        else:
            head.keep_alive = not self._conn_close
            head.expect_continue = self._expect_continue
            head.upgrade = self._upgrade if self._conn_upgrade else None
        head.head_bytes = self._head_bytes
        self._body_limit = self._max_body
        self._body_total = 0
        if head.chunked:
            self._state = S_CHUNK_SIZE
        elif self._cl > 0:
            self._state = S_BODY_CL
            self._remaining = self._cl
        else:
            self._state = S_COMPLETE
        if self._fast is not None:
            self._fast.handle_head(head)
            if self._state == S_DONE:
                return 0
        elif self._on_request is not None:
            self._on_request(head)
            if self._state == S_DONE:
                return 0
        if self._cl > self._body_limit:
            self._fail(413, "request body too large")
        if self._state == S_COMPLETE:
            return self._message_done()
        return 0

    cdef int _message_done(self) except -1:
        self._state = S_START
        self._paused = True
        self._head = None
        self._headers = None
        if self._fast is not None:
            self._fast.handle_end()
        elif self._on_request_complete is not None:
            self._on_request_complete()
        return 0

    cpdef resume(self):
        """Continue with buffered bytes after on_request_complete (may fire callbacks)."""
        if self._error is not None:
            raise self._error
        if not self._paused or self._state == S_DONE:
            return
        self._paused = False
        if self._processing:
            return  # called from a callback: the running loop simply goes on
        if self._blen > self._bstart:
            self._run_buffer()

    def set_body_limit(self, n):
        """Lower the body limit of the current message (bytes); exceeding it raises
        HttpError 413. ``max_body_bytes`` stays the ceiling: a Content-Length above it was
        refused before ``on_request``, so raising the limit here would treat chunked and
        Content-Length bodies differently."""
        if n < 0:
            raise ValueError("body limit must be >= 0")
        self._body_limit = n if n < self._max_body else self._max_body

    @property
    def paused(self):
        return self._paused and self._state != S_DONE and self._state != S_DEAD

    @property
    def in_head(self):
        """Some bytes of a request head arrived but the head is not complete."""
        return self._state == S_FIRST_LINE or self._state == S_HEADER

    @property
    def in_body(self):
        """The head was parsed and its body is not complete."""
        cdef int st = self._state
        return (st == S_BODY_CL or st == S_CHUNK_SIZE or st == S_CHUNK_DATA
                or st == S_CHUNK_CR or st == S_CHUNK_LF or st == S_TRAILER)


# ------------------------------------------------------------------------ responses
@cython.final
cdef class ResponseParser(_HttpParser):
    """Incremental parser for upstream responses; armed per request with ``start()``.

    Handler methods: ``on_informational(head)`` (1xx but 101), ``on_response(head)``,
    ``on_body(bytes)`` (decoded) and ``on_response_complete()``. Bytes that arrive while
    no response is expected are only buffered (see ``buffered``).
    """

    def __init__(self, handler, *, max_header_bytes=65536, max_headers=200):
        if max_header_bytes < 2 or max_headers < 0:
            raise ValueError("parser limits must be positive")
        self._is_request = False
        if isinstance(handler, ParserHandler):
            self._fast = handler
        else:
            self._on_informational = getattr(handler, "on_informational", None)
            self._on_response = getattr(handler, "on_response", None)
            self._on_body = getattr(handler, "on_body", None)
            self._on_response_complete = getattr(handler, "on_response_complete", None)
        self._max_header_bytes = max_header_bytes
        self._max_line = max_header_bytes
        self._max_headers = max_headers
        self._state = S_IDLE
        self._paused = True
        self._head_request = False
        self._reset_head()

    cpdef start(self, bint head_request):
        """Arm for the next response; ``head_request``: it answers a HEAD (no body)."""
        if self._error is not None:
            raise self._error
        if self._state == S_DONE or self._state == S_UPGRADED:
            raise RuntimeError("parser finished (upgraded or take_buffered)")
        if self._state != S_IDLE:
            raise RuntimeError("start() while a response is still expected")
        if self._unconsumed() > 0:
            self._error = HttpError(502, "bad_response",
                                    "upstream sent bytes that answer no request")
            self._state = S_DEAD
            raise self._error
        self._head_request = head_request
        self._reset_head()
        self._state = S_FIRST_LINE
        self._paused = False

    def feed_eof(self):
        """The upstream closed: completes a close-delimited body, else raises 502."""
        cdef int st = self._state
        if self._error is not None:
            raise self._error
        if self._processing:
            raise RuntimeError("feed_eof() called from inside a parser callback")
        if st == S_IDLE or st == S_UPGRADED or st == S_DONE:
            return
        if st == S_BODY_EOF:
            self._processing = True
            self._cur_n = 0
            self._pos = 0
            try:
                self._message_done()
            except BaseException as exc:
                self._error = exc
                self._state = S_DEAD
                raise
            finally:
                self._processing = False
            return
        if st == S_FIRST_LINE and self._blen == self._bstart:
            msg = "upstream closed the connection before a response"
        elif st == S_FIRST_LINE or st == S_HEADER:
            msg = "upstream closed the connection inside the response head"
        else:
            msg = "upstream closed the connection inside the response body"
        self._error = HttpError(502, "upstream_truncated", msg)
        self._state = S_DEAD
        raise self._error

    cdef int _first_line(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef ResponseHead head
        cdef int status
        cdef Py_ssize_t i
        if n + 2 > self._max_header_bytes:
            self._fail(431, "status line too long")
        if n < 12 or memcmp(s, b"HTTP/", 5) != 0 or not (48 <= s[5] <= 57) or s[6] != 46 \
                or not (48 <= s[7] <= 57) or s[8] != 32 or not (48 <= s[9] <= 57) \
                or not (48 <= s[10] <= 57) or not (48 <= s[11] <= 57):
            self._fail(502, "malformed status line")
        if s[5] != 49:
            self._fail(502, "unsupported HTTP version in response")
        status = (s[9] - 48) * 100 + (s[10] - 48) * 10 + (s[11] - 48)
        if status < 100:
            self._fail(502, "invalid status code")
        head = ResponseHead.__new__(ResponseHead)
        if n > 12:
            # Many servers omit the reason, some even its SP; both are harmless.
            if s[12] != 32:
                self._fail(502, "malformed status line")
            for i in range(13, n):
                if not _FIELD[s[i]]:
                    self._fail(502, "invalid character in reason phrase")
            head.reason = PyBytes_FromStringAndSize(<const char*>s + 13, n - 13)
        else:
            head.reason = _EMPTY
        self._version = 10 if s[7] == 48 else 11
        head.status = status
        head.version = self._version
        head.headers = self._headers = list_with_room(16)     # filled by _header_line
        self._head = head
        self._hbytes = n + 2
        self._head_bytes = n + 2
        self._state = S_HEADER
        return 0

    cdef int _head_done(self) except -1:
        cdef ResponseHead head = self._head
        cdef int status = head.status
        cdef bint close_delimited = False, no_body
        head.connection_tokens = tuple(self._conn) if self._conn is not None else _NO_TOKENS
        head.content_length = self._cl
        head.chunked = self._te_seen and self._te_last_chunked and not self._te_bad
        head.head_bytes = self._head_bytes
        if self._version == 10:
            head.keep_alive = self._conn_keep_alive and not self._conn_close
        else:
            head.keep_alive = not self._conn_close
        if status < 200 and status != 101:
            self._reset_head()
            self._state = S_FIRST_LINE
            if self._fast is not None:
                self._fast.handle_informational(head)
            elif self._on_informational is not None:
                self._on_informational(head)
            return 0
        if status == 101:
            self._state = S_UPGRADED
            self._paused = True
            if self._fast is not None:
                self._fast.handle_head(head)
            elif self._on_response is not None:
                self._on_response(head)
            return 0
        if self._te_seen:
            if self._cl >= 0:
                self._fail(502, "both Content-Length and Transfer-Encoding")
            if self._te_bad or self._te_chunked_count > 1:
                self._fail(502, "invalid Transfer-Encoding")
        no_body = self._head_request or status == 204 or status == 304
        self._body_total = 0
        if no_body:
            self._state = S_COMPLETE
        elif self._te_seen:
            if self._te_last_chunked:
                self._state = S_CHUNK_SIZE
            else:
                close_delimited = True
        elif self._cl > 0:
            self._state = S_BODY_CL
            self._remaining = self._cl
        elif self._cl == 0:
            self._state = S_COMPLETE
        else:
            close_delimited = True
        if close_delimited:
            self._state = S_BODY_EOF
            head.keep_alive = False
        elif self._version == 10 and self._te_seen:
            head.keep_alive = False  # RFC 9112 6.1: framing of such a message is suspect
        if self._fast is not None:
            self._fast.handle_head(head)
        elif self._on_response is not None:
            self._on_response(head)
            if self._state == S_DONE:
                return 0
        if self._state == S_COMPLETE:
            return self._message_done()
        return 0

    cdef int _message_done(self) except -1:
        self._state = S_IDLE
        self._paused = True
        self._head = None
        self._headers = None
        if self._fast is not None:
            self._fast.handle_end()
        elif self._on_response_complete is not None:
            self._on_response_complete()
        return 0

    @property
    def expecting(self):
        """Armed and the response is not complete."""
        cdef int st = self._state
        return not (st == S_IDLE or st == S_UPGRADED or st == S_DONE or st == S_DEAD)
