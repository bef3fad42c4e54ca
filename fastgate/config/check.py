"""Validation toolkit: an error collector and typed readers that never stop at the first error.

Each reader returns the converted value, or None after recording an error at its key path, so
one pass over a document reports every mistake. ``None`` in the YAML (``key:`` / ``~``) counts
as absent.
"""
from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, Callable, Iterable

from .source import EnvStr, Path

REQUIRED = object()

Conv = Callable[["Errors", Path, Any], Any]


class Errors:
    __slots__ = ("items",)

    def __init__(self):
        self.items: list[tuple[Path, str]] = []

    def add(self, path: Path, msg: str) -> None:
        self.items.append((path, msg))

    def __len__(self):
        return len(self.items)


def tname(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "mapping"
    return type(v).__name__


class Obj:
    """A mapping in the document with a fixed set of allowed keys."""

    __slots__ = ("e", "path", "d", "ok")

    def __init__(self, e: Errors, path: Path, value: Any, keys: Iterable[str]):
        self.e = e
        self.path = path
        keys = tuple(keys)
        if not isinstance(value, dict):
            e.add(path, f"expected a mapping, got {tname(value)}")
            self.d: dict = {}
            self.ok = False
            return
        self.d = value
        self.ok = True
        for k in value:
            if not isinstance(k, str):
                e.add(path, f"keys must be strings, got {tname(k)} {k!r}")
            elif k not in keys:
                import difflib   # only for a config with an unknown key
                close = difflib.get_close_matches(k, keys, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                e.add(path + (k,), f"unknown key{hint}")

    def has(self, key: str) -> bool:
        return self.d.get(key) is not None

    def p(self, key: str) -> Path:
        return self.path + (key,)

    def get(self, key: str, conv: Conv, default: Any = REQUIRED) -> Any:
        val = self.d.get(key)
        if val is None:
            if default is REQUIRED:
                if self.ok:
                    self.e.add(self.path + (key,), "required")
                return None
            return default
        out = conv(self.e, self.path + (key,), val)
        if out is None and default is not REQUIRED:
            # Already reported; the default keeps later cross-checks on well-typed ground
            # (the Config is never returned while errors exist).
            return default
        return out


# --- scalar converters (factories return Conv) ---------------------------------------------

_INT_TEXT = re.compile(r"^[-+]?[0-9]+$")
_NUM_TEXT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def _num(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _range_msg(v, lo, hi, gt) -> str | None:
    if gt is not None and not v > gt:
        return f"must be > {_num(gt)}"
    if lo is not None and v < lo:
        return f"must be >= {_num(lo)}"
    if hi is not None and v > hi:
        return f"must be <= {_num(hi)}"
    return None


def c_int(lo=None, hi=None, gt=None) -> Conv:
    def conv(e, path, v):
        if isinstance(v, EnvStr) and _INT_TEXT.match(v.strip()):
            v = int(v.strip())
        if isinstance(v, float) and v.is_integer() and math.isfinite(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            e.add(path, f"expected an integer, got {tname(v)}")
            return None
        msg = _range_msg(v, lo, hi, gt)
        if msg:
            e.add(path, msg)
            return None
        return v
    return conv


def c_num(lo=None, hi=None, gt=None) -> Conv:
    def conv(e, path, v):
        if isinstance(v, EnvStr) and _NUM_TEXT.match(v.strip()):
            v = float(v.strip())
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            e.add(path, f"expected a number, got {tname(v)}")
            return None
        v = float(v)
        if not math.isfinite(v):
            e.add(path, "must be a finite number")
            return None
        msg = _range_msg(v, lo, hi, gt)
        if msg:
            e.add(path, msg)
            return None
        return v
    return conv


def c_bool(e, path, v):
    if isinstance(v, EnvStr) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    if not isinstance(v, bool):
        e.add(path, f"expected true or false, got {tname(v)}")
        return None
    return v


def _has_ctl(s: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in s)


def c_str(choices: Iterable[str] | None = None, *, empty=False, pattern: re.Pattern | None = None,
          what: str | None = None, ctl=False, lower=False, max_len: int | None = None) -> Conv:
    """A string. ``ctl``: allow control characters (free text like prompts, bodies)."""
    choices = tuple(choices) if choices is not None else None

    def conv(e, path, v):
        if not isinstance(v, str):
            e.add(path, f"expected a string, got {tname(v)}")
            return None
        s = str(v)
        if lower:
            s = s.lower()
        if choices is not None:
            if s not in choices:
                e.add(path, f"must be one of {' | '.join(choices)}, got {s!r}")
                return None
            return s
        if not s and not empty:
            e.add(path, "must not be empty")
            return None
        if not ctl and _has_ctl(s):
            e.add(path, "must not contain control characters")
            return None
        if max_len is not None and len(s) > max_len:
            e.add(path, f"longer than {max_len} characters")
            return None
        if pattern is not None and s and not pattern.match(s):
            e.add(path, f"expected {what or 'a valid value'}, got {s!r}")
            return None
        return s
    return conv


def c_list(item: Conv, *, nonempty=False, unique=False, key=None) -> Conv:
    """A list; a single scalar is NOT promoted (``methods: GET`` is an error, not [GET])."""
    def conv(e, path, v):
        if not isinstance(v, list):
            e.add(path, f"expected a list, got {tname(v)}")
            return None
        if nonempty and not v:
            e.add(path, "must not be empty")
            return None
        out = []
        seen: dict = {}
        for i, x in enumerate(v):
            if x is None:
                e.add(path + (i,), "must not be null")
                continue
            c = item(e, path + (i,), x)
            if c is None:
                continue
            if unique:
                k = key(c) if key else c
                try:
                    if k in seen:
                        e.add(path + (i,), f"duplicate of {_fmt_idx(path, seen[k])}")
                        continue
                    seen[k] = i
                except TypeError:
                    pass
            out.append(c)
        return out
    return conv


def _fmt_idx(path: Path, i: int) -> str:
    from .source import format_path
    return format_path(path + (i,), "")


def c_map(key: Conv, value: Conv, *, fold=False) -> Conv:
    """A free-form mapping (keys are data, e.g. header names), converted key by key.
    ``fold``: keys differing only in case are duplicates (header names)."""
    def conv(e, path, v):
        if not isinstance(v, dict):
            e.add(path, f"expected a mapping, got {tname(v)}")
            return None
        out = {}
        folded: dict = {}
        for k, x in v.items():
            kp = path + (k,) if isinstance(k, str) else path
            ck = key(e, kp, k) if isinstance(k, str) else None
            if not isinstance(k, str):
                e.add(path, f"keys must be strings, got {tname(k)} {k!r}")
            if x is None:
                e.add(kp, "must not be null")
                continue
            cx = value(e, kp, x)
            if ck is not None and cx is not None:
                fk = ck.lower() if fold else ck
                if fk in folded:
                    e.add(kp, f"duplicate of {folded[fk]!r} (names are case-insensitive)")
                    continue
                folded[fk] = k
                out[ck] = cx
        return out
    return conv


# --- network-ish values ---------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def valid_hostname(h: str) -> bool:
    if not h or len(h) > 253:
        return False
    h = h[:-1] if h.endswith(".") else h
    return all(_LABEL.match(label) for label in h.lower().split("."))


def valid_host(h: str) -> bool:
    """Hostname, IPv4 or (unbracketed) IPv6 literal."""
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        return ":" not in h and valid_hostname(h)


def parse_hostport(s: str) -> tuple[str, int] | str:
    """``host:port`` / ``[v6]:port`` -> (host, port), or an error message."""
    bad = f"expected host:port (IPv6 as [::1]:8080), got {s!r}"
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":":
            return bad
        host, port = s[1:end], s[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in brackets is not an IPv6 address"
    else:
        host, sep, port = s.rpartition(":")
        if not sep or not host:
            return bad
        if ":" in host:
            return f"IPv6 addresses need brackets, e.g. [{host}]:{port}"
        if not valid_host(host):
            return f"invalid host {host!r}"
    if not port.isascii() or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return f"invalid port {port!r} (0-65535)"
    return host, int(port)


def c_hostport(e, path, v):
    if isinstance(v, int) and not isinstance(v, bool):
        e.add(path, f"expected host:port, got a bare port {v} (write 0.0.0.0:{v} or 127.0.0.1:{v})")
        return None
    if not isinstance(v, str):
        e.add(path, f"expected host:port, got {tname(v)}")
        return None
    r = parse_hostport(v.strip())
    if isinstance(r, str):
        e.add(path, r)
        return None
    return r


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


def c_header_name(lower=True) -> Conv:
    def conv(e, path, v):
        if not isinstance(v, str):
            e.add(path, f"expected a header name, got {tname(v)}")
            return None
        if not _TOKEN.match(v):
            e.add(path, f"invalid header name {v!r}")
            return None
        return v.lower() if lower else v
    return conv


def c_header_value(e, path, v):
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        e.add(path, f"expected a string, got {tname(v)}")
        return None
    s = v if isinstance(v, str) else str(v)
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in s):
        e.add(path, "header values must not contain control characters (CR, LF, NUL, ...)")
        return None
    if s != s.strip(" \t"):
        e.add(path, "header values must not start or end with whitespace")
        return None
    return str(s)
