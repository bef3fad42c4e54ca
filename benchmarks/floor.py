"""The floor: the least a Python proxy on uvloop can do per request, as a harness target.

One upstream connection per client connection; both directions are parsed by httptools (so
message boundaries are known, as any HTTP proxy must know them) and the bytes relayed as
they are: no routing, no header rewriting, no ids, no metrics. Whatever a real gateway costs
above this is its features and its own overhead; below it, only compiled code can go.

    python -m benchmarks.floor LISTEN_PORT UPSTREAM_PORT
"""
from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class _Up(asyncio.Protocol):
    def __init__(self, client):
        self.client = client
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.parser.feed_data(data)
        self.client.transport.write(data)

    def connection_lost(self, exc):
        self.client.transport.close()

    def pause_writing(self):
        self.client.transport.pause_reading()

    def resume_writing(self):
        self.client.transport.resume_reading()


class _Client(asyncio.Protocol):
    upstream_port = 0

    def __init__(self):
        self.transport = None
        self.up = None
        self.queue = []
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: _Up(self), "127.0.0.1",
                                                 self.upstream_port)
        except OSError:
            self.transport.close()
            return
        self.up = up
        if self.queue:
            up.transport.writelines(self.queue)
            self.queue = []

    def data_received(self, data):
        self.parser.feed_data(data)
        if self.up is not None:
            self.up.transport.write(data)
        else:
            self.queue.append(data)

    def connection_lost(self, exc):
        if self.up is not None:
            self.up.transport.close()

    def pause_writing(self):
        if self.up is not None:
            self.up.transport.pause_reading()

    def resume_writing(self):
        if self.up is not None:
            self.up.transport.resume_reading()


async def main(port: int, upstream_port: int):
    _Client.upstream_port = upstream_port
    server = await asyncio.get_running_loop().create_server(_Client, "127.0.0.1", port,
                                                            backlog=4096, reuse_address=True)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
