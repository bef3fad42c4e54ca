# cython: language_level=3
"""Declarations of the compiled request ids and traceparent (ids.pyx)."""

cpdef str new_span_id()
cpdef str new_request_id()
cpdef str request_id_from(value)
cpdef str traceparent_from(value)
cdef bytes request_id_b_from(object value)
cdef bytes traceparent_b_from(object value)
