"""Keep-alive load where every answer is checked against its own request:

    python -m tests.helpers.idload PORT CONNECTIONS RATE PREFIX

Each request is ``GET PREFIX/<id>`` with ``X-Request-ID: <id>``; the upstream
(tests.helpers.fault_upstream) answers ``<path id> <header id>``, so a 200 whose body is not
the request's own id twice is an answer mixed up with another request's. RATE (requests/s in
all, 0 = as fast as answers come) paces the connections. Runs until stdin closes, then prints
a JSON summary: ok, statuses (non-200 answers by status), mixed, resets (a connection that
ended with a request unanswered), max_ms (slowest answer).
"""
from __future__ import annotations

import asyncio
import json
import secrets
import sys
import threading
import time


class Client(asyncio.Protocol):
    def __init__(self, load):
        self.load = load
        self.buf = b""
        self.rid = None
        self.sent_at = 0.0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.send()

    def send(self):
        if not self.load.running:
            self.transport.close()
            return
        self.rid = secrets.token_hex(8)
        self.sent_at = time.monotonic()
        self.transport.write(b"GET %s/%s HTTP/1.1\r\nHost: t\r\nX-Request-ID: %s\r\n\r\n" % (
            self.load.prefix, self.rid.encode(), self.rid.encode()))

    def data_received(self, data):
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        n = 0
        for line in head[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
        if len(self.buf) < end + 4 + n:
            return
        body = self.buf[end + 4:end + 4 + n].decode("latin-1")
        self.buf = self.buf[end + 4 + n:]
        self.load.answer(head[0], body, self.rid, time.monotonic() - self.sent_at)
        self.rid = None
        if "connection: close" in "\r\n".join(head).lower():
            self.transport.close()
            return
        delay = self.load.delay
        if delay:
            asyncio.get_running_loop().call_later(delay, self.send)
        else:
            self.send()

    def connection_lost(self, exc):
        if self.rid is not None and self.load.running:
            self.load.resets += 1
            self.load.notes.append(f"connection lost with {self.rid} unanswered: {exc}")
        if self.load.running:
            asyncio.get_running_loop().create_task(self.load.connect())


class Load:
    def __init__(self, port, conns, rate, prefix):
        self.port, self.prefix = port, prefix.encode()
        self.delay = conns / rate if rate else 0.0
        self.running = True
        self.ok = self.mixed = self.resets = 0
        self.statuses: dict[str, int] = {}
        self.max_s = 0.0
        self.notes: list[str] = []

    def answer(self, status_line, body, rid, took):
        self.max_s = max(self.max_s, took)
        code = status_line.split(" ")[1] if " " in status_line else status_line
        if code != "200":
            self.statuses[code] = self.statuses.get(code, 0) + 1
            if len(self.notes) < 20:
                self.notes.append(f"{status_line}: {body[:200]}")
        elif body != f"{rid} {rid}":
            self.mixed += 1
            self.notes.append(f"asked {rid}, got {body!r}")
        else:
            self.ok += 1

    async def connect(self):
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: Client(self), "127.0.0.1", self.port)
        except OSError as exc:
            self.statuses["connect"] = self.statuses.get("connect", 0) + 1
            self.notes.append(f"connect: {exc}")
            await asyncio.sleep(0.05)
            if self.running:
                asyncio.get_running_loop().create_task(self.connect())


async def main(port, conns, rate, prefix):
    load = Load(port, conns, rate, prefix)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def wait_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
    threading.Thread(target=wait_stdin, daemon=True).start()
    for _ in range(conns):
        await load.connect()
    print("READY", flush=True)
    t0 = time.monotonic()
    await stop
    load.running = False
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.3)
    print(json.dumps({"ok": load.ok, "statuses": load.statuses, "mixed": load.mixed,
                      "resets": load.resets, "max_ms": round(load.max_s * 1000, 1),
                      "rate": round((load.ok + sum(load.statuses.values())) / elapsed),
                      "seconds": round(elapsed, 1), "notes": load.notes[:20]}), flush=True)


if __name__ == "__main__":
    import uvloop
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]))
