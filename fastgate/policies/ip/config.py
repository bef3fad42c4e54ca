"""Config of `routes[].ip` (handler: fastgate.policies.ip).

IPRules(allow: list[ip_network], deny: list[ip_network])   deny wins over allow
  at least one of the two; networks written without host bits (10.0.0.0/8, a bare address
  is its /32 or /128).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from fastgate.config.check import Obj, c_list, tname
from fastgate.config.sections import RouteKey

__all__ = ("IPRules", "parse_ip_rules", "c_network")


@dataclass(frozen=True, slots=True)
class IPRules:
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    deny: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)


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


def parse_ip_rules(ctx, e, path, v):
    o = Obj(e, path, v, ("allow", "deny"))
    if o.ok and not o.d.get("allow") and not o.d.get("deny"):
        e.add(path, "needs allow and/or deny")
    return IPRules(allow=o.get("allow", c_list(c_network, unique=True), []),
                   deny=o.get("deny", c_list(c_network, unique=True), []))


SECTIONS = (RouteKey("ip", parse_ip_rules),)
