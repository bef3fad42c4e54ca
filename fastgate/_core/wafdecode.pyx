# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The WAF's byte-level transformations (CRS t:urlDecodeUni, t:htmlEntityDecode, t:jsDecode,
t:removeNulls, t:utf8toUnicode for overlong and full-width forms), in one linear pass per round.

``decode(data)`` repeats the pass until nothing changes (at most ``MAX_ROUNDS``): double and
triple encodings (``%252e``, ``&amp;lt;``, ``%26%23x3c%3B``) come out as the characters an
application would finally see. Every escape shrinks or keeps its length, so the output is never
longer than the input and a round is one allocation.

``fast_view(raw_target, headers, body, skip)`` concatenates everything the WAF inspects (the
raw target, each header value not in ``skip`` after ``\\x02``, the body after ``\\x01``) and
decodes it: the prefilter scans this one buffer, so a benign request costs one pass and one
scan. Decoding the concatenation equals concatenating the decoded parts: no escape spans a
separator.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy


cdef extern from "string.h" nogil:
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)

DEF MAX_ROUNDS = 4

cdef signed char HEXVAL[256]
cdef int _i
for _i in range(256):
    HEXVAL[_i] = -1
for _i in range(10):
    HEXVAL[48 + _i] = _i
for _i in range(6):
    HEXVAL[65 + _i] = 10 + _i
    HEXVAL[97 + _i] = 10 + _i

# Named entities that matter for markup and script (HTML5 names included: ``&Tab;``,
# ``&NewLine;`` and ``&colon;`` are the classic ``java&Tab;script:`` evasions). Lower-cased.
_ENTITIES = {
    b"lt": b"<", b"gt": b">", b"amp": b"&", b"quot": b'"', b"apos": b"'", b"nbsp": b" ",
    b"tab": b"\t", b"newline": b"\n", b"colon": b":", b"semi": b";", b"comma": b",",
    b"period": b".", b"sol": b"/", b"bsol": b"\\", b"lpar": b"(", b"rpar": b")",
    b"lsqb": b"[", b"rsqb": b"]", b"lbrack": b"[", b"rbrack": b"]", b"lcub": b"{",
    b"rcub": b"}", b"lbrace": b"{", b"rbrace": b"}", b"excl": b"!", b"quest": b"?",
    b"num": b"#", b"dollar": b"$", b"percnt": b"%", b"equals": b"=", b"plus": b"+",
    b"ast": b"*", b"midast": b"*", b"grave": b"`", b"hat": b"^", b"vert": b"|",
    b"verbar": b"|", b"lowbar": b"_", b"hyphen": b"-", b"dash": b"-", b"commat": b"@",
}
cdef dict ENTITIES = {k.lower(): v for k, v in _ENTITIES.items()}
# Legacy names browsers decode without the trailing ';' (lt gt amp quot apos nbsp, see
# legacy_entity); the others need it.
cdef tuple NO_SEMI_REP = (None, b"<", b">", b"&", b'"', b"'", b" ")


cdef inline bint _is(const unsigned char* p, const char* name, Py_ssize_t k) noexcept:
    """``p[:k]`` is ``name`` (lower case) in any case."""
    cdef Py_ssize_t x
    for x in range(k):
        if (p[x] | 32) != <unsigned char>name[x]:
            return False
    return True


cdef inline int legacy_entity(const unsigned char* p, Py_ssize_t avail) noexcept:
    """The longest legacy entity name that ``p`` starts with (``avail`` letters there), as
    ``length << 3 | index into NO_SEMI_REP``, or 0: without a bytes object per try (a query's
    ``&lang=`` went through three)."""
    if avail >= 4:
        if _is(p, b"quot", 4):
            return 4 << 3 | 4
        if _is(p, b"apos", 4):
            return 4 << 3 | 5
        if _is(p, b"nbsp", 4):
            return 4 << 3 | 6
    if avail >= 3 and _is(p, b"amp", 3):
        return 3 << 3 | 3
    if avail >= 2:
        if _is(p, b"lt", 2):
            return 2 << 3 | 1
        if _is(p, b"gt", 2):
            return 2 << 3 | 2
    return 0


cdef bint SPECIAL[256]
for _i in range(256):
    SPECIAL[_i] = _i in (37, 38, 92, 0, 0xC0, 0xC1, 0xE0, 0xEF, 0xF0, 0xF8)


cdef inline Py_ssize_t put_cp(unsigned char* out, Py_ssize_t o, long cp) noexcept:
    """Writes code point ``cp`` as UTF-8 (full-width ASCII folded to ASCII, NUL dropped)."""
    if 0xFF01 <= cp <= 0xFF5E:
        cp -= 0xFEE0
    elif cp == 0x2215 or cp == 0x2044 or cp == 0x29F8 or cp == 0xF025 or cp == 0xEFC8:
        cp = 47   # division, fraction and big solidus (and the two private-use slashes of
                  # traversal tools): read as '/' (IIS best-fit mapping)
    elif cp == 0x2216 or cp == 0xFE68 or cp == 0x29F5 or cp == 0x29F9:
        cp = 92   # set minus, small and big reverse solidus: '\\'
    elif cp == 0x2024 or cp == 0xFE52:
        cp = 46   # one dot leader, small full stop: '.'
    if cp == 0:
        return o
    if cp < 0x80:
        out[o] = <unsigned char>cp
        return o + 1
    if cp < 0x800:
        out[o] = <unsigned char>(0xC0 | (cp >> 6))
        out[o + 1] = <unsigned char>(0x80 | (cp & 0x3F))
        return o + 2
    if cp < 0x10000:
        if 0xD800 <= cp <= 0xDFFF:
            out[o] = 63  # '?': a lone surrogate is no character
            return o + 1
        out[o] = <unsigned char>(0xE0 | (cp >> 12))
        out[o + 1] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
        out[o + 2] = <unsigned char>(0x80 | (cp & 0x3F))
        return o + 3
    if cp <= 0x10FFFF:
        out[o] = <unsigned char>(0xF0 | (cp >> 18))
        out[o + 1] = <unsigned char>(0x80 | ((cp >> 12) & 0x3F))
        out[o + 2] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
        out[o + 3] = <unsigned char>(0x80 | (cp & 0x3F))
        return o + 4
    out[o] = 63
    return o + 1


cdef Py_ssize_t one_round(const unsigned char* s, Py_ssize_t n, unsigned char* out,
                          bint* again) except -1:
    """One decoding pass; returns the output length (<= n). ``again`` is set when a decoded
    byte could start another escape (a double encoding), so another round is worth it."""
    cdef Py_ssize_t i = 0, o = 0, j, k
    cdef unsigned char c, c1, c2
    cdef long cp
    cdef int h1, h2, h3, h4, digits
    cdef bytes name, rep
    cdef bint lit_pct = False   # a '%' kept as it is: escapes after it may complete it
    while i < n:
        # copy the run of ordinary bytes in one go
        j = i
        while j < n and not SPECIAL[s[j]]:
            j += 1
        if j > i:
            memcpy(out + o, s + i, j - i)
            o += j - i
            i = j
            if i >= n:
                break
        c = s[i]
        if c == 37:  # '%'
            if i + 2 < n and HEXVAL[s[i + 1]] >= 0 and HEXVAL[s[i + 2]] >= 0:
                c1 = <unsigned char>((HEXVAL[s[i + 1]] << 4) | HEXVAL[s[i + 2]])
                i += 3
                if c1 != 0:
                    out[o] = c1
                    o += 1
                    if c1 == 37 or c1 == 38 or c1 == 92 or c1 >= 0xC0 or lit_pct:
                        # another escape, or a '%' left before this one (%%32%65 and
                        # %2%65 are "%2e" after this round)
                        again[0] = True
                continue
            if i + 5 < n and (s[i + 1] == 117 or s[i + 1] == 85):  # %uHHHH
                h1 = HEXVAL[s[i + 2]]; h2 = HEXVAL[s[i + 3]]
                h3 = HEXVAL[s[i + 4]]; h4 = HEXVAL[s[i + 5]]
                if h1 >= 0 and h2 >= 0 and h3 >= 0 and h4 >= 0:
                    o = put_cp(out, o, (h1 << 12) | (h2 << 8) | (h3 << 4) | h4)
                    again[0] = True
                    i += 6
                    continue
            lit_pct = True
            out[o] = c; o += 1; i += 1
            continue
        if c == 38 and i + 2 < n:  # '&': an entity
            if s[i + 1] == 35:  # '&#'
                j = i + 2
                cp = 0
                digits = 0
                if j < n and (s[j] == 120 or s[j] == 88):  # hex
                    j += 1
                    while j < n and HEXVAL[s[j]] >= 0 and digits < 8:
                        cp = cp * 16 + HEXVAL[s[j]]
                        j += 1; digits += 1
                else:
                    while j < n and 48 <= s[j] <= 57 and digits < 9:
                        cp = cp * 10 + (s[j] - 48)
                        j += 1; digits += 1
                if digits:
                    if j < n and s[j] == 59:
                        j += 1
                    o = put_cp(out, o, cp if cp <= 0x10FFFF else 0x110000)
                    again[0] = True
                    i = j
                    continue
            else:
                j = i + 1
                while j < n and j - i <= 8 and ((65 <= s[j] <= 90) or (97 <= s[j] <= 122)):
                    j += 1
                rep = None
                if j - i >= 3 and j < n and s[j] == 59:
                    name = PyBytes_FromStringAndSize(<char*>s + i + 1, j - i - 1).lower()
                    rep = ENTITIES.get(name)
                elif j - i >= 3 and (s[i + 1] | 32) in (108, 103, 97, 113, 110):  # l g a q n
                    # no ';': only the legacy names, which also decode as a prefix (&ltscript)
                    k = legacy_entity(s + i + 1, j - i - 1)
                    if k:
                        rep = NO_SEMI_REP[k & 7]
                        j = i + 1 + (k >> 3)
                if rep is not None:
                    if j < n and s[j] == 59:
                        j += 1
                    for k in range(PyBytes_GET_SIZE(rep)):
                        out[o] = <unsigned char>PyBytes_AS_STRING(rep)[k]
                        o += 1
                    again[0] = True
                    i = j
                    continue
            out[o] = c; o += 1; i += 1
            continue
        if c == 92 and i + 1 < n:  # backslash: JS escapes
            c1 = s[i + 1]
            if (c1 == 117 or c1 == 85) and i + 5 < n:  # \uHHHH
                h1 = HEXVAL[s[i + 2]]; h2 = HEXVAL[s[i + 3]]
                h3 = HEXVAL[s[i + 4]]; h4 = HEXVAL[s[i + 5]]
                if h1 >= 0 and h2 >= 0 and h3 >= 0 and h4 >= 0:
                    o = put_cp(out, o, (h1 << 12) | (h2 << 8) | (h3 << 4) | h4)
                    again[0] = True
                    i += 6
                    continue
            if (c1 == 117 or c1 == 85) and i + 3 < n and s[i + 2] == 123:  # \u{H..}
                j = i + 3
                cp = 0
                digits = 0
                while j < n and HEXVAL[s[j]] >= 0 and digits < 7:
                    cp = cp * 16 + HEXVAL[s[j]]
                    j += 1; digits += 1
                if digits and j < n and s[j] == 125:
                    o = put_cp(out, o, cp if cp <= 0x10FFFF else 0x110000)
                    i = j + 1
                    continue
            if (c1 == 120 or c1 == 88) and i + 3 < n:  # \xHH
                h1 = HEXVAL[s[i + 2]]; h2 = HEXVAL[s[i + 3]]
                if h1 >= 0 and h2 >= 0:
                    o = put_cp(out, o, (h1 << 4) | h2)
                    again[0] = True
                    i += 4
                    continue
            if c1 == 110 or c1 == 114 or c1 == 116:  # \n \r \t
                out[o] = 10 if c1 == 110 else (13 if c1 == 114 else 9)
                o += 1; i += 2
                continue
            if c1 == 47:  # \/ (JSON)
                out[o] = 47; o += 1; i += 2
                continue
            out[o] = c; o += 1; i += 1
            continue
        if c == 0:
            i += 1
            continue
        if (c == 0xC0 or c == 0xC1) and i + 1 < n and 0x80 <= s[i + 1] <= 0xBF:
            out[o] = <unsigned char>(((c & 0x1F) << 6) | (s[i + 1] & 0x3F))  # overlong ASCII
            if out[o] != 0:
                o += 1
            i += 2
            continue
        if (c == 0xC0 or c == 0xC1) and i + 1 < n and s[i + 1] < 0x80:
            # a lead byte that is never UTF-8, before ASCII: %c0%2f is dropped to '/', and
            # %c1%1c reads as IIS read it, the continuation's top bits ignored ('\\')
            if c == 0xC1 and s[i + 1] < 0x40 and s[i + 1] != 0:
                out[o] = <unsigned char>(0x40 | s[i + 1])
                o += 1
                i += 2
                continue
            i += 1
            continue
        if c == 0xF0 and i + 3 < n and s[i + 1] == 0x80 and 0x80 <= s[i + 2] <= 0x81 and \
                0x80 <= s[i + 3] <= 0xBF:     # four-byte overlong ASCII
            out[o] = <unsigned char>(((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F))
            if out[o] != 0:
                o += 1
            i += 4
            continue
        if c == 0xF8 and i + 4 < n and s[i + 1] == 0x80 and s[i + 2] == 0x80 and \
                0x80 <= s[i + 3] <= 0x81 and 0x80 <= s[i + 4] <= 0xBF:   # five-byte overlong
            out[o] = <unsigned char>(((s[i + 3] & 0x3F) << 6) | (s[i + 4] & 0x3F))
            if out[o] != 0:
                o += 1
            i += 5
            continue
        if c == 0xE0 and i + 2 < n and 0x80 <= s[i + 1] <= 0x81 and 0x80 <= s[i + 2] <= 0xBF:
            out[o] = <unsigned char>(((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F))
            if out[o] != 0:
                o += 1
            i += 3
            continue
        if c == 0xEF and i + 2 < n:  # full-width forms U+FF01..U+FF5E
            c1 = s[i + 1]; c2 = s[i + 2]
            if c1 == 0xBC and 0x81 <= c2 <= 0xBF:
                out[o] = c2 - 0x60; o += 1; i += 3
                continue
            if c1 == 0xBD and 0x80 <= c2 <= 0x9E:
                out[o] = c2 - 0x20; o += 1; i += 3
                continue
        out[o] = c
        o += 1
        i += 1
    return o


cdef inline uint64_t _zero_in(uint64_t v) noexcept:
    """Non-zero when a byte of ``v`` is zero."""
    return (v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL


cdef inline bint may_change(const unsigned char* s, Py_ssize_t n) noexcept:
    """Whether ``s`` holds a byte that can start an escape (``SPECIAL``). Eight bytes at a
    time: a word of ASCII with no ``%``, ``&``, ``\\`` or NUL holds none; other words are
    looked at byte by byte."""
    cdef Py_ssize_t i = 0, k
    cdef uint64_t w
    while i + 8 <= n:
        memcpy(&w, s + i, 8)
        if (w & 0x8080808080808080ULL) or _zero_in(w) or \
                _zero_in(w ^ 0x2525252525252525ULL) or _zero_in(w ^ 0x2626262626262626ULL) or \
                _zero_in(w ^ 0x5c5c5c5c5c5c5c5cULL):
            for k in range(i, i + 8):
                if SPECIAL[s[k]]:
                    return True
        i += 8
    while i < n:
        if SPECIAL[s[i]]:
            return True
        i += 1
    return False


cdef bytes decode_buf(const unsigned char* s, Py_ssize_t n):
    cdef unsigned char* a
    cdef unsigned char* b
    cdef unsigned char* t
    cdef Py_ssize_t m, r
    cdef bint again = False
    if not may_change(s, n):
        return PyBytes_FromStringAndSize(<const char*>s, n)
    a = <unsigned char*>PyMem_Malloc(n + 1)
    b = <unsigned char*>PyMem_Malloc(n + 1)
    if a == NULL or b == NULL:
        PyMem_Free(a); PyMem_Free(b)
        raise MemoryError()
    try:
        m = one_round(s, n, a, &again)
        r = 1
        while r < MAX_ROUNDS and again:
            again = False
            n = m
            m = one_round(a, n, b, &again)
            t = a; a = b; b = t
            r += 1
        return PyBytes_FromStringAndSize(<char*>a, m)
    finally:
        PyMem_Free(a)
        PyMem_Free(b)


def decode(bytes data not None):
    """URL (``%HH``, ``%uHHHH``), HTML entity and JS escape decoding, NUL removal, overlong
    UTF-8 and full-width ASCII folded, repeated until stable (at most 4 rounds)."""
    return decode_buf(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


# Headers that carry opaque tokens (credentials, ids, trace context). When such a value is
# token-shaped (letters, digits and ``._~+=-`` only, no "..", after an optional auth scheme) no
# detector could judge it an attack, so the fast view leaves it out; the precise stage, when it
# runs, still sees every header.
cdef frozenset TOKEN_HEADERS = frozenset((
    b"authorization", b"proxy-authorization", b"x-api-key", b"x-request-id", b"x-correlation-id",
    b"traceparent", b"tracestate", b"x-amzn-trace-id", b"x-b3-traceid", b"x-b3-spanid",
    b"x-csrf-token", b"x-xsrf-token", b"x-cloud-trace-context", b"sec-websocket-key"))

cdef bint TOKEN_CHAR[256]
for _i in range(256):
    TOKEN_CHAR[_i] = (48 <= _i <= 57) or (65 <= _i <= 90) or (97 <= _i <= 122) or \
        _i in (46, 95, 126, 43, 61, 45)


cdef inline bint names_filename(bytes name) noexcept:
    """``b"filename" in name`` without the int check (and the TypeError it raises and
    clears) that bytes' ``in`` makes first: a header whose name says filename is judged as a
    file name, not as a header."""
    return memmem(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"filename", 8) != NULL


cdef bint token_shaped(bytes value):
    cdef const unsigned char* v = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i = 0, k
    # an auth scheme first: Bearer / Basic / Token / Bot / ApiKey
    for k in range(min(n, 8)):
        if v[k] == 32:
            if k >= 3 and (v[0] | 32) in (98, 116, 97):  # b, t, a
                i = k + 1
            break
    if i >= n:
        return False
    for k in range(i, n):
        if not TOKEN_CHAR[v[k]]:
            return False
        if v[k] == 46 and k + 1 < n and v[k + 1] == 46:
            return False
    return True


def fast_view(bytes raw_target not None, list headers not None, body, frozenset skip not None,
              Py_ssize_t body_limit, dict clean=None):
    """The decoded concatenation ``target (\\x02 header-value)* \\x01 body`` (see module doc)."""
    return view_of(raw_target, headers, body, skip, body_limit, clean, NULL)


cdef bytes view_of(bytes raw_target, list headers, object body, frozenset skip,
                   Py_ssize_t body_limit, dict clean, unsigned char* used):
    """``fast_view``; ``used`` (room for ``USED_MAX`` flags, or NULL) is told which of the
    first headers went into the scan, for ``remember_used``. Each header name is looked up
    once: framing and excluded headers (``skip``) are left out, a value ``clean`` holds
    (found clean on its own before: a value that matches no pattern alone cannot make a part
    match) and a token-shaped credential or id are left out too."""
    cdef Py_ssize_t total = PyBytes_GET_SIZE(raw_target) + 1, o, ln, k = 0
    cdef object item
    cdef bytes name, value
    cdef bytes b = None
    cdef unsigned char* buf
    for item in headers:
        total += PyBytes_GET_SIZE(<bytes>(<tuple>item)[1]) + 1    # an upper bound
    if body is not None:
        b = bytes(body) if not isinstance(body, bytes) else <bytes>body
        if PyBytes_GET_SIZE(b) > body_limit:
            b = b[:body_limit]
        total += PyBytes_GET_SIZE(b)
    buf = <unsigned char*>PyMem_Malloc(total + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        ln = PyBytes_GET_SIZE(raw_target)
        memcpy(buf, PyBytes_AS_STRING(raw_target), ln)
        o = ln
        for item in headers:
            if used != NULL and k < USED_MAX:
                used[k] = 0
            k += 1
            name = (<tuple>item)[0]
            if name in skip:
                continue
            value = (<tuple>item)[1]
            if clean is not None and value in clean and not names_filename(name):
                continue            # (a filename header is judged as a filename, not a header)
            if name in TOKEN_HEADERS and token_shaped(value):
                continue
            if used != NULL and k <= USED_MAX:
                used[k - 1] = 1
            buf[o] = 2
            o += 1
            ln = PyBytes_GET_SIZE(value)
            memcpy(buf + o, PyBytes_AS_STRING(value), ln)
            o += ln
        buf[o] = 1
        o += 1
        if b is not None:
            ln = PyBytes_GET_SIZE(b)
            memcpy(buf + o, PyBytes_AS_STRING(b), ln)
            o += ln
        return decode_buf(buf, o)
    finally:
        PyMem_Free(buf)


cdef void remember_used(list headers, dict clean, const unsigned char* used,
                        Py_ssize_t max_entries, Py_ssize_t max_len) except *:
    """After a clean scan of ``view_of(..., used)``: the header values it scanned are clean
    on their own (values already in ``clean``, skipped and token-shaped ones were not
    scanned, and are not added)."""
    cdef Py_ssize_t k, n = min(PyList_GET_SIZE(headers), USED_MAX)
    cdef bytes value
    for k in range(n):
        if used[k]:
            value = <bytes>(<tuple>PyList_GET_ITEM(headers, k))[1]
            if PyBytes_GET_SIZE(value) <= max_len:
                if len(clean) >= max_entries:
                    clean.clear()
                clean[value] = True


def remember_clean(list headers not None, frozenset skip not None, dict clean not None,
                   Py_ssize_t max_entries=4096, Py_ssize_t max_len=1024):
    """Adds the request's header values (the whole request scanned clean) to ``clean``."""
    cdef object item
    cdef bytes name, value
    if len(clean) >= max_entries:
        clean.clear()
    for item in headers:
        name = (<tuple>item)[0]
        if name in skip:
            continue
        value = (<tuple>item)[1]
        if name in TOKEN_HEADERS and token_shaped(value):
            continue            # left out of the scan: never found clean
        if PyBytes_GET_SIZE(value) <= max_len:
            clean[value] = True
