"""``upstream:`` routes: the request goes to a target of an upstream, over its keep-alive pool.

``UpstreamTarget`` is the route's compiled target (prefix stripping, rewrite, Host, read
timeout); each request it opens is an ``UpstreamCall``, compiled with the connection in
fastgate/_core/conn_upstream.pxi (pick, connect or take a warm connection, the head built
once, the body streamed, the response relayed, the connection given back only when clean,
retries, WebSocket tunnels).
"""
from __future__ import annotations

import re

from fastgate._core.conn import IDEMPOTENT, UpstreamCall  # noqa: F401  (compiled: the call)

_PARAM = re.compile(r"\{([^{}]+)\}")


def _rewrite_parts(template: str):
    parts = []
    pos = 0
    for m in _PARAM.finditer(template):
        parts.append((template[pos:m.start()].encode(), m.group(1)))
        pos = m.end()
    parts.append((template[pos:].encode(), None))
    return tuple(parts)


class UpstreamTarget:
    __slots__ = ("upstream", "strip_prefix", "rewrite_parts", "preserve_host", "read_timeout")
    takes_body = True

    def __init__(self, route_cfg, upstream):
        self.upstream = upstream
        self.strip_prefix = (route_cfg.strip_prefix.rstrip("/").encode()
                             if route_cfg.strip_prefix else None)
        self.rewrite_parts = _rewrite_parts(route_cfg.rewrite) if route_cfg.rewrite else None
        self.preserve_host = route_cfg.preserve_host
        self.read_timeout = (route_cfg.timeout_s if route_cfg.timeout_s is not None
                             else upstream.read_timeout)

    def open(self, ex):
        call = UpstreamCall(self, ex)
        call.dispatch(None)
        return call

    def render_rewrite(self, params) -> bytes:
        out = []
        for literal, param in self.rewrite_parts:
            out.append(literal)
            if param is not None:
                out.append((params or {}).get(param, "").encode("latin-1"))
        return b"".join(out)


def build(route_cfg, ctx):
    if not route_cfg.upstream:
        return None
    return UpstreamTarget(route_cfg, ctx.upstreams[route_cfg.upstream])
