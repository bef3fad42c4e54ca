"""Steady keep-alive traffic that checks every answer:

    python -m tests.helpers.traffic PORT CONNECTIONS UPSTREAM_PORT PATH...

serves a minimal upstream on UPSTREAM_PORT (its body is the request path without the leading
slash), opens CONNECTIONS keep-alive connections to the gateway on PORT, each cycling through
the PATHs, until its stdin closes; then prints a JSON summary.

Each response must be a 200 whose ``x-v`` header equals its body: the body comes from the
route's target (a `respond`, or the upstream answering the route's `rewrite`) and the header
from a separate policy (transform), so an answer built from two configs shows two versions.
A connection the gateway closes or resets counts as failed, as does any other status.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time


class Checker(asyncio.Protocol):
    def __init__(self, gen):
        self.gen = gen
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.turn = 0
        transport.write(self.next_request())

    def next_request(self):
        reqs = self.gen.requests
        self.turn += 1
        return reqs[self.turn % len(reqs)]

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            fields = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            n = int(fields.get("content-length", "0"))
            if len(self.buf) < end + 4 + n:
                return
            body = self.buf[end + 4:end + 4 + n].decode("latin-1")
            self.buf = self.buf[end + 4 + n:]
            self.gen.answer(head[0], fields.get("x-v"), body)
            if self.gen.running:
                self.transport.write(self.next_request())
            else:
                self.transport.close()
                return

    def connection_lost(self, exc):
        if self.gen.running:
            self.gen.failed += 1
            self.gen.errors.append(f"connection lost: {exc}")
            asyncio.get_running_loop().create_task(self.gen.connect())


class Gen:
    def __init__(self, port, paths):
        self.port = port
        self.requests = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths]
        self.running = True
        self.ok = self.failed = self.mixed = 0
        self.versions: dict[str, int] = {}
        self.errors: list[str] = []

    def answer(self, status_line, version, body):
        if not status_line.startswith("HTTP/1.1 200"):
            self.failed += 1
            self.errors.append(f"{status_line} {body[:200]}")
        elif version != body:
            self.mixed += 1
            self.errors.append(f"header says {version!r}, body says {body!r}")
        else:
            self.ok += 1
            self.versions[body] = self.versions.get(body, 0) + 1

    async def connect(self):
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: Checker(self), "127.0.0.1", self.port)
        except OSError as exc:
            self.failed += 1
            self.errors.append(f"connect: {exc}")


class Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            line = self.buf[:self.buf.find(b"\r\n")]
            self.buf = self.buf[end + 4:]          # GETs only: no bodies
            body = line.split(b" ")[1][1:]
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body))


async def main(port, conns, upstream_port, paths):
    loop = asyncio.get_running_loop()
    await loop.create_server(Upstream, "127.0.0.1", upstream_port)
    gen = Gen(port, paths)
    stop = loop.create_future()

    def wait_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
    threading.Thread(target=wait_stdin, daemon=True).start()
    for _ in range(conns):
        await gen.connect()
    print("READY", flush=True)
    t0 = time.monotonic()
    await stop
    gen.running = False
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.2)
    total = gen.ok + gen.failed + gen.mixed
    print(json.dumps({"ok": gen.ok, "failed": gen.failed, "mixed": gen.mixed,
                      "versions": gen.versions, "seconds": elapsed,
                      "rate": total / elapsed if elapsed else 0,
                      "errors": gen.errors[:20]}), flush=True)


if __name__ == "__main__":
    import uvloop
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
