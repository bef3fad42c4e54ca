"""`routes[].plugins`: third-party policies (SPEC "Plugins").

A plugin is a Python package with an entry point in the group ``fastgate.plugins``; the entry
point's name is what ``routes[].plugins[].name`` says, and it loads a class whose optional
``schema`` class attribute is a JSON Schema for ``config``. config.py finds, loads and checks
them when the config is validated; each route then carries ``route.plugins``: a list of
``PluginRef(name, config, cls)`` in the listed order.

The runtime (instantiating ``cls(config)`` per load/reload and calling its access, response
and log methods after the built-in policies) has not landed, so ``routes[].plugins`` is
refused by fastgate.config.UNSUPPORTED and this module is listed in
``fastgate.policies.PENDING``, not ``REGISTRY``. When it lands: ``build(route_cfg,
services)`` here, the name moved to the end of REGISTRY, the UNSUPPORTED entry removed.
"""
