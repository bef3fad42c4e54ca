"""`ip: {allow: [...], deny: [...]}`: client address rules, decided on the connection's peer
address (never on X-Forwarded-For, which a client writes itself). Deny wins over allow; a
non-empty allow list admits only its networks. Refusals are 403."""
from __future__ import annotations

import ipaddress

from fastgate.policies.base import Reject

_FORBIDDEN = Reject(403, "forbidden", "client address not allowed")


class IPPolicy:
    __slots__ = ("allow", "deny", "_cache")

    def __init__(self, rules):
        self.allow = tuple(rules.allow)
        self.deny = tuple(rules.deny)
        self._cache: dict = {}  # verdict per address string; bounded below

    def _decide(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr in net for net in self.deny):
            return False
        if self.allow and not any(addr in net for net in self.allow):
            return False
        return True

    def access(self, ctx):
        ok = self._cache.get(ctx.client_ip)
        if ok is None:
            ok = self._decide(ctx.client_ip)
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[ctx.client_ip] = ok
        return None if ok else _FORBIDDEN


def build(route_cfg, services):
    rules = route_cfg.ip
    if rules is None or (not rules.allow and not rules.deny):
        return None
    return IPPolicy(rules)
