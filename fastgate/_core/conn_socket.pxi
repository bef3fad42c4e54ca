# Included by conn.pyx.
#
# The plain-TCP client socket, owned here instead of by uvloop: one epoll set per gateway
# (SocketPoller) holds the listening sockets and every accepted client socket; the event
# loop watches that one descriptor, and one loop callback per iteration drains the ready
# events in C: accept4, recv into one buffer shared by all connections, send and sendmsg.
#
# Why: a uvloop transport costs ~1.2 KiB per connection (its transport object, the libuv
# handle, its bookkeeping) and a Python call per read and per write; a RawSocket is ~100
# bytes and the connection calls it through the vtable. The interface is asyncio's
# transport (write, writelines, pause_reading, resume_reading, close, abort, write_eof,
# get_extra_info, ...), with asyncio's semantics: close() flushes first, connection_lost
# is called soon after the socket is closed (never from inside a call into the transport),
# pause_writing/resume_writing at 64 KiB/16 KiB buffered. TLS listeners keep uvloop's
# transports (its SSL layer).
from libc.errno cimport errno, EAGAIN, EINTR, ECONNABORTED, EPROTO, EMFILE, \
    ENFILE, ENOBUFS, ENOMEM, ECONNRESET, EPERM
from libc.string cimport memset, strerror
from posix.unistd cimport close as _fd_close

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int shutdown(int fd, int how)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
    int getpeername(int fd, sockaddr *addr, socklen_t *len)
    int getsockname(int fd, sockaddr *addr, socklen_t *len)
    enum:
        AF_INET
        AF_INET6
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        MSG_NOSIGNAL
        SHUT_WR
        SOL_SOCKET
        SO_ERROR

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    enum:
        IPPROTO_TCP
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)

cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef enum:
    _RBUF_SIZE = 65536
    _HIGH_WATER = 65536       # asyncio's defaults: pause_writing above, resume_writing at
    _LOW_WATER = 16384        # or below
    _MAX_EVENTS = 1024
    _ACCEPT_BATCH = 64
    _IOV_MAX = 64

# What every recv() reads into: the parser gets a bytes object of what arrived.
cdef char _RBUF[65536]

# Resumes accepting this long after the process ran out of descriptors (as asyncio does).
ACCEPT_RETRY_S = 1.0


cdef object _addr_tuple(sockaddr_storage *addr):
    """(host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6: as asyncio's
    ``get_extra_info('peername')``."""
    cdef char text[64]
    cdef sockaddr_in *a4
    cdef sockaddr_in6 *a6
    if addr.ss_family == AF_INET:
        a4 = <sockaddr_in *>addr
        inet_ntop(AF_INET, &a4.sin_addr, text, 64)
        return ((<char *>text).decode("ascii"), ntohs(a4.sin_port))
    if addr.ss_family == AF_INET6:
        a6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &a6.sin6_addr, text, 64)
        return ((<char *>text).decode("ascii"), ntohs(a6.sin6_port),
                ntohl(a6.sin6_flowinfo), a6.sin6_scope_id)
    return None


cdef object _os_error(int err):
    return OSError(err, strerror(err).decode("utf-8", "replace"))


cdef class _Pollable:
    cdef int on_events(self, unsigned int events) except -1:
        return 0


cdef class SocketPoller:
    """The epoll set of a gateway's plain-TCP sockets, watched by the event loop as one
    descriptor."""

    def __init__(self, loop):
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise _os_error(errno)
        self.loop = loop
        self.live = set()
        self.closed = False
        loop.add_reader(self.epfd, self._ready)

    def _ready(self):
        cdef epoll_event evs[_MAX_EVENTS]
        cdef int n = epoll_wait(self.epfd, evs, _MAX_EVENTS, 0)
        cdef int i
        cdef _Pollable p
        for i in range(n):
            p = <_Pollable>evs[i].data.ptr
            try:
                p.on_events(evs[i].events)
            except Exception:
                log.exception("internal error on a client socket")

    cdef int register(self, _Pollable p, int fd, unsigned int events) except -1:
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        ev.events = events
        ev.data.ptr = <void *>p
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise _os_error(errno)
        self.live.add(p)
        return 0

    cdef int modify(self, _Pollable p, int fd, unsigned int events) except -1:
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        ev.events = events
        ev.data.ptr = <void *>p
        epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, &ev)
        return 0

    def listen(self, sock, gateway):
        """Accept client connections from ``sock`` (a bound, listening socket object)."""
        cdef RawListener lst = RawListener.__new__(RawListener)
        sock.setblocking(False)
        lst.sock = sock
        lst.fd = sock.fileno()
        lst.poller = self
        lst.gateway = gateway
        lst.closed = False
        lst.paused = False
        self.register(lst, lst.fd, EPOLLIN)
        return lst

    def close(self):
        """Stop: every socket still open is aborted (connection_lost follows soon)."""
        if self.closed:
            return
        self.closed = True
        for p in list(self.live):
            if type(p) is RawSocket:
                (<RawSocket>p)._force_close(None)
            else:
                (<RawListener>p).close()
        self.loop.remove_reader(self.epfd)
        _fd_close(self.epfd)
        self.epfd = -1

    @property
    def open_sockets(self):
        return sum(1 for p in self.live if type(p) is RawSocket)


cdef class RawListener(_Pollable):
    """A listening socket of a plain-TCP listener: accepts in batches, each connection a
    RawSocket carrying a ClientConnection."""

    cdef int on_events(self, unsigned int events) except -1:
        cdef sockaddr_storage addr
        cdef socklen_t alen
        cdef int cfd, err, i, one = 1
        cdef RawSocket t
        cdef ClientConnection conn
        if self.closed or self.paused:
            return 0
        for i in range(_ACCEPT_BATCH):
            alen = sizeof(addr)
            cfd = accept4(self.fd, <sockaddr *>&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if cfd < 0:
                err = errno
                if err == EAGAIN:
                    return 0
                if err == EINTR or err == ECONNABORTED or err == EPROTO or err == EPERM:
                    continue
                if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                    log.error("accept: %s; accepting again in %.1f s",
                              strerror(err).decode(), ACCEPT_RETRY_S)
                    self.paused = True
                    self.poller.modify(self, self.fd, 0)
                    self.poller.loop.call_later(ACCEPT_RETRY_S, self._resume)
                    return 0
                log.error("accept: %s", strerror(err).decode())
                return 0
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            t = RawSocket.__new__(RawSocket)
            t.fd = cfd
            t.poller = self.poller
            t.reading = True
            t.events = EPOLLIN
            t.peer = _addr_tuple(&addr)
            try:
                self.poller.register(t, cfd, EPOLLIN)
            except OSError as exc:
                _fd_close(cfd)
                log.error("accept: cannot watch a new connection (%s)", exc)
                continue
            conn = ClientConnection.__new__(ClientConnection)
            conn._setup(self.gateway, False)
            conn.sock = t
            t.conn = conn
            conn.connection_made(t)
            t.peer = None      # the connection took what it needs; getpeername() if asked again
        return 0

    def _resume(self):
        if not self.closed and self.paused:
            self.paused = False
            self.poller.modify(self, self.fd, EPOLLIN)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.poller.epfd >= 0:
            epoll_ctl(self.poller.epfd, EPOLL_CTL_DEL, self.fd, NULL)
        self.poller.live.discard(self)


cdef class RawSocket(_Pollable):
    """An accepted client socket with asyncio's transport interface."""

    cdef int on_events(self, unsigned int events) except -1:
        cdef int err = 0
        cdef socklen_t elen = sizeof(err)
        if self.done:
            return 0
        if events & (EPOLLERR | EPOLLHUP) and not (self.events & EPOLLIN):
            # Nothing registered would consume it (reading is paused): the socket is dead.
            getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &elen)
            self._fatal(err or ECONNRESET)
            return 0
        if events & EPOLLOUT:
            self._flush()
            if self.done:
                return 0
        if events & (EPOLLIN | EPOLLERR | EPOLLHUP) and self.events & EPOLLIN:
            self._read()
        return 0

    cdef int _read(self) except -1:
        cdef ssize_t n = recv(self.fd, _RBUF, _RBUF_SIZE, 0)
        cdef int err
        if n > 0:
            self.conn._received(PyBytes_FromStringAndSize(_RBUF, n))
        elif n == 0:
            self.read_eof = True
            self._update()
            if not self.conn.eof_received():
                self.close()
        else:
            err = errno
            if err != EAGAIN and err != EINTR:
                self._fatal(err)
        return 0

    cdef int _update(self) except -1:
        cdef unsigned int want = 0
        if self.done:
            return 0
        if self.reading and not self.read_eof:
            want = EPOLLIN
        if self.pending is not None:
            want |= EPOLLOUT
        if want != self.events:
            self.events = want
            self.poller.modify(self, self.fd, want)
        return 0

    cdef int _fatal(self, int err) except -1:
        self._force_close(_os_error(err))
        return 0

    cdef int _force_close(self, exc) except -1:
        """Close the descriptor now (epoll forgets it); connection_lost runs soon."""
        if self.done:
            return 0
        self.done = True
        self.closing = True
        self.pending = None
        self.pending_size = 0
        _fd_close(self.fd)
        self.fd = -1
        self.poller.loop.call_soon(self._lost, exc)
        return 0

    def _lost(self, exc):
        conn, self.conn = self.conn, None
        self.poller.live.discard(self)
        if conn is not None:
            conn.connection_lost(exc)

    # ------------------------------------------------------------------ writing
    cdef int _write(self, data) except -1:
        cdef Py_ssize_t size, n
        cdef int err
        if self.done or self.closing or self.eof_pending:
            return 0
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        size = PyBytes_GET_SIZE(data)
        if size == 0:
            return 0
        if self.pending is not None:
            self.pending.append(data)
            self.pending_size += size
            return self._check_high()
        n = send(self.fd, PyBytes_AS_STRING(data), size, MSG_NOSIGNAL)
        if n == size:
            return 0
        if n < 0:
            err = errno
            if err != EAGAIN and err != EINTR:
                return self._fatal(err)
            n = 0
        self.pending = [data]
        self.pending_off = n
        self.pending_size = size - n
        self._update()
        return self._check_high()

    cdef int _writelines(self, parts) except -1:
        cdef iovec iov[_IOV_MAX]
        cdef msghdr msg
        cdef Py_ssize_t total = 0, n, k = 0, size
        cdef int err
        if self.done or self.closing or self.eof_pending:
            return 0
        items = [p if PyBytes_CheckExact(p) else bytes(p) for p in parts]
        if self.pending is not None:
            for p in items:
                self.pending.append(p)
                self.pending_size += PyBytes_GET_SIZE(p)
            return self._check_high()
        for p in items:
            if k == _IOV_MAX:
                break
            size = PyBytes_GET_SIZE(p)
            iov[k].iov_base = PyBytes_AS_STRING(p)
            iov[k].iov_len = size
            total += size
            k += 1
        if total == 0 and k == len(items):
            return 0
        memset(&msg, 0, sizeof(msg))
        msg.msg_iov = iov
        msg.msg_iovlen = k
        n = sendmsg(self.fd, &msg, MSG_NOSIGNAL)
        if n < 0:
            err = errno
            if err != EAGAIN and err != EINTR:
                return self._fatal(err)
            n = 0
        if n == total and k == len(items):
            return 0
        # Keep what did not go: whole pieces after the first partly-sent one.
        self.pending = items
        self.pending_off = 0
        self.pending_size = 0
        for p in items:
            self.pending_size += PyBytes_GET_SIZE(p)
        self._consume(n)
        self._update()
        return self._check_high()

    cdef int _consume(self, Py_ssize_t n) except -1:
        """``n`` bytes of the pending ones went out."""
        cdef list pending = self.pending
        cdef Py_ssize_t i = 0, left, count = len(pending)
        self.pending_size -= n
        n += self.pending_off
        while i < count:
            left = PyBytes_GET_SIZE(pending[i])
            if n < left:
                break
            n -= left
            i += 1
        if i:
            del pending[:i]
        self.pending_off = n
        if not pending:
            self.pending = None
            self.pending_off = 0
            self.pending_size = 0
        return 0

    cdef int _flush(self) except -1:
        cdef iovec iov[_IOV_MAX]
        cdef msghdr msg
        cdef Py_ssize_t total, n, size
        cdef int err, k
        cdef list pending
        while self.pending is not None:
            pending = self.pending
            total = 0
            k = 0
            for p in pending:
                if k == _IOV_MAX:
                    break
                size = PyBytes_GET_SIZE(p)
                iov[k].iov_base = PyBytes_AS_STRING(p)
                iov[k].iov_len = size
                if k == 0:
                    iov[k].iov_base = PyBytes_AS_STRING(p) + self.pending_off
                    iov[k].iov_len = size - self.pending_off
                total += iov[k].iov_len
                k += 1
            memset(&msg, 0, sizeof(msg))
            msg.msg_iov = iov
            msg.msg_iovlen = k
            n = sendmsg(self.fd, &msg, MSG_NOSIGNAL)
            if n < 0:
                err = errno
                if err == EAGAIN or err == EINTR:
                    break
                return self._fatal(err)
            self._consume(n)
            if n < total:
                break
        if self.pending is None:
            if self.eof_pending and not self.eof_sent:
                self.eof_sent = True
                shutdown(self.fd, SHUT_WR)
            if self.closing:
                return self._force_close(None)
        self._update()
        if self.proto_paused and self.pending_size <= _LOW_WATER:
            self.proto_paused = False
            self.conn.resume_writing()
        return 0

    cdef int _check_high(self) except -1:
        if not self.proto_paused and self.pending_size > _HIGH_WATER:
            self.proto_paused = True
            self.conn.pause_writing()
        return 0

    # ------------------------------------------------------------------ asyncio's interface
    def write(self, data):
        self._write(data)

    def writelines(self, parts):
        self._writelines(parts)

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self.done or self.closing or self.eof_pending:
            return
        self.eof_pending = True
        if self.pending is None:
            self.eof_sent = True
            shutdown(self.fd, SHUT_WR)

    cdef int _pause_reading(self) except -1:
        if self.reading and not self.closing:
            self.reading = False
            self._update()
        return 0

    cdef int _resume_reading(self) except -1:
        if not self.reading and not self.closing:
            self.reading = True
            self._update()
        return 0

    def pause_reading(self):
        self._pause_reading()

    def resume_reading(self):
        self._resume_reading()

    def is_reading(self):
        return self.reading and not self.closing

    def is_closing(self):
        return self.closing

    def close(self):
        """Stop reading; close once what is buffered went out."""
        if self.closing:
            return
        self.closing = True
        if self.pending is None:
            self._force_close(None)
        else:
            self._update_closing()

    cdef int _update_closing(self) except -1:
        self.reading = False
        return self._update()

    def abort(self):
        self._force_close(None)

    def get_write_buffer_size(self):
        return self.pending_size

    def get_write_buffer_limits(self):
        return (_LOW_WATER, _HIGH_WATER)

    def get_protocol(self):
        return self.conn

    def get_extra_info(self, name, default=None):
        cdef sockaddr_storage addr
        cdef socklen_t alen = sizeof(addr)
        if name == "peername":
            if self.peer is not None:
                return self.peer
            if self.done or getpeername(self.fd, <sockaddr *>&addr, &alen) < 0:
                return default
            return _addr_tuple(&addr)
        if name == "sockname":
            if self.done or getsockname(self.fd, <sockaddr *>&addr, &alen) < 0:
                return default
            return _addr_tuple(&addr)
        return default
