"""``upstream:`` routes: the request goes to a target of an upstream, over its keep-alive pool.

``UpstreamTarget`` is the route's compiled target (prefix stripping, rewrite, Host, read
timeout); each request it opens is an ``UpstreamCall``, compiled with the connection in
fastgate/_core/conn_upstream.pxi (pick, connect or take a warm connection, the head built
once, the body streamed, the response relayed, the connection given back only when clean,
retries, WebSocket tunnels).
"""
from __future__ import annotations

from fastgate._core.conn import (  # noqa: F401  (compiled with the connection)
    IDEMPOTENT, UpstreamCall, UpstreamTarget,
)


def build(route_cfg, ctx):
    if not route_cfg.upstream:
        return None
    return UpstreamTarget(route_cfg, ctx.upstreams[route_cfg.upstream])
