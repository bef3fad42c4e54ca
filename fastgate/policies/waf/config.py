"""Config of `routes[].waf` (no handler yet: refused by fastgate.config.UNSUPPORTED).

Waf(mode: "block"|"monitor" = "block", rules: list[str] = all four:
    sqli, xss, path_traversal, command_injection)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastgate.config.check import Obj, c_list, c_str
from fastgate.config.sections import RouteKey

__all__ = ("Waf", "WAF_RULES", "parse_waf")

WAF_RULES = ("sqli", "xss", "path_traversal", "command_injection")


@dataclass(frozen=True, slots=True)
class Waf:
    mode: str = "block"
    rules: list[str] = field(default_factory=lambda: list(WAF_RULES))


def parse_waf(ctx, e, path, v):
    o = Obj(e, path, v, ("mode", "rules"))
    return Waf(mode=o.get("mode", c_str(("block", "monitor")), "block"),
               rules=o.get("rules", c_list(c_str(WAF_RULES), nonempty=True, unique=True),
                           list(WAF_RULES)))


SECTIONS = (RouteKey("waf", parse_waf),)
