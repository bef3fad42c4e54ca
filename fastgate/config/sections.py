"""Config keys owned by policies: how a policy declares what it parses, and what it sees.

Every module named in ``fastgate.policies.REGISTRY`` (or ``PENDING``, while its handler has not
landed) may have a ``config`` submodule declaring the keys it owns::

    # fastgate/policies/cors/config.py
    SECTIONS = (RouteKey("cors", parse_cors),)

    def parse_cors(ctx, e, path, value) -> Cors | None: ...

* ``RouteKey(key, parse, default=None)``: ``routes[].<key>``. The parsed value is kept in
  ``Route.policies[key]`` and read as ``route.<key>`` (``default`` when the key is absent).
* ``TopKey(key, parse, default=None)``: a top-level section, kept in ``Config.sections[key]``
  and read as ``config.<key>``.
* ``CHECKS = (check, ...)``: ``check(ctx, config)`` runs once the whole document is parsed
  (cross references that look forward, e.g. a top-level section naming routes) and reports
  with ``ctx.e.add(path, message)``.

``parse(ctx, e, path, value)`` is called only for a present, non-null value. It reports every
problem with ``e.add(path + (...), "message")`` (the readers of check.py do that) and returns
the parsed value, or None when nothing usable is left (the key then reads as its default; the
Config is never returned while errors exist). ``ctx`` is the ``LoadContext``: what was parsed
before this key, for cross references.

Parsing order (cross references look back only): top level: listeners, admin, limits, redis,
upstreams, then every TopKey in registry order, then ai, routes, logging, drain_timeout_s. Per
route: the core keys (name, paths, hosts, methods, the target, ...), then every RouteKey in
registry order. The loader rejects keys nobody registered, with "did you mean" hints over all
registered ones.
"""
from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .check import Errors, tname
from .source import Path

Parse = Callable[["LoadContext", Errors, Path, Any], Any]


@dataclass(frozen=True)
class RouteKey:
    """``routes[].<key>``, parsed by ``parse``; ``route.<key>`` is ``default`` when absent."""
    key: str
    parse: Parse
    default: Any = None

    def fresh_default(self) -> Any:
        # Lists and dicts are handed out as copies: a route never shares one with another.
        return copy.copy(self.default)


@dataclass(frozen=True)
class TopKey:
    """A top-level section, parsed by ``parse``; ``config.<key>`` is ``default`` when absent."""
    key: str
    parse: Parse
    default: Any = None

    def fresh_default(self) -> Any:
        return copy.copy(self.default)


@dataclass
class RouteScope:
    """The route being parsed, as far as it has been parsed."""
    index: int                      # position in the document's routes list
    path: Path                      # ("routes", index)
    kind: str | None = None         # "upstream" | "respond" | "ai" | None (missing/ambiguous)
    ai: Any = None                  # its RouteAI, when it has an ai key that parsed
    methods: list[str] = field(default_factory=list)
    policies: dict[str, Any] = field(default_factory=dict)   # RouteKeys parsed so far
    # Types of the authenticators this route uses (set by the auth policy's parser): set()
    # without route auth; None when unknown (an error was reported elsewhere).
    auth_types: set[str] | None = field(default_factory=set)


class LoadContext:
    """What a parser may look at: the document parsed so far, and the file's directory.

    Core sections (set by the loader before any policy key is parsed):
      listeners (valid ones), limits, redis (None when absent or invalid), has_redis (the key
      is present, even if invalid), upstreams (valid ones by name; {} when absent or invalid).
    Set later by the loader: ai (AI | None) and has_ai, before routes; route (RouteScope)
    while a route is parsed.
    Set by the auth policy (see fastgate.policies.auth.config): authenticators (valid ones by
    name), authenticator_names (every name under ``auth``, valid entry or not: a broken entry
    is reported once, not again as unknown wherever it is used).
    sections: every TopKey value parsed so far, by key.
    """

    def __init__(self, e: Errors, base_dir: str, source: str):
        self.e = e
        self.base_dir = base_dir
        self.source = source
        self.listeners: list = []
        self.limits = None
        self.redis = None
        self.has_redis = False
        self.upstreams: dict | None = {}
        self.ai = None
        self.has_ai = False
        self.authenticators: dict = {}
        self.authenticator_names: set[str] = set()
        self.sections: dict[str, Any] = {}
        self.route: RouteScope | None = None
        self.cache: dict[str, Any] = {}   # for parsers: per-load memo (e.g. plugin lookups)
        # the loader's own: document index of each element that made it into
        # Config.listeners / Config.routes (invalid ones are left out, so list positions
        # alone would misname later errors)
        self.listener_index: list[int] = []
        self.route_index: list[int] = []

    # files referenced by the config (certificates, JWKS, CA bundles) ----------------------
    def c_file(self, e, path, v):
        """A readable file; relative names are resolved against the config file's directory."""
        if not isinstance(v, str) or not v:
            e.add(path, f"expected a file path, got {tname(v)}")
            return None
        full = v if os.path.isabs(v) else os.path.join(self.base_dir, v)
        full = os.path.normpath(full)
        if not os.path.isfile(full):
            e.add(path, f"file not found: {full}")
            return None
        if not os.access(full, os.R_OK):
            e.add(path, f"file not readable: {full}")
            return None
        return full

    # ai models --------------------------------------------------------------------------
    def model_names(self) -> set[str] | None:
        """Names under ai.models; None when there is no (valid) ai section."""
        return None if self.ai is None else {m.name for m in self.ai.models
                                             if isinstance(m.name, str)}

    def route_models(self, route_ai) -> list[str]:
        """The models an ai route may use."""
        if route_ai.prompt is not None:
            return [route_ai.prompt.model] if route_ai.prompt.model else []
        if route_ai.models is not None:
            return route_ai.models
        return sorted(self.model_names() or ())

    def check_model(self, e, path, name) -> None:
        known = self.model_names()
        if known is not None and name not in known:
            e.add(path, f"unknown model {name!r} (ai.models: {', '.join(sorted(known)) or 'none'})")


# --- the registry ---------------------------------------------------------------------------

class _Registered:
    __slots__ = ("route", "top", "modules", "checks")

    def __init__(self, route: dict[str, RouteKey], top: dict[str, TopKey], modules: tuple,
                 checks: tuple = ()):
        self.route = route
        self.top = top
        self.modules = modules
        self.checks = checks


_registered: _Registered | None = None


def _collect() -> _Registered:
    from dataclasses import fields

    from fastgate.policies import PENDING, REGISTRY

    from .schema import Config, Route
    taken = {RouteKey: {f.name for f in fields(Route)}, TopKey: {f.name for f in fields(Config)}}
    route: dict[str, RouteKey] = {}
    top: dict[str, TopKey] = {}
    modules = []
    checks = []
    for name in REGISTRY + PENDING:
        try:
            module = importlib.import_module(name + ".config")
        except ModuleNotFoundError as exc:
            if exc.name in (name, name + ".config"):
                continue  # a policy without config keys, or not landed yet
            raise
        modules.append(module)
        for sec in getattr(module, "SECTIONS", ()):
            if not isinstance(sec, (RouteKey, TopKey)):
                raise TypeError(f"{module.__name__}.SECTIONS: {sec!r} is not a RouteKey/TopKey")
            table = route if isinstance(sec, RouteKey) else top
            if sec.key in table or sec.key in taken[type(sec)]:
                raise ValueError(f"{module.__name__}: key {sec.key!r} is already taken")
            table[sec.key] = sec
        checks.extend(getattr(module, "CHECKS", ()))
    return _Registered(route, top, tuple(modules), tuple(checks))


def registered() -> _Registered:
    """Every registered key, in registry order (collected once, on first use)."""
    global _registered
    if _registered is None:
        _registered = _collect()
    return _registered


def route_keys() -> dict[str, RouteKey]:
    return registered().route


def top_keys() -> dict[str, TopKey]:
    return registered().top
