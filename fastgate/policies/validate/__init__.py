"""`validate: {json_schema, max_json_depth}`: JSON request bodies checked before the target.

The policy asks for the whole body (request-body phase: buffered up to the route's
max_body_bytes, 413 beyond) and answers 400 ``invalid_request`` when it is not acceptable;
the upstream then never sees the request. In order, each step only for what passed the
one before:

1. an empty body: a GET, HEAD, DELETE, OPTIONS or TRACE without one is not checked (no
   document); for other methods an empty body stands for "no document" and is checked as
   JSON ``null``: it passes when the schema accepts null (or there is no schema), else
   ``$: a JSON request body is required``.
2. Content-Type: ``application/json`` or any ``application/*+json`` (merge-patch, ...),
   parameters allowed; a charset other than UTF-8 (RFC 8259: JSON is UTF-8) or another
   type: ``$: expected a JSON body (Content-Type: application/json)``.
3. depth, from the bytes (scan.py) before anything parses: deeper than max_json_depth is
   refused without building a single object (a depth bomb costs one linear scan). The size
   bound is the route's max_body_bytes.
4. parse (orjson): ``$: not valid JSON: <where>``.
5. the schema (jsonschema_rs, draft 2020-12, compiled at config load): the first violation,
   named by its JSON path, e.g. ``$.items[2].qty: 0 is less than the minimum of 1``
   (messages are cut at 200 characters: they may quote the client's value).

The body is forwarded as it came (never re-serialised). Parsing is orjson's: a duplicate
key keeps its last value, an integer beyond 64 bits is read as a float, a number beyond the
double range, a lone surrogate escape or a UTF-8 BOM is "not valid JSON".
"""
from __future__ import annotations

import orjson

from fastgate.policies.base import Reject

from .scan import too_deep

MESSAGE_MAX = 200
_NO_BODY_METHODS = frozenset((b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"))
_REQUIRED = Reject(400, "invalid_request", "$: a JSON request body is required")
_NOT_JSON = Reject(400, "invalid_request",
                   "$: expected a JSON body (Content-Type: application/json)")

_type_cache: dict[bytes, bool] = {}
_TYPE_CACHE_MAX = 256


def is_json_type(value: bytes | None) -> bool:
    """Whether a Content-Type value names JSON in UTF-8 (cached: clients repeat a few)."""
    if value is None:
        return False
    known = _type_cache.get(value)
    if known is not None:
        return known
    media, _, params = value.partition(b";")
    media = media.strip().lower()
    ok = media == b"application/json" or (media.startswith(b"application/")
                                          and media.endswith(b"+json"))
    if ok and params:
        for param in params.split(b";"):
            name, _, v = param.partition(b"=")
            if name.strip().lower() == b"charset" and \
                    v.strip().strip(b'"').lower() not in (b"utf-8", b"utf8"):
                ok = False
    if len(_type_cache) < _TYPE_CACHE_MAX:
        _type_cache[value] = ok
    return ok


def json_path(parts) -> str:
    """``$.items[2].qty`` (JSONPath, names that are not identifiers as ``['a b']``)."""
    out = ["$"]
    for p in parts:
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif p.isidentifier():
            out.append("." + p)
        else:
            out.append("['" + p.replace("\\", "\\\\").replace("'", "\\'") + "']")
    return "".join(out)


_ONE_LINE = str.maketrans("\r\n\t", "   ")


def _cut(text: str) -> str:
    text = text.translate(_ONE_LINE)     # one line, whatever the value held
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX - 3] + "..."


class JsonBody:
    name = "validate"
    __slots__ = ("validator", "max_depth", "empty_ok")

    def __init__(self, settings):
        self.validator = settings.validator
        self.max_depth = settings.max_json_depth
        self.empty_ok = self.validator is None or self.validator.is_valid(None)

    def request_body(self, ctx, body):
        head = ctx.head
        if not body:
            if self.empty_ok or head.method in _NO_BODY_METHODS:
                return None
            return _REQUIRED
        if not is_json_type(head.get(b"content-type")):
            return _NOT_JSON
        if too_deep(body, self.max_depth):
            return Reject(400, "invalid_request",
                          f"$: JSON nested deeper than {self.max_depth} levels")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Reject(400, "invalid_request", _cut(f"$: not valid JSON: {exc}"))
        validator = self.validator
        if validator is None or validator.is_valid(doc):
            return None
        return self.refuse(doc)

    def refuse(self, doc) -> Reject:
        # jsonschema_rs is loaded with the first schema (config load): not at import
        from jsonschema_rs import ValidationError
        try:
            self.validator.validate(doc)        # raises at the first violation
        except ValidationError as err:
            return Reject(400, "invalid_request",
                          _cut(f"{json_path(err.instance_path)}: {err.message}"))
        return Reject(400, "invalid_request", "$: does not match the schema")


def build(route_cfg, services):
    settings = route_cfg.validate
    if settings is None:
        return None
    return JsonBody(settings)
