"""Compile a validated Config into an immutable Snapshot the request path runs on.

Everything a request needs is resolved here once: the compiled router, per route the tuple of
access-phase callables and response-phase callables, the upstream object with its target
pools, precomputed bytes for static answers and rewrites. A reload compiles a new Snapshot
and swaps one reference; requests in flight keep the one they started with.
"""
from __future__ import annotations

import re
import ssl

import orjson

from fastgate._core.router import Router
from fastgate.policies import load_builders
from fastgate.server.headers import DROP_REQUEST_HEADERS, DROP_RESPONSE_HEADERS
from fastgate.upstream.balance import Upstream


class CompiledRoute:
    __slots__ = (
        "name", "index", "cfg", "upstream", "respond", "strip_prefix", "rewrite_parts",
        "rewrite", "preserve_host", "access", "response", "max_body_bytes", "timeout_s",
        "drop_request_headers", "drop_response_headers", "answers_preflight",
    )

    def render_rewrite(self, params) -> bytes:
        out = []
        for literal, param in self.rewrite_parts:
            out.append(literal)
            if param is not None:
                out.append((params or {}).get(param, "").encode("latin-1"))
        return b"".join(out)


class Snapshot:
    __slots__ = ("config", "router", "routes", "upstreams", "limits", "generation", "pool_keys",
                 "body_ceiling")


_PARAM = re.compile(r"\{([^{}]+)\}")


def _rewrite_parts(template: str):
    parts = []
    pos = 0
    for m in _PARAM.finditer(template):
        parts.append((template[pos:m.start()].encode(), m.group(1)))
        pos = m.end()
    parts.append((template[pos:].encode(), None))
    return tuple(parts)


def _respond(route_cfg):
    r = route_cfg.respond
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in r.headers.items()]
    body = r.body.encode() if isinstance(r.body, str) else orjson.dumps(r.body)
    if not any(k == b"content-type" for k, _ in headers):
        headers.insert(0, (b"content-type", b"text/plain; charset=utf-8"))
    return (r.status, tuple(headers), body)


def upstream_ssl_context(up_cfg) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=getattr(up_cfg, "ca_file", None))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not up_cfg.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def compile_snapshot(config, services, pools, generation: int = 0) -> Snapshot:
    """Build a Snapshot. `pools` is the process's PoolRegistry (kept across reloads)."""
    snap = Snapshot()
    snap.config = config
    snap.limits = config.limits
    snap.generation = generation
    used_pools = set()
    upstreams = {}
    ssl_cache = {}
    for name, up in config.upstreams.items():
        target_pools = []
        for t in up.targets:
            ctx = None
            ssl_key = None
            if t.scheme == "https":
                ssl_key = (up.tls_verify, getattr(up, "ca_file", None))
                ctx = ssl_cache.get(ssl_key)
                if ctx is None:
                    ctx = ssl_cache[ssl_key] = upstream_ssl_context(up)
            pool = pools.get(t.scheme, t.host, t.port, up.keepalive, ctx, ssl_key)
            default_port = 443 if t.scheme == "https" else 80
            host_value = t.host if t.port == default_port else f"{t.host}:{t.port}"
            if ":" in t.host and not t.host.startswith("["):
                host_value = f"[{t.host}]" if t.port == default_port else f"[{t.host}]:{t.port}"
            pool.host_header = b"host: " + host_value.encode() + b"\r\n\r\n"
            used_pools.add((t.scheme, t.host, t.port, ssl_key))
            target_pools.append(pool)
        hash_on = None
        if up.hash_on is not None:
            hash_on = (up.hash_on.kind,
                       up.hash_on.name.encode() if up.hash_on.name else None)
        upstreams[name] = Upstream(
            name, target_pools, [t.weight for t in up.targets], up.balance, hash_on,
            up.connect_timeout_s, up.read_timeout_s, up.retries,
        )
        upstreams[name].path_prefix = up.targets[0].path.encode() if up.targets else b""
    snap.upstreams = upstreams
    snap.pool_keys = used_pools

    builders = load_builders()
    routes = []
    table = []
    for index, rc in enumerate(config.routes):
        route = CompiledRoute()
        route.name = rc.name
        route.index = index
        route.cfg = rc
        route.upstream = upstreams[rc.upstream] if rc.upstream else None
        route.respond = _respond(rc) if rc.respond is not None else None
        route.strip_prefix = rc.strip_prefix.rstrip("/").encode() if rc.strip_prefix else None
        route.rewrite = rc.rewrite
        route.rewrite_parts = _rewrite_parts(rc.rewrite) if rc.rewrite else None
        route.preserve_host = rc.preserve_host
        route.max_body_bytes = rc.max_body_bytes
        route.timeout_s = rc.timeout_s
        access = []
        response = []
        drop_req = set(DROP_REQUEST_HEADERS)
        drop_resp = set(DROP_RESPONSE_HEADERS)
        for build in builders:
            policy = build(rc, services)
            if policy is None:
                continue
            if hasattr(policy, "access"):
                access.append(policy.access)
            if hasattr(policy, "response"):
                response.append(policy.response)
            # Headers a policy sets itself must not also pass through as the client or
            # the upstream sent them.
            drop_req |= getattr(policy, "strip_request_headers", frozenset())
            drop_resp |= getattr(policy, "strip_response_headers", frozenset())
        route.access = tuple(access)
        route.response = tuple(response)
        route.answers_preflight = any(
            getattr(getattr(f, "__self__", None), "handles_preflight", False) for f in access)
        route.drop_request_headers = frozenset(drop_req)
        route.drop_response_headers = frozenset(drop_resp)
        routes.append(route)
        table.append((route, rc.name, rc.hosts or None, rc.methods or None, list(rc.paths)))
    snap.routes = routes
    snap.router = Router(table)
    # The parser's own limit is the largest any route accepts (a route may allow more than
    # limits.max_body_bytes, its default); each route's limit is applied after routing.
    snap.body_ceiling = max([config.limits.max_body_bytes] +
                            [r.max_body_bytes for r in config.routes if r.max_body_bytes])
    return snap
