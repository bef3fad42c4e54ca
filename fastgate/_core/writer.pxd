# cython: language_level=3
"""Declarations of the head serializer (writer.pyx), for the compiled connection."""

cpdef bytes join_head(bytes first, list headers, frozenset drop, tuple conn_tokens, list tail)
cpdef bytes header_lines(list pairs)
