"""An upstream that misbehaves on request: ``python -m tests.helpers.fault_upstream PORT``.

Every answer's body is ``<path id> <x-request-id>`` so a client can check that the answer it
got is its own. The path's first segment picks the behaviour:

  /ok/ID          200 at once (keep-alive)
  /drip/ID        the head, then one body byte every 1.5 s (slower than the tests' read timeout)
  /stall/ID       nothing at all: the request is read, never answered
  /rst/ID         RST instead of an answer
  /garbage/ID     bytes that are not HTTP, then close
  /half/ID        the head and half the body, then close
  /bodyclose/ID   read part of the request body, then close (upstream dies mid-request-body)
"""
from __future__ import annotations

import asyncio
import socket
import struct
import sys


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.need = None          # body bytes still to read for the current request
        self.current = None

    def data_received(self, data):
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].decode("latin-1").split("\r\n")
                self.buf = self.buf[end + 4:]
                fields = {}
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.strip()
                path = head[0].split(" ")[1]
                parts = path.strip("/").split("/")
                self.current = (parts[0], parts[-1], fields.get("x-request-id", ""))
                self.need = int(fields.get("content-length", "0") or 0)
                if self.current[0] == "bodyclose" and self.need:
                    asyncio.get_running_loop().call_later(0.05, self._rst)
                    return
            if len(self.buf) < self.need:
                return
            self.buf = self.buf[self.need:]
            self.need = None
            if not self._answer(*self.current):
                return

    def _rst(self):
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.close()

    def _answer(self, mode, rid, hdr_id) -> bool:
        body = f"{rid} {hdr_id}".encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
        t = self.transport
        if mode == "ok":
            t.write(head + body)
            return True
        if mode == "rst":
            self._rst()
        elif mode == "garbage":
            t.write(b"SURPRISE\r\n\x00\x01\x02 not http\r\n\r\n")
            t.close()
        elif mode == "half":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 500)
            t.close()
        elif mode == "drip":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n")
            asyncio.get_running_loop().create_task(self._drip(t))
        elif mode == "stall":
            pass
        return False

    async def _drip(self, t):
        for _ in range(10):
            await asyncio.sleep(1.5)
            if t.is_closing():
                return
            t.write(b".")


async def main(port):
    loop = asyncio.get_running_loop()
    await loop.create_server(Conn, "127.0.0.1", port, backlog=1024)
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop
    uvloop.run(main(int(sys.argv[1])))
