"""Plain-TCP listeners whose sockets FastGate owns: bound here, accepted and served by the
compiled SocketPoller (fastgate/_core/conn_socket.pxi), one epoll set per gateway that the
event loop watches as one descriptor. TLS listeners stay on uvloop (its SSL layer).

``FASTGATE_SOCKETS=uvloop`` in the environment puts plain listeners back on uvloop's
transports (for comparison); without epoll (not Linux) they are there anyway."""
from __future__ import annotations

import os
import select
import socket

from fastgate._core.conn import SocketPoller


def owned_sockets() -> bool:
    return hasattr(select, "epoll") and os.environ.get("FASTGATE_SOCKETS", "") != "uvloop"


def bind_sockets(host: str, port: int, *, reuse_port: bool, backlog: int) -> list:
    """Listening sockets for ``host``:``port``, as ``loop.create_server`` makes them: one per
    address the host resolves to (IPv6 ones v6-only), SO_REUSEADDR, SO_REUSEPORT when
    asked."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets, seen = [], set()
    try:
        for family, type_, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{addr!r}: {exc.strerror.lower()}") from None
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class PlainServer:
    """What ``loop.create_server`` returns, for the parts the gateway uses: ``sockets`` and
    ``close()`` (stop accepting; open connections are not touched)."""

    def __init__(self, poller: SocketPoller, sockets: list, gateway):
        self.sockets = sockets
        self._listeners = [poller.listen(sock, gateway) for sock in sockets]

    def close(self):
        for lst in self._listeners:
            lst.close()
        self._listeners = []
        for sock in self.sockets:
            sock.close()
