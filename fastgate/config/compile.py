"""Compile a validated Config into an immutable Snapshot the request path runs on.

Everything a request needs is resolved here once: the compiled router, per route its target
(fastgate.targets) and per phase the tuple of policy callables, the upstream objects with
their target pools, precomputed bytes for static answers and rewrites. A reload compiles a new Snapshot
and swaps one reference; requests in flight keep the one they started with.
"""
from __future__ import annotations

import ssl

from fastgate._core.router import Router
from fastgate._core.state import RouteCore, SnapshotCore
from fastgate.policies import load_builders
from fastgate.server.headers import DROP_REQUEST_HEADERS, DROP_RESPONSE_HEADERS
from fastgate.targets import load_targets
from fastgate.upstream.balance import Upstream


class CompiledRoute(RouteCore):
    """One route as the request path runs it: its target and, per phase, the tuple of
    policy callables (see fastgate/_core/conn_exchange.pxi for the phases). The fields the
    request path reads (name, target, the phases, max_body_bytes, the drop sets) are
    declared in its compiled base (fastgate/_core/state.pyx)."""

    __slots__ = ("index", "cfg")


class Snapshot(SnapshotCore):
    """A compiled config; router, reroutes, limits and body_ceiling are declared in its
    compiled base (fastgate/_core/state.pyx)."""

    __slots__ = ("config", "routes", "upstreams", "generation", "pool_keys", "services")


# The phases a policy object may implement (each optional), in request order.
PHASES = (("access", "access"), ("request_chunk", "chunk"), ("request_body", "body"),
          ("response", "response"), ("response_body", "response_body"), ("log", "log"))


def phase_callable(policy, method: str):
    """What a route runs for ``method`` of ``policy`` (None when it has no such phase): the
    compiled phase the policy offers in its ``compiled`` dict (a fastgate._core.state.PhaseFn
    that answers as the method does, without a Python call), else the method itself."""
    compiled = getattr(policy, "compiled", None)
    fn = compiled.get(method) if compiled else None
    return fn if fn is not None else getattr(policy, method, None)


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
        # Each target's own base path (http://host/base): one per pool of this upstream.
        for t, pool in zip(up.targets, target_pools):
            if t.path:
                upstreams[name].prefixes.setdefault(pool, t.path.encode())
    snap.upstreams = upstreams
    snap.pool_keys = used_pools

    snap.services = services
    builders = load_builders()
    targets = load_targets()
    routes = []
    table = []
    reroutes = []
    for index, rc in enumerate(config.routes):
        route = CompiledRoute()
        route.name = rc.name
        route.index = index
        route.cfg = rc
        route.max_body_bytes = rc.max_body_bytes
        route.target = None
        for build_target in targets:
            route.target = build_target(rc, snap)
            if route.target is not None:
                break
        if route.target is None:
            raise ValueError(f"route {rc.name!r}: no target (upstream, respond, ...)")
        phases = {slot: [] for _, slot in PHASES}
        drop_req = set(DROP_REQUEST_HEADERS)
        drop_resp = set(DROP_RESPONSE_HEADERS)
        for build in builders:
            policy = build(rc, services)
            if policy is None:
                continue
            for method, slot in PHASES:
                fn = phase_callable(policy, method)
                if fn is not None:
                    phases[slot].append(fn)
            # Headers a policy sets itself must not also pass through as the client or
            # the upstream sent them.
            drop_req |= getattr(policy, "strip_request_headers", frozenset())
            drop_resp |= getattr(policy, "strip_response_headers", frozenset())
            # A policy may claim requests the router missed (CORS: preflights, routed by
            # the method they ask about): one hook per kind, for the whole snapshot.
            hook = getattr(policy, "reroute", None)
            if hook is not None and hook not in reroutes:
                reroutes.append(hook)
        for _, slot in PHASES:
            setattr(route, slot, tuple(phases[slot]))
        route.drop_request_headers = frozenset(drop_req)
        route.drop_response_headers = frozenset(drop_resp)
        routes.append(route)
        table.append((route, rc.name, rc.hosts or None, rc.methods or None, list(rc.paths)))
    snap.routes = routes
    snap.router = Router(table)
    snap.reroutes = tuple(reroutes)
    # The parser's own limit is the largest any route accepts (a route may allow more than
    # limits.max_body_bytes, its default); each route's limit is applied after routing.
    snap.body_ceiling = max([config.limits.max_body_bytes] +
                            [r.max_body_bytes for r in config.routes if r.max_body_bytes])
    return snap
