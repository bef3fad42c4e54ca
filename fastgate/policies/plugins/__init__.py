"""`routes[].plugins`: third-party policies (SPEC "Plugins").

A plugin is a Python package with an entry point in the group ``fastgate.plugins``; the entry
point's name is what ``routes[].plugins[].name`` says, and it loads a class whose optional
``schema`` class attribute is a JSON Schema for ``config``. config.py finds, loads and checks
them when the config is validated; each route then carries ``route.plugins``: a list of
``PluginRef(name, config, cls)`` in the listed order.

At compile time (every load and reload) each plugin of a route is instantiated with
``cls(config)``; the route gets one ``fastgate.plugin.PluginChain`` over them, last in
REGISTRY, so plugins run after the built-in policies of each phase, in the listed order. A
constructor that raises fails the build: the reload is rejected, the running config stays.
"""
from __future__ import annotations

from fastgate.plugin import PluginChain


def _instance(route_cfg, j, ref):
    cls = ref.cls
    try:
        # __init__ is optional too: a class without one is made without arguments.
        return cls() if cls.__init__ is object.__init__ else cls(ref.config)
    except Exception as exc:
        raise ValueError(f"route {route_cfg.name!r}: plugins[{j}] {ref.name!r} failed to "
                         f"start: {type(exc).__name__}: {exc}") from exc


def build(route_cfg, services):
    refs = route_cfg.plugins
    if not refs:
        return None
    return PluginChain(route_cfg.name,
                       [(ref.name, _instance(route_cfg, j, ref)) for j, ref in enumerate(refs)])
