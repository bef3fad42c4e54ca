"""Config of `routes[].transform` (handler: fastgate.policies.transform).

Transform(request: RequestTransform, response: ResponseTransform)
RequestTransform(set_headers: dict, add_headers: dict, remove_headers: list, rename_headers:
                 dict, set_query: dict, remove_query: list)   header names lower-cased
  framing/hop-by-hop headers (content-length, transfer-encoding, connection, ...) and
  x-consumer-name/-groups can never be named in a transform (values.MANAGED_HEADERS).
  set_query values may be numbers or booleans, kept as their text.
ResponseTransform(set_headers: dict, remove_headers: list)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastgate.config.check import Obj, c_header_name, c_header_value, c_list, c_map, c_str
from fastgate.config.sections import RouteKey
from fastgate.config.values import MANAGED_HEADERS, QUERY_NAME

__all__ = ("Transform", "RequestTransform", "ResponseTransform", "parse_transform",
           "c_managed_header")


@dataclass(frozen=True, slots=True)
class RequestTransform:
    set_headers: dict[str, str] = field(default_factory=dict)
    add_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    rename_headers: dict[str, str] = field(default_factory=dict)
    set_query: dict[str, str] = field(default_factory=dict)
    remove_query: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ResponseTransform:
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Transform:
    request: RequestTransform = field(default_factory=RequestTransform)
    response: ResponseTransform = field(default_factory=ResponseTransform)


def c_managed_header(e, path, v):
    name = c_header_name()(e, path, v)
    if name is not None and name in MANAGED_HEADERS:
        e.add(path, f"{name} is managed by the gateway and cannot be transformed")
        return None
    return name


def _c_scalar_text(conv):
    """Strings, and numbers/booleans as their text (`set_query: {v: 2}`)."""
    def wrapped(e, path, v):
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        return conv(e, path, v)
    return wrapped


def parse_transform(ctx, e, path, v):
    o = Obj(e, path, v, ("request", "response"))
    hv = c_header_value
    qn = c_str(pattern=QUERY_NAME, what="a query parameter name", max_len=256)
    qv = c_str(empty=True, max_len=4096)

    def request(e2, p2, v2):
        r = Obj(e2, p2, v2, RequestTransform.__dataclass_fields__)
        return RequestTransform(
            set_headers=r.get("set_headers", c_map(c_managed_header, hv), {}),
            add_headers=r.get("add_headers", c_map(c_managed_header, hv), {}),
            remove_headers=r.get("remove_headers", c_list(c_managed_header, unique=True), []),
            rename_headers=r.get("rename_headers", c_map(c_managed_header, c_managed_header), {}),
            set_query=r.get("set_query", c_map(qn, _c_scalar_text(qv)), {}),
            remove_query=r.get("remove_query", c_list(qn, unique=True), []),
        )

    def response(e2, p2, v2):
        r = Obj(e2, p2, v2, ResponseTransform.__dataclass_fields__)
        return ResponseTransform(
            set_headers=r.get("set_headers", c_map(c_managed_header, hv), {}),
            remove_headers=r.get("remove_headers", c_list(c_managed_header, unique=True), []),
        )

    return Transform(request=o.get("request", request, RequestTransform()),
                     response=o.get("response", response, ResponseTransform()))


SECTIONS = (RouteKey("transform", parse_transform),)
