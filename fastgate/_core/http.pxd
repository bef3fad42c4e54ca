# cython: language_level=3
"""Declarations of the compiled HTTP/1.1 parsers (see http.pyx for the behaviour)."""
cimport cython


@cython.final
cdef class RequestHead:
    cdef readonly bytes method
    cdef readonly bytes target
    cdef readonly bytes path
    cdef readonly bytes query
    cdef readonly int version
    cdef readonly list headers
    cdef readonly bytes host
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef readonly bint expect_continue
    cdef readonly object upgrade
    cdef readonly tuple connection_tokens
    cdef readonly Py_ssize_t head_bytes


@cython.final
cdef class ResponseHead:
    cdef readonly int status
    cdef readonly bytes reason
    cdef readonly int version
    cdef readonly list headers
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef readonly tuple connection_tokens
    cdef readonly Py_ssize_t head_bytes


cdef class ParserHandler:
    """A compiled handler (the client and upstream connections, fastgate/_core/conn.pyx):
    the parser calls these through the vtable instead of looking up Python methods."""
    cdef int handle_head(self, object head) except -1
    cdef int handle_informational(self, object head) except -1
    cdef int handle_body(self, object data) except -1
    cdef int handle_end(self) except -1


cdef class _HttpParser:
    # input handling: the unconsumed tail between feeds lives in _buf[_bstart:_blen]
    cdef char* _buf
    cdef Py_ssize_t _bstart
    cdef Py_ssize_t _blen
    cdef Py_ssize_t _bcap
    # the input being parsed right now (fed bytes or _buf), for take_buffered() in callbacks
    cdef const unsigned char* _cur
    cdef Py_ssize_t _cur_n
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _scan          # bytes of the current partial line known to hold no LF

    cdef bint _is_request
    cdef int _state
    cdef bint _paused
    cdef bint _processing
    cdef object _error
    cdef object _on_body
    cdef ParserHandler _fast       # a compiled handler, called directly (else the _on_* methods)

    cdef Py_ssize_t _max_line
    cdef Py_ssize_t _max_header_bytes
    cdef Py_ssize_t _max_headers
    cdef long long _max_body
    cdef long long _body_limit
    cdef long long _body_total
    cdef long long _remaining

    # per-head state
    cdef Py_ssize_t _hbytes        # bytes counted against max_header_bytes
    cdef Py_ssize_t _head_bytes
    cdef Py_ssize_t _nfields
    cdef list _headers
    cdef int _version
    cdef long long _cl
    cdef bint _te_seen
    cdef bint _te_bad
    cdef bint _te_last_chunked
    cdef int _te_elems
    cdef int _te_chunked_count
    cdef int _host_count
    cdef bytes _host
    cdef list _conn
    cdef bint _conn_close
    cdef bint _conn_keep_alive
    cdef bint _conn_upgrade
    cdef bint _expect_continue
    cdef object _upgrade

    cdef int _reset_head(self) except -1
    cdef int _fail(self, int status, str message) except -1
    cdef int _append(self, const char* p, Py_ssize_t n) except -1
    cdef int _feed(self, const unsigned char* p, Py_ssize_t n, object whole) except -1
    cdef int _run_buffer(self) except -1
    cdef void _release_buffer(self) noexcept
    cdef Py_ssize_t _run(self, const unsigned char* p, Py_ssize_t n, object whole) except -1
    cdef Py_ssize_t _process(self, const unsigned char* p, Py_ssize_t n, object whole) except -1
    cdef int _partial(self, const unsigned char* s, Py_ssize_t m) except -1
    cdef int _line(self, const unsigned char* s, Py_ssize_t n) except -1
    cdef int _split_field(self, const unsigned char* s, Py_ssize_t n, Py_ssize_t* name_end,
                          Py_ssize_t* vstart, Py_ssize_t* vend) except -1
    cdef int _header_line(self, const unsigned char* s, Py_ssize_t n) except -1
    cdef int _content_length(self, const unsigned char* v, Py_ssize_t n) except -1
    cdef int _transfer_encoding(self, const unsigned char* v, Py_ssize_t n) except -1
    cdef int _connection(self, const unsigned char* v, Py_ssize_t n) except -1
    cdef int _expect(self, const unsigned char* v, Py_ssize_t n) except -1
    cdef int _chunk_size_line(self, const unsigned char* s, Py_ssize_t n) except -1
    cdef int _emit_body(self, const unsigned char* p, Py_ssize_t n, object whole) except -1
    cdef bytes _take(self)
    cdef Py_ssize_t _unconsumed(self)
    # overridden per direction
    cdef int _first_line(self, const unsigned char* s, Py_ssize_t n) except -1
    cdef int _head_done(self) except -1
    cdef int _message_done(self) except -1
    cpdef feed(self, data)


@cython.final
cdef class RequestParser(_HttpParser):
    cdef object _on_request
    cdef object _on_request_complete
    cdef RequestHead _head
    cdef bytes _target_host
    cpdef resume(self)


@cython.final
cdef class ResponseParser(_HttpParser):
    cdef object _on_informational
    cdef object _on_response
    cdef object _on_response_complete
    cdef ResponseHead _head
    cdef bint _head_request
    cpdef start(self, bint head_request)


# A header's value (``every``: all its values, as a list) in a parsed head's (name, value)
# list; ``lname`` is a lower-case name (bytes or str).
cdef object _find(list headers, object lname, object default, bint every)
