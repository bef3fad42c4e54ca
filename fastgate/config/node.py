"""The node sections: listeners (with TLS), admin, limits, redis, logging.

Each instance keeps these from its own file (SPEC: like Kong's node settings beside its
declarative config). Parsers take ``(ctx, e, path, value)`` like the policies' ones
(sections.py); the loader calls them in document-independent order, before anything that
refers to them.
"""
from __future__ import annotations

import os
from functools import partial
from urllib.parse import urlsplit

from . import schema as S
from .check import (Obj, c_bool, c_header_name, c_hostport, c_int, c_list, c_num, c_str,
                    tname, valid_host)
from .values import c_duration, c_name, c_route_host


# --- listeners ------------------------------------------------------------------------------

def parse_listeners(ctx, e, path, v):
    if not isinstance(v, list):
        e.add(path, f"expected a list, got {tname(v)}")
        return None
    if not v:
        e.add(path, "at least one listener is required")
        return []
    out = []
    for i, item in enumerate(v):
        o = Obj(e, path + (i,), item, ("bind", "tls"))
        ctx.listener_index.append(i)
        hp = o.get("bind", c_hostport)
        tls = o.get("tls", partial(parse_tls, ctx), None)
        if hp is None:
            ctx.listener_index.pop()
        else:
            out.append(S.Listener(bind=o.d["bind"].strip(), host=hp[0], port=hp[1], tls=tls))
    return out


def parse_tls(ctx, e, path, v):
    o = Obj(e, path, v, ("cert_file", "key_file", "min_version", "client_ca_file",
                         "require_client_cert", "certificates"))
    cert = o.get("cert_file", ctx.c_file, None)
    key = o.get("key_file", ctx.c_file, None)
    if o.has("cert_file") != o.has("key_file"):
        e.add(o.p("key_file" if o.has("cert_file") else "cert_file"),
              "cert_file and key_file go together")
    certs = o.get("certificates", c_list(partial(parse_certificate, ctx)), [])
    if o.ok and not o.has("cert_file") and not o.has("key_file") and not o.d.get("certificates"):
        e.add(path, "needs cert_file + key_file, or a list under certificates")
    ca = o.get("client_ca_file", ctx.c_file, None)
    req = o.get("require_client_cert", c_bool, False)
    if req and not o.has("client_ca_file"):
        e.add(o.p("require_client_cert"), "needs client_ca_file to verify client certificates")
    return S.TLSConfig(cert_file=cert, key_file=key,
                       min_version=o.get("min_version", c_str(("TLSv1.2", "TLSv1.3")), "TLSv1.2"),
                       client_ca_file=ca, require_client_cert=bool(req),
                       certificates=certs or [])


def parse_certificate(ctx, e, path, v):
    o = Obj(e, path, v, ("cert_file", "key_file", "hosts"))
    return S.Certificate(cert_file=o.get("cert_file", ctx.c_file),
                         key_file=o.get("key_file", ctx.c_file),
                         hosts=o.get("hosts", c_list(c_route_host, unique=True), []))


# --- admin ----------------------------------------------------------------------------------

ADMIN_ROLES = ("viewer", "operator", "admin")


def parse_admin(ctx, e, path, v):
    o = Obj(e, path, v, ("bind", "token", "users", "state_dir"))
    hp = o.get("bind", c_hostport)
    token = o.get("token", c_str(max_len=4096), None)
    users = o.get("users", c_list(parse_admin_user, unique=True, key=lambda u: u.name),
                  []) or []
    state_dir = o.get("state_dir", c_str(max_len=4096), None)
    if o.ok and not o.has("token") and not o.has("users"):
        e.add(o.p("token"), "required (or admin.users: name, token_hash, role)")
    hashes: dict[str, str] = {}
    for u in users:    # one token, one actor: the audit log must know who did it
        if u.token_hash in hashes:
            e.add(path + ("users",), f"{u.name!r} has the same token_hash as "
                                     f"{hashes[u.token_hash]!r}")
        hashes.setdefault(u.token_hash, u.name)
    if hp is None:
        return None
    if state_dir is not None and not os.path.isabs(state_dir):
        state_dir = os.path.join(ctx.base_dir, state_dir)
    return S.Admin(bind=o.d["bind"].strip(), host=hp[0], port=hp[1], token=token,
                   users=users, state_dir=state_dir)


def parse_admin_user(e, path, v):
    from fastgate.policies.auth.config import c_api_key_hash
    o = Obj(e, path, v, ("name", "token_hash", "role"))
    name = o.get("name", c_name("an admin user name"))
    token_hash = o.get("token_hash", c_api_key_hash)
    role = o.get("role", c_str(ADMIN_ROLES))
    if name is None or token_hash is None or role is None:
        return None
    return S.AdminUser(name=name, token_hash=token_hash, role=role)


# --- teams ----------------------------------------------------------------------------------

def parse_teams(ctx, e, path, v):
    """``teams: {NAME: {members: [admin user names]}}``; members are checked against
    admin.users by the loader's cross checks."""
    if not isinstance(v, dict):
        e.add(path, f"expected a mapping, got {tname(v)}")
        return None
    out = {}
    conv = c_name("a team name")
    for name, item in v.items():
        p = path + (name,)
        if conv(e, p, name) is None:
            continue
        o = Obj(e, p, item if item is not None else {}, ("members",))
        members = o.get("members", c_list(c_name("an admin user name"), unique=True), []) or []
        out[name] = S.Team(name=name, members=members)
    return out


# --- limits ---------------------------------------------------------------------------------

def parse_limits(ctx, e, path, v) -> S.Limits:
    d = S.Limits()
    o = Obj(e, path, v, S.Limits.__dataclass_fields__)
    pos = c_int(gt=0)
    return S.Limits(
        max_request_line_bytes=o.get("max_request_line_bytes", c_int(lo=64), d.max_request_line_bytes),
        max_header_bytes=o.get("max_header_bytes", c_int(lo=256), d.max_header_bytes),
        max_headers=o.get("max_headers", pos, d.max_headers),
        max_body_bytes=o.get("max_body_bytes", c_int(lo=0), d.max_body_bytes),
        header_timeout_s=o.get("header_timeout_s", c_duration(), d.header_timeout_s),
        body_timeout_s=o.get("body_timeout_s", c_duration(), d.body_timeout_s),
        keepalive_timeout_s=o.get("keepalive_timeout_s", c_num(lo=0.0), d.keepalive_timeout_s),
        max_connections=o.get("max_connections", pos, d.max_connections),
        max_connections_per_ip=o.get("max_connections_per_ip", c_int(lo=0), d.max_connections_per_ip),
    )


# --- redis ----------------------------------------------------------------------------------

def _redis_url_error(url: str) -> str | None:
    try:
        u = urlsplit(url)
        u.port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if u.scheme not in ("redis", "rediss", "unix"):
        return "scheme must be redis://, rediss:// or unix://"
    if u.scheme == "unix":
        return None if u.path else "unix:// URL needs a socket path"
    if not u.hostname or not valid_host(u.hostname):
        return "invalid host in redis URL"
    db = u.path.lstrip("/")
    if db and not db.isdigit():
        return f"database must be a number, got {db!r}"
    return None


def parse_redis(ctx, e, path, v):
    o = Obj(e, path, v, ("url", "cluster_nodes", "timeout_ms", "connect_timeout_ms",
                         "on_error"))
    url = o.get("url", c_str(max_len=4096), None)
    if url is not None:
        err = _redis_url_error(url)
        if err:
            e.add(o.p("url"), err)
    nodes = o.get("cluster_nodes", c_list(c_hostport, nonempty=True, unique=True), None)
    if o.ok and o.has("url") == o.has("cluster_nodes"):
        e.add(path, "needs exactly one of url, cluster_nodes")
    return S.Redis(url=url, cluster_nodes=nodes,
                   timeout_ms=o.get("timeout_ms", c_int(gt=0, hi=60000), 50),
                   on_error=o.get("on_error", c_str(("allow", "deny")), "allow"),
                   connect_timeout_ms=o.get("connect_timeout_ms", c_int(gt=0, hi=60000),
                                            1000))


# --- logging --------------------------------------------------------------------------------

def parse_logging(ctx, e, path, v) -> S.Logging:
    o = Obj(e, path, v, ("access_log", "redact_headers"))
    access = o.get("access_log", partial(c_access_log, ctx), "stdout")
    redact = o.get("redact_headers", c_list(c_header_name(), unique=True),
                   list(S.DEFAULT_REDACT_HEADERS))
    return S.Logging(access_log=access, redact_headers=redact)


def c_access_log(ctx, e, path, v):
    if v is False:
        return "off"  # YAML 1.1 habits: `access_log: false`
    if not isinstance(v, str) or not v:
        e.add(path, f"expected stdout, off or a file path, got {tname(v)}")
        return None
    if v in ("stdout", "off"):
        return v
    full = os.path.normpath(v if os.path.isabs(v) else os.path.join(ctx.base_dir, v))
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        e.add(path, f"directory does not exist: {parent}")
        return None
    if os.path.isdir(full):
        e.add(path, f"is a directory: {full}")
        return None
    return full
