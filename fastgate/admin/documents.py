"""Config documents as the control plane handles them: the parsed tree before ``${VAR}``
substitution (``Config.raw``), never the resolved values.

* ``redact`` hides secrets for ``GET /config`` and the audit diffs; ``unredact`` puts the
  running values back where a document sent to ``PUT /config`` still holds the ``***`` that
  ``GET /config`` showed, so a read-modify-write round trip never needs the secrets.
* ``split``/``merge``: the shared sections (SPEC: upstreams, consumers, auth, routes, ai, teams)
  travel between instances; each instance keeps its own node sections from its own file.
* ``digest`` names a document's content; ``diff`` lists what changed, redacted.
* ``dump`` writes a document back in its file's format.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
import yaml

__all__ = ["REDACTED", "NODE_SECTIONS", "STATUS_KEY", "redact", "unredact", "split", "merge",
           "digest", "diff", "dump", "named_items", "is_secret_key"]

REDACTED = "***"
# Each instance's own, from its own file (SPEC "Admin API"); everything else is shared.
NODE_SECTIONS = ("listeners", "admin", "redis", "limits", "overload", "logging",
                 "drain_timeout_s")
# What GET /config adds about versions and instances; a PUT may send it back (the loader
# ignores top-level x- keys), it is dropped before anything else looks at the document.
STATUS_KEY = "x-fastgate"

_SECRET_KEYS = frozenset((
    "token", "token_hash", "key_hash", "secret", "client_secret", "api_key", "password", "passwd",
    "private_key", "access_token", "refresh_token", "api_secret", "secret_key",
    # header names in transforms (set_headers etc.) that carry credentials to an upstream
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
))
# Keys whose value is a list of secrets: every element is replaced.
_SECRET_LIST_KEYS = frozenset(("api_keys",))
_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/@?#]*)@")


def is_secret_key(key) -> bool:
    if not isinstance(key, str):
        return False
    lk = key.lower()
    return (lk in _SECRET_KEYS or lk in _SECRET_LIST_KEYS or lk.endswith("_token")
            or lk.endswith("_secret") or lk.endswith("_password") or lk.endswith("_api_key"))


def redact(value):
    """A deep copy of a document with every secret replaced by ``***``.

    Secrets: values of keys named like a credential (case-insensitive, or ending in
    ``_token``/``_secret``/``_password``/``_api_key``), every element of ``api_keys``, and the
    user-info part of any URL (``redis://user:pw@host``)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            lk = k.lower() if isinstance(k, str) else k
            if lk in _SECRET_LIST_KEYS and isinstance(v, (list, tuple)):
                out[k] = [REDACTED for _ in v]
            elif is_secret_key(k) and v is not None \
                    and not isinstance(v, (dict, list, tuple, bool)):
                out[k] = REDACTED
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str) and "@" in value:
        return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", value, count=1)
    return value


def unredact(new, current):
    """``new`` with every ``***`` that stands where ``current`` has a value replaced by that
    value (list items are matched by ``name`` when they have one, else by position). A
    ``***`` with nothing behind it stays, and validation refuses it like any bad value."""
    if isinstance(new, dict):
        cur = current if isinstance(current, dict) else {}
        return {k: unredact(v, cur.get(k)) for k, v in new.items()}
    if isinstance(new, list):
        cur = current if isinstance(current, list) else []
        by_name = named_items(cur)
        out = []
        for i, item in enumerate(new):
            name = item_name(item)
            if name is not None and name in by_name:
                out.append(unredact(item, by_name[name]))
            else:
                out.append(unredact(item, cur[i] if i < len(cur) else None))
        return out
    if new == REDACTED and current is not None:
        return current
    if isinstance(new, str) and isinstance(current, str) and REDACTED + "@" in new:
        # a URL whose user-info was hidden: take it back when the rest is unchanged
        m = _URL_USERINFO.match(current)
        if m and _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", current, 1) == new:
            return current
    return new


def item_name(item):
    """What names a list item: its ``name`` (routes, consumers) or ``id`` (subscriptions)."""
    if isinstance(item, dict):
        for k in ("name", "id"):
            if isinstance(item.get(k), str):
                return item[k]
    return None


def named_items(items) -> dict:
    """``{name: item}`` of a list of mappings that carry a ``name`` (or an ``id``)."""
    out = {}
    if isinstance(items, list):
        for item in items:
            name = item_name(item)
            if name is not None:
                out.setdefault(name, item)
    return out


def split(tree: dict) -> tuple[dict, dict]:
    """(shared sections, node sections) of a document; ``x-`` keys stay with the node."""
    shared, node = {}, {}
    for k, v in tree.items():
        if k in NODE_SECTIONS or (isinstance(k, str) and k.startswith("x-")):
            node[k] = v
        else:
            shared[k] = v
    return shared, node


def merge(node_tree: dict, shared: dict) -> dict:
    """This instance's node sections (from ``node_tree``) with the deployment's shared ones."""
    _, node = split(node_tree)
    out = dict(node)
    out.update(shared)
    return out


def digest(tree) -> str:
    return hashlib.sha256(orjson.dumps(
        tree, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


# --- diff -----------------------------------------------------------------------------------

def diff(old, new) -> list[dict]:
    """Changes from ``old`` to ``new`` as ``{"path", "op": added|removed|changed, "old",
    "new"}``, secrets shown as ``***``. Named list items (routes, consumers) are compared by
    name, so ``routes[orders].timeout_s`` says which route changed."""
    out: list[dict] = []
    _diff(old, new, (), out)
    return out


def _diff(old, new, path, out):
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in old:
            if k not in new:
                out.append(_change(path + (k,), "removed", old[k], None))
            else:
                _diff(old[k], new[k], path + (k,), out)
        for k in new:
            if k not in old:
                out.append(_change(path + (k,), "added", None, new[k]))
        return
    if isinstance(old, list) and isinstance(new, list):
        o, n = named_items(old), named_items(new)
        if len(o) == len(old) and len(n) == len(new):
            for name, item in o.items():
                if name not in n:
                    out.append(_change(path + (f"[{name}]",), "removed", item, None))
                else:
                    _diff(item, n[name], path + (f"[{name}]",), out)
            for name, item in n.items():
                if name not in o:
                    out.append(_change(path + (f"[{name}]",), "added", None, item))
            return
    out.append(_change(path, "changed", old, new))


def _change(path, op, old, new) -> dict:
    secret = any(is_secret_key(seg) for seg in path)
    last = path[-1] if path else None
    entry = {"path": _fmt(path), "op": op}
    if op != "added":
        entry["old"] = REDACTED if secret and old is not None else redact({last: old})[last]
    if op != "removed":
        entry["new"] = REDACTED if secret and new is not None else redact({last: new})[last]
    return entry


def _fmt(path) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, str) and seg.startswith("[") and seg.endswith("]"):
            out += seg
        elif isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + str(seg)
    return out


# --- writing back ---------------------------------------------------------------------------

def dump(tree: dict, path: str | None) -> bytes:
    """The document as text for the file at ``path``: JSON for ``.json``, YAML otherwise."""
    if path is not None and path.lower().endswith(".json"):
        return orjson.dumps(tree, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True,
                          default_flow_style=False).encode("utf-8")
