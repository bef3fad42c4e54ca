"""One HTTP request to an LLM provider, over a keep-alive pool of the upstream layer.

``ProviderPool`` is one provider's ``TargetPool`` (scheme, host, port, TLS context with
verification as configured), kept across reloads by the process state. ``ProviderCall``
owns one ``UpstreamConnection`` while it runs, as an ``UpstreamCall`` does, and reports to
its sink (the AI call, target.py):

    sink.provider_sent(call)             the request went out (the read timeout starts)
    sink.provider_head(call, head)       the response head (status, headers)
    sink.provider_body(call, data)       body bytes as they arrive (de-chunked)
    sink.provider_read_done(call)        end of one socket read: flush what it brought
    sink.provider_end(call)              the response is complete
    sink.provider_failed(call, kind, reason)   kind: "connect" | "timeout" | "closed" |
                                         "invalid"; nothing more comes from this call

A pooled connection the provider closed before any response byte (the keep-alive race) is
retried once on a fresh connection: nothing was read, so nothing reached the client.
Connections go back to the pool only when the response was complete and keep-alive; a
cancelled call closes its connection, which is how a client that went away cancels the
provider's generation.
"""
from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from urllib.parse import urlsplit

from fastgate.upstream.pool import TargetPool

log = logging.getLogger("fastgate.ai")


def _ssl_context(verify: bool) -> _ssl.SSLContext:
    ctx = _ssl.create_default_context()
    ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ProviderPool:
    """Keep-alive connections to one provider's base_url."""

    __slots__ = ("pool", "base_path", "host_line", "connect_timeout", "read_timeout")

    KEEPALIVE = 64

    def __init__(self, provider):
        u = urlsplit(provider.base_url)
        scheme = u.scheme
        host = u.hostname
        port = u.port or (443 if scheme == "https" else 80)
        ctx = _ssl_context(provider.tls_verify) if scheme == "https" else None
        self.pool = TargetPool(scheme, host, port, self.KEEPALIVE, ctx)
        self.base_path = u.path.rstrip("/").encode()
        default = 443 if scheme == "https" else 80
        hv = host if port == default else f"{host}:{port}"
        if ":" in host:
            hv = f"[{host}]" if port == default else f"[{host}]:{port}"
        self.host_line = b"host: " + hv.encode("idna") + b"\r\n"
        self.connect_timeout = provider.connect_timeout_s
        self.read_timeout = provider.read_timeout_s

    @property
    def label(self) -> str:
        return self.pool.label

    def close(self):
        self.pool.close_idle()


def request_bytes(pp: ProviderPool, preq) -> bytes:
    """The whole HTTP/1.1 request for a ``ProviderRequest``."""
    parts = [preq.method, b" ", preq.path, b" HTTP/1.1\r\n", pp.host_line]
    for name, value in preq.headers:
        parts += (name, b": ", value, b"\r\n")
    body = preq.body
    if body or preq.method == b"POST":
        parts.append(b"content-length: %d\r\n" % len(body))
    parts.append(b"user-agent: fastgate\r\naccept-encoding: identity\r\n\r\n")
    if body:
        parts.append(body)
    return b"".join(parts)


class ProviderCall:
    __slots__ = ("pp", "sink", "data", "conn", "task", "done", "reused", "got_bytes",
                 "keepalive", "retried")

    def __init__(self, pp: ProviderPool, sink, data: bytes):
        self.pp = pp
        self.sink = sink
        self.data = data
        self.conn = None
        self.task = None
        self.done = False
        self.reused = False
        self.got_bytes = False
        self.keepalive = False
        self.retried = False

    # ------------------------------------------------------------------ start
    def start(self):
        conn = self.pp.pool.acquire_idle()
        if conn is not None:
            self.reused = True
            self._send(conn)
            return
        self.task = asyncio.ensure_future(self._connect())

    async def _connect(self):
        pool = self.pp.pool
        try:
            conn = await pool.connect(self.pp.connect_timeout)
            if conn.closed or conn.transport.is_closing():
                pool.detach(conn)
                conn.close()
                raise ConnectionResetError("provider closed the new connection")
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self.task = None
            self._fail("connect", "connect timed out")
            return
        except OSError as exc:
            self.task = None
            self._fail("connect", f"connect failed: {exc.__class__.__name__}")
            return
        self.task = None
        if self.done:
            pool.release(conn, True)
            return
        self.reused = False
        self._send(conn)

    def _send(self, conn):
        self.conn = conn
        conn.owner = self
        conn.parser.start(False)
        conn.transport.write(self.data)
        self.sink.provider_sent(self)

    # ------------------------------------------------------------------ control
    def cancel(self):
        """The client went away or the exchange ended: stop the provider's work."""
        self.done = True
        if self.task is not None:
            self.task.cancel()
            self.task = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.pp.pool.detach(conn)
            conn.close()

    def pause_reading(self):
        if self.conn is not None:
            self.conn.pause_reading()

    def resume_reading(self):
        if self.conn is not None:
            self.conn.resume_reading()

    def timed_out(self):
        if not self.done:
            conn = self.conn
            if conn is not None:
                self.conn = None
                self.pp.pool.detach(conn)
                conn.close()
            self._fail("timeout", "provider timed out")

    def _fail(self, kind, reason):
        if self.done:
            return
        self.done = True
        self.sink.provider_failed(self, kind, reason)

    # ------------------------------------------------------------------ connection owner
    def on_upstream_response(self, conn, head):
        self.got_bytes = True
        self.keepalive = head.keep_alive
        if not self.done:
            self.sink.provider_head(self, head)

    def on_upstream_body(self, data):
        if not self.done:
            self.sink.provider_body(self, data)

    def read_done(self):
        if not self.done:
            self.sink.provider_read_done(self)

    def on_upstream_complete(self, conn):
        self.conn = None
        self.pp.pool.release(conn, self.keepalive and conn.parser.buffered == 0)
        if not self.done:
            self.done = True
            self.sink.provider_end(self)

    def upstream_error(self, conn, exc):
        self._lost(conn, "invalid", f"invalid provider response: {exc.message}")

    def upstream_closed(self, conn):
        self._lost(conn, "closed", "provider closed the connection")

    def _lost(self, conn, kind, reason):
        if self.conn is conn:
            self.conn = None
            self.pp.pool.detach(conn)
        conn.close()
        if self.done:
            return
        if kind == "closed" and self.reused and not self.got_bytes and not self.retried:
            # A keep-alive connection the provider had closed: nothing was read, so the
            # request goes once more on a fresh connection.
            self.retried = True
            self.task = asyncio.ensure_future(self._connect())
            return
        self._fail(kind, reason)

    def upstream_pause_writing(self):
        pass

    def upstream_resume_writing(self):
        pass
