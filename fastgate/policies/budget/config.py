"""Config of `routes[].budget` (no handler yet: refused by fastgate.config.UNSUPPORTED).

Budget(usd: float > 0, per: str, per_s: int, by: str, by_kind, by_name)
  only on ai routes, and every model the route allows has a price. ``by`` as for rate limits.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastgate.config.check import Obj, c_num, c_str
from fastgate.config.sections import RouteKey
from fastgate.config.values import PER_SECONDS
from fastgate.policies.rate_limit.config import parse_by

__all__ = ("Budget", "parse_budget")


@dataclass(frozen=True, slots=True)
class Budget:
    usd: float
    per: str
    per_s: int
    by: str = "consumer"
    by_kind: str = "consumer"
    by_name: str | None = None


def parse_budget(ctx, e, path, v):
    o = Obj(e, path, v, ("usd", "per", "by"))
    per = o.get("per", c_str(tuple(PER_SECONDS)))
    by, kind, name = parse_by(e, o, ctx.route.auth_types)
    budget = Budget(usd=o.get("usd", c_num(gt=0)), per=per, per_s=PER_SECONDS.get(per),
                    by=by, by_kind=kind, by_name=name)
    route = ctx.route
    if route.kind != "ai":
        e.add(path, "only applies to ai routes")
    elif route.ai is not None and ctx.ai is not None:
        priced = {m.name for m in ctx.ai.models if m.price is not None}
        for m in ctx.route_models(route.ai):
            if m not in priced:
                e.add(path, f"model {m!r} has no price, so its cost cannot count against a "
                            "budget")
    return budget


SECTIONS = (RouteKey("budget", parse_budget),)
