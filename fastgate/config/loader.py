"""Config loading: read (YAML/JSON), substitute ${VAR}, validate everything, build ``Config``.

Every problem is collected with its key path and reported together, sorted in document order;
a ``Config`` is only returned when there are none. See schema.py for the resulting model.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from . import schema as S
from .check import (REQUIRED, Errors, Obj, c_bool, c_header_name, c_header_value, c_hostport,
                    c_int, c_list, c_map, c_num, c_str, tname, valid_host, valid_hostname)
from .features import unsupported_paths
from .source import (SourceProblem, decode, deep_copy_plain, document_order, format_path,
                     substitute)


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
        resolved = substitute(tree, env, subst_problems)
        raw = deep_copy_plain(tree)
    except SourceProblem as exc:
        raise ConfigError(exc.errors) from None

    e = Errors()
    cfg = _Builder(e, base_dir, source).config(resolved, raw)
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
        line = f"{p}: {m}"
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


# --- value helpers --------------------------------------------------------------------------

PER_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_METHOD = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PCHAR = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+:/-]*$")


def _c_name(what: str):
    return c_str(pattern=_NAME, what=f"{what} (letters, digits, . _ - @ + : / ; no spaces)",
                 max_len=200)


def _path_params(path: str) -> list[str]:
    return [m.group(1) for seg in path.split("/") if (m := _PARAM.match(seg))]


def c_route_path(e, path, v):
    """"/exact", "/a/{param}/b", "/prefix/*"."""
    if not isinstance(v, str):
        e.add(path, f"expected a path string, got {tname(v)}")
        return None
    if not v.startswith("/"):
        e.add(path, f"must start with '/', got {v!r}")
        return None
    if "?" in v or "#" in v:
        e.add(path, "must not contain a query or fragment")
        return None
    segs = v.split("/")[1:]
    names: list[str] = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "":
            if last:
                continue  # "/" and "/dir/" are valid exact paths
            e.add(path, f"empty segment ('//') in {v!r}")
            return None
        if seg in (".", ".."):
            e.add(path, f"dot segment {seg!r} in {v!r}")
            return None
        if seg == "*":
            if not last:
                e.add(path, f"'*' is only allowed as the whole last segment ('/prefix/*'), in {v!r}")
                return None
            continue
        m = _PARAM.match(seg)
        if m:
            if m.group(1) in names:
                e.add(path, f"parameter {{{m.group(1)}}} used twice in {v!r}")
                return None
            names.append(m.group(1))
            continue
        if "{" in seg or "}" in seg:
            e.add(path, f"a {{param}} must be a whole segment named like an identifier, in {v!r}")
            return None
        if "*" in seg:
            e.add(path, f"'*' is only allowed as the whole last segment ('/prefix/*'), in {v!r}")
            return None
        if not _PCHAR.match(seg):
            e.add(path, f"invalid character in path {v!r}")
            return None
    return v


def c_route_host(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected a host name, got {tname(v)}")
        return None
    h = v.lower()
    if h.startswith("[") and h.endswith("]"):
        if not valid_host(h[1:-1]) or ":" not in h:
            e.add(path, f"invalid host {v!r}")
            return None
        return h
    name = h[2:] if h.startswith("*.") else h
    if not valid_hostname(name) and not (h == name and valid_host(name)):
        e.add(path, f"invalid host {v!r} (a name, an IP, or '*.' followed by a name)")
        return None
    return h


def c_method(e, path, v):
    if not isinstance(v, str) or not _METHOD.match(v):
        e.add(path, f"expected an HTTP method, got {v!r}")
        return None
    if v != v.upper():
        e.add(path, f"methods are upper-case: {v.upper()!r}, not {v!r}")
        return None
    return v


def c_prefix(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected a path prefix, got {tname(v)}")
        return None
    if not v.startswith("/") or "{" in v or "*" in v or "?" in v or "#" in v:
        e.add(path, f"must be a plain path prefix starting with '/', got {v!r}")
        return None
    if not all(_PCHAR.match(s) for s in v.split("/")):
        e.add(path, f"invalid character in {v!r}")
        return None
    return v.rstrip("/") or "/"


def c_rewrite(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected a path, got {tname(v)}")
        return None
    if not v.startswith("/") or "?" in v or "#" in v:
        e.add(path, f"must be a path starting with '/', got {v!r}")
        return None
    for seg in v.split("/"):
        if _PARAM.match(seg):
            continue
        if "{" in seg or "}" in seg or not _PCHAR.match(seg) or "*" in seg:
            e.add(path, f"invalid rewrite {v!r}: use plain segments and whole-segment {{params}}")
            return None
    return v


def c_url(schemes=("http", "https")):
    def conv(e, path, v):
        if not isinstance(v, str):
            e.add(path, f"expected a URL, got {tname(v)}")
            return None
        r = parse_url(v, schemes)
        if isinstance(r, str):
            e.add(path, r)
            return None
        return v
    return conv


def parse_url(v: str, schemes=("http", "https")) -> tuple[str, str, int, str] | str:
    """URL -> (scheme, host, port, path) or an error message. No userinfo, query, fragment."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in v):
        return f"URL must not contain spaces or control characters: {v!r}"
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError as exc:
        return f"invalid URL {v!r}: {exc}"
    scheme = u.scheme.lower()
    if scheme not in schemes:
        return f"scheme must be {' or '.join(s + '://' for s in schemes)}, got {v!r}"
    if u.username is not None or u.password is not None:
        return "credentials in the URL are not allowed"
    if u.query or u.fragment or v.endswith("?") or v.endswith("#"):
        return f"URL must not have a query or fragment: {v!r}"
    host = u.hostname or ""
    if not host or not valid_host(host):
        return f"invalid host in URL {v!r}"
    if u.netloc.rsplit("@", 1)[-1].endswith(":"):
        return f"empty port in URL {v!r}"
    if port is None:
        port = 443 if scheme == "https" else 80
    p = u.path
    if p and not all(_PCHAR.match(s) for s in p.split("/")):
        return f"invalid character in URL path {v!r}"
    return scheme, host, port, p.rstrip("/")


def c_duration(gt=0, hi=None):
    return c_num(gt=gt, hi=hi)


# --- the builder ----------------------------------------------------------------------------

TOP_KEYS = ("listeners", "admin", "drain_timeout_s", "limits", "redis", "upstreams",
            "consumers", "auth", "routes", "logging", "ai")


class _Builder:
    def __init__(self, e: Errors, base_dir: str, source: str):
        self.e = e
        self.base_dir = base_dir
        self.source = source
        # document index of each element that made it into Config.listeners / Config.routes
        # (invalid ones are left out, so list positions alone would misname later errors)
        self.listener_index: list[int] = []
        self.route_index: list[int] = []

    def add(self, path, msg):
        self.e.add(path, msg)

    # files referenced by the config (certificates, JWKS, access log) ---------------------
    def c_file(self, e, path, v):
        if not isinstance(v, str) or not v:
            e.add(path, f"expected a file path, got {tname(v)}")
            return None
        full = v if os.path.isabs(v) else os.path.join(self.base_dir, v)
        full = os.path.normpath(full)
        if not os.path.isfile(full):
            e.add(path, f"file not found: {full}")
            return None
        if not os.access(full, os.R_OK):
            e.add(path, f"file not readable: {full}")
            return None
        return full

    # top level ------------------------------------------------------------------------------
    def config(self, d: dict, raw: dict) -> S.Config:
        o = Obj(self.e, (), d, TOP_KEYS)
        listeners = o.get("listeners", self.listeners)
        limits = self.limits(o.d.get("limits"))
        upstreams = o.get("upstreams", self.upstreams, {})
        logging = self.logging(o.d.get("logging"))
        routes = o.get("routes", lambda e, p, v: self.routes(p, v, upstreams, limits), [])
        cfg = S.Config(
            listeners=listeners or [],
            admin=o.get("admin", self.admin, None),
            drain_timeout_s=o.get("drain_timeout_s", c_num(lo=0.0), 20.0),
            limits=limits,
            redis=None,
            upstreams=upstreams or {},
            consumers=[],
            auth={},
            routes=routes or [],
            logging=logging,
            ai=None,
            raw=raw,
            source=self.source,
        )
        self.cross_checks(cfg)
        return cfg

    # listeners ------------------------------------------------------------------------------
    def listeners(self, e, path, v):
        if not isinstance(v, list):
            e.add(path, f"expected a list, got {tname(v)}")
            return None
        if not v:
            e.add(path, "at least one listener is required")
            return []
        out = []
        for i, item in enumerate(v):
            o = Obj(e, path + (i,), item, ("bind", "tls"))
            self.listener_index.append(i)
            hp = o.get("bind", c_hostport)
            tls = o.get("tls", self.tls, None)
            if hp is None:
                self.listener_index.pop()
            else:
                out.append(S.Listener(bind=o.d["bind"].strip(), host=hp[0], port=hp[1], tls=tls))
        return out

    def tls(self, e, path, v):
        o = Obj(e, path, v, ("cert_file", "key_file", "min_version", "client_ca_file",
                             "require_client_cert", "certificates"))
        cert = o.get("cert_file", self.c_file, None)
        key = o.get("key_file", self.c_file, None)
        if o.has("cert_file") != o.has("key_file"):
            e.add(o.p("key_file" if o.has("cert_file") else "cert_file"),
                  "cert_file and key_file go together")
        certs = o.get("certificates", c_list(self.certificate), [])
        if o.ok and not o.has("cert_file") and not o.has("key_file") and not o.d.get("certificates"):
            e.add(path, "needs cert_file + key_file, or a list under certificates")
        ca = o.get("client_ca_file", self.c_file, None)
        req = o.get("require_client_cert", c_bool, False)
        if req and not o.has("client_ca_file"):
            e.add(o.p("require_client_cert"), "needs client_ca_file to verify client certificates")
        return S.TLSConfig(cert_file=cert, key_file=key,
                           min_version=o.get("min_version", c_str(("TLSv1.2", "TLSv1.3")), "TLSv1.2"),
                           client_ca_file=ca, require_client_cert=bool(req),
                           certificates=certs or [])

    def certificate(self, e, path, v):
        o = Obj(e, path, v, ("cert_file", "key_file", "hosts"))
        return S.Certificate(cert_file=o.get("cert_file", self.c_file),
                             key_file=o.get("key_file", self.c_file),
                             hosts=o.get("hosts", c_list(c_route_host, unique=True), []))

    def admin(self, e, path, v):
        o = Obj(e, path, v, ("bind", "token"))
        hp = o.get("bind", c_hostport)
        token = o.get("token", c_str(max_len=4096))
        if hp is None:
            return None
        return S.Admin(bind=o.d["bind"].strip(), host=hp[0], port=hp[1], token=token)

    # limits ---------------------------------------------------------------------------------
    def limits(self, v) -> S.Limits:
        if v is None:
            return S.Limits()
        d = S.Limits()
        o = Obj(self.e, ("limits",), v, S.Limits.__dataclass_fields__)
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

    # upstreams ------------------------------------------------------------------------------
    def upstreams(self, e, path, v):
        if not isinstance(v, dict):
            e.add(path, f"expected a mapping of upstream names, got {tname(v)}")
            return None
        out = {}
        for name, item in v.items():
            if not isinstance(name, str):
                e.add(path, f"upstream names must be strings, got {name!r}")
                continue
            p = path + (name,)
            if _c_name("an upstream name")(e, p, name) is None:
                continue
            u = self.upstream(e, p, name, item)
            if u is not None:
                out[name] = u
        return out

    def upstream(self, e, path, name, v):
        o = Obj(e, path, v, ("targets", "balance", "hash_on", "connect_timeout_s",
                             "read_timeout_s", "keepalive", "retries", "health_check",
                             "tls_verify"))
        targets = o.get("targets", c_list(self.target, nonempty=True, unique=True,
                                          key=lambda t: (t.scheme, t.host, t.port, t.path)))
        balance = o.get("balance", c_str(("round_robin", "least_conn", "hash")), "round_robin")
        hash_on = o.get("hash_on", c_hash_on, None)
        if hash_on is not None and balance != "hash":
            e.add(o.p("hash_on"), "only used with balance: hash")
        if balance == "hash" and hash_on is None and not o.has("hash_on"):
            hash_on = S.HashOn("ip", None)
        if targets and len({t.scheme for t in targets}) > 1:
            pass  # mixing http and https targets is legal (migration); audit may flag it
        return S.Upstream(
            name=name,
            targets=targets or [],
            balance=balance,
            hash_on=hash_on,
            connect_timeout_s=o.get("connect_timeout_s", c_duration(), 3.0),
            read_timeout_s=o.get("read_timeout_s", c_duration(), 30.0),
            keepalive=o.get("keepalive", c_int(lo=0), 64),
            retries=o.get("retries", c_int(lo=0, hi=10), 1),
            health_check=o.get("health_check", self.health_check, None),
            tls_verify=o.get("tls_verify", c_bool, True),
        )

    def target(self, e, path, v):
        if isinstance(v, str):
            v = {"url": v}  # shorthand: targets: ["http://h:1"]
        o = Obj(e, path, v, ("url", "weight"))
        url = o.get("url", c_str())
        weight = o.get("weight", c_int(lo=1, hi=1000), 1)
        if url is None:
            return None
        r = parse_url(url)
        if isinstance(r, str):
            e.add(o.p("url"), r)
            return None
        scheme, host, port, p = r
        return S.Target(url=url, scheme=scheme, host=host, port=port, path=p, weight=weight or 1)

    def health_check(self, e, path, v):
        o = Obj(e, path, v, ("path", "interval_s", "timeout_s", "healthy_after", "unhealthy_after"))
        interval = o.get("interval_s", c_duration(), 5.0)
        timeout = o.get("timeout_s", c_duration(), 2.0)
        if interval is not None and timeout is not None and timeout > interval:
            e.add(o.p("timeout_s"), "must not exceed interval_s")
        return S.HealthCheck(
            path=o.get("path", c_rewrite, "/health"),
            interval_s=interval, timeout_s=timeout,
            healthy_after=o.get("healthy_after", c_int(lo=1, hi=100), 2),
            unhealthy_after=o.get("unhealthy_after", c_int(lo=1, hi=100), 3),
        )

    # routes ---------------------------------------------------------------------------------
    ROUTE_KEYS = ("name", "hosts", "methods", "paths", "upstream", "respond", "ai",
                  "strip_prefix", "rewrite", "preserve_host", "lifecycle", "auth",
                  "rate_limits", "transform", "waf", "cors", "ip", "budget", "max_body_bytes",
                  "timeout_s", "owner", "docs")

    def routes(self, path, v, upstreams, limits):
        if not isinstance(v, list):
            self.add(path, f"expected a list, got {tname(v)}")
            return None
        out = []
        for i, item in enumerate(v):
            r = self.route(path + (i,), i, item, upstreams, limits)
            if r is not None:
                out.append(r)
                self.route_index.append(i)
        return out

    def route(self, path, index, v, upstreams, limits):
        e = self.e
        o = Obj(e, path, v, self.ROUTE_KEYS)
        if not o.ok:
            return None
        name = o.get("name", _c_name("a route name"), f"route-{index}")
        paths = o.get("paths", c_list(c_route_path, nonempty=True, unique=True))
        kinds = [k for k in ("upstream", "respond", "ai") if o.has(k)]
        if not kinds:
            e.add(path, "needs one of upstream, respond, ai")
        elif len(kinds) > 1:
            e.add(o.p(kinds[1]), f"a route has exactly one of upstream, respond, ai "
                                 f"(also has {kinds[0]})")
        upstream = o.get("upstream", c_str(), None)
        if upstream is not None and upstreams is not None and upstream not in upstreams:
            known = ", ".join(sorted(upstreams)) or "none defined"
            e.add(o.p("upstream"), f"unknown upstream {upstream!r} (upstreams: {known})")
        for k in ("strip_prefix", "rewrite", "preserve_host"):
            if o.has(k) and kinds and kinds[0] != "upstream":
                e.add(o.p(k), f"only applies to routes with an upstream (this one has {kinds[0]})")
        rewrite = o.get("rewrite", c_rewrite, None)
        if rewrite is not None and paths:
            defined = {n for p in paths for n in _path_params(p)}
            for n in _path_params(rewrite):
                if n not in defined:
                    e.add(o.p("rewrite"), f"{{{n}}} is not a parameter of any path of this route")
        return S.Route(
            name=name,
            paths=paths or [],
            hosts=o.get("hosts", c_list(c_route_host, unique=True), []),
            methods=o.get("methods", c_list(c_method, unique=True), []),
            upstream=upstream,
            respond=o.get("respond", self.respond, None),
            ai=None,
            strip_prefix=o.get("strip_prefix", c_prefix, None),
            rewrite=rewrite,
            preserve_host=o.get("preserve_host", c_bool, False),
            max_body_bytes=o.get("max_body_bytes", c_int(lo=0), limits.max_body_bytes),
            timeout_s=o.get("timeout_s", c_duration(), None),
            owner=o.get("owner", c_str(max_len=200), None),
            docs=o.get("docs", c_str(max_len=2000), None),
        )

    def respond(self, e, path, v):
        o = Obj(e, path, v, ("status", "body", "headers"))
        status = o.get("status", c_int(lo=200, hi=599), 200)
        return S.Respond(
            status=status,
            body=o.get("body", c_str(empty=True, ctl=True), ""),
            headers=o.get("headers", c_map(c_header_name(lower=False), c_header_value), {}),
        )

    # logging --------------------------------------------------------------------------------
    def logging(self, v) -> S.Logging:
        if v is None:
            return S.Logging()
        o = Obj(self.e, ("logging",), v, ("access_log", "redact_headers"))
        access = o.get("access_log", self.c_access_log, "stdout")
        redact = o.get("redact_headers", c_list(c_header_name(), unique=True),
                       list(S.DEFAULT_REDACT_HEADERS))
        return S.Logging(access_log=access, redact_headers=redact)

    def c_access_log(self, e, path, v):
        if v is False:
            return "off"  # YAML 1.1 habits: `access_log: false`
        if not isinstance(v, str) or not v:
            e.add(path, f"expected stdout, off or a file path, got {tname(v)}")
            return None
        if v in ("stdout", "off"):
            return v
        full = os.path.normpath(v if os.path.isabs(v) else os.path.join(self.base_dir, v))
        parent = os.path.dirname(full)
        if not os.path.isdir(parent):
            e.add(path, f"directory does not exist: {parent}")
            return None
        if os.path.isdir(full):
            e.add(path, f"is a directory: {full}")
            return None
        return full

    # cross references -----------------------------------------------------------------------
    def cross_checks(self, cfg: S.Config) -> None:
        e = self.e
        li, ri = self.listener_index, self.route_index
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
        names: dict[str, int] = {}
        for k, r in enumerate(cfg.routes):
            i = ri[k]
            if r.name in names:
                e.add(("routes", i, "name"),
                      f"duplicate route name {r.name!r} (also routes[{names[r.name]}])")
            else:
                names[r.name] = i


def c_hash_on(e, path, v):
    r = parse_key_source(v, ("ip", "consumer", "header"))
    if isinstance(r, str):
        e.add(path, r)
        return None
    return S.HashOn(*r)


def parse_key_source(v, kinds) -> tuple[str, str | None] | str:
    """"consumer" | "ip" | "route" | "header:NAME" | "claim:NAME" -> (kind, name)."""
    choices = " | ".join(k + ":NAME" if k in ("header", "claim") else k for k in kinds)
    if not isinstance(v, str):
        return f"expected {choices}, got {tname(v)}"
    kind, sep, name = v.partition(":")
    if kind not in kinds or (kind in ("header", "claim")) != bool(sep):
        return f"expected {choices}, got {v!r}"
    if kind == "header":
        if not re.match(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", name):
            return f"invalid header name {name!r}"
        return kind, name.lower()
    if kind == "claim":
        if not name or any(ord(c) < 0x21 or ord(c) == 0x7F for c in name):
            return f"invalid claim name {name!r}"
        return kind, name
    return kind, None


_WILDCARDS = {"0.0.0.0", "::", ""}


def _binds_clash(h1: str, p1: int, h2: str, p2: int) -> bool:
    if p1 != p2 or p1 == 0:  # port 0 = each bind gets its own free port
        return False
    return h1.lower() == h2.lower() or h1 in _WILDCARDS or h2 in _WILDCARDS
