"""`transform:` request and response header/query rewriting.

Request: `remove_headers` and the names of `set_headers` are dropped from what the client
sent (folded into the route's drop set at compile time, so removal costs nothing per
request); `set_headers` and `add_headers` values are appended; `rename_headers` moves a
header's values to a new name; `set_query` / `remove_query` rewrite the query string.
Response: `remove_headers` and the names of `set_headers` are dropped from the upstream's
answer and `set_headers` appended, on every response of the route (the gateway's own error
answers included).
"""
from __future__ import annotations

from urllib.parse import parse_qsl, quote


def _pairs(mapping):
    return tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in mapping.items())


class TransformPolicy:
    __slots__ = ("add", "rename", "set_query", "remove_query", "resp_set",
                 "strip_request_headers", "strip_response_headers")

    def __init__(self, t):
        req, resp = t.request, t.response
        self.add = _pairs(req.set_headers) + _pairs(req.add_headers)
        self.rename = tuple((old.lower().encode("latin-1"), new.lower().encode("latin-1"))
                            for old, new in req.rename_headers.items())
        self.set_query = tuple(req.set_query.items())
        self.remove_query = frozenset(req.remove_query) | frozenset(req.set_query)
        self.strip_request_headers = frozenset(
            n.lower().encode("latin-1")
            for n in list(req.remove_headers) + list(req.set_headers) + list(req.rename_headers))
        self.resp_set = _pairs(resp.set_headers)
        self.strip_response_headers = frozenset(
            n.lower().encode("latin-1") for n in list(resp.remove_headers) + list(resp.set_headers))

    def access(self, ctx):
        head = ctx.head
        extra = ctx.upstream_headers
        for old, new in self.rename:
            for value in head.get_all(old):
                extra.append((new, value))
        if self.add:
            extra.extend(self.add)
        if self.set_query or self.remove_query:
            ctx.query = self._query(head.query)
        return None

    def response(self, ctx, head):
        # Response phase: runs for upstream answers and the gateway's own ones alike.
        if self.resp_set:
            ctx.response_headers.extend(self.resp_set)

    def _query(self, raw: bytes) -> bytes:
        kept = []
        if raw:
            remove = self.remove_query
            for part in raw.split(b"&"):
                if not part:
                    continue
                name = part.split(b"=", 1)[0]
                decoded = parse_qsl(name.decode("latin-1") + "=", keep_blank_values=True)
                key = decoded[0][0] if decoded else name.decode("latin-1")
                if key in remove:
                    continue
                kept.append(part)
        for k, v in self.set_query:
            kept.append((quote(k, safe="") + "=" + quote(v, safe="")).encode())
        return b"&".join(kept)


def build(route_cfg, services):
    t = route_cfg.transform
    if t is None:
        return None
    policy = TransformPolicy(t)
    if not (policy.add or policy.rename or policy.set_query or policy.remove_query
            or policy.resp_set or policy.strip_request_headers or policy.strip_response_headers):
        return None
    return policy
