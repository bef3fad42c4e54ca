"""Per-route policies. Each module listed in REGISTRY exposes ``build(route_cfg, services)``
returning a policy object (see base.py) or None when the route does not use it.

Order is the access-phase order: identity first, then what depends on identity.
Adding a policy = adding a module and one line here; the core is never edited.
"""
from __future__ import annotations

import importlib

REGISTRY = (
    "fastgate.policies.ip",
    "fastgate.policies.cors",         # before auth: preflights carry no credentials
    "fastgate.policies.lifecycle",
    "fastgate.policies.auth",
    "fastgate.policies.rate_limit",
    "fastgate.policies.transform",
)


def load_builders():
    builders = []
    for name in REGISTRY:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A policy package that has not landed yet; config validation refuses its keys
            # (fastgate.config.UNSUPPORTED), so no route can silently rely on it.
            if exc.name == name:
                continue
            raise
        builders.append(module.build)
    return tuple(builders)
