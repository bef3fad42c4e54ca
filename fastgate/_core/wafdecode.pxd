# The WAF's fast view, for the compiled WAF phases (fastgate._core.wafcore).

cdef enum:
    USED_MAX = 64       # headers whose use in a view is tracked (remember_used)

cdef bytes view_of(bytes raw_target, list headers, object body, frozenset skip,
                   Py_ssize_t body_limit, dict clean, unsigned char* used)
cdef void remember_used(list headers, dict clean, const unsigned char* used,
                        Py_ssize_t max_entries, Py_ssize_t max_len) except *
