# cython: language_level=3
"""Declarations of the compiled connection (see conn.pyx): the client connection, the
exchange (which is also the request's context), the upstream call, the upstream connection
and its pool.

Every attribute is ``public``: policies, plugins, targets written in Python, the admin and
the tests read and set them by name, exactly as before they were compiled. The references
between these objects are typed, so the request path reaches across them as C struct
accesses, and calls between them go through the vtables (``cpdef``)."""
from fastgate._core.http cimport (ParserHandler, RequestHead, ResponseHead, RequestParser,
                                  ResponseParser)
from fastgate._core.state cimport BodyPhaseFn, GatewayCore, PhaseFn, RouteCore, SnapshotCore


cdef class RequestContext:
    cdef public object head
    cdef public RouteCore route
    cdef public object route_name
    cdef public object params
    cdef public object query
    cdef public object client_ip
    cdef public object client_port
    cdef public bint tls
    cdef public object peer_cert
    cdef object _request_id         # str, made from request_id_b when first read
    cdef public object request_id_b
    cdef object _traceparent        # str, made from traceparent_b when first read
    cdef public object traceparent_b
    cdef public object consumer
    cdef public object consumer_groups
    cdef public object claims
    cdef public object upstream_headers
    cdef public object response_headers
    cdef public object req_drop
    cdef public object resp_drop
    cdef public object request_body
    cdef public object status
    cdef public object error_code
    cdef public object bytes_in
    cdef public object bytes_out
    cdef public object start
    cdef public object start_wall
    cdef public object upstream_name
    cdef public object upstream_target
    cdef public object upstream_duration
    cdef public SnapshotCore snapshot
    cdef public object plugin_state
    cdef public object log_fields
    cdef object __weakref__


cdef class ResponseSide(RequestContext):
    cdef public ClientConnection conn
    cdef public object call
    cdef public object path
    cdef public bint keep_alive
    cdef public bint body_done
    cdef public object waiting
    cdef public Py_ssize_t policy_index
    cdef public object pending
    cdef public Py_ssize_t pending_bytes
    cdef public bint buffering
    cdef public bint discarding
    cdef public bint resp_started
    cdef public bint resp_flushed
    cdef public bint resp_chunked
    cdef public Py_ssize_t resp_hdr_mark
    cdef public list wbuf
    cdef public object resp_filters
    cdef public bint finished
    cdef public object held

    cpdef send_head(self, head, drop, bint decided=*)
    cpdef send_body(self, data)
    cpdef send_end(self)
    cpdef flush_output(self)
    cpdef answer_error(self, status, code, message, headers=*)
    cpdef answer_local(self, status, headers, body)
    cpdef _write_local(self, status, headers, body)
    cpdef drop_target(self)
    cpdef _finish(self)
    cpdef log(self)


cdef class Exchange(ResponseSide):
    cpdef begin(self)
    cpdef on_body(self, data)
    cpdef on_body_end(self)
    cdef bint _run_chain(self, policies, bint with_body) except -1
    cdef _proceed(self)
    cdef int _init(self, ClientConnection conn, head) except -1
    cpdef _run_access(self)


cdef class _Pollable:
    cdef int on_events(self, unsigned int events) except -1


cdef class SocketPoller:
    cdef int epfd
    cdef object loop
    cdef set live               # registered RawSockets and RawListeners (their references)
    cdef bint closed

    cdef int register(self, _Pollable p, int fd, unsigned int events) except -1
    cdef int modify(self, _Pollable p, int fd, unsigned int events) except -1


cdef class RawListener(_Pollable):
    cdef int fd
    cdef object sock            # the listening socket object (owns the descriptor)
    cdef SocketPoller poller
    cdef GatewayCore gateway
    cdef bint closed
    cdef bint paused            # out of descriptors: accepting again shortly


cdef class RawSocket(_Pollable):
    cdef int fd
    cdef SocketPoller poller
    cdef ClientConnection conn
    cdef unsigned int events    # what epoll watches now
    cdef bint reading           # not paused by the connection
    cdef bint read_eof          # the client finished sending
    cdef bint closing           # close() called: closes once the buffer is empty
    cdef bint done              # descriptor closed, connection_lost scheduled
    cdef bint eof_pending       # write_eof() called
    cdef bint eof_sent
    cdef bint proto_paused      # pause_writing() told, resume_writing() not yet
    cdef list pending           # bytes not yet taken by the socket (None: none)
    cdef Py_ssize_t pending_off # of pending[0], already sent
    cdef Py_ssize_t pending_size
    cdef object peer            # (host, port) until connection_made took it

    cdef int _read(self) except -1
    cdef int _update(self) except -1
    cdef int _update_closing(self) except -1
    cdef int _fatal(self, int err) except -1
    cdef int _force_close(self, exc) except -1
    cdef int _write(self, data) except -1
    cdef int _writelines(self, parts) except -1
    cdef int _consume(self, Py_ssize_t n) except -1
    cdef int _flush(self) except -1
    cdef int _check_high(self) except -1
    cdef int _pause_reading(self) except -1
    cdef int _resume_reading(self) except -1


cdef class ClientConnection(ParserHandler):
    cdef public GatewayCore gateway
    cdef public bint tls
    cdef public object transport
    cdef public RequestParser parser
    cdef public int state
    cdef public double deadline
    cdef public int deadline_kind
    cdef public double up_deadline
    cdef public int read_paused
    cdef public bint write_paused
    cdef public bint head_seen
    cdef public bint in_parser
    cdef public bint resume_pending
    cdef public object flush_pending
    cdef public object client_ip
    cdef public bytes client_ip_b
    cdef public object client_port
    cdef public object peer_cert
    cdef public Exchange ex
    cdef public object tunnel
    cdef public bint admitted
    cdef RawSocket sock         # the socket when owned here (plain TCP), else None
    cdef object __weakref__

    cdef int _setup(self, gateway, bint tls) except -1
    cdef RequestParser _new_parser(self)
    cdef int handle_head(self, object head) except -1
    cdef int handle_body(self, object data) except -1
    cdef int handle_end(self) except -1
    cdef _received(self, object data)
    cpdef write(self, data)
    cpdef writelines(self, parts)
    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef finish(self, bint keep_alive)
    cpdef abort(self)
    cpdef linger_close(self)
    cdef int _close(self) except -1
    cpdef check_deadlines(self, double now)


cdef class UpstreamConnection(ParserHandler):
    cdef public TargetPool pool
    cdef public object transport
    cdef public object parser
    cdef public object owner
    cdef public bint closed
    cdef public bint reading_paused
    cdef public bint peer_paused

    cdef int handle_head(self, object head) except -1
    cdef int handle_body(self, object data) except -1
    cdef int handle_end(self) except -1
    cdef int handle_informational(self, object head) except -1
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef close(self)


cdef class TargetPool:
    cdef public object scheme
    cdef public object host
    cdef public object port
    cdef public object ssl
    cdef public object server_hostname
    cdef public Py_ssize_t keepalive
    cdef public list idle
    cdef public Py_ssize_t active
    cdef public object loop
    cdef public object label
    cdef public Py_ssize_t failures
    cdef public double down_until
    cdef public bint healthy
    cdef public bytes host_header
    cdef object __weakref__

    cpdef UpstreamConnection acquire_idle(self)
    cpdef release(self, UpstreamConnection conn, bint reusable)
    cpdef detach(self, UpstreamConnection conn)
    cpdef forget(self, UpstreamConnection conn)


cdef class UpstreamTarget:
    cdef public object upstream
    cdef public object upstream_name
    cdef public dict prefixes
    cdef public object strip_prefix
    cdef public object rewrite_parts
    cdef public bint preserve_host
    cdef public double read_timeout

    cpdef open(self, ex)


cdef class UpstreamCall:
    cdef public UpstreamTarget target
    cdef public Exchange ex
    cdef public object upstream
    cdef public TargetPool pool
    cdef public UpstreamConnection conn
    cdef public bytes path
    cdef public list head_tail
    cdef public int tries
    cdef public bint req_chunked
    cdef public bint body_sent_any
    cdef public double sent_at
    cdef public bint resp_keepalive
    cdef public list up_wbuf
    cdef public bint attached
    cdef public object waiting
    cdef public bint cancelled
    cdef public double read_timeout

    cdef int _init(self, UpstreamTarget target, Exchange ex) except -1
    cpdef dispatch(self, failed_pool)
    cdef int _attach(self, UpstreamConnection conn) except -1
    cpdef body(self, data)
    cpdef body_end(self)
    cpdef flush_up(self)
    cdef int _up_send(self, tuple pieces) except -1
    cpdef cancel(self)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef on_upstream_response(self, UpstreamConnection conn, ResponseHead head)
    cpdef on_upstream_body(self, data)
    cpdef read_done(self)
    cpdef on_upstream_complete(self, UpstreamConnection conn)
