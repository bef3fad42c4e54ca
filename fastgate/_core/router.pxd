# cython: language_level=3
"""Compiled route table: see router.pyx for the matching rules."""

# Deepest pattern (in segments, not counting a trailing "/*") the router accepts. Matching keeps
# per-segment offsets in fixed stack arrays of this size, so no allocation depends on the path.
cdef enum:
    _MAX_DEPTH = 64
    _SEG_SLOTS = 66


cdef struct _Segs:
    # Offsets of the request path's first segments; nsegs is the real count, capped at
    # _MAX_DEPTH + 2 (anything deeper cannot equal a pattern's depth).
    int nsegs
    int stored
    Py_ssize_t start[_SEG_SLOTS]
    Py_ssize_t end[_SEG_SLOTS]


cdef struct _Miss:
    # Endpoints that matched host+path but not the method: the common 405 has exactly one,
    # whose precomputed Allow value is the answer.
    int count
    void* first               # borrowed _Endpoint


cdef struct _Slot:
    unsigned long long hash
    const char* key           # borrowed from a key of _Node.children
    Py_ssize_t length
    void* child               # borrowed _Node; NULL marks an empty slot


cdef class _Entry:
    # One route's claim on one (host, pattern, method set).
    cdef readonly object payload
    cdef readonly str name
    cdef readonly str pattern
    cdef tuple names          # param names, in pattern order
    cdef tuple positions      # segment index of each param
    cdef bint star            # pattern ends in "/*": params["*"] gets the remainder
    cdef bint has_params      # names or star: a params dict is built on match


cdef class _Endpoint:
    # Every route sharing one host tier entry and one pattern shape, split by method.
    cdef dict by_method       # method bytes -> _Entry
    cdef _Entry any           # route with no methods listed
    cdef _Entry get           # by_method[b"GET"], answers HEAD when no route lists HEAD
    cdef bint has_methods
    cdef bytes allow          # Allow header value when this is the only candidate matched
    cdef str host_desc
    cdef _Entry lookup(self, bytes method)


cdef class _Node:
    cdef dict children        # literal segment bytes -> _Node (None when empty); owns both
    cdef _Slot* slots         # the same map as an open-addressing table over raw bytes, so a
    cdef size_t mask          # request segment is looked up without making a bytes object
    cdef _Node param          # child for a {param} segment
    cdef _Endpoint terminal   # a pattern ends exactly here
    cdef _Endpoint prefix     # a "/*" pattern ends here
    cdef int depth
    cdef int seal(self) except -1


cdef class _Table:
    # All routes of one host tier entry (one exact host, one wildcard suffix, or any host).
    cdef dict exact           # whole-path bytes -> _Endpoint, for patterns without params
    cdef _Node root           # trie of param and prefix patterns, None when there are none


cdef class Router:
    cdef dict _exact_hosts    # normalized host bytes -> _Table
    cdef dict _wild_hosts     # suffix bytes ("example.org" for *.example.org) -> _Table
    cdef _Table _any
    cdef bint _has_hosts
    cdef bint _has_v6
    cdef Py_ssize_t _wild_max     # longest wildcard suffix; longer suffixes are not looked up
    cdef unsigned char _wild_lens[256]
    cdef readonly int route_count

    cpdef tuple match(self, bytes method, bytes host, bytes path)
    cdef bytes _host_key(self, bytes host)
    cdef tuple _match_table(self, _Table table, bytes method, bytes path, _Segs* segs,
                            _Miss* miss)
