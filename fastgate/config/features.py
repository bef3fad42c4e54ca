"""Config features that validate but are not implemented by this build yet.

A config that uses one fails validation with "<path>: not supported by this build yet" rather
than loading and silently doing nothing (a WAF that is configured but never runs is worse than
an error). When a feature lands, delete its entry from UNSUPPORTED -- this set is the only
place to edit. Mutate it in place (tests clear it that way); never rebind the name.

Entry syntax, matched against the document: ``a.b`` nested keys, ``key[]`` every element of a
list, ``key.*`` every value of a mapping. A feature counts as used when its key is present with
a value other than null / empty list / empty mapping.
"""
from __future__ import annotations

import re
from typing import Any

from .source import document_order, format_path

UNSUPPORTED: set[str] = set()     # every feature of the SPEC has landed

_SEG = re.compile(r"([^.\[\]]+)(\[\])?")


def _segments(feature: str) -> list[tuple[str, bool]]:
    return [(m.group(1), bool(m.group(2))) for m in _SEG.finditer(feature)]


def _used(value: Any) -> bool:
    return value is not None and value != [] and value != {}


def _find(node: Any, segs: list[tuple[str, bool]], path: tuple) -> list[tuple]:
    if not segs:
        return [path] if _used(node) else []
    (name, each), rest = segs[0], segs[1:]
    if not isinstance(node, dict):
        return []
    if name == "*":
        found = []
        for k, v in node.items():
            found.extend(_find_each(v, each, rest, path + (k,)))
        return found
    if name not in node:
        return []
    return _find_each(node[name], each, rest, path + (name,))


def _find_each(node: Any, each: bool, rest, path: tuple) -> list[tuple]:
    if not each:
        return _find(node, rest, path)
    if not isinstance(node, list):
        return []
    found = []
    for i, item in enumerate(node):
        found.extend(_find(item, rest, path + (i,)))
    return found


def unsupported_paths(tree: Any) -> list[tuple]:
    """Key paths (tuples) in a parsed document that use an UNSUPPORTED feature."""
    out = []
    for feature in sorted(UNSUPPORTED):
        out.extend(_find(tree, _segments(feature), ()))
    return out


def unsupported_errors(config) -> list[str]:
    """One "path: not supported by this build yet" line per use of an UNSUPPORTED feature.

    Accepts a ``Config`` (looks at ``config.raw``) or a parsed document (dict)."""
    tree = config if isinstance(config, dict) else config.raw
    paths = sorted(unsupported_paths(tree), key=lambda p: document_order(tree, p))
    return [f"{format_path(p, '<config>')}: not supported by this build yet" for p in paths]
