"""A small asyncio HTTP/1.1 client (plain or TLS) for JWKS and token introspection.

Built on the gateway's own response parser (fastgate._core.http.ResponseParser), so an IdP's
answer is held to the same framing rules as an upstream's. One request at a time per
connection; idle keep-alive connections are reused (a few per client), and a request whose
reused connection turns out to have been closed by the server is retried once on a fresh one
(nothing of it was answered). Redirects are not followed: an IdP endpoint is configured
exactly. Bodies are capped (``max_body``) and everything runs under one deadline.
"""
from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from fastgate._core.http import HttpError, ResponseParser

USER_AGENT = b"fastgate"


class HttpClientError(Exception):
    """The request failed: connection, TLS, framing, size or deadline."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, lname: bytes):
        for k, v in self.headers:
            if k == lname:
                return v
        return None


def client_ssl_context() -> ssl.SSLContext:
    """System trust store (OpenSSL honours SSL_CERT_FILE / SSL_CERT_DIR), TLS 1.2+."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _Conn(asyncio.Protocol):
    __slots__ = ("client", "transport", "parser", "waiter", "head", "body", "size", "closed",
                 "got_bytes")

    def __init__(self, client: "HttpClient"):
        self.client = client
        self.transport = None
        self.parser = ResponseParser(self, max_header_bytes=65536, max_headers=100)
        self.waiter = None
        self.head = None
        self.body = []
        self.size = 0
        self.closed = False
        self.got_bytes = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: never reuse this connection
            return
        self.got_bytes = True
        try:
            self.parser.feed(data)
        except HttpError as exc:
            self._fail(HttpClientError(f"invalid response: {exc}"))

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.closed = True
        self.client._forget(self)
        w = self.waiter
        if w is None or w.done():
            return
        if self.parser.expecting:
            try:
                self.parser.feed_eof()   # completes a close-delimited body
            except HttpError as err:
                self._fail(HttpClientError(str(err)))
                return
        if not w.done():
            w.set_exception(HttpClientError("connection closed before the response ended"))

    # response parser handler
    def on_informational(self, head):
        pass

    def on_response(self, head):
        self.head = head
        if head.content_length > self.client.max_body:
            self._fail(HttpClientError("response body too large"))

    def on_body(self, data):
        self.size += len(data)
        if self.size > self.client.max_body:
            self._fail(HttpClientError("response body too large"))
            return
        self.body.append(data)

    def on_response_complete(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(Response(self.head.status, list(self.head.headers), b"".join(self.body)))

    def _fail(self, exc):
        w = self.waiter
        self.close()
        if w is not None and not w.done():
            w.set_exception(exc)

    def close(self):
        if not self.closed:
            self.closed = True
            self.client._forget(self)
            if self.transport is not None:
                self.transport.abort()


class HttpClient:
    """Requests to one origin (``url``'s scheme, host and port)."""

    def __init__(self, url: str, *, max_idle: int = 4, max_body: int = 1 << 20,
                 ssl_context: ssl.SSLContext | None = None):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        default_port = 443 if u.scheme == "https" else 80
        h = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (h if self.port == default_port else f"{h}:{self.port}").encode("idna")
        target = u.path or "/"
        if u.query:
            target += "?" + u.query
        self.target = target.encode("latin-1")
        self.ssl = None
        if u.scheme == "https":
            self.ssl = ssl_context if ssl_context is not None else client_ssl_context()
        self.max_idle = max_idle
        self.max_body = max_body
        self.idle: list[_Conn] = []
        self.connections = 0            # opened so far (tests, diagnostics)

    def _forget(self, conn: _Conn):
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(self)
        try:
            await loop.create_connection(
                lambda: conn, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise HttpClientError(f"connect to {self.host}:{self.port} failed: {exc}") from None
        self.connections += 1
        return conn

    async def open_idle(self) -> None:
        """Open one keep-alive connection ahead of the first request (warm-up)."""
        if len(self.idle) < self.max_idle:
            self.idle.append(await self._connect())

    async def request(self, method: bytes, *, headers=(), body: bytes = b"",
                      timeout: float = 5.0, target: bytes | None = None) -> Response:
        """One request; raises HttpClientError (connection, framing, size, deadline)."""
        head = [method, b" ", target or self.target, b" HTTP/1.1\r\nhost: ", self.host_header,
                b"\r\nuser-agent: ", USER_AGENT, b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if body or method in (b"POST", b"PUT", b"PATCH"):
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        data = b"".join(head) + body
        try:
            async with asyncio.timeout(timeout):
                while self.idle:
                    conn = self.idle.pop()
                    if conn.closed:
                        continue
                    try:
                        return await self._exchange(conn, data, method)
                    except HttpClientError:
                        if conn.got_bytes:
                            raise
                        # A kept-alive connection the server had closed: the request was
                        # not answered at all, so it is safe to send again on a new one.
                conn = await self._connect()
                return await self._exchange(conn, data, method)
        except TimeoutError:
            raise HttpClientError(f"no complete response within {timeout:g}s") from None

    async def _exchange(self, conn: _Conn, data: bytes, method: bytes) -> Response:
        loop = asyncio.get_running_loop()
        conn.waiter = loop.create_future()
        conn.head = None
        conn.body = []
        conn.size = 0
        conn.got_bytes = False
        conn.parser.start(method == b"HEAD")
        conn.transport.write(data)
        try:
            resp = await conn.waiter
        except BaseException:
            conn.close()
            raise
        conn.waiter = None
        if (conn.head.keep_alive and not conn.closed and conn.parser.buffered == 0
                and len(self.idle) < self.max_idle):
            self.idle.append(conn)
        else:
            conn.close()
        return resp

    def close(self):
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()
