"""`fastgate demo`: the gateway, a built-in sample upstream and a sample config, in one process.

Nothing to install or write: the upstream is an echo service on a free loopback port that
answers with what it received (method, path, the headers the gateway added), so each printed
curl command shows a gateway feature at work; the AI routes go to a built-in echo model
(fastgate/ai/echo.py) that speaks OpenAI's format, so the OpenAI SDK works with no key.
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


def _hash(token: str) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def demo_tokens() -> dict:
    """Fresh secrets for one demo run: printed once, never written anywhere."""
    import secrets
    return {"admin": "demo-admin-" + secrets.token_urlsafe(12),
            "operator": "demo-ops-" + secrets.token_urlsafe(12),
            "key": "demo-key-" + secrets.token_urlsafe(12)}


def demo_config(port: int, upstream_port: int, tokens: dict | None = None,
                admin_port: int | None = None, model_port: int | None = None) -> dict:
    tokens = tokens or demo_tokens()
    admin_port = admin_port if admin_port is not None else port + 1
    model_port = model_port if model_port is not None else upstream_port
    return {
        "listeners": [{"bind": f"127.0.0.1:{port}"}],
        "admin": {"bind": f"127.0.0.1:{admin_port}", "token": tokens["admin"],
                  "users": [{"name": "dana", "token_hash": _hash(tokens["operator"]),
                             "role": "operator"}]},
        "teams": {"shop": {"members": ["dana"]}},
        "auth": {"keys": {"type": "api_key", "header": "X-API-Key"}},
        "consumers": [{"name": "demo-app", "groups": ["shop"],
                       "api_keys": [_hash(tokens["key"])]}],
        "subscriptions": [{"id": "sub-demo", "consumer": "demo-app", "route": "payments",
                           "state": "pending", "requested_by": "demo"}],
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
            {"name": "profile", "paths": ["/api/profile"], "upstream": "demo", "owner": "shop",
             "description": "The signed-in customer's profile (any API key of a consumer)",
             "auth": {"using": ["keys"]}},
            {"name": "payments", "paths": ["/api/payments", "/api/payments/*"],
             "upstream": "demo", "owner": "shop", "description": "Take and refund payments",
             "docs_url": "https://example.com/docs/payments",
             "auth": {"using": ["keys"]},
             "subscription": {"required": True, "approval": "manual"}},
            {"name": "limited", "paths": ["/limited"], "upstream": "demo",
             "description": "5 requests a minute per client address",
             "rate_limits": [{"limit": 5, "per": "minute", "by": "ip"}]},
            {"name": "llm", "paths": ["/v1/chat/completions", "/v1/models"],
             "description": "OpenAI-compatible chat over the built-in echo model (no key)",
             "ai": {"endpoint": "chat"},
             "rate_limits": [{"limit": 100000, "per": "minute", "unit": "tokens", "by": "ip"}],
             "budget": {"usd": 1, "per": "day", "by": "ip"}},
            {"name": "embeddings", "paths": ["/v1/embeddings"], "methods": ["POST"],
             "ai": {"endpoint": "embeddings"}},
            {"name": "sentiment", "paths": ["/apis/sentiment"], "methods": ["POST"],
             "description": "A prompt API: {\"text\": ...} in, the model's answer out",
             "ai": {"prompt": {"model": "echo", "system": "You label sentiment.",
                               "template": "Label the sentiment of: {{text}}"}}},
        ],
        "ai": {
            "providers": {"echo": {"type": "openai_compatible",
                                   "base_url": f"http://127.0.0.1:{model_port}/v1"}},
            "models": [{"name": "echo", "provider": "echo", "model": "echo-1",
                        "price": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}}],
        },
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
  curl -s -H 'X-API-Key: {key}' http://127.0.0.1:{port}/api/profile   # API key: the consumer is named upstream
  curl -i http://127.0.0.1:{port}/api/profile                 # no key: 401
  curl -i -H 'X-API-Key: {key}' http://127.0.0.1:{port}/api/payments   # 403: its subscription is pending
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' http://127.0.0.1:{port}/limited; done   # 429 after 5

AI gateway (a built-in echo model speaking OpenAI's format; no key needed):
  curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'content-type: application/json' \
       -d '{{"model": "echo", "messages": [{{"role": "user", "content": "hello there"}}]}}'
  curl -sN http://127.0.0.1:{port}/v1/chat/completions -H 'content-type: application/json' \
       -d '{{"model": "echo", "stream": true, "messages": [{{"role": "user", "content": "stream me"}}]}}'
  curl -s http://127.0.0.1:{port}/v1/models
  curl -s -X POST http://127.0.0.1:{port}/apis/sentiment -d '{{"text": "I love it"}}'   # a prompt API
  OpenAI SDK: OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="any")
  curl -s -H 'Authorization: Bearer {admin}' http://127.0.0.1:{admin_port}/usage   # tokens and cost

Admin API and developer portal on http://127.0.0.1:{admin_port}:
  portal: open http://127.0.0.1:{admin_port}/portal/ and sign in with the operator token
          {operator}  (team shop: approve sub-demo, and the new key opens /api/payments)
  curl -s -H 'Authorization: Bearer {admin}' http://127.0.0.1:{admin_port}/catalog
  curl -s -H 'Authorization: Bearer {admin}' 'http://127.0.0.1:{admin_port}/subscriptions?state=pending'
  curl -s -X POST -H 'Authorization: Bearer {operator}' http://127.0.0.1:{admin_port}/subscriptions/sub-demo/approve
  curl -s -H 'Authorization: Bearer {admin}' http://127.0.0.1:{admin_port}/audit

Access log lines (JSON) follow below. Ctrl-C to stop.
"""


def run_demo(port: int, admin_port: int | None = None) -> int:
    import uvloop

    from fastgate.ai.echo import start_echo_model
    from fastgate.config import parse_config
    from fastgate.server.app import Gateway

    async def main():
        loop = asyncio.get_running_loop()
        upstream = await loop.create_server(EchoUpstream, "127.0.0.1", 0)
        upstream_port = upstream.sockets[0].getsockname()[1]
        model = await start_echo_model()
        model_port = model.sockets[0].getsockname()[1]
        tokens = demo_tokens()
        aport = admin_port if admin_port is not None else port + 1
        config = parse_config(demo_config(port, upstream_port, tokens, aport, model_port),
                              source="<demo>")
        gw = Gateway(config, None)
        await gw.start()
        print(CURLS.format(port=port, admin_port=aport, **tokens), file=sys.stderr, flush=True)
        await gw.wait_stopped()
        await gw.close()
        upstream.close()
        model.close()
        return 0

    return uvloop.run(main())
