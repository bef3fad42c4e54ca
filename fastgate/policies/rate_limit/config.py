"""Config of `routes[].rate_limits` (handler: fastgate.policies.rate_limit).

RateLimit(limit: int > 0, per: str, per_s: int, burst: int >= limit [default limit], by: str,
          by_kind: "consumer"|"ip"|"route"|"header"|"claim", by_name: str|None,
          scope: "local"|"cluster" = "local", unit: "requests"|"tokens" = "requests")
  by defaults to "ip" when the route has no auth, else "consumer" (by: consumer without route
  auth is an error, claim:NAME needs jwt/introspection); header names lower-cased.
  scope cluster needs Config.redis; unit tokens only on ai routes.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastgate.config.check import Obj, c_int, c_list, c_str
from fastgate.config.sections import RouteKey
from fastgate.config.values import PER_SECONDS, parse_key_source

__all__ = ("RateLimit", "parse_rate_limits", "parse_by")


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    per: str
    per_s: int
    burst: int
    by: str = "consumer"
    by_kind: str = "consumer"
    by_name: str | None = None
    scope: str = "local"
    unit: str = "requests"


def parse_by(e, o: Obj, auth_types, kinds=("consumer", "ip", "route", "header", "claim")):
    """``by:`` of a limit or budget -> (by, kind, name); defaults by the route's auth
    (``ctx.route.auth_types``: set() = no auth, None = unknown)."""
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


def parse_rate_limit(ctx, e, path, v):
    o = Obj(e, path, v, ("limit", "per", "burst", "by", "scope", "unit"))
    limit = o.get("limit", c_int(gt=0))
    per = o.get("per", c_str(tuple(PER_SECONDS)))
    burst = o.get("burst", c_int(gt=0), limit)
    if limit is not None and burst is not None and burst < limit:
        e.add(o.p("burst"), f"must be >= limit ({limit}): burst is the bucket size")
    by, kind, name = parse_by(e, o, ctx.route.auth_types)
    scope = o.get("scope", c_str(("local", "cluster")), "local")
    if scope == "cluster" and not ctx.has_redis:
        e.add(o.p("scope"), "scope: cluster needs the top-level redis section")
    unit = o.get("unit", c_str(("requests", "tokens")), "requests")
    if unit == "tokens" and ctx.route.kind != "ai":
        e.add(o.p("unit"), "unit: tokens only applies to ai routes")
    return RateLimit(limit=limit, per=per, per_s=PER_SECONDS.get(per), burst=burst,
                     by=by, by_kind=kind, by_name=name, scope=scope, unit=unit)


def parse_rate_limits(ctx, e, path, v):
    return c_list(lambda e2, p2, v2: parse_rate_limit(ctx, e2, p2, v2))(e, path, v)


SECTIONS = (RouteKey("rate_limits", parse_rate_limits, default=[]),)
