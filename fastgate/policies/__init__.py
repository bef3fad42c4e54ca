"""Per-route policies. Each module listed in REGISTRY exposes ``build(route_cfg, services)``
returning a policy object (see base.py) or None when the route does not use it.

Order is the access-phase order: identity first, then what depends on identity.
Adding a policy = adding a package and one line here; the core is never edited. A policy
package holds its handler (``__init__.py``: ``build``) and, when it owns config keys, a
``config`` module declaring them (``SECTIONS``: its dataclasses and parsers, see
fastgate.config.sections); the loader finds them through this list.

PENDING: policies whose config is parsed (and refused by fastgate.config.UNSUPPORTED) while
their handler has not landed; no ``build`` is taken from them. When one lands, its name moves
into REGISTRY at its place in the order.
"""
from __future__ import annotations

import importlib

REGISTRY = (
    "fastgate.policies.overload",     # first: a shed request costs nothing more
    "fastgate.policies.ip",
    "fastgate.policies.cors",         # before auth: preflights carry no credentials
    "fastgate.policies.waf",          # before auth: an attack costs no token verification
    "fastgate.policies.lifecycle",
    "fastgate.policies.auth",
    "fastgate.policies.subscription",  # after auth: it checks the consumer auth named
    "fastgate.policies.rate_limit",
    "fastgate.policies.budget",       # after rate_limit: AI token limits, then AI spend
    "fastgate.policies.transform",
    "fastgate.policies.validate",     # request-body phase: JSON bodies against a schema
    "fastgate.policies.plugins",      # third-party policies: last, after the built-in ones
)

PENDING = ()


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
