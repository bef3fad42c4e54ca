"""A real HTTP/1.1 origin server on loopback for integration tests, built on h11 (an
independent implementation, so gateway framing bugs are not masked by shared code).

Runs its own asyncio loop in a thread. Every request it receives is recorded in `.requests`
so tests can assert what did (and did not) reach the upstream.

Paths:
  /echo...            JSON: method, target, headers, body_len, body_sha256
  /status/N           answers status N with a small JSON body
  /chunked/N          chunked response with N chunks
  /slow/MS            waits MS milliseconds before answering
  /close-mid          declares 100000 bytes, sends 1000, closes
  /extra-bytes        declares 5 bytes, sends 5 plus a second bogus response
  /garbage            answers bytes that are not HTTP
  /download/N         N bytes of body (streamed)
  /upload             reads the body, answers its length
  /sse                text/event-stream: 5 events, 20 ms apart, then close of the stream
  /sse-gated/N        text/event-stream: N events; event i+1 only once gates[i] is set
  /chunked-big/N/K    chunked response: N chunks of K bytes ("abc..." text)
  /close-delimited    HTTP/1.0-style response without length, ended by close
  /ws                 WebSocket echo (text/binary frames)
  /headers-big        a response head of ~40 KiB
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import threading

import h11
import orjson

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Recorded:
    __slots__ = ("method", "target", "headers", "body_len", "body")

    def __init__(self, method, target, headers):
        self.method = method
        self.target = target
        self.headers = headers
        self.body_len = 0
        self.body = b""

    def header(self, name: bytes):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class UpstreamServer:
    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = None
        self.requests: list[Recorded] = []
        self.connections = 0
        self.gates: list[threading.Event] = [threading.Event() for _ in range(16)]
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        self._started.wait(10)
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def boot():
            self._server = await asyncio.start_server(self._handle, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    def stop(self):
        async def shutdown():
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        try:
            fut.result(5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ per connection
    async def _handle(self, reader, writer):
        self.connections += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        try:
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, (h11.ConnectionClosed, type(None))):
                    break
                if not isinstance(event, h11.Request):
                    break
                rec = Recorded(event.method, event.target, list(event.headers))
                self.requests.append(rec)
                path = event.target.split(b"?")[0].decode()
                if path == "/ws":
                    await self._websocket(rec, reader, writer)
                    return
                sha = hashlib.sha256()
                keep = path.startswith("/echo")
                while True:
                    ev = await self._next(conn, reader)
                    if isinstance(ev, h11.Data):
                        rec.body_len += len(ev.data)
                        if keep:
                            sha.update(ev.data)
                            if len(rec.body) < 65536:
                                rec.body += ev.data
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    else:
                        return
                done = await self._respond(conn, writer, path, rec, sha)
                if done or conn.our_state is h11.MUST_CLOSE:
                    break
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    break
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _next(self, conn, reader):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(262144)
                conn.receive_data(data)
                continue
            return event

    async def _send(self, conn, writer, *events):
        for ev in events:
            data = conn.send(ev)
            if data:
                writer.write(data)
        await writer.drain()

    async def _respond(self, conn, writer, path, rec, sha) -> bool:
        """Returns True when the connection must end afterwards."""
        parts = path.strip("/").split("/")
        head = parts[0]
        if head == "status":
            code = int(parts[1])
            body = orjson.dumps({"status": code}) if code not in (204, 304) else b""
            hdrs = [("content-type", "application/json")]
            if code not in (204, 304):
                hdrs.append(("content-length", str(len(body))))
            await self._send(conn, writer, h11.Response(status_code=code, headers=hdrs))
            if body and rec.method != b"HEAD":
                await self._send(conn, writer, h11.Data(data=body))
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if head == "chunked":
            n = int(parts[1])
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
            for i in range(n):
                await self._send(conn, writer, h11.Data(data=b"chunk-%d\n" % i))
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if head == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            return await self._respond(conn, writer, "/echo", rec, sha)
        if head == "close-mid":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            return True
        if head == "extra-bytes":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                         b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSECRET")
            await writer.drain()
            await asyncio.sleep(0.2)
            return True
        if head == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return True
        if head == "download":
            n = int(parts[1])
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("content-length", str(n)), ("content-type", "application/octet-stream")]))
            block = b"d" * 262144
            left = n
            while left > 0:
                chunk = block if left >= len(block) else block[:left]
                writer.write(conn.send(h11.Data(data=chunk)))
                left -= len(chunk)
                await writer.drain()
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if head == "upload":
            body = orjson.dumps({"received": rec.body_len})
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("content-length", str(len(body)))]), h11.Data(data=body), h11.EndOfMessage())
            return False
        if head == "sse":
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("transfer-encoding", "chunked")]))
            for i in range(5):
                await self._send(conn, writer, h11.Data(data=b"data: event-%d\n\n" % i))
                await asyncio.sleep(0.02)
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if head == "sse-gated":
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]))
            n = int(parts[1])
            for i in range(n):
                await self._send(conn, writer, h11.Data(data=b"data: event-%d\n\n" % i))
                if i + 1 < n:
                    gate = self.gates[i]
                    for _ in range(2000):        # at most 10 s
                        if gate.is_set():
                            break
                        await asyncio.sleep(0.005)
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if head == "chunked-big":
            n, k = int(parts[1]), int(parts[2])
            block = (b"abcdefghijklmnopqrstuvwxyz" * (k // 26 + 1))[:k]
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
            for _ in range(n):
                writer.write(conn.send(h11.Data(data=block)))
                await writer.drain()
            await self._send(conn, writer, h11.EndOfMessage())
            return False
        if head == "close-delimited":
            writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil-close-body")
            await writer.drain()
            return True
        if head == "headers-big":
            hdrs = [("x-big-%d" % i, "v" * 400) for i in range(100)] + [("content-length", "2")]
            await self._send(conn, writer, h11.Response(status_code=200, headers=hdrs), h11.Data(data=b"ok"), h11.EndOfMessage())
            return False
        # default: echo
        body = orjson.dumps({
            "method": rec.method.decode(),
            "target": rec.target.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in rec.headers],
            "body_len": rec.body_len,
            "body_sha256": sha.hexdigest(),
        })
        await self._send(conn, writer, h11.Response(status_code=200, headers=[("content-type", "application/json"), ("content-length", str(len(body)))]))
        if rec.method != b"HEAD":
            await self._send(conn, writer, h11.Data(data=body))
        await self._send(conn, writer, h11.EndOfMessage())
        return False

    async def _websocket(self, rec, reader, writer):
        key = rec.header(b"sec-websocket-key")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                     b"sec-websocket-accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                opcode = b0 & 0x0F
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
                payload = bytearray(await reader.readexactly(n))
                for i in range(n):
                    payload[i] ^= mask[i % 4]
                if opcode == 8:
                    writer.write(b"\x88\x00")
                    await writer.drain()
                    return
                out = bytes([0x80 | opcode])
                if n < 126:
                    out += bytes([n])
                elif n < 65536:
                    out += bytes([126]) + n.to_bytes(2, "big")
                else:
                    out += bytes([127]) + n.to_bytes(8, "big")
                writer.write(out + bytes(payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
