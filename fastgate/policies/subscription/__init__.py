"""`subscription: {required: true}`: only consumers with an approved subscription to the
route pass; everybody else gets 403 `subscription_required`, whatever their credentials.

Runs after auth (which names the consumer). The approved consumers are compiled into a
frozenset per route: a subscription approved or revoked through the admin API is a config
change, so the next request already sees it.
"""
from __future__ import annotations

from fastgate.policies.base import Reject

_REJECT = Reject(403, "subscription_required",
                 "an approved subscription to this API is required")


class SubscriptionRequired:
    name = "subscription"
    __slots__ = ("allowed",)

    def __init__(self, allowed: frozenset):
        self.allowed = allowed

    def access(self, ctx):
        if ctx.consumer in self.allowed:
            return None
        return _REJECT


def approved(config, route_name: str):
    """The approved subscriptions of one route."""
    return [s for s in config.subscriptions or ()
            if s.route == route_name and s.state == "approved"]


def build(route_cfg, services):
    sub = route_cfg.subscription
    if sub is None or not sub.required:
        return None
    return SubscriptionRequired(frozenset(s.consumer for s in
                                          approved(services.config, route_cfg.name)))
