# cython: language_level=3
"""Declarations of the compiled per-route request statistics (stats.pyx)."""

cdef class RouteStats:
    cdef public dict codes
    cdef public list hist
    cdef public double dur_sum
    cdef public object bytes_in
    cdef public object bytes_out
    cdef public dict upstreams


cdef class Hist:
    cdef public list counts
    cdef public double total


cpdef request_done(dict routes, route, method, code, double duration_s, bytes_in, bytes_out,
                   upstream, upstream_duration_s)
