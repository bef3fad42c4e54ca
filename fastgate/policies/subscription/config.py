"""Config of `routes[].subscription` and of the top-level `subscriptions` (handler:
fastgate.policies.subscription; the records are written by the admin API's /subscriptions).

SubscriptionPolicy(required: bool = False, approval: "manual"|"auto" = "manual")
  required: only consumers with an approved subscription to the route pass (403 otherwise,
  whatever their credentials); needs `auth` on the route, which names the consumer.
Subscription(id, consumer, route, state: pending|approved|rejected|revoked,
             key_hash: "sha256:<hex>"|None, requested_by, decided_by, requested_at,
             decided_at)
  An approved subscription's key (stored only as its hash) is accepted by the api_key
  authenticators of that route, for that consumer, and nowhere else. A key hash is unique
  across subscriptions and consumers' api_keys.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastgate.config.check import Obj, c_bool, c_str, tname
from fastgate.config.sections import RouteKey, TopKey
from fastgate.config.values import c_name

__all__ = ("SubscriptionPolicy", "Subscription", "STATES")

STATES = ("pending", "approved", "rejected", "revoked")
_INDEX = "subscriptions.index"


@dataclass(frozen=True, slots=True)
class SubscriptionPolicy:
    required: bool = False
    approval: str = "manual"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    consumer: str
    route: str
    state: str
    key_hash: str | None = None
    key_hint: str | None = None     # the key's first characters, to recognise it by
    requested_by: str | None = None
    decided_by: str | None = None
    requested_at: str | None = None
    decided_at: str | None = None


def parse_route_subscription(ctx, e, path, v):
    o = Obj(e, path, v, ("required", "approval"))
    required = o.get("required", c_bool, False)
    approval = o.get("approval", c_str(("manual", "auto")), "manual")
    route = ctx.route
    if required and route is not None and route.auth_types is not None \
            and not route.auth_types:
        e.add(path + ("required",), "needs auth on the route: it names the consumer whose "
                                    "subscription is checked")
    return SubscriptionPolicy(required=bool(required), approval=approval or "manual")


def parse_subscriptions(ctx, e, path, v):
    from fastgate.policies.auth.config import c_api_key_hash
    if not isinstance(v, list):
        e.add(path, f"expected a list, got {tname(v)}")
        return None
    consumers = ctx.sections.get("consumers") or []
    known = {c.name for c in consumers}
    keys = {k: c.name for c in consumers for k in c.api_keys}
    ids: dict[str, int] = {}
    hashes: dict[str, int] = {}
    out, index = [], []
    free = c_str(max_len=200)
    for i, item in enumerate(v):
        p = path + (i,)
        o = Obj(e, p, item, Subscription.__dataclass_fields__)
        sid = o.get("id", c_name("a subscription id"))
        consumer = o.get("consumer", c_name("a consumer name"))
        route = o.get("route", c_name("a route name"))
        state = o.get("state", c_str(STATES))
        key_hash = o.get("key_hash", c_api_key_hash, None)
        if sid is not None:
            if sid in ids:
                e.add(o.p("id"), f"duplicate subscription id (also subscriptions[{ids[sid]}])")
            ids.setdefault(sid, i)
        if consumer is not None and consumer not in known:
            e.add(o.p("consumer"), f"unknown consumer {consumer!r}")
        if state == "approved" and not o.has("key_hash"):
            e.add(o.p("key_hash"), "an approved subscription needs the hash of its key")
        if key_hash is not None:
            if key_hash in keys:
                e.add(o.p("key_hash"), f"already an api_key of consumer {keys[key_hash]!r}")
            elif key_hash in hashes:
                e.add(o.p("key_hash"), f"already the key of subscriptions[{hashes[key_hash]}]")
            hashes.setdefault(key_hash, i)
        extra = {k: o.get(k, free, None) for k in ("key_hint", "requested_by", "decided_by",
                                                   "requested_at", "decided_at")}
        if o.ok and None not in (sid, consumer, route, state):
            out.append(Subscription(id=sid, consumer=consumer, route=route, state=state,
                                    key_hash=key_hash, **extra))
            index.append(i)
    ctx.cache[_INDEX] = index
    return out


def check_routes(ctx, config):
    """Subscriptions name routes, which are parsed after the top-level sections."""
    names = {r.name for r in config.routes}
    index = ctx.cache.get(_INDEX, [])
    for k, s in enumerate(config.subscriptions or ()):
        if s.route not in names:
            ctx.e.add(("subscriptions", index[k], "route"), f"unknown route {s.route!r}")


SECTIONS = (RouteKey("subscription", parse_route_subscription),
            TopKey("subscriptions", parse_subscriptions, default=()))
CHECKS = (check_routes,)
