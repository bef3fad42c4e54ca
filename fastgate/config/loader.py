"""Config loading: read (YAML/JSON), substitute ${VAR}, validate everything, build ``Config``.

Every problem is collected with its key path and reported together, sorted in document order;
a ``Config`` is only returned when there are none. See schema.py for the resulting model.

The core sections are parsed by node.py (listeners, admin, limits, redis, logging) and
targets.py (upstreams, respond, ai); every other key is owned by a policy and found through
the registry (sections.py: ``RouteKey`` / ``TopKey`` declared in
``fastgate/policies/<name>/config.py``). This module walks the document: the keys it knows
are the core ones plus the registered ones.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from typing import Any

from . import node, sections, targets
from . import schema as S
from .check import Errors, Obj, c_bool, c_int, c_list, c_num, c_str, tname
from .features import unsupported_paths
from .sections import LoadContext, RouteScope
from .source import (SourceProblem, decode, deep_copy_plain, document_order, format_path,
                     one_line, substitute)
from .values import (c_duration, c_url, c_method, c_name, c_prefix, c_rewrite, c_route_host,
                     c_route_path, host_key, path_params, path_shape)
# Imported from here by other modules (fastgate.audit).
from .values import is_loopback_host, parse_key_source, parse_url  # noqa: F401


class ConfigError(Exception):
    """The config is invalid. ``errors``: every problem, "key.path: message", document order."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


# --- entry points ---------------------------------------------------------------------------

def load_config(path: str, env: Mapping[str, str] | None = None) -> S.Config:
    """Read and validate the file at ``path``; relative file names in it are resolved against
    the file's directory. Raises ConfigError (also for an unreadable file)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    ext = os.path.splitext(path)[1].lower()
    fmt = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(ext)
    return _parse(data, env, source=path, fmt=fmt,
                  base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(data: dict | str | bytes, env: Mapping[str, str] | None = None, *,
                 source: str = "<config>", base_dir: str | None = None) -> S.Config:
    """Validate a document given as text (YAML or JSON, sniffed) or an already-parsed dict.
    ``base_dir`` resolves relative file names (default: the current directory)."""
    return _parse(data, env, source=source, fmt=None, base_dir=base_dir or os.getcwd())


def _parse(data, env, *, source, fmt, base_dir) -> S.Config:
    if env is None:
        env = os.environ
    try:
        if isinstance(data, dict):
            tree, problems = data, []
        elif isinstance(data, (str, bytes, bytearray, memoryview)):
            tree, problems = decode(data, source, fmt)
        else:
            raise ConfigError([f"{source}: expected a mapping or text, got {type(data).__name__}"])
        if tree is None:
            raise ConfigError([f"{source}: the config is empty"])
        if not isinstance(tree, dict):
            raise ConfigError([f"{source}: the top level must be a mapping, got {tname(tree)}"])
        subst_problems: list = []
        resolved = substitute(tree, env, subst_problems, source)
        raw = deep_copy_plain(tree)
    except SourceProblem as exc:
        raise ConfigError(exc.errors) from None

    e = Errors()
    cfg = build(LoadContext(e, base_dir, source), resolved, raw)
    for p in unsupported_paths(resolved):
        e.add(p, "not supported by this build yet")
    # A value whose ${VAR} failed is not worth a second complaint about its (empty) content.
    env_paths = {p for p, _ in subst_problems}
    e.items = [(p, m) for p, m in e.items if p not in env_paths]
    e.items[:0] = problems + subst_problems
    if e.items:
        raise ConfigError(_render(e, resolved, source))
    return cfg


def _render(e: Errors, tree: Any, source: str) -> list[str]:
    keyed = [(document_order(tree, p), i, format_path(p, source), m)
             for i, (p, m) in enumerate(e.items)]
    keyed.sort(key=lambda t: (t[0], t[1]))
    out, seen = [], set()
    for _, _, p, m in keyed:
        line = f"{p}: {one_line(m)}"
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out



# --- the walk -------------------------------------------------------------------------------

CORE_TOP_KEYS = ("listeners", "admin", "drain_timeout_s", "limits", "redis", "upstreams",
                 "routes", "logging", "ai", "teams")
CORE_ROUTE_KEYS = ("name", "hosts", "methods", "paths", "upstream", "respond", "ai",
                   "strip_prefix", "rewrite", "preserve_host", "max_body_bytes", "timeout_s",
                   "owner", "description", "docs_url", "visibility")
TARGETS = ("upstream", "respond", "ai")


def top_level_keys() -> tuple[str, ...]:
    """Every key the top level accepts: the core ones and the policies' sections."""
    return CORE_TOP_KEYS + tuple(sections.top_keys())


def route_level_keys() -> tuple[str, ...]:
    """Every key a route accepts: the core ones and the policies' keys."""
    return CORE_ROUTE_KEYS + tuple(sections.route_keys())


def build(ctx: LoadContext, d: dict, raw: dict) -> S.Config:
    e = ctx.e
    # Top-level "x-..." keys are ignored: the docker-compose convention for holding YAML
    # anchors (`x-timeouts: &t {...}` then `<<: *t`). They cannot be typos of real keys.
    o = Obj(e, (), d, top_level_keys() + tuple(k for k in d if isinstance(k, str)
                                               and k.startswith("x-")))
    # Order matters only for cross references: routes look at everything before them.
    ctx.listeners = listeners = o.get("listeners", partial(node.parse_listeners, ctx)) or []
    admin = o.get("admin", partial(node.parse_admin, ctx), None)
    ctx.limits = limits = o.get("limits", partial(node.parse_limits, ctx), S.Limits())
    ctx.redis = redis = o.get("redis", partial(node.parse_redis, ctx), None)
    teams = o.get("teams", partial(node.parse_teams, ctx), {}) or {}
    ctx.has_redis = o.has("redis")
    ctx.upstreams = upstreams = o.get("upstreams", partial(targets.parse_upstreams, ctx), {})
    for key, sec in sections.top_keys().items():
        ctx.sections[key] = o.get(key, partial(sec.parse, ctx), sec.fresh_default())
    ctx.ai = ai = o.get("ai", partial(targets.parse_ai, ctx), None)
    routes = o.get("routes", lambda e2, p, v: parse_routes(ctx, p, v), [])
    logging = o.get("logging", partial(node.parse_logging, ctx), S.Logging())
    cfg = S.Config(
        listeners=listeners,
        admin=admin,
        drain_timeout_s=o.get("drain_timeout_s", c_num(lo=0.0), 20.0),
        limits=limits,
        redis=redis,
        upstreams=upstreams or {},
        routes=routes or [],
        logging=logging,
        ai=ai,
        teams=teams,
        raw=raw,
        source=ctx.source,
        sections=ctx.sections,
    )
    cross_checks(ctx, cfg)
    for check in sections.registered().checks:
        check(ctx, cfg)
    return cfg


def parse_routes(ctx: LoadContext, path, v):
    if not isinstance(v, list):
        ctx.e.add(path, f"expected a list, got {tname(v)}")
        return None
    out = []
    for i, item in enumerate(v):
        r = parse_route(ctx, path + (i,), i, item)
        if r is not None:
            out.append(r)
            ctx.route_index.append(i)
    return out


def parse_route(ctx: LoadContext, path, index, v):
    e = ctx.e
    policy_keys = sections.route_keys()
    o = Obj(e, path, v, CORE_ROUTE_KEYS + tuple(policy_keys))
    if not o.ok:
        return None
    name = o.get("name", c_name("a route name"), f"route-{index}")
    paths = o.get("paths", c_list(c_route_path, nonempty=True, unique=True))
    kinds = [k for k in o.d if k in TARGETS and o.has(k)]
    if not kinds:
        e.add(path, "needs one of upstream, respond, ai")
    elif len(kinds) > 1:
        e.add(o.p(kinds[1]), f"a route has exactly one of upstream, respond, ai "
                             f"(also has {kinds[0]})")
    kind = kinds[0] if kinds else None
    upstream = o.get("upstream", c_str(), None)
    upstreams = ctx.upstreams
    if upstream is not None and upstreams is not None and upstream not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none defined"
        e.add(o.p("upstream"), f"unknown upstream {upstream!r} (upstreams: {known})")
    for k in ("strip_prefix", "rewrite", "preserve_host"):
        if o.has(k) and kind is not None and kind != "upstream":
            e.add(o.p(k), f"only applies to routes with an upstream (this one has {kind})")
    rewrite = o.get("rewrite", c_rewrite, None)
    if rewrite is not None and paths:
        defined = {n for p in paths for n in path_params(p)}
        for n in path_params(rewrite):
            if n not in defined:
                e.add(o.p("rewrite"), f"{{{n}}} is not a parameter of any path of this route")
    methods = o.get("methods", c_list(c_method, unique=True), []) or []
    route_ai = o.get("ai", partial(targets.parse_route_ai, ctx), None)
    core = dict(
        name=name,
        paths=paths or [],
        hosts=o.get("hosts", c_list(c_route_host, unique=True), []),
        methods=methods,
        upstream=upstream,
        respond=o.get("respond", partial(targets.parse_respond, ctx), None),
        ai=route_ai,
        strip_prefix=o.get("strip_prefix", c_prefix, None),
        rewrite=rewrite,
        preserve_host=o.get("preserve_host", c_bool, False),
        max_body_bytes=o.get("max_body_bytes", c_int(lo=0), ctx.limits.max_body_bytes),
        timeout_s=o.get("timeout_s", c_duration(), None),
        owner=o.get("owner", c_str(max_len=200), None),
        description=o.get("description", c_str(max_len=2000), None),
        docs_url=o.get("docs_url", c_url(), None),
        visibility=o.get("visibility", c_str(("public", "internal")), "public"),
    )
    # The policies' keys, in registry order; each parser sees the route so far in ctx.route.
    scope = ctx.route = RouteScope(index=index, path=path, kind=kind, ai=route_ai,
                                   methods=methods)
    try:
        for key, sec in policy_keys.items():
            scope.policies[key] = o.get(key, partial(sec.parse, ctx), sec.fresh_default())
    finally:
        ctx.route = None
    return S.Route(**core, policies=scope.policies)


# --- cross references -----------------------------------------------------------------------

def cross_checks(ctx: LoadContext, cfg: S.Config) -> None:
    e = ctx.e
    li, ri = ctx.listener_index, ctx.route_index
    seen: list[tuple[int, str, int]] = []
    for k, lst in enumerate(cfg.listeners):
        i = li[k]
        for j, host, port in seen:
            if _binds_clash(host, port, lst.host, lst.port):
                e.add(("listeners", i, "bind"),
                      f"{lst.bind} clashes with listeners[{j}].bind")
                break
        seen.append((i, lst.host, lst.port))
    if cfg.admin is not None:
        for k, lst in enumerate(cfg.listeners):
            j = li[k]
            if _binds_clash(cfg.admin.host, cfg.admin.port, lst.host, lst.port):
                e.add(("admin", "bind"),
                      f"{cfg.admin.bind} clashes with listeners[{j}].bind: "
                      "the admin API never shares a port with traffic")
                break
    users = {u.name for u in cfg.admin.users} if cfg.admin is not None else set()
    for team in cfg.teams.values():
        for j, member in enumerate(team.members):
            if member not in users:
                e.add(("teams", team.name, "members", j),
                      f"unknown admin user {member!r} (admin.users: "
                      f"{', '.join(sorted(users)) or 'none defined'})")
    for k, r in enumerate(cfg.routes):
        if cfg.teams and r.owner is not None and r.owner not in cfg.teams:
            e.add(("routes", ri[k], "owner"), f"unknown team {r.owner!r} (teams: "
                                              f"{', '.join(sorted(cfg.teams))})")
    names: dict[str, int] = {}
    for k, r in enumerate(cfg.routes):
        i = ri[k]
        if r.name in names:
            e.add(("routes", i, "name"),
                  f"duplicate route name {r.name!r} (also routes[{names[r.name]}])")
        else:
            names[r.name] = i
    route_conflicts(ctx, cfg)

def route_conflicts(ctx: LoadContext, cfg: S.Config) -> None:
    """Two routes the router could not order (same host entry, same path shape, same
    method) are rejected there one at a time; finding them all here lets `check` list them.
    """
    claimed: dict[tuple, tuple[int, int, str]] = {}
    for k, r in enumerate(cfg.routes):
        i = ctx.route_index[k]
        hosts = [host_key(h) for h in r.hosts] or [None]
        methods = r.methods or [None]
        for j, p in enumerate(r.paths):
            shape = path_shape(p)
            for h in hosts:
                clash = None
                for m in methods:
                    key = (h, shape, m)
                    other = claimed.get(key)
                    if other is not None and (other[0], other[1]) != (i, j):
                        clash = (other, m)
                        break
                    claimed[key] = (i, j, p)
                if clash:
                    (oi, oj, op), m = clash
                    ctx.e.add(("routes", i, "paths", j),
                               f"{p!r} conflicts with routes[{oi}].paths[{oj}] ({op!r}): "
                               f"both claim {m or 'any method'} on "
                               f"{'host ' + repr(h) if h else 'any host'}")
                    break




_WILDCARDS = {"0.0.0.0", "::", ""}


def _binds_clash(h1: str, p1: int, h2: str, p2: int) -> bool:
    if p1 != p2 or p1 == 0:  # port 0 = each bind gets its own free port
        return False
    return h1.lower() == h2.lower() or h1 in _WILDCARDS or h2 in _WILDCARDS
