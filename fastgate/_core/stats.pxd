# cython: language_level=3
"""Declarations of the compiled per-route request statistics (stats.pyx)."""

cdef enum:
    _NB = 18                # histogram slots: 17 bounds and +Inf
    _NSLOTS = 32            # (method, code) counters held in C per route


cdef struct _CodeSlot:
    int key                 # method index << 10 | status code; 0 = empty
    long long count


cdef class RouteStats:
    cdef _CodeSlot _slots[_NSLOTS]
    cdef dict _more         # (method, code) pairs past the C slots -> count
    cdef long long _hist[_NB]
    cdef public double dur_sum
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public dict upstreams

    cdef void _count(self, int key) noexcept


cdef class Hist:
    cdef long long _counts[_NB]
    cdef public double total


cpdef request_done(dict routes, route, method, int code, double duration_s,
                   long long bytes_in, long long bytes_out, upstream, upstream_duration_s)


cpdef count_usage(dict usage, consumer, route, double now)
