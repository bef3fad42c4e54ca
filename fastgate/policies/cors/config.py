"""Config of `routes[].cors` (handler: fastgate.policies.cors).

Cors(origins: list[str], methods: list[str]|None [None = the route's methods, or all],
     headers: list[str], expose_headers: list[str], credentials=False, max_age_s=600)
  origins lower-cased, "*" allowed (never together with credentials).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastgate.config.check import Obj, c_bool, c_header_name, c_int, c_list, tname, valid_host
from fastgate.config.sections import RouteKey
from fastgate.config.values import c_method

__all__ = ("Cors", "parse_cors", "c_origin")


@dataclass(frozen=True, slots=True)
class Cors:
    origins: list[str]
    methods: list[str] | None = None
    headers: list[str] = field(default_factory=list)
    expose_headers: list[str] = field(default_factory=list)
    credentials: bool = False
    max_age_s: int = 600


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


def parse_cors(ctx, e, path, v):
    o = Obj(e, path, v, ("origins", "methods", "headers", "expose_headers", "credentials",
                         "max_age_s"))
    origins = o.get("origins", c_list(c_origin, nonempty=True, unique=True))
    credentials = o.get("credentials", c_bool, False)
    if credentials and origins and "*" in origins:
        e.add(o.p("credentials"), "browsers refuse credentials with origin '*'; "
                                  "list the origins")
    return Cors(origins=origins or [],
                methods=o.get("methods", c_list(c_method, nonempty=True, unique=True), None),
                headers=o.get("headers", c_list(c_header_name(lower=False), unique=True), []),
                expose_headers=o.get("expose_headers",
                                     c_list(c_header_name(lower=False), unique=True), []),
                credentials=bool(credentials),
                max_age_s=o.get("max_age_s", c_int(lo=0, hi=86400), 600))


SECTIONS = (RouteKey("cors", parse_cors),)
