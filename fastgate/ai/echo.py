"""A built-in loopback model that speaks OpenAI's chat-completions format, for ``fastgate
demo``: it answers "echo: <the last user message>", plain or streamed (word by word, with
the usage chunk when asked), lists itself on ``GET /v1/models`` and makes deterministic
embeddings. It needs no key and sends nothing anywhere: the OpenAI SDK and curl work
against the demo with no account.

Token counts are whitespace-separated words, so they are predictable.
"""
from __future__ import annotations

import asyncio
import hashlib
import time

import orjson

from fastgate._core.http import HttpError, RequestParser

MODEL = "echo-1"


def _last_user_text(messages) -> str:
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


def _words(s: str) -> int:
    return len(s.split())


class EchoModel(asyncio.Protocol):
    """One client connection of the echo model (HTTP/1.1 keep-alive)."""

    def connection_made(self, transport):
        self.transport = transport
        self.parser = RequestParser(self)
        self.head = None
        self.body = bytearray()

    def data_received(self, data):
        try:
            self.parser.feed(data)
        except HttpError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc):
        pass

    def on_request(self, head):
        self.head = head
        self.body.clear()

    def on_body(self, data):
        if len(self.body) < (1 << 20):
            self.body += data

    def on_request_complete(self):
        head = self.head
        path = head.path
        if head.method == b"GET" and path.endswith(b"/models"):
            self._json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "fastgate-demo"}]})
        elif head.method == b"POST" and path.endswith(b"/chat/completions"):
            self._chat()
        elif head.method == b"POST" and path.endswith(b"/embeddings"):
            self._embeddings()
        else:
            self._json(404, {"error": {"message": "unknown endpoint", "type":
                                       "invalid_request_error", "param": None, "code": None}})
        if not head.keep_alive:
            self.transport.close()
            return
        self.parser.resume()

    def _json(self, status, doc):
        body = orjson.dumps(doc)
        self.transport.write(b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % (status, len(body)) + body)

    def _chat(self):
        try:
            req = orjson.loads(bytes(self.body))
        except orjson.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON", "type":
                                       "invalid_request_error", "param": None, "code": None}})
            return
        text = "echo: " + _last_user_text(req.get("messages"))
        prompt = sum(_words(_last_user_text([m])) for m in req.get("messages") or [])
        words = text.split(" ")
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words),
                 "total_tokens": prompt + len(words)}
        rid = "chatcmpl-echo" + hashlib.sha1(self.body).hexdigest()[:12]
        created = int(time.time())
        model = req.get("model") or MODEL
        if not req.get("stream"):
            self._json(200, {"id": rid, "object": "chat.completion", "created": created,
                             "model": model, "choices": [{
                                 "index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                             "usage": usage})
            return
        so = req.get("stream_options") or {}
        parts = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                 b"transfer-encoding: chunked\r\n\r\n"]

        def event(doc):
            data = b"data: " + orjson.dumps(doc) + b"\n\n"
            parts.append(b"%x\r\n%s\r\n" % (len(data), data))

        base = {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": model}
        event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]})
        for i, w in enumerate(words):
            event({**base, "choices": [{"index": 0, "delta": {"content": w if i == 0
                                                              else " " + w},
                                        "finish_reason": None}]})
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if so.get("include_usage"):
            event({**base, "choices": [], "usage": usage})
        done = b"data: [DONE]\n\n"
        parts.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        self.transport.write(b"".join(parts))

    def _embeddings(self):
        try:
            req = orjson.loads(bytes(self.body))
        except orjson.JSONDecodeError:
            req = {}
        inputs = req.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list):
            inputs = []
        data = []
        tokens = 0
        for i, s in enumerate(inputs):
            s = s if isinstance(s, str) else orjson.dumps(s).decode()
            tokens += _words(s)
            digest = hashlib.sha256(s.encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [round(b / 255.0 - 0.5, 4) for b in digest[:8]]})
        self._json(200, {"object": "list", "data": data, "model": req.get("model") or MODEL,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def start_echo_model(host: str = "127.0.0.1", port: int = 0):
    """Serve the echo model; returns the asyncio server (its port: ``sockets[0]``)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(EchoModel, host, port)
