"""``respond:`` routes: a static answer made at compile time."""
from __future__ import annotations

import orjson


class RespondTarget:
    __slots__ = ("status", "headers", "body")
    takes_body = False

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def open(self, ex):
        ex.answer_local(self.status, list(self.headers), self.body)
        return None


def build(route_cfg, ctx):
    r = route_cfg.respond
    if r is None:
        return None
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in r.headers.items()]
    body = r.body.encode() if isinstance(r.body, str) else orjson.dumps(r.body)
    if not any(k == b"content-type" for k, _ in headers):
        headers.insert(0, (b"content-type", b"text/plain; charset=utf-8"))
    return RespondTarget(r.status, tuple(headers), body)
