"""`fastgate demo`: the gateway, a built-in sample upstream and a sample config, in one process.

Nothing to install or write: the upstream is an echo service on a free loopback port that
answers with what it received (method, path, the headers the gateway added), so each printed
curl command shows a gateway feature at work.
"""
from __future__ import annotations

import asyncio
import sys

import orjson

from fastgate._core.http import HttpError, RequestParser


class EchoUpstream(asyncio.Protocol):
    """A tiny HTTP/1.1 keep-alive origin: answers JSON describing the request it got."""

    def connection_made(self, transport):
        self.transport = transport
        self.parser = RequestParser(self)
        self.head = None
        self.body = bytearray()

    def data_received(self, data):
        try:
            self.parser.feed(data)
        except HttpError as exc:
            self.transport.write(b"HTTP/1.1 %d Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % exc.status)
            self.transport.close()

    def on_request(self, head):
        self.head = head
        self.body.clear()

    def on_body(self, data):
        if len(self.body) < 65536:
            self.body += data

    def on_request_complete(self):
        head = self.head
        payload = orjson.dumps({
            "upstream": "fastgate demo echo",
            "method": head.method.decode(),
            "path": head.path.decode("latin-1"),
            "query": head.query.decode("latin-1"),
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
            "body_bytes": len(self.body),
        }, option=orjson.OPT_INDENT_2) + b"\n"
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(payload) + payload)
        if not head.keep_alive:
            self.transport.close()
            return
        self.parser.resume()


def demo_config(port: int, upstream_port: int) -> dict:
    return {
        "listeners": [{"bind": f"127.0.0.1:{port}"}],
        "upstreams": {
            "demo": {"targets": [{"url": f"http://127.0.0.1:{upstream_port}"}], "keepalive": 16},
        },
        "routes": [
            {"name": "hello", "paths": ["/hello"], "methods": ["GET"],
             "respond": {"status": 200, "body": "hello from FastGate\n"}},
            {"name": "echo", "paths": ["/echo", "/echo/*"], "upstream": "demo"},
            {"name": "orders", "paths": ["/api/orders/{id}"], "methods": ["GET"],
             "upstream": "demo", "rewrite": "/v2/orders/{id}"},
            {"name": "files", "paths": ["/files/*"], "upstream": "demo", "strip_prefix": "/files"},
        ],
        "logging": {"access_log": "stdout"},
    }


CURLS = """\
FastGate demo is running. Try, in another terminal:

  curl -i http://127.0.0.1:{port}/hello                       # static answer from the gateway
  curl -s http://127.0.0.1:{port}/echo/anything?x=1           # proxied: see X-Forwarded-*, X-Request-ID, traceparent
  curl -s http://127.0.0.1:{port}/api/orders/42               # rewritten upstream to /v2/orders/42
  curl -s http://127.0.0.1:{port}/files/a/b.txt               # prefix /files stripped upstream
  curl -s -X POST --data-binary 'hi' http://127.0.0.1:{port}/echo   # a body streams through
  curl -i http://127.0.0.1:{port}/nowhere                     # 404 JSON error
  curl -i -X DELETE http://127.0.0.1:{port}/hello              # 405 with Allow
  curl -i -H 'Content-Length: 1' -H 'Transfer-Encoding: chunked' -d x http://127.0.0.1:{port}/echo   # smuggling attempt: 400

Access log lines (JSON) follow below. Ctrl-C to stop.
"""


def run_demo(port: int) -> int:
    import uvloop

    from fastgate.config import parse_config
    from fastgate.server.app import Gateway

    async def main():
        loop = asyncio.get_running_loop()
        upstream = await loop.create_server(EchoUpstream, "127.0.0.1", 0)
        upstream_port = upstream.sockets[0].getsockname()[1]
        config = parse_config(demo_config(port, upstream_port), source="<demo>")
        gw = Gateway(config, None)
        await gw.start()
        print(CURLS.format(port=port), file=sys.stderr, flush=True)
        await gw.wait_stopped()
        await gw.close()
        upstream.close()
        return 0

    return uvloop.run(main())
