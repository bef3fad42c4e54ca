"""The built-in upstream: a raw asyncio/uvloop protocol that answers from precomputed bytes.

    python -m benchmarks.upstream --port P [--host 127.0.0.1] [--reuse-port]
                                  [--tls-cert PEM --tls-key PEM]

Paths (anything else gets the tiny answer):
  /tiny                    200, 2-byte body
  /bytes/N                 200, N-byte body (N <= 64 MiB), any request body is read and dropped
  /sse?n=N&gap_ms=G        text/event-stream, N events written G ms apart, chunked
  /health                  200
  POST /ai/C/G/v1/chat/completions   the fake OpenAI provider (benchmarks/ai.py): a fixed
                           chat.completion with usage or, when the body has "stream": true, an
                           SSE stream of C content chunks G ms apart (usage chunk when
                           "include_usage": true, then data: [DONE]), chunked; the body is
                           searched for those two strings only, never parsed.
                           POST /v1/chat/completions: the same with C=20, G=0
Keep-alive always (HTTP/1.1), pipelined requests are answered in order. Prints
``listening on HOST:PORT`` when ready, like the gateway. With ``--tls-cert``/``--tls-key`` it
answers over TLS (the load generator's own tests use that; the gateways' upstream is plain).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from urllib.parse import parse_qs

from benchmarks import ai
from benchmarks.framing import MAX_HEAD, ChunkedSkipper, FramingError, is_chunked, \
    parse_content_length

TINY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            # what SSE applications send so that nginx relays each event as it comes
            b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n")
MAX_BYTES = 64 << 20
MAX_AI_BODY = 1 << 20
AI_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
           b"X-Request-Id: req_fastgatebench\r\nOpenAI-Processing-Ms: 1\r\n")
AI_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                  b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
                  b"X-Request-Id: req_fastgatebench\r\nOpenAI-Processing-Ms: 1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
CHAT_RESPONSE = AI_HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(ai.CHAT_JSON), ai.CHAT_JSON)


def sse_event(i: int) -> bytes:
    """One event of a fixed ~100-byte size, so byte counts are predictable."""
    payload = b'{"id":%06d,"object":"chat.completion.chunk","delta":{"content":"token"}}' % i
    return b"id: %d\ndata: %s\n\n" % (i, payload)


def sse_body_bytes(n: int) -> int:
    return sum(len(sse_event(i)) for i in range(n))


_bytes_cache: dict[int, bytes] = {}


def bytes_response(n: int) -> bytes:
    r = _bytes_cache.get(n)
    if r is None:
        # One buffer: head and body together, so one write() per response.
        r = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: %d\r\n\r\n" % n) + b"x" * n
        if len(_bytes_cache) < 16:
            _bytes_cache[n] = r
    return r


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_stream_cache: dict[tuple, tuple] = {}


def ai_stream(chunks: int, include_usage: bool) -> tuple[bytes, list[bytes], bytes]:
    """(head + first frames, the frames sent one per gap, the last frames + chunked end)."""
    key = (chunks, include_usage)
    r = _stream_cache.get(key)
    if r is None:
        first, middle, end = ai.stream_events(chunks, include_usage)
        r = (AI_STREAM_HEAD + _frame(first), [_frame(m) for m in middle],
             _frame(end) + b"0\r\n\r\n")
        if len(_stream_cache) < 64:
            _stream_cache[key] = r
    return r


def _ai_shape(target: bytes) -> tuple[int, float]:
    """(content chunks, gap seconds) from /ai/C/G/..., the defaults for any other path."""
    if target.startswith(b"/ai/"):
        parts = target.split(b"/", 4)
        chunks = int(parts[2])
        gap_ms = float(parts[3])
        if not 1 <= chunks <= 10000 or not 0 <= gap_ms <= 10000:
            raise FramingError("stream shape out of range")
        return chunks, gap_ms / 1000.0
    return ai.DEFAULT_CHUNKS, 0.0


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("transport", "buf", "body_left", "chunked", "pending", "timer", "loop",
                 "body")

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.buf = b""
        self.body_left = 0          # request body bytes still to drop (Content-Length)
        self.chunked = None         # ChunkedSkipper while dropping a chunked request body
        self.pending = None         # response to send once the request body is consumed
        self.timer = None
        self.body = None            # request body parts, kept for the AI endpoint only

    def connection_made(self, transport):
        self.transport = transport
        # answers are single writes, but a stream's events are not: without TCP_NODELAY a
        # keep-alive request behind a small write waits ~40 ms for the peer's delayed ACK
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def data_received(self, data):
        try:
            self._feed(data)
        except (FramingError, ValueError):
            if self.transport is not None:
                self.transport.write(BAD)
                self.transport.close()

    def _feed(self, data):
        pos = 0
        n = len(data)
        if self.body_left:
            take = min(self.body_left, n)
            self.body_left -= take
            if self.body is not None:
                self.body.append(data[:take])
            pos = take
            if self.body_left:
                return
            self._respond()
        elif self.chunked is not None:
            end = self.chunked.feed(data, 0)
            if end < 0:
                return
            self.chunked = None
            pos = end
            self._respond()
        if pos >= n:
            return
        if self.buf:
            data = self.buf + bytes(data[pos:])
            self.buf = b""
            pos = 0
            n = len(data)
        while pos < n:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > MAX_HEAD:
                    raise FramingError("head too long")
                self.buf = bytes(data[pos:])
                return
            head = data[pos:end]
            pos = end + 4
            self.pending = self._route(head)
            keep = type(self.pending) is tuple and self.pending[0] == "ai"
            lower = head.lower()
            cl = parse_content_length(lower)
            if is_chunked(lower):
                sk = ChunkedSkipper(keep=keep)
                if keep:
                    self.body = sk.parts
                e = sk.feed(data, pos)
                if e < 0:
                    self.chunked = sk
                    return
                pos = e
            elif cl:
                if keep:
                    if cl > MAX_AI_BODY:
                        raise FramingError("AI request body too large")
                    self.body = [data[pos:pos + cl]]
                avail = n - pos
                if avail < cl:
                    self.body_left = cl - avail
                    return
                pos += cl
            elif keep:
                self.body = []
            self._respond()

    def _route(self, head: bytes):
        sp1 = head.find(b" ")
        sp2 = head.find(b" ", sp1 + 1)
        target = head[sp1 + 1:sp2]
        if target == b"/tiny" or target == b"/health":
            return TINY
        if target.startswith(b"/bytes/"):
            n = int(target[7:].split(b"?", 1)[0])
            if not 0 <= n <= MAX_BYTES:
                raise FramingError("size out of range")
            return bytes_response(n)
        if target.endswith(b"/chat/completions"):
            chunks, gap = _ai_shape(target)
            return ("ai", chunks, gap)
        if target.startswith(b"/sse"):
            q = parse_qs(target.partition(b"?")[2].decode("latin-1"))
            count = min(int(q.get("n", ["20"])[0]), 100000)
            gap = max(0.0, min(float(q.get("gap_ms", ["5"])[0]), 10000.0)) / 1000.0
            return ("sse", count, gap)
        return TINY

    def _respond(self):
        r = self.pending
        self.pending = None
        if type(r) is bytes:
            self.transport.write(r)
        elif r[0] == "ai":
            body = b"".join(self.body or ())
            self.body = None
            if b'"stream":true' in body or b'"stream": true' in body:
                _, chunks, gap = r
                usage = b'"include_usage":true' in body or b'"include_usage": true' in body
                first, middle, end = ai_stream(chunks, usage)
                if not gap:
                    self.transport.write(first + b"".join(middle) + end)
                else:
                    self.transport.write(first)
                    self.timer = self.loop.call_later(gap, self._ai_next, middle, 0, end, gap)
            else:
                self.transport.write(CHAT_RESPONSE)
        else:
            _, count, gap = r
            self.transport.write(SSE_HEAD)
            self._sse_next(0, count, gap)

    def _ai_next(self, middle, i, end, gap):
        """One content chunk per gap; the finish, usage and [DONE] go with the last one."""
        self.timer = None
        t = self.transport
        if t is None:
            return
        if i + 1 >= len(middle):
            t.write((middle[i] if middle else b"") + end)
            return
        t.write(middle[i])
        self.timer = self.loop.call_later(gap, self._ai_next, middle, i + 1, end, gap)

    def _sse_next(self, i, count, gap):
        self.timer = None
        t = self.transport
        if t is None:
            return
        while i < count:
            ev = sse_event(i)
            t.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            i += 1
            if gap and i < count:
                self.timer = self.loop.call_later(gap, self._sse_next, i, count, gap)
                return
        t.write(b"0\r\n\r\n")


def make_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(4096)
    s.setblocking(False)
    return s


async def serve(host, port, reuse_port, tls_cert=None, tls_key=None):
    loop = asyncio.get_running_loop()
    sock = make_socket(host, port, reuse_port)
    ssl_ctx = None
    if tls_cert:
        import ssl
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(tls_cert, tls_key)
    server = await loop.create_server(lambda: UpstreamProtocol(loop), sock=sock, backlog=4096,
                                      ssl=ssl_ctx)
    addr = sock.getsockname()
    print(f"listening on {addr[0]}:{addr[1]}", file=sys.stderr, flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        server.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--reuse-port", action="store_true")
    ap.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    a = ap.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    run_loop(serve(a.host, a.port, a.reuse_port, a.tls_cert, a.tls_key))
    return 0


def run_loop(coro):
    """Run coro on uvloop when it is installed (it is a runtime dependency of fastgate)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if hasattr(uvloop, "run"):
        return uvloop.run(coro)
    return asyncio.run(coro, loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    raise SystemExit(main())
