"""Config loading: read (YAML/JSON), substitute ${VAR}, validate everything, build ``Config``.

Every problem is collected with its key path and reported together, sorted in document order;
a ``Config`` is only returned when there are none. See schema.py for the resulting model.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
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
        if "%00" in seg:
            e.add(path, f"encoded NUL in path {v!r}")
            return None
    return v


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _canon_segment(seg: str) -> str:
    """A literal segment as the router compares it: unreserved %XX decoded, others upper-cased."""
    def repl(m):
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()
    return re.sub(r"%([0-9A-Fa-f]{2})", repl, seg)


def path_shape(path: str) -> tuple:
    """What the router sees of a pattern: params are anonymous, "/*" is a flag."""
    segs = path.split("/")[1:]
    star = bool(segs) and segs[-1] == "*"
    if star:
        segs = segs[:-1]
    return tuple("{}" if _PARAM.match(s) else _canon_segment(s) for s in segs), star


def host_key(host: str) -> str:
    h = host.lower().rstrip(".") if not host.startswith("[") else host.lower()
    if h.startswith("[") and h.endswith("]"):
        try:
            return "[" + ipaddress.IPv6Address(h[1:-1]).compressed + "]"
        except ValueError:
            return h
    return h


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


def c_probe_path(e, path, v):
    """A request target to send as-is: path plus optional query, printable ASCII."""
    if not isinstance(v, str) or not re.match(r"^/[\x21-\x7e]*$", v) or "#" in v:
        e.add(path, f"expected a path like /health (printable, no spaces), got {v!r}")
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


_QUERY_NAME = re.compile(r"^[A-Za-z0-9\-._~!$'()*+,;:@/?]+$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_TEMPLATE_VAR = re.compile(r"\{\{(.*?)\}\}", re.S)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JWT_ALGS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "ES512", "ES256K", "EdDSA")
PROVIDER_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai/v1",
    "openai_compatible": None,
}
# Framing and hop-by-hop headers belong to the proxy; letting a transform touch them would
# desynchronise message framing. X-Consumer-* is set by auth and must not be forgeable by config.
MANAGED_HEADERS = frozenset((
    "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
    "trailer", "proxy-connection", "x-consumer-name", "x-consumer-groups",
))
_LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def c_secure_url(e, path, v):
    """https URL; plain http only to loopback (tokens and JWKS must not be spoofable)."""
    if not isinstance(v, str):
        e.add(path, f"expected a URL, got {tname(v)}")
        return None
    r = parse_url(v)
    if isinstance(r, str):
        e.add(path, r)
        return None
    if r[0] == "http" and not is_loopback_host(r[1]):
        e.add(path, "must be https:// (plain http is only allowed to a loopback address)")
        return None
    return v


def c_base_url(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected a URL, got {tname(v)}")
        return None
    r = parse_url(v)
    if isinstance(r, str):
        e.add(path, r)
        return None
    return v.rstrip("/")


def c_api_key_hash(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected sha256:<64 hex digits>, got {tname(v)}")
        return None
    if not v.lower().startswith("sha256:"):
        # Never echo the value: it is most likely a plaintext key.
        e.add(path, "api keys are stored hashed: run `fastgate hash-key`, give it the key on "
                    "stdin, and put the sha256:<hex> it prints here")
        return None
    digest = v[7:].lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        e.add(path, "expected sha256: followed by 64 hex digits (output of `fastgate hash-key`)")
        return None
    return "sha256:" + digest


def c_jwt_alg(e, path, v):
    if isinstance(v, str) and v.lower() == "none":
        e.add(path, "'none' is never accepted: unsigned tokens would pass")
        return None
    if v not in JWT_ALGS:
        e.add(path, f"unsupported algorithm {v!r} (one of {', '.join(JWT_ALGS)})")
        return None
    return v


def c_managed_header(e, path, v):
    name = c_header_name()(e, path, v)
    if name is not None and name in MANAGED_HEADERS:
        e.add(path, f"{name} is managed by the gateway and cannot be transformed")
        return None
    return name


def _c_forward_header(e, path, v):
    name = c_header_name(lower=False)(e, path, v)
    if name is not None and name.lower() in MANAGED_HEADERS | {"host"}:
        e.add(path, f"{name} is managed by the gateway and cannot carry a claim")
        return None
    return name


c_forward_claims = c_map(c_str(max_len=256), _c_forward_header)  # claim -> header


def _c_scalar_text(conv):
    """Strings, and numbers/booleans as their text (`set_query: {v: 2}`)."""
    def wrapped(e, path, v):
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        return conv(e, path, v)
    return wrapped


def c_datetime(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected an RFC 3339 date-time like \"2027-06-30T00:00:00Z\", got {tname(v)}")
        return None
    try:
        d = _dt.datetime.fromisoformat(v)
    except ValueError:
        d = None
    if d is None or "T" not in v.upper():
        e.add(path, f"expected an RFC 3339 date-time like \"2027-06-30T00:00:00Z\", got {v!r}")
        return None
    if d.tzinfo is None:
        e.add(path, f"needs a time zone (Z or +hh:mm): {v!r}")
        return None
    return d.astimezone(_dt.timezone.utc)


def c_successor(e, path, v):
    if isinstance(v, str) and v.startswith("/"):
        return c_rewrite(e, path, v) if "{" not in v else (
            e.add(path, "must be a path or URL without {params}"))
    if isinstance(v, str) and "://" in v:
        return c_url()(e, path, v)
    e.add(path, f"expected a path starting with '/' or an http(s) URL, got {v!r}")
    return None


def c_origin(e, path, v):
    if v == "*":
        return v
    if not isinstance(v, str):
        e.add(path, f"expected an origin like https://app.example.com, got {tname(v)}")
        return None
    scheme, sep, rest = v.partition("://")
    host, _, port = rest.partition(":") if not rest.startswith("[") else (rest, "", "")
    name = host[2:] if host.startswith("*.") else host
    if scheme not in ("http", "https") or not sep or "/" in rest or not (
            valid_host(name) or (rest.startswith("[") and rest.endswith("]"))) or (
            port and not (port.isdigit() and 0 < int(port) < 65536)):
        e.add(path, f"expected an origin (scheme://host[:port], no path) or '*', got {v!r}")
        return None
    return v.lower()


def c_network(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected an IP address or CIDR, got {tname(v)}")
        return None
    try:
        return ipaddress.ip_network(v, strict=True)
    except ValueError:
        pass
    try:
        n = ipaddress.ip_network(v, strict=False)
        e.add(path, f"{v} has host bits set; did you mean {n}?")
    except ValueError:
        e.add(path, f"expected an IP address or CIDR like 10.0.0.0/8, got {v!r}")
    return None


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
        self.listeners_cfg: list[S.Listener] = []
        self.redis_cfg: S.Redis | None = None
        self.has_redis = False
        self.consumers_cfg: list[S.Consumer] = []
        self.auth_cfg: dict | None = {}
        self.ai_cfg: S.AI | None = None
        self.e_has_ai = False
        self.auth_names: set[str] = set()  # every name under auth, valid entry or not

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
        # Top-level "x-..." keys are ignored: the docker-compose convention for holding YAML
        # anchors (`x-timeouts: &t {...}` then `<<: *t`). They cannot be typos of real keys.
        o = Obj(self.e, (), d, TOP_KEYS + tuple(k for k in d if isinstance(k, str)
                                                and k.startswith("x-")))
        # Order matters only for cross references: routes look at everything before them.
        self.listeners_cfg = listeners = o.get("listeners", self.listeners) or []
        admin = o.get("admin", self.admin, None)
        limits = self.limits(o.d.get("limits"))
        self.redis_cfg = redis = o.get("redis", self.redis, None)
        self.has_redis = o.has("redis")
        upstreams = o.get("upstreams", self.upstreams, {})
        self.consumers_cfg = consumers = o.get("consumers", self.consumers, []) or []
        self.auth_cfg = auth = o.get("auth", self.auth, {})
        self.ai_cfg = ai = o.get("ai", self.ai, None)
        routes = o.get("routes", lambda e, p, v: self.routes(p, v, upstreams, limits), [])
        logging = self.logging(o.d.get("logging"))
        cfg = S.Config(
            listeners=listeners,
            admin=admin,
            drain_timeout_s=o.get("drain_timeout_s", c_num(lo=0.0), 20.0),
            limits=limits,
            redis=redis,
            upstreams=upstreams or {},
            consumers=consumers,
            auth=auth or {},
            routes=routes or [],
            logging=logging,
            ai=ai,
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
                             "tls_verify", "ca_file"))
        targets = o.get("targets", c_list(self.target, nonempty=True, unique=True,
                                          key=lambda t: (t.scheme, t.host, t.port, t.path)))
        balance = o.get("balance", c_str(("round_robin", "least_conn", "hash")), "round_robin")
        hash_on = o.get("hash_on", c_hash_on, None)
        if hash_on is not None and balance != "hash":
            e.add(o.p("hash_on"), "only used with balance: hash")
        if balance == "hash" and hash_on is None and not o.has("hash_on"):
            hash_on = S.HashOn("ip", None)
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
            ca_file=o.get("ca_file", self.c_file, None),
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
            path=o.get("path", c_probe_path, "/health"),
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
        kinds = [k for k in o.d if k in ("upstream", "respond", "ai") and o.has(k)]
        if not kinds:
            e.add(path, "needs one of upstream, respond, ai")
        elif len(kinds) > 1:
            e.add(o.p(kinds[1]), f"a route has exactly one of upstream, respond, ai "
                                 f"(also has {kinds[0]})")
        kind = kinds[0] if kinds else None
        upstream = o.get("upstream", c_str(), None)
        if upstream is not None and upstreams is not None and upstream not in upstreams:
            known = ", ".join(sorted(upstreams)) or "none defined"
            e.add(o.p("upstream"), f"unknown upstream {upstream!r} (upstreams: {known})")
        for k in ("strip_prefix", "rewrite", "preserve_host"):
            if o.has(k) and kind is not None and kind != "upstream":
                e.add(o.p(k), f"only applies to routes with an upstream (this one has {kind})")
        rewrite = o.get("rewrite", c_rewrite, None)
        if rewrite is not None and paths:
            defined = {n for p in paths for n in _path_params(p)}
            for n in _path_params(rewrite):
                if n not in defined:
                    e.add(o.p("rewrite"), f"{{{n}}} is not a parameter of any path of this route")
        methods = o.get("methods", c_list(c_method, unique=True), [])
        auth = o.get("auth", self.route_auth, None)
        auth_types = self._auth_types(auth)
        is_ai = kind == "ai"
        rate_limits = o.get("rate_limits", c_list(
            lambda e2, p2, v2: self.rate_limit(e2, p2, v2, auth_types, is_ai)), [])
        route_ai = o.get("ai", self.route_ai, None)
        budget = o.get("budget", lambda e2, p2, v2: self.budget(e2, p2, v2, auth_types), None)
        if budget is not None and o.has("budget"):
            if kind != "ai":
                e.add(o.p("budget"), "only applies to ai routes")
            elif route_ai is not None and self.ai_cfg is not None:
                allowed = self._route_models(route_ai)
                priced = {m.name for m in self.ai_cfg.models if m.price is not None}
                for m in allowed:
                    if m not in priced:
                        e.add(o.p("budget"), f"model {m!r} has no price, so its cost cannot "
                                             "count against a budget")
        return S.Route(
            name=name,
            paths=paths or [],
            hosts=o.get("hosts", c_list(c_route_host, unique=True), []),
            methods=methods or [],
            upstream=upstream,
            respond=o.get("respond", self.respond, None),
            ai=route_ai,
            strip_prefix=o.get("strip_prefix", c_prefix, None),
            rewrite=rewrite,
            preserve_host=o.get("preserve_host", c_bool, False),
            lifecycle=o.get("lifecycle", self.lifecycle, None),
            auth=auth,
            rate_limits=rate_limits or [],
            transform=o.get("transform", self.transform, None),
            waf=o.get("waf", self.waf, None),
            cors=o.get("cors", self.cors, None),
            ip=o.get("ip", self.ip_rules, None),
            budget=budget,
            max_body_bytes=o.get("max_body_bytes", c_int(lo=0), limits.max_body_bytes),
            timeout_s=o.get("timeout_s", c_duration(), None),
            owner=o.get("owner", c_str(max_len=200), None),
            docs=o.get("docs", c_str(max_len=2000), None),
        )

    def respond(self, e, path, v):
        o = Obj(e, path, v, ("status", "body", "headers"))
        status = o.get("status", c_int(lo=200, hi=599), 200)
        body = o.get("body", c_str(empty=True, ctl=True), "")
        if body and status in (204, 304):
            e.add(o.p("body"), f"a {status} response has no body")

        def header_name(e2, p2, v2):
            name = c_header_name(lower=False)(e2, p2, v2)
            if name is not None and name.lower() in MANAGED_HEADERS:
                e2.add(p2, f"{name} is set by the gateway (framing) and cannot be configured")
                return None
            return name

        return S.Respond(status=status, body=body,
                         headers=o.get("headers", c_map(header_name, c_header_value, fold=True), {}))

    # redis ----------------------------------------------------------------------------------
    def redis(self, e, path, v):
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

    # consumers ------------------------------------------------------------------------------
    def consumers(self, e, path, v):
        if not isinstance(v, list):
            e.add(path, f"expected a list, got {tname(v)}")
            return None
        out = []
        names: dict[str, int] = {}
        keys: dict[str, Path] = {}
        subjects: dict[str, Path] = {}
        for i, item in enumerate(v):
            p = path + (i,)
            o = Obj(e, p, item, ("name", "groups", "api_keys", "jwt_subjects"))
            name = o.get("name", _c_name("a consumer name"))
            if name is not None:
                if name in names:
                    e.add(o.p("name"), f"duplicate consumer name {name!r} "
                                       f"(also consumers[{names[name]}])")
                else:
                    names[name] = i
            groups = o.get("groups", c_list(_c_name("a group name"), unique=True), [])
            api_keys = o.get("api_keys", c_list(c_api_key_hash, unique=True), [])
            subs = o.get("jwt_subjects", c_list(c_str(max_len=1024), unique=True), [])
            for j, k in enumerate(api_keys or []):
                if k in keys:
                    e.add(o.p("api_keys") + (j,), "the same key is already given to "
                                                  f"{format_path(keys[k], '')}")
                keys.setdefault(k, o.p("api_keys") + (j,))
            for j, sub in enumerate(subs or []):
                if sub in subjects:
                    e.add(o.p("jwt_subjects") + (j,), f"subject {sub!r} already belongs to "
                                                      f"{format_path(subjects[sub], '')}")
                subjects.setdefault(sub, o.p("jwt_subjects") + (j,))
            if o.ok:
                out.append(S.Consumer(name=name, groups=groups or [], api_keys=api_keys or [],
                                      jwt_subjects=subs or []))
        return out

    # auth -----------------------------------------------------------------------------------
    AUTH_KEYS = {
        "jwt": ("type", "issuer", "audiences", "algorithms", "jwks_url", "jwks_file", "secret",
                "jwks_refresh_s", "clock_skew_s", "consumer_claim", "forward_claims"),
        "api_key": ("type", "header", "query", "bearer"),
        "introspection": ("type", "url", "client_id", "client_secret", "cache_ttl_s",
                          "timeout_s", "consumer_claim", "forward_claims"),
        "client_cert": ("type", "consumer_from"),
    }

    def auth(self, e, path, v):
        if not isinstance(v, dict):
            e.add(path, f"expected a mapping of authenticator names, got {tname(v)}")
            return None
        out = {}
        self.auth_names = {n for n in v if isinstance(n, str)}
        for name, item in v.items():
            if not isinstance(name, str):
                e.add(path, f"authenticator names must be strings, got {name!r}")
                continue
            p = path + (name,)
            if _c_name("an authenticator name")(e, p, name) is None:
                continue
            if not isinstance(item, dict):
                e.add(p, f"expected a mapping, got {tname(item)}")
                continue
            typ = Obj(e, p, {"type": item.get("type")}, ("type",)).get(
                "type", c_str(tuple(self.AUTH_KEYS)))
            if typ is None:
                continue
            o = Obj(e, p, item, self.AUTH_KEYS[typ])
            a = getattr(self, "auth_" + typ)(e, o, name)
            if a is not None:
                out[name] = a
        return out

    def auth_jwt(self, e, o: Obj, name):
        sources = [k for k in o.d if k in ("jwks_url", "jwks_file", "secret") and o.has(k)]
        if not sources:
            e.add(o.path, "needs one of jwks_url, jwks_file, secret")
        elif len(sources) > 1:
            e.add(o.p(sources[1]), f"give only one of jwks_url, jwks_file, secret "
                                   f"(also has {sources[0]})")
        secret = o.get("secret", c_str(max_len=4096), None)
        if secret is not None and len(secret.encode()) < 32:
            e.add(o.p("secret"), "HS secrets must be at least 32 bytes (RFC 7518 section 3.2)")
        symmetric = bool(sources) and sources[0] == "secret"
        default_algs = ["HS256"] if symmetric else ["RS256", "ES256"]
        algs = o.get("algorithms", c_list(c_jwt_alg, nonempty=True, unique=True), default_algs)
        if algs and sources and isinstance(o.d.get("algorithms"), list):
            for i, alg in enumerate(o.d["algorithms"]):  # document indices for the paths
                if alg not in algs:
                    continue
                if alg.startswith("HS") != symmetric:
                    e.add(o.p("algorithms") + (i,),
                          f"{alg} needs {'a secret' if alg.startswith('HS') else 'a JWKS'}; "
                          f"this authenticator has {sources[0]} (mixing HMAC and public-key "
                          "algorithms allows key-confusion attacks)")
        return S.JwtAuth(
            name=name,
            issuer=o.get("issuer", c_str(max_len=2048), None),
            audiences=o.get("audiences", c_list(c_str(max_len=2048), unique=True), []),
            algorithms=algs or [],
            jwks_url=o.get("jwks_url", c_secure_url, None),
            jwks_file=o.get("jwks_file", self.c_file, None),
            secret=secret,
            jwks_refresh_s=o.get("jwks_refresh_s", c_duration(), 300.0),
            clock_skew_s=o.get("clock_skew_s", c_num(lo=0.0, hi=3600.0), 30.0),
            consumer_claim=o.get("consumer_claim", c_str(max_len=256), "sub"),
            forward_claims=o.get("forward_claims", c_forward_claims, {}),
        )

    def auth_api_key(self, e, o: Obj, name):
        any_source = o.has("header") or o.has("query") or o.has("bearer")
        header = o.get("header", c_header_name(lower=False), None)
        query = o.get("query", c_str(pattern=_QUERY_NAME, what="a query parameter name",
                                     max_len=256), None)
        bearer = o.get("bearer", c_bool, False)
        if any_source and not o.has("header") and not o.has("query") and bearer is False:
            e.add(o.path, "needs header, query or bearer: true")
        if not any_source:
            header = "X-API-Key"
        return S.ApiKeyAuth(name=name, header=header, query=query, bearer=bool(bearer))

    def auth_introspection(self, e, o: Obj, name):
        if o.has("client_id") != o.has("client_secret"):
            e.add(o.p("client_secret" if o.has("client_id") else "client_id"),
                  "client_id and client_secret go together")
        return S.IntrospectionAuth(
            name=name,
            url=o.get("url", c_secure_url),
            client_id=o.get("client_id", c_str(max_len=1024), None),
            client_secret=o.get("client_secret", c_str(max_len=4096), None),
            cache_ttl_s=o.get("cache_ttl_s", c_num(lo=0.0), 60.0),
            timeout_s=o.get("timeout_s", c_duration(), 5.0),
            consumer_claim=o.get("consumer_claim", c_str(max_len=256), "sub"),
            forward_claims=o.get("forward_claims", c_forward_claims, {}),
        )

    def auth_client_cert(self, e, o: Obj, name):
        if not any(l.tls is not None and l.tls.client_ca_file for l in self.listeners_cfg):
            e.add(o.path, "client certificates are only verified on a listener with "
                          "tls.client_ca_file; none has one")
        return S.ClientCertAuth(name=name, consumer_from=o.get(
            "consumer_from", c_str(("subject_cn", "san_dns", "san_email", "san_uri")),
            "subject_cn"))

    def _auth_types(self, route_auth) -> set[str] | None:
        """Types of the authenticators a route uses; None when unknown (errors elsewhere)."""
        if route_auth is None:
            return set()
        if not self.auth_cfg or any(n not in self.auth_cfg for n in route_auth.using):
            return None
        return {self.auth_cfg[n].type for n in route_auth.using}

    def route_auth(self, e, path, v):
        o = Obj(e, path, v, ("using", "scopes", "groups", "mfa", "acr_values"))
        using = o.get("using", c_list(c_str(), nonempty=True, unique=True))
        if using and self.auth_cfg is not None:
            for i, n in enumerate(using):
                if n not in self.auth_names:
                    known = ", ".join(sorted(self.auth_names)) or "none defined"
                    e.add(o.p("using") + (i,), f"unknown authenticator {n!r} (auth: {known})")
        # Only judge when every authenticator is known and valid; otherwise errors elsewhere.
        resolved = bool(using) and bool(self.auth_cfg) and all(n in self.auth_cfg for n in using)
        types = {self.auth_cfg[n].type for n in using} if resolved else set()
        scopes = o.get("scopes", c_list(c_str(max_len=256), unique=True), [])
        groups = o.get("groups", c_list(_c_name("a group name"), unique=True), [])
        mfa = o.get("mfa", c_bool, False)
        acr = o.get("acr_values", c_list(c_str(max_len=1024), unique=True), [])
        if resolved and not types & {"jwt", "introspection"}:
            for k in ("scopes", "mfa"):
                if o.d.get(k):
                    e.add(o.p(k), "needs a jwt or introspection authenticator in using "
                                  "(api keys and client certificates carry no " +
                                  ("scopes)" if k == "scopes" else "authentication method)"))
        if acr and not mfa:
            e.add(o.p("acr_values"), "only used with mfa: true")
        return S.RouteAuth(using=using or [], scopes=scopes or [], groups=groups or [],
                           mfa=bool(mfa), acr_values=acr or [])

    # rate limits and budgets ----------------------------------------------------------------
    def _by(self, e, o: Obj, auth_types, kinds=("consumer", "ip", "route", "header", "claim")):
        default = "consumer" if auth_types or auth_types is None else "ip"
        by = o.d.get("by")
        if by is None:
            by = default
        r = parse_key_source(by, kinds)
        if isinstance(r, str):
            e.add(o.p("by"), r)
            return by, None, None
        kind, name = r
        if kind == "consumer" and auth_types is not None and not auth_types:
            e.add(o.p("by"), "by: consumer needs auth on this route (without it there is no "
                             "consumer; use by: ip)")
        if kind == "claim" and auth_types is not None and not auth_types & {"jwt", "introspection"}:
            e.add(o.p("by"), "by: claim:NAME needs a jwt or introspection authenticator on "
                             "this route")
        return by, kind, name

    def rate_limit(self, e, path, v, auth_types, is_ai):
        o = Obj(e, path, v, ("limit", "per", "burst", "by", "scope", "unit"))
        limit = o.get("limit", c_int(gt=0))
        per = o.get("per", c_str(tuple(PER_SECONDS)))
        burst = o.get("burst", c_int(gt=0), limit)
        if limit is not None and burst is not None and burst < limit:
            e.add(o.p("burst"), f"must be >= limit ({limit}): burst is the bucket size")
        by, kind, name = self._by(e, o, auth_types)
        scope = o.get("scope", c_str(("local", "cluster")), "local")
        if scope == "cluster" and not self.has_redis:
            e.add(o.p("scope"), "scope: cluster needs the top-level redis section")
        unit = o.get("unit", c_str(("requests", "tokens")), "requests")
        if unit == "tokens" and not is_ai:
            e.add(o.p("unit"), "unit: tokens only applies to ai routes")
        return S.RateLimit(limit=limit, per=per, per_s=PER_SECONDS.get(per), burst=burst,
                           by=by, by_kind=kind, by_name=name, scope=scope, unit=unit)

    def budget(self, e, path, v, auth_types):
        o = Obj(e, path, v, ("usd", "per", "by"))
        per = o.get("per", c_str(tuple(PER_SECONDS)))
        by, kind, name = self._by(e, o, auth_types)
        return S.Budget(usd=o.get("usd", c_num(gt=0)), per=per, per_s=PER_SECONDS.get(per),
                        by=by, by_kind=kind, by_name=name)

    # route: ai ------------------------------------------------------------------------------
    def _model_names(self) -> set[str] | None:
        return None if self.ai_cfg is None else {m.name for m in self.ai_cfg.models}

    def _route_models(self, route_ai: S.RouteAI) -> list[str]:
        if route_ai.prompt is not None:
            return [route_ai.prompt.model] if route_ai.prompt.model else []
        if route_ai.models is not None:
            return route_ai.models
        return sorted(self._model_names() or ())

    def _check_model(self, e, path, name):
        known = self._model_names()
        if known is not None and name not in known:
            e.add(path, f"unknown model {name!r} (ai.models: {', '.join(sorted(known)) or 'none'})")

    def route_ai(self, e, path, v):
        o = Obj(e, path, v, ("endpoint", "models", "prompt"))
        if o.ok and self.ai_cfg is None and not self.e_has_ai:
            e.add(path, "ai routes need the top-level ai section (providers and models)")
        if o.ok and o.has("endpoint") == o.has("prompt"):
            e.add(path, "needs exactly one of endpoint, prompt")
        if o.has("models") and o.has("prompt"):
            e.add(o.p("models"), "only used with endpoint (a prompt names its model)")
        models = o.get("models", c_list(c_str(), nonempty=True, unique=True), None)
        for i, m in enumerate(models or []):
            self._check_model(e, o.p("models") + (i,), m)
        return S.RouteAI(endpoint=o.get("endpoint", c_str(("chat",)), None), models=models,
                         prompt=o.get("prompt", self.prompt, None))

    def prompt(self, e, path, v):
        o = Obj(e, path, v, ("model", "system", "template", "max_tokens", "temperature"))
        model = o.get("model", c_str())
        if model is not None:
            self._check_model(e, o.p("model"), model)
        template = o.get("template", c_str(ctl=True, max_len=100_000))
        variables: list[str] = []
        if template is not None:
            for m in _TEMPLATE_VAR.finditer(template):
                var = m.group(1).strip()
                if not _IDENT.match(var):
                    e.add(o.p("template"), f"malformed placeholder {m.group(0)!r}: use "
                                           "{{name}} (letters, digits, _)")
                elif var not in variables:
                    variables.append(var)
        return S.Prompt(model=model, template=template,
                        system=o.get("system", c_str(ctl=True, max_len=100_000), None),
                        variables=variables,
                        max_tokens=o.get("max_tokens", c_int(gt=0), None),
                        temperature=o.get("temperature", c_num(lo=0.0, hi=2.0), None))

    # route: lifecycle, transform, waf, cors, ip ---------------------------------------------
    def lifecycle(self, e, path, v):
        o = Obj(e, path, v, ("state", "sunset", "successor", "deprecated_at"))
        state = o.get("state", c_str(("published", "deprecated", "retired")), "published")
        successor = o.get("successor", c_successor, None)
        return S.Lifecycle(state=state, sunset=o.get("sunset", c_datetime, None),
                           sunset_raw=o.d.get("sunset") if o.has("sunset") else None,
                           successor=successor,
                           deprecated_at=o.get("deprecated_at", c_datetime, None))

    def transform(self, e, path, v):
        o = Obj(e, path, v, ("request", "response"))
        hv = c_header_value
        qn = c_str(pattern=_QUERY_NAME, what="a query parameter name", max_len=256)
        qv = c_str(empty=True, max_len=4096)

        def request(e2, p2, v2):
            r = Obj(e2, p2, v2, S.RequestTransform.__dataclass_fields__)
            return S.RequestTransform(
                set_headers=r.get("set_headers", c_map(c_managed_header, hv), {}),
                add_headers=r.get("add_headers", c_map(c_managed_header, hv), {}),
                remove_headers=r.get("remove_headers", c_list(c_managed_header, unique=True), []),
                rename_headers=r.get("rename_headers", c_map(c_managed_header, c_managed_header), {}),
                set_query=r.get("set_query", c_map(qn, _c_scalar_text(qv)), {}),
                remove_query=r.get("remove_query", c_list(qn, unique=True), []),
            )

        def response(e2, p2, v2):
            r = Obj(e2, p2, v2, S.ResponseTransform.__dataclass_fields__)
            return S.ResponseTransform(
                set_headers=r.get("set_headers", c_map(c_managed_header, hv), {}),
                remove_headers=r.get("remove_headers", c_list(c_managed_header, unique=True), []),
            )

        return S.Transform(request=o.get("request", request, S.RequestTransform()),
                           response=o.get("response", response, S.ResponseTransform()))

    def waf(self, e, path, v):
        o = Obj(e, path, v, ("mode", "rules"))
        return S.Waf(mode=o.get("mode", c_str(("block", "monitor")), "block"),
                     rules=o.get("rules", c_list(c_str(S.WAF_RULES), nonempty=True, unique=True),
                                 list(S.WAF_RULES)))

    def cors(self, e, path, v):
        o = Obj(e, path, v, ("origins", "methods", "headers", "expose_headers", "credentials",
                             "max_age_s"))
        origins = o.get("origins", c_list(c_origin, nonempty=True, unique=True))
        credentials = o.get("credentials", c_bool, False)
        if credentials and origins and "*" in origins:
            e.add(o.p("credentials"), "browsers refuse credentials with origin '*'; "
                                      "list the origins")
        return S.Cors(origins=origins or [],
                      methods=o.get("methods", c_list(c_method, nonempty=True, unique=True), None),
                      headers=o.get("headers", c_list(c_header_name(lower=False), unique=True), []),
                      expose_headers=o.get("expose_headers",
                                           c_list(c_header_name(lower=False), unique=True), []),
                      credentials=bool(credentials),
                      max_age_s=o.get("max_age_s", c_int(lo=0, hi=86400), 600))

    def ip_rules(self, e, path, v):
        o = Obj(e, path, v, ("allow", "deny"))
        if o.ok and not o.d.get("allow") and not o.d.get("deny"):
            e.add(path, "needs allow and/or deny")
        return S.IPRules(allow=o.get("allow", c_list(c_network, unique=True), []),
                         deny=o.get("deny", c_list(c_network, unique=True), []))

    # ai -------------------------------------------------------------------------------------
    def ai(self, e, path, v):
        self.e_has_ai = True
        o = Obj(e, path, v, ("providers", "models"))
        providers = o.get("providers", self.providers)
        models = o.get("models", lambda e2, p2, v2: self.models(e2, p2, v2, providers))
        if providers is None or models is None:
            return None
        return S.AI(providers=providers, models=models)

    def providers(self, e, path, v):
        if not isinstance(v, dict):
            e.add(path, f"expected a mapping of provider names, got {tname(v)}")
            return None
        if not v:
            e.add(path, "at least one provider is required")
        out = {}
        for name, item in v.items():
            if not isinstance(name, str):
                e.add(path, f"provider names must be strings, got {name!r}")
                continue
            p = path + (name,)
            if _c_name("a provider name")(e, p, name) is None:
                continue
            o = Obj(e, p, item, ("type", "base_url", "api_key", "connect_timeout_s",
                                 "read_timeout_s", "tls_verify"))
            typ = o.get("type", c_str(tuple(PROVIDER_URLS)))
            base = o.get("base_url", c_base_url, PROVIDER_URLS.get(typ))
            if typ == "openai_compatible" and not o.has("base_url"):
                e.add(o.p("base_url"), "required for type openai_compatible")
            api_key = o.get("api_key", c_str(max_len=4096),
                            REQUIRED if typ not in (None, "openai_compatible") else None)
            if o.ok:
                out[name] = S.Provider(
                    name=name, type=typ, base_url=base, api_key=api_key,
                    connect_timeout_s=o.get("connect_timeout_s", c_duration(), 5.0),
                    read_timeout_s=o.get("read_timeout_s", c_duration(), 300.0),
                    tls_verify=o.get("tls_verify", c_bool, True))
        return out

    def models(self, e, path, v, providers):
        if not isinstance(v, list):
            e.add(path, f"expected a list, got {tname(v)}")
            return None
        if not v:
            e.add(path, "at least one model is required")
        out = []
        names: dict[str, int] = {}
        for i, item in enumerate(v):
            p = path + (i,)
            o = Obj(e, p, item, ("name", "provider", "model", "price", "fallbacks"))
            name = o.get("name", c_str(pattern=_MODEL_NAME, what="a model name", max_len=200))
            if name is not None:
                if name in names:
                    e.add(o.p("name"), f"duplicate model name {name!r} (also ai.models[{names[name]}])")
                names.setdefault(name, i)
            prov = o.get("provider", c_str())
            if prov is not None and providers is not None and prov not in providers:
                e.add(o.p("provider"), f"unknown provider {prov!r} "
                                       f"(ai.providers: {', '.join(sorted(providers)) or 'none'})")

            def price(e2, p2, v2):
                po = Obj(e2, p2, v2, ("input_per_1k", "output_per_1k"))
                return S.Price(input_per_1k=po.get("input_per_1k", c_num(lo=0.0)),
                               output_per_1k=po.get("output_per_1k", c_num(lo=0.0)))

            out.append(S.Model(
                name=name, provider=prov,
                model=o.get("model", c_str(max_len=512)),
                price=o.get("price", price, None),
                fallbacks=o.get("fallbacks", c_list(c_str(), unique=True), []),
            ))
        all_names = {m.name for m in out}
        for i, m in enumerate(out):
            for j, fb in enumerate(m.fallbacks or []):
                fp = path + (i, "fallbacks", j)
                if fb == m.name:
                    e.add(fp, "a model cannot be its own fallback")
                elif fb not in all_names:
                    e.add(fp, f"unknown model {fb!r}")
        return out

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
        self.route_conflicts(cfg)

    def route_conflicts(self, cfg: S.Config) -> None:
        """Two routes the router could not order (same host entry, same path shape, same
        method) are rejected there one at a time; finding them all here lets `check` list them.
        """
        claimed: dict[tuple, tuple[int, int, str]] = {}
        for k, r in enumerate(cfg.routes):
            i = self.route_index[k]
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
                        self.e.add(("routes", i, "paths", j),
                                   f"{p!r} conflicts with routes[{oi}].paths[{oj}] ({op!r}): "
                                   f"both claim {m or 'any method'} on "
                                   f"{'host ' + repr(h) if h else 'any host'}")
                        break


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
