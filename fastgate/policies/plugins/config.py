"""Config of `routes[].plugins`: [{name, config}] (no runtime yet: refused by
fastgate.config.UNSUPPORTED).

PluginRef(name: str, config: dict[str, Any], cls: type)
  name: an entry point in the group ``fastgate.plugins`` (an unknown one is an error listing
  the installed names); cls: the class it loads (a plugin that fails to import is a config
  error, never a crash; not part of equality); config: the item's ``config`` mapping
  (default {}) as plain JSON-like data (${VAR} already substituted), valid against
  ``cls.schema`` when the class has one: every violation is an error at its key path inside
  ``config``. A schema that is not a valid JSON Schema is an error naming the plugin.

Schemas are checked with jsonschema_rs, compiled once per plugin and load, with remote
``$ref`` retrieval disabled (validating a config never touches the network).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastgate.config.check import Obj, c_list, c_str, tname
from fastgate.config.sections import RouteKey
from fastgate.config.source import EnvStr

__all__ = ("PluginRef", "ENTRY_POINT_GROUP", "parse_plugins", "installed_plugins")

ENTRY_POINT_GROUP = "fastgate.plugins"


@dataclass(frozen=True, slots=True)
class PluginRef:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    cls: type | None = field(default=None, compare=False, repr=False)


def installed_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Entry points of the group by name (the first one wins when two dists share a name)."""
    import importlib.metadata   # only for a config that names a plugin
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _refuse_retrieval(uri: str):
    raise ValueError(f"remote references are not fetched ({uri})")


def _compile(schema):
    import jsonschema_rs
    return jsonschema_rs.validator_for(schema, retriever=_refuse_retrieval)


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


def _load(ctx, name: str):
    """(cls, validator or None) or an error message; once per plugin name and load."""
    memo = ctx.cache.setdefault("plugins", {})
    if name in memo:
        return memo[name]
    installed = ctx.cache.get("plugins.installed")
    if installed is None:
        installed = ctx.cache["plugins.installed"] = installed_plugins()
    ep = installed.get(name)
    if ep is None:
        names = ", ".join(sorted(installed)) or "none"
        result: Any = (f"unknown plugin {name!r} (installed in the {ENTRY_POINT_GROUP} entry "
                       f"point group: {names})")
    else:
        result = _load_entry_point(name, ep)
    memo[name] = result
    return result


def _load_entry_point(name, ep):
    try:
        cls = ep.load()
    except Exception as exc:
        return f"plugin {name!r} failed to load ({ep.value}): {type(exc).__name__}: {exc}"
    if not isinstance(cls, type):
        return f"plugin {name!r}: {ep.value} is not a class ({type(cls).__name__})"
    try:
        schema = getattr(cls, "schema", None)
    except Exception as exc:
        return f"plugin {name!r}: reading its schema failed: {type(exc).__name__}: {exc}"
    if schema is None:
        return cls, None
    if not isinstance(schema, (dict, bool)):
        return (f"plugin {name!r} has an invalid config schema: expected a JSON Schema object, "
                f"got {tname(schema)}")
    try:
        return cls, _compile(_plain(schema))
    except Exception as exc:
        return f"plugin {name!r} has an invalid config schema: {_first_line(exc)}"


def _plain(v):
    """The value as plain JSON-like Python (EnvStr -> str): what plugins and the validator get."""
    if isinstance(v, dict):
        return {(str(k) if isinstance(k, EnvStr) else k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, EnvStr):
        return str.__str__(v)
    return v


def _env_strings(v, out: list) -> list:
    if isinstance(v, EnvStr):
        out.append(str.__str__(v))
    elif isinstance(v, dict):
        for x in v.values():
            _env_strings(x, out)
    elif isinstance(v, list):
        for x in v:
            _env_strings(x, out)
    return out


def _at(v, path):
    for seg in path:
        try:
            v = v[seg]
        except (KeyError, IndexError, TypeError):
            return None
    return v


def _check_config(e, path, raw, plain, validator) -> None:
    try:
        violations = list(validator.iter_errors(plain))
    except Exception as exc:  # values JSON cannot hold (non-string keys, ...)
        e.add(path, f"cannot be checked against the plugin's schema: {_first_line(exc)}")
        return
    for err in violations:
        where = tuple(err.instance_path)
        message = err.message
        # Secrets enter through ${VAR}: never echo one in an error line.
        for secret in _env_strings(_at(raw, where), []):
            message = message.replace(json.dumps(secret), '"<from the environment>"')
        e.add(path + where, message)


def parse_plugin(ctx, e, path, v):
    o = Obj(e, path, v, ("name", "config"))
    name = o.get("name", c_str(max_len=200))
    given = o.d.get("config")
    raw = o.get("config", _c_mapping, {})
    if name is None:
        return None
    loaded = _load(ctx, name)
    if isinstance(loaded, str):
        e.add(o.p("name"), loaded)
        return None
    cls, validator = loaded
    config = _plain(raw)
    if validator is not None and o.ok and (given is None or isinstance(given, dict)):
        _check_config(e, o.p("config"), raw, config, validator)
    return PluginRef(name=name, config=config, cls=cls)


def _c_mapping(e, path, v):
    if not isinstance(v, dict):
        e.add(path, f"expected a mapping, got {tname(v)}")
        return None
    return v


def parse_plugins(ctx, e, path, v):
    return c_list(lambda e2, p2, v2: parse_plugin(ctx, e2, p2, v2))(e, path, v)


SECTIONS = (RouteKey("plugins", parse_plugins, default=[]),)
