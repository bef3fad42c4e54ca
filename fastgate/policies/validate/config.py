"""Config of `routes[].validate` (handler: fastgate.policies.validate).

Validate(json_schema: dict | bool | None = None, max_json_depth: int = 32, validator)
  json_schema: a JSON Schema, draft 2020-12 (``$schema`` absent or naming 2020-12), checked
  and compiled here, at load: a schema that is not valid is an error at the key path of the
  offending keyword inside ``json_schema``; remote ``$ref`` are never fetched (an error).
  ``format`` is asserted (date-time, email, uuid, ipv4, ...), as API validators do, not
  only annotated. None: bodies must be JSON (and not too deep), nothing more.
  max_json_depth: 1..1024 nested containers (orjson's own ceiling is 1024).
  validator: the compiled jsonschema_rs validator (not part of equality).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fastgate.config.check import Obj, c_int, tname
from fastgate.config.sections import RouteKey
from fastgate.config.source import EnvStr

__all__ = ("Validate", "parse_validate", "DRAFT_2020_12")

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_DRAFT_URIS = (DRAFT_2020_12, DRAFT_2020_12 + "#", "http://json-schema.org/draft/2020-12/schema",
               "http://json-schema.org/draft/2020-12/schema#")
MAX_DEPTH = 1024


@dataclass(frozen=True, slots=True)
class Validate:
    json_schema: Any = None
    max_json_depth: int = 32
    validator: Any = field(default=None, compare=False, repr=False)


def _refuse_retrieval(uri: str):
    raise ValueError(f"remote references are not fetched ({uri}); use $defs")


_meta = None


def meta_errors(schema) -> list[tuple[tuple, str]]:
    """Every way ``schema`` breaks the draft 2020-12 meta-schema: (path inside it, message)."""
    global _meta
    if _meta is None:
        import jsonschema_rs
        # The meta-schemas ship inside jsonschema_rs: nothing is fetched.
        _meta = jsonschema_rs.Draft202012Validator({"$ref": DRAFT_2020_12},
                                                  validate_formats=True,
                                                  retriever=_refuse_retrieval)
    return [(tuple(err.instance_path), err.message) for err in _meta.iter_errors(schema)]


def compile_schema(schema):
    """A draft 2020-12 validator for ``schema`` (plain JSON data); raises on an invalid one."""
    import jsonschema_rs
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True,
                                             retriever=_refuse_retrieval)


def _plain(e, path, v, bad: list):
    """The schema as plain JSON data (EnvStr -> str); what JSON cannot hold is reported."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                e.add(path, f"keys must be strings, got {tname(k)} {k!r} (quote it)")
                bad.append(True)
                continue
            out[str.__str__(k)] = _plain(e, path + (k,), x, bad)
        return out
    if isinstance(v, list):
        return [_plain(e, path + (i,), x, bad) for i, x in enumerate(v)]
    if isinstance(v, str):
        return str.__str__(v) if isinstance(v, EnvStr) else v
    if isinstance(v, float) and not math.isfinite(v):
        e.add(path, "JSON has no NaN or infinity")
        bad.append(True)
        return None
    if v is None or isinstance(v, (bool, int, float)):
        return v
    e.add(path, f"not a JSON value: {tname(v)}")
    bad.append(True)
    return None


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


def _c_schema(e, path, v):
    if not isinstance(v, (dict, bool)):
        e.add(path, f"expected a JSON Schema (a mapping, or true/false), got {tname(v)}")
        return None
    bad: list = []
    schema = _plain(e, path, v, bad)
    if bad:
        return None
    if isinstance(schema, dict) and "$schema" in schema and schema["$schema"] not in _DRAFT_URIS:
        e.add(path + ("$schema",), f"only draft 2020-12 is supported ({DRAFT_2020_12}), "
                                   f"got {schema['$schema']!r}")
        return None
    problems = meta_errors(schema)
    for where, message in problems:
        if where and where[-1] == "type" and "anyOf" in message:
            message = ("must name JSON types (array, boolean, integer, null, number, "
                       "object, string), alone or in a list")
        e.add(path + where, f"invalid JSON Schema: {message}")
    if problems:
        return None
    try:
        validator = compile_schema(schema)
    except Exception as exc:  # a $ref that resolves nowhere, ...
        where = tuple(getattr(exc, "instance_path", ()) or ())
        e.add(path + where, f"invalid JSON Schema: {_first_line(exc)}")
        return None
    return schema, validator


def parse_validate(ctx, e, path, v):
    o = Obj(e, path, v, ("json_schema", "max_json_depth"))
    depth = o.get("max_json_depth", c_int(lo=1, hi=MAX_DEPTH), 32)
    compiled = o.get("json_schema", _c_schema, None)
    if compiled is None:
        return Validate(max_json_depth=depth)
    schema, validator = compiled
    return Validate(json_schema=schema, max_json_depth=depth, validator=validator)


SECTIONS = (RouteKey("validate", parse_validate),)
