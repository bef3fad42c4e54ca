"""Config of `routes[].waf` (handler: fastgate.policies.waf; engine: fastgate.waf).

Waf(mode: "block"|"monitor" = "block",
    rules: list[str] = the four defaults: sqli, xss, path_traversal, command_injection
           (optional too: rfi, php, java),
    exclude_args: list[str] (query / form / JSON argument names never inspected),
    exclude_headers: list[str] (lower-cased), exclude_paths: list[str] (exact, or a
    trailing /* prefix), inspect_body_bytes: int = 65536 (0: bodies are not inspected))
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastgate.config.check import Obj, c_int, c_list, c_str
from fastgate.config.sections import RouteKey

__all__ = ("Waf", "WAF_RULES", "OPTIONAL_RULES", "parse_waf")

WAF_RULES = ("sqli", "xss", "path_traversal", "command_injection")
OPTIONAL_RULES = ("rfi", "php", "java")
DEFAULT_INSPECT_BODY_BYTES = 65536


@dataclass(frozen=True, slots=True)
class Waf:
    mode: str = "block"
    rules: list[str] = field(default_factory=lambda: list(WAF_RULES))
    exclude_args: list[str] = field(default_factory=list)
    exclude_headers: list[str] = field(default_factory=list)
    exclude_paths: list[str] = field(default_factory=list)
    inspect_body_bytes: int = DEFAULT_INSPECT_BODY_BYTES


def _c_path(e, path, v):
    p = c_str()(e, path, v)
    if p is not None and not p.startswith("/"):
        e.add(path, "must start with / (an exact path, or a prefix ending in /*)")
        return None
    if p is not None and "*" in p[:-1]:
        e.add(path, "only a trailing /* is a wildcard")
        return None
    return p


def parse_waf(ctx, e, path, v):
    o = Obj(e, path, v, ("mode", "rules", "exclude", "inspect_body_bytes"))
    rules = o.get("rules", c_list(c_str(WAF_RULES + OPTIONAL_RULES), nonempty=True,
                                  unique=True), list(WAF_RULES))
    ex = o.get("exclude", lambda e2, p2, v2: _parse_exclude(e2, p2, v2), {})
    return Waf(mode=o.get("mode", c_str(("block", "monitor")), "block"), rules=rules,
               exclude_args=ex.get("args", []), exclude_headers=ex.get("headers", []),
               exclude_paths=ex.get("paths", []),
               inspect_body_bytes=o.get("inspect_body_bytes", c_int(lo=0, hi=16 << 20),
                                        DEFAULT_INSPECT_BODY_BYTES))


def _parse_exclude(e, path, v):
    o = Obj(e, path, v, ("args", "headers", "paths"))
    return {
        "args": o.get("args", c_list(c_str(), unique=True), []),
        "headers": [h.lower() for h in o.get("headers", c_list(c_str(), unique=True), [])
                    or []],
        "paths": o.get("paths", c_list(_c_path, unique=True), []),
    }


SECTIONS = (RouteKey("waf", parse_waf),)
