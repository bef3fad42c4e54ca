"""Value converters shared by the core sections and the policies' config parsers.

Each ``c_*`` is a converter in the sense of check.py: ``(errors, path, value) -> converted``,
or None after recording an error at ``path``. Names, paths, hosts, methods, URLs, header
names the gateway manages, and the ``by:`` key sources of limits and budgets.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from .check import c_num, c_str, tname, valid_host, valid_hostname

_METHOD = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PCHAR = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+:/-]*$")


def c_name(what: str):
    """A name (consumer, group, route, upstream, authenticator, provider): safe in headers,
    logs and metric labels."""
    return c_str(pattern=_NAME, what=f"{what} (letters, digits, . _ - @ + : / ; no spaces)",
                 max_len=200)


def path_params(path: str) -> list[str]:
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


QUERY_NAME = re.compile(r"^[A-Za-z0-9\-._~!$'()*+,;:@/?]+$")

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


PER_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


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


