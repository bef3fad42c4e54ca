# cython: language_level=3, boundscheck=True, wraparound=True, cdivision=True
# (setup.py turns bounds checks and wraparound off globally; the config-time code below indexes
# Python sequences from the end, and the per-request code works on C pointers, so the safe
# defaults cost nothing where it matters. This header overrides setup.py's directives.)
"""The route table, compiled once per config into dicts and a segment trie.

Matching rules (the contract the proxy and the tests rely on):

* Host tier first: an exact host beats a longer ``*.suffix`` wildcard, which beats a shorter
  one, which beats routes that list no hosts. Hosts compare case-insensitively, without the
  port and without one trailing dot; ``[v6]`` literals compare in canonical form.
* Then the path: an exact pattern beats any ``{param}`` pattern, which beats any ``/*`` prefix.
  Among param patterns, the first segment where two differ decides: a literal beats a param
  (the trie backtracks when the literal branch dead-ends). Among prefixes, the one with more
  segments wins, then the same literal-before-param rule.
* Then the method, within one host+pattern: a route listing the method beats a route listing
  GET (which answers HEAD too), which beats a route listing no methods.
* When the most specific host+pattern has no route for the method, less specific ones are
  tried in the order above. When none accepts it but some matched, the answer is
  METHOD_NOT_ALLOWED with the sorted union of their methods (HEAD included when GET is).

Configuration order never decides a match: every pair of routes the rules above cannot
order (same host entry, same pattern shape, same method) is rejected by RouteConflict at load.
``/a/{x}`` and ``/a/{y}`` have the same shape and conflict.

A ``{param}`` never matches an empty segment, so ``/orders/{id}`` does not match ``/orders/``.
Trailing slashes are significant for exact and param patterns (``/orders`` does not match
``/orders/``); ``/static/*`` matches ``/static``, ``/static/`` and everything below.
Literal pattern segments are canonicalized the way ``normalize_path`` canonicalizes requests
(unreserved %XX decoded, other escapes upper-cased), so both sides compare byte for byte.
"""

import ipaddress
import re

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcmp

MATCH = 0
NOT_FOUND = 1
METHOD_NOT_ALLOWED = 2

# Misses are common (scanners); answering them must not allocate.
cdef tuple _NOT_FOUND_RESULT = (NOT_FOUND, None, None)


class RouteConflict(ValueError):
    """Two routes claim the same host + method + path pattern; the message names both."""


# ---------------------------------------------------------------------------------------------
# normalize_path
# ---------------------------------------------------------------------------------------------

cdef inline int _hexval(unsigned char c) noexcept nogil:
    if c >= c'0' and c <= c'9':
        return c - c'0'
    if c >= c'A' and c <= c'F':
        return c - c'A' + 10
    if c >= c'a' and c <= c'f':
        return c - c'a' + 10
    return -1


cdef inline bint _is_unreserved(int c) noexcept nogil:
    # RFC 3986 2.3: these are equivalent encoded or not, and must be decoded (6.2.2.2) so that
    # /%61dmin cannot reach a route other than /admin would.
    return ((c >= c'a' and c <= c'z') or (c >= c'A' and c <= c'Z') or (c >= c'0' and c <= c'9')
            or c == c'-' or c == c'.' or c == c'_' or c == c'~')


cdef inline bint _is_lower_hex(unsigned char c) noexcept nogil:
    return c >= c'a' and c <= c'f'


cdef inline unsigned char _upper_hex(unsigned char c) noexcept nogil:
    if c >= c'a' and c <= c'f':
        return c - 32
    return c


cdef int _check_escape(const unsigned char* buf, Py_ssize_t n, Py_ssize_t i) except -1:
    """Value of the escape at buf[i] == '%'; raises on a truncated or non-hex one and on %00."""
    cdef int hi, lo
    if i + 2 >= n:
        raise ValueError("truncated percent-escape in path")
    hi = _hexval(buf[i + 1])
    lo = _hexval(buf[i + 2])
    if hi < 0 or lo < 0:
        raise ValueError("invalid percent-escape %r in path" % (bytes(buf[i:i + 3]),))
    if hi == 0 and lo == 0:
        raise ValueError("encoded NUL (%00) in path")
    return hi * 16 + lo


cdef bint _needs_rewrite(const unsigned char* buf, Py_ssize_t n) except -1:
    """One scan: does normalization change anything? Raises on input normalization rejects."""
    cdef Py_ssize_t i = 0, seg = 1, seglen
    cdef unsigned char c
    cdef int v
    while i < n:
        c = buf[i]
        if c == c'/':
            if i > 0:
                seglen = i - seg
                if (seglen == 1 and buf[seg] == c'.') or (
                        seglen == 2 and buf[seg] == c'.' and buf[seg + 1] == c'.'):
                    return True
            if i + 1 < n and buf[i + 1] == c'/':
                return True
            seg = i + 1
        elif c == c'%':
            v = _check_escape(buf, n, i)
            if _is_unreserved(v) or _is_lower_hex(buf[i + 1]) or _is_lower_hex(buf[i + 2]):
                return True
            i += 3
            continue
        elif c == 0:
            raise ValueError("NUL byte in path")
        i += 1
    seglen = n - seg
    return (seglen == 1 and buf[seg] == c'.') or (
        seglen == 2 and buf[seg] == c'.' and buf[seg + 1] == c'.')


cdef Py_ssize_t _rewrite(const unsigned char* buf, Py_ssize_t n, unsigned char* out) except -1:
    """RFC 3986 5.2.4 over segments, merging empty ones; returns the output length (<= n)."""
    cdef Py_ssize_t i = 1, j, o = 1, seg_o, seglen, k
    cdef unsigned char c
    cdef int v
    cdef bint trailing
    out[0] = c'/'
    while True:
        seg_o = o
        j = i
        while j < n and buf[j] != c'/':
            c = buf[j]
            if c == c'%':
                v = _check_escape(buf, n, j)
                if _is_unreserved(v):
                    out[o] = <unsigned char>v
                    o += 1
                else:
                    out[o] = c'%'
                    out[o + 1] = _upper_hex(buf[j + 1])
                    out[o + 2] = _upper_hex(buf[j + 2])
                    o += 3
                j += 3
            elif c == 0:
                raise ValueError("NUL byte in path")
            else:
                out[o] = c
                o += 1
                j += 1
        seglen = o - seg_o
        trailing = j < n
        # Invariant here: out[:seg_o] ends with '/'.
        if seglen == 0:
            pass        # "//" merges; a final empty segment is the trailing slash already written
        elif seglen == 1 and out[seg_o] == c'.':
            o = seg_o
        elif seglen == 2 and out[seg_o] == c'.' and out[seg_o + 1] == c'.':
            if seg_o == 1:
                raise ValueError("path climbs above the root with '..'")
            k = seg_o - 2
            while out[k] != c'/':
                k -= 1
            o = k + 1
        elif trailing:
            out[o] = c'/'
            o += 1
        if not trailing:
            return o
        i = j + 1


def normalize_path(bytes path not None):
    """RFC 3986 dot-segment removal (also for %2e), merged slashes, canonical escapes.

    Unreserved characters sent percent-encoded are decoded and the hex digits of the remaining
    escapes upper-cased (RFC 3986 6.2.2), so equivalent spellings route the same way. Raises
    ValueError for a path not starting with "/", ".." above the root, a bad or truncated escape,
    and a NUL (raw or %00). Returns ``path`` itself when it is already normal.
    """
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path), o
    cdef const unsigned char* buf = <const unsigned char*>PyBytes_AS_STRING(path)
    cdef unsigned char* out
    if n == 0 or buf[0] != c'/':
        raise ValueError("path must start with '/'")
    if not _needs_rewrite(buf, n):
        return path
    out = <unsigned char*>PyMem_Malloc(n)
    if out == NULL:
        raise MemoryError()
    try:
        o = _rewrite(buf, n, out)
        return PyBytes_FromStringAndSize(<char*>out, o)
    finally:
        PyMem_Free(out)


# ---------------------------------------------------------------------------------------------
# Compiled structure
# ---------------------------------------------------------------------------------------------

@cython.final
cdef class _Entry:
    def __repr__(self):
        return "<route %r %s>" % (self.name, self.pattern)


@cython.final
cdef class _Endpoint:
    def __cinit__(self):
        self.by_method = {}

    cdef _Entry lookup(self, bytes method):
        cdef PyObject* p
        if self.has_methods:
            p = PyDict_GetItem(self.by_method, method)
            if p != NULL:
                return <_Entry>p
            if self.get is not None and PyBytes_GET_SIZE(method) == 4 and \
                    memcmp(PyBytes_AS_STRING(method), b"HEAD", 4) == 0:
                return self.get
        return self.any

    def methods(self):
        """Methods this endpoint answers, for Allow (only meaningful when ``any`` is None)."""
        names = set(m.decode("ascii") for m in self.by_method)
        if "GET" in names:
            names.add("HEAD")
        return names

    def add(self, _Entry entry, methods):
        cdef _Entry old
        if methods is None:
            if self.any is not None:
                _conflict(entry, self.any, "any method", self.host_desc)
            self.any = entry
            return
        for m in methods:
            old = self.by_method.get(m)
            if old is not None:
                _conflict(entry, old, m.decode("ascii"), self.host_desc)
            self.by_method[m] = entry
            if m == b"GET":
                self.get = entry
        self.has_methods = True
        self.allow = ", ".join(sorted(self.methods())).encode("ascii")


def _conflict(_Entry new, _Entry old, str method, str host_desc):
    if new.name == old.name and new.pattern == old.pattern:
        raise RouteConflict(
            "route %r lists path %r twice for %s on %s" % (new.name, new.pattern, method,
                                                          host_desc))
    raise RouteConflict(
        "route %r (path %r) conflicts with route %r (path %r): both claim %s on %s"
        % (new.name, new.pattern, old.name, old.pattern, method, host_desc))


cdef extern from *:
    """
    /* FNV-1a: a few cycles per byte on short segments. Keys come from the config only, so a
       client cannot lengthen probe chains by choosing what it sends. */
    static inline unsigned long long fg_segment_hash(const char *p, Py_ssize_t n) {
        unsigned long long h = 0xcbf29ce484222325ULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            h ^= (unsigned char)p[i];
            h *= 0x100000001b3ULL;
        }
        return h;
    }
    """
    unsigned long long fg_segment_hash(const char* p, Py_ssize_t n) noexcept nogil


@cython.final
cdef class _Node:
    def __cinit__(self, int depth):
        self.depth = depth
        self.slots = NULL
        self.mask = 0

    def __dealloc__(self):
        PyMem_Free(self.slots)

    def child(self, bytes key):
        cdef _Node node
        if self.children is None:
            self.children = {}
        node = self.children.get(key)
        if node is None:
            node = _Node(self.depth + 1)
            self.children[key] = node
        return node

    def param_child(self):
        if self.param is None:
            self.param = _Node(self.depth + 1)
        return self.param

    cdef int seal(self) except -1:
        """Builds the slot table once every route is in (the trie is immutable afterwards)."""
        cdef size_t size = 2, i
        cdef unsigned long long h
        cdef _Slot* slots
        if self.children:
            while size < 2 * <size_t>len(self.children):
                size *= 2
            slots = <_Slot*>PyMem_Malloc(size * sizeof(_Slot))
            if slots == NULL:
                raise MemoryError()
            for i in range(size):
                slots[i].child = NULL
            for key, node in self.children.items():
                h = fg_segment_hash(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
                i = h & (size - 1)
                while slots[i].child != NULL:
                    i = (i + 1) & (size - 1)
                slots[i].hash = h
                slots[i].key = PyBytes_AS_STRING(key)
                slots[i].length = PyBytes_GET_SIZE(key)
                slots[i].child = <void*>node
            PyMem_Free(self.slots)
            self.slots = slots
            self.mask = size - 1
            for node in self.children.values():
                (<_Node>node).seal()
        if self.param is not None:
            self.param.seal()
        return 0


cdef inline _Node _find_child(_Node node, const char* p, Py_ssize_t n):
    cdef unsigned long long h = fg_segment_hash(p, n)
    cdef size_t i = h & node.mask
    cdef _Slot* slot
    while True:
        slot = &node.slots[i]
        if slot.child == NULL:
            return None
        if slot.hash == h and slot.length == n and memcmp(slot.key, p, n) == 0:
            return <_Node>slot.child
        i = (i + 1) & node.mask


@cython.final
cdef class _Table:
    def __cinit__(self):
        self.exact = {}

    def endpoint(self, tuple parsed, str host_desc):
        cdef _Node node
        cdef _Endpoint ep
        segments, names, positions, star, path_key = parsed
        if not names and not star:
            ep = self.exact.get(path_key)
            if ep is None:
                ep = _Endpoint()
                ep.host_desc = host_desc
                self.exact[path_key] = ep
            return ep
        if self.root is None:
            self.root = _Node(0)
        node = self.root
        for seg in segments:
            node = node.param_child() if seg is None else node.child(seg)
        if star:
            if node.prefix is None:
                node.prefix = _Endpoint()
                node.prefix.host_desc = host_desc
            return node.prefix
        if node.terminal is None:
            node.terminal = _Endpoint()
            node.terminal.host_desc = host_desc
        return node.terminal


# ---------------------------------------------------------------------------------------------
# Compile-time parsing of patterns, hosts and methods (runs at config load; clarity over speed)
# ---------------------------------------------------------------------------------------------

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# RFC 3986 pchar without "%" (escapes are checked separately) and without "*" (reserved here).
_PCHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()+,;=:@")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_LABEL = re.compile(r"[a-z0-9_-]+\Z")


def _canon_literal(str seg, str what):
    """A literal segment as normalize_path would leave it in a request, or ValueError."""
    cdef Py_ssize_t i = 0, n = len(seg)
    out = []
    while i < n:
        c = seg[i]
        if c == "%":
            hexpart = seg[i + 1:i + 3]
            if len(hexpart) != 2 or any(h not in "0123456789abcdefABCDEF" for h in hexpart):
                raise ValueError("%s: invalid percent-escape" % what)
            v = int(hexpart, 16)
            if v == 0:
                raise ValueError("%s: encoded NUL" % what)
            ch = chr(v)
            out.append(ch if _is_unreserved(v) else "%" + hexpart.upper())
            i += 3
            continue
        if c == "*":
            raise ValueError("%s: '*' is only allowed as the whole last segment ('/*')" % what)
        if c == "{" or c == "}":
            raise ValueError("%s: '{param}' must be a whole segment with balanced braces" % what)
        if c not in _PCHAR:
            raise ValueError("%s: character %r is not allowed in a path pattern" % (what, c))
        out.append(c)
        i += 1
    text = "".join(out)
    if text == "." or text == "..":
        raise ValueError("%s: dot segments never reach routing (paths are normalized)" % what)
    return text.encode("ascii")


def _parse_pattern(pattern, str route):
    """-> (segments: list[bytes | None], names, positions, star, path_key bytes | None)."""
    if not isinstance(pattern, str):
        raise ValueError("route %r: path %r must be a string" % (route, pattern))
    what = "route %r: invalid path %r" % (route, pattern)
    if not pattern.startswith("/"):
        raise ValueError("%s: must start with '/'" % what)
    parts = pattern[1:].split("/")
    star = parts[-1] == "*"
    if star:
        parts.pop()
        if parts and parts[-1] == "":
            raise ValueError("%s: empty segment before '/*'" % what)
    elif len(parts) > 1 and parts[-1] == "":
        pass            # trailing slash: significant, kept as a final empty literal
    segments = []
    names = []
    positions = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part.startswith("{") or part.endswith("}"):
            if not (part.startswith("{") and part.endswith("}")) or len(part) < 2 or \
                    part.count("{") != 1 or part.count("}") != 1:
                raise ValueError("%s: unbalanced or partial '{param}' segment %r" % (what, part))
            name = part[1:-1]
            if not name:
                raise ValueError("%s: empty parameter name '{}'" % what)
            if not _PARAM_NAME.match(name):
                raise ValueError("%s: parameter name %r must be letters, digits, '_'"
                                 % (what, name))
            if name in names:
                raise ValueError("%s: duplicate parameter name %r" % (what, name))
            names.append(name)
            positions.append(index)
            segments.append(None)
            continue
        if part == "" and not (last and not star):
            if parts == [""] and not star:
                pass    # the root pattern "/"
            else:
                raise ValueError("%s: empty segment ('//')" % what)
        segments.append(_canon_literal(part, what))
    if len(segments) > _MAX_DEPTH:
        raise ValueError("%s: more than %d segments" % (what, _MAX_DEPTH))
    path_key = None
    if not names and not star:
        path_key = b"/" + b"/".join(segments)
    return (segments, tuple(names), tuple(positions), star, path_key)


def _parse_host(host, str route):
    """-> ("exact" | "wild", key bytes, description)."""
    if not isinstance(host, str) or not host:
        raise ValueError("route %r: host %r must be a non-empty string" % (route, host))
    what = "route %r: invalid host %r" % (route, host)
    h = host.lower()
    if h.startswith("[") or h.count(":") >= 2:
        inner = h[1:-1] if h.startswith("[") and h.endswith("]") else h
        if h.startswith("[") and not h.endswith("]"):
            raise ValueError("%s: unbalanced '['" % what)
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError("%s: not an IPv6 address" % what) from None
        key = "[" + addr.compressed + "]"
        return "exact", key.encode("ascii"), "host %r" % key
    if ":" in h:
        raise ValueError("%s: hosts match without the port; drop ':port'" % what)
    if h.endswith("."):
        h = h[:-1]
    wild = h.startswith("*.")
    name = h[2:] if wild else h
    if not name or len(name) > 253:
        raise ValueError("%s: empty or too long" % what)
    for label in name.split("."):
        if not _LABEL.match(label):
            if "*" in label:
                raise ValueError("%s: '*' is only allowed as a leading '*.' label" % what)
            raise ValueError("%s: bad label %r" % (what, label))
    if wild:
        return "wild", name.encode("ascii"), "host '*.%s'" % name
    return "exact", name.encode("ascii"), "host %r" % name


def _parse_methods(methods, str route):
    if methods is None or len(methods) == 0:
        return None
    out = []
    for m in methods:
        if not isinstance(m, str) or not _METHOD.match(m):
            raise ValueError("route %r: invalid method %r" % (route, m))
        if m != m.upper():
            raise ValueError("route %r: method %r must be upper-case (methods are case-sensitive)"
                             % (route, m))
        b = m.encode("ascii")
        if b in out:
            raise ValueError("route %r: method %r listed twice" % (route, m))
        out.append(b)
    return out


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------

cdef struct _PrefixBest:
    PyObject* entry         # borrowed: the table keeps every entry alive
    int depth


cdef void _split(const char* buf, Py_ssize_t n, _Segs* s) noexcept nogil:
    cdef Py_ssize_t i = 1, start = 1
    cdef int k = 0
    while True:
        if i == n or buf[i] == c'/':
            if k == _SEG_SLOTS:
                k += 1          # deeper than any pattern: count no further
                break
            s.start[k] = start
            s.end[k] = i
            k += 1
            if i == n:
                break
            start = i + 1
        i += 1
    s.nsegs = k
    s.stored = k if k <= _SEG_SLOTS else _SEG_SLOTS


cdef inline void _missed(_Miss* miss, _Endpoint ep) noexcept:
    if miss.count == 0:
        miss.first = <void*>ep
    miss.count += 1


cdef _Entry _dfs(_Node node, const char* buf, _Segs* s, bytes method, _PrefixBest* best,
                 _Miss* miss):
    """First full match accepting the method, literal before param, deepest first.

    Along the way remembers the best accepting "/*" prefix (deepest; first seen on ties, which
    is the literal-first order) for when no full match accepts.
    """
    cdef _Entry e
    cdef int depth = node.depth
    cdef Py_ssize_t a, ln
    cdef PyObject* p
    cdef _Node child
    if node.prefix is not None:
        e = node.prefix.lookup(method)
        if e is None:
            _missed(miss, node.prefix)
        elif depth > best.depth:
            best.entry = <PyObject*>e
            best.depth = depth
    if depth == s.nsegs:
        if node.terminal is not None:
            e = node.terminal.lookup(method)
            if e is not None:
                return e
            _missed(miss, node.terminal)
        return None
    if depth >= s.stored:
        return None
    a = s.start[depth]
    ln = s.end[depth] - a
    if node.slots != NULL:
        child = _find_child(node, buf + a, ln)
        if child is not None:
            e = _dfs(child, buf, s, method, best, miss)
            if e is not None:
                return e
    if node.param is not None and ln > 0:
        return _dfs(node.param, buf, s, method, best, miss)
    return None


@cython.boundscheck(False)
@cython.wraparound(False)
cdef tuple _result(_Entry e, const char* buf, Py_ssize_t n, _Segs* s, int depth):
    cdef dict params
    cdef Py_ssize_t k, pos, a
    if not e.has_params:
        return (0, e.payload, None)
    params = {}
    for k in range(len(e.names)):
        pos = <Py_ssize_t>e.positions[k]
        params[e.names[k]] = PyUnicode_DecodeLatin1(buf + s.start[pos],
                                                    s.end[pos] - s.start[pos], NULL)
    if e.star:
        if depth < s.nsegs:
            a = s.start[depth]
            params["*"] = PyUnicode_DecodeLatin1(buf + a, n - a, NULL)
        else:
            params["*"] = ""
    return (0, e.payload, params)


cdef int _collect(_Node node, const char* buf, _Segs* s, set allow) except -1:
    """Every endpoint matching the path (slow path for the Allow header)."""
    cdef int depth = node.depth
    cdef Py_ssize_t a, ln
    cdef _Node child
    if node.prefix is not None:
        allow.update(node.prefix.methods())
    if depth == s.nsegs:
        if node.terminal is not None:
            allow.update(node.terminal.methods())
        return 0
    if depth >= s.stored:
        return 0
    a = s.start[depth]
    ln = s.end[depth] - a
    if node.children is not None:
        child = node.children.get(PyBytes_FromStringAndSize(buf + a, ln))
        if child is not None:
            _collect(child, buf, s, allow)
    if node.param is not None and ln > 0:
        _collect(node.param, buf, s, allow)
    return 0


@cython.final
cdef class Router:
    """Host + method + path -> route payload; see the module docstring for the rules."""

    def __init__(self, routes):
        cdef _Table table
        cdef _Endpoint ep
        cdef _Entry entry
        cdef int i
        self._exact_hosts = {}
        self._wild_hosts = {}
        self._any = None
        count = 0
        for index, item in enumerate(routes):
            try:
                payload, name, hosts, methods, paths = item
            except (TypeError, ValueError):
                raise ValueError("route #%d: expected (payload, name, hosts, methods, paths)"
                                 % index) from None
            if not isinstance(name, str):
                raise ValueError("route #%d: name must be a string" % index)
            if isinstance(hosts, str) or isinstance(methods, str) or isinstance(paths, str):
                raise ValueError("route %r: hosts, methods and paths must be lists" % name)
            if not paths:
                raise ValueError("route %r: no paths" % name)
            method_keys = _parse_methods(methods, name)
            parsed = [(p, _parse_pattern(p, name)) for p in paths]
            host_keys = [_parse_host(h, name) for h in hosts] if hosts else [None]
            for host_key in host_keys:
                if host_key is None:
                    if self._any is None:
                        self._any = _Table()
                    table = self._any
                    host_desc = "any host"
                else:
                    kind, key, host_desc = host_key
                    hosts_map = self._exact_hosts if kind == "exact" else self._wild_hosts
                    table = hosts_map.get(key)
                    if table is None:
                        table = hosts_map[key] = _Table()
                    if kind == "exact" and key.startswith(b"["):
                        self._has_v6 = True
                for pattern, pp in parsed:
                    entry = _Entry()
                    entry.payload = payload
                    entry.name = name
                    entry.pattern = pattern
                    entry.names = pp[1]
                    entry.positions = pp[2]
                    entry.star = pp[3]
                    entry.has_params = bool(pp[1]) or pp[3]
                    ep = table.endpoint(pp, host_desc)
                    ep.add(entry, method_keys)
            count += 1
        self.route_count = count
        for table in [self._any] + list(self._exact_hosts.values()) + list(self._wild_hosts.values()):
            if table is not None and (<_Table>table).root is not None:
                (<_Table>table).root.seal()
        self._has_hosts = bool(self._exact_hosts) or bool(self._wild_hosts)
        self._wild_max = 0
        for i in range(256):
            self._wild_lens[i] = 0
        for key in self._wild_hosts:
            if len(key) < 256:
                self._wild_lens[len(key)] = 1
            self._wild_max = max(self._wild_max, len(key))

    def __repr__(self):
        return "<Router %d routes>" % self.route_count

    cdef bytes _host_key(self, bytes host):
        """Lower-cased host without port or trailing dot; None when there is none."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(host), i, end
        cdef const char* b = PyBytes_AS_STRING(host)
        cdef char* o
        cdef bint upper = False
        cdef bytes out
        cdef char c
        if n == 0:
            return None
        if b[0] == c'[':
            end = 1
            while end < n and b[end] != c']':
                end += 1
            if end == n:
                return None
            out = host[:end + 1].lower()
            if self._has_v6:
                try:
                    out = ("[" + ipaddress.IPv6Address(out[1:-1].decode("latin-1")).compressed
                           + "]").encode("ascii")
                except ValueError:
                    pass
            return out
        i = 0
        while i < n:
            c = b[i]
            if c == c':':
                break
            if c >= c'A' and c <= c'Z':
                upper = True
            i += 1
        end = i
        if end > 0 and b[end - 1] == c'.':
            end -= 1
        if end == 0:
            return None
        if end == n and not upper:
            return host
        out = PyBytes_FromStringAndSize(NULL, end)
        o = PyBytes_AS_STRING(out)
        for i in range(end):
            c = b[i]
            o[i] = c + 32 if (c >= c'A' and c <= c'Z') else c
        return out

    cdef tuple _match_table(self, _Table table, bytes method, bytes path, _Segs* segs,
                            _Miss* miss):
        cdef PyObject* p
        cdef _Entry e
        cdef _PrefixBest best
        cdef const char* buf
        if table.exact:
            p = PyDict_GetItem(table.exact, path)
            if p != NULL:
                e = (<_Endpoint>p).lookup(method)
                if e is not None:
                    return (0, e.payload, None)     # MATCH, as a C constant
                _missed(miss, <_Endpoint>p)
        if table.root is None:
            return None
        buf = PyBytes_AS_STRING(path)
        if segs.nsegs < 0:
            _split(buf, PyBytes_GET_SIZE(path), segs)
        best.entry = NULL
        best.depth = -1
        e = _dfs(table.root, buf, segs, method, &best, miss)
        if e is not None:
            return _result(e, buf, PyBytes_GET_SIZE(path), segs, segs.nsegs)
        if best.entry != NULL:
            return _result(<_Entry>best.entry, buf, PyBytes_GET_SIZE(path), segs, best.depth)
        return None

    cpdef tuple match(self, bytes method, bytes host, bytes path):
        """-> (MATCH, payload, params | None) | (NOT_FOUND, None, None)
        | (METHOD_NOT_ALLOWED, allow bytes, None). ``path`` must be normalized already."""
        cdef _Segs segs
        cdef _Miss miss
        cdef bytes key
        cdef tuple r
        cdef PyObject* p
        cdef Py_ssize_t n, i, suffix
        cdef const char* kb
        if method is None or path is None:
            raise TypeError("method and path must be bytes")
        if PyBytes_GET_SIZE(path) == 0 or PyBytes_AS_STRING(path)[0] != c'/':
            return _NOT_FOUND_RESULT
        segs.nsegs = -1
        miss.count = 0
        miss.first = NULL
        if self._has_hosts and host is not None:
            key = self._host_key(host)
            if key is not None:
                p = PyDict_GetItem(self._exact_hosts, key)
                if p != NULL:
                    r = self._match_table(<_Table>p, method, path, &segs, &miss)
                    if r is not None:
                        return r
                if self._wild_max:
                    n = PyBytes_GET_SIZE(key)
                    kb = PyBytes_AS_STRING(key)
                    # Leftmost dot first = longest suffix first; a label must precede it.
                    for i in range(1, n):
                        if kb[i] != c'.':
                            continue
                        suffix = n - i - 1
                        if suffix == 0 or suffix > self._wild_max:
                            continue
                        if suffix < 256 and not self._wild_lens[suffix]:
                            continue
                        p = PyDict_GetItem(self._wild_hosts, key[i + 1:])
                        if p != NULL:
                            r = self._match_table(<_Table>p, method, path, &segs, &miss)
                            if r is not None:
                                return r
        if self._any is not None:
            r = self._match_table(self._any, method, path, &segs, &miss)
            if r is not None:
                return r
        if miss.count == 0:
            return _NOT_FOUND_RESULT
        if miss.count == 1:
            return (2, (<_Endpoint>miss.first).allow, None)     # METHOD_NOT_ALLOWED
        allow = self._allow(host, path)
        return (METHOD_NOT_ALLOWED, ", ".join(sorted(allow)).encode("ascii"), None)

    def _allow(self, bytes host, bytes path):
        """Union of the methods of every host+path candidate (only when none accepted)."""
        cdef _Segs segs
        cdef set allow = set()
        cdef _Endpoint ep
        tables = []
        if self._has_hosts and host is not None:
            key = self._host_key(host)
            if key is not None:
                if key in self._exact_hosts:
                    tables.append(self._exact_hosts[key])
                for i in range(1, len(key)):
                    if key[i] == 0x2e and key[i + 1:] in self._wild_hosts:
                        tables.append(self._wild_hosts[key[i + 1:]])
        if self._any is not None:
            tables.append(self._any)
        _split(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path), &segs)
        for table in tables:
            ep = (<_Table>table).exact.get(path)
            if ep is not None:
                allow.update(ep.methods())
            if (<_Table>table).root is not None:
                _collect((<_Table>table).root, PyBytes_AS_STRING(path), &segs, allow)
        return allow
