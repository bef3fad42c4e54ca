"""`routes[].validate`: the config (schemas checked at load, errors at their key paths), the
depth scan (tables, and differential against the parsed value's depth), the policy on
hand-built contexts, and the real `fastgate run` with httpx and raw sockets."""
from __future__ import annotations

import re
import socket

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgate._core.http import RequestParser
from fastgate.config import ConfigError, parse_config
from fastgate.policies import validate
from fastgate.policies.base import Reject
from fastgate.policies.validate import is_json_type, json_path
from fastgate.policies.validate.scan import depth, too_deep
from fastgate.server.context import RequestContext
from tests.helpers.gateway import simple_config
from tests.helpers.heads import HeadRecorder as _Heads

ORDER = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string", "pattern": "^ord_[0-9]+$"},
        "email": {"type": "string", "format": "email"},
        "items": {"type": "array", "minItems": 1,
                  "items": {"$ref": "#/$defs/item"}},
        "meta": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "$defs": {"item": {"type": "object", "required": ["sku", "qty"],
                       "properties": {"sku": {"type": "string"},
                                      "qty": {"type": "integer", "minimum": 1}}}},
}
GOOD = {"id": "ord_1", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}


def make_config(section, **route_extra):
    route = {"name": "orders", "paths": ["/orders"], "methods": ["GET", "POST", "PUT"],
             "respond": {"status": 200}, "validate": section}
    route.update(route_extra)
    return parse_config({"listeners": [{"bind": "127.0.0.1:0"}], "routes": [route]})


def errors_of(section):
    with pytest.raises(ConfigError) as info:
        make_config(section)
    return info.value.errors


# ---------------------------------------------------------------------------- config

def test_config_parsed_and_compiled_at_load():
    v = make_config({"json_schema": ORDER}).routes[0].validate
    assert v.max_json_depth == 32 and v.json_schema == ORDER
    assert v.validator.is_valid(GOOD) and not v.validator.is_valid({"id": "x"})
    v = make_config({"max_json_depth": 4}).routes[0].validate
    assert v.json_schema is None and v.validator is None and v.max_json_depth == 4
    assert make_config({}).routes[0].validate.max_json_depth == 32
    assert make_config({"json_schema": False}).routes[0].validate.validator.is_valid(1) is False
    assert make_config({"json_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema"}}).routes[0].validate
    # equality ignores the compiled validator (reloads compare configs)
    assert make_config({"json_schema": ORDER}) == make_config({"json_schema": ORDER})


def test_schema_errors_name_the_keyword_inside_the_schema():
    errs = errors_of({"json_schema": {"type": "objekt", "required": "id",
                                      "properties": {"n": {"minimum": "one",
                                                           "pattern": "(unclosed"}}}})
    p = "routes[0].validate.json_schema"
    assert sorted(errs) == sorted([
        f"{p}.type: invalid JSON Schema: must name JSON types (array, boolean, integer, "
        "null, number, object, string), alone or in a list",
        f'{p}.required: invalid JSON Schema: "id" is not of type "array"',
        f'{p}.properties.n.minimum: invalid JSON Schema: "one" is not of type "number"',
        f'{p}.properties.n.pattern: invalid JSON Schema: "(unclosed" is not a "regex"',
    ])


@pytest.mark.parametrize("section, error", [
    ({"json_schema": {"$ref": "#/$defs/missing"}},
     "routes[0].validate.json_schema: invalid JSON Schema: Pointer '/$defs/missing' does "
     "not exist"),
    ({"json_schema": {"$schema": "http://json-schema.org/draft-07/schema#"}},
     "routes[0].validate.json_schema.$schema: only draft 2020-12 is supported "
     "(https://json-schema.org/draft/2020-12/schema), got "
     "'http://json-schema.org/draft-07/schema#'"),
    ({"json_schema": "object"},
     "routes[0].validate.json_schema: expected a JSON Schema (a mapping, or true/false), "
     "got string"),
    ({"json_schema": {"enum": [float("nan")]}},
     "routes[0].validate.json_schema.enum[0]: JSON has no NaN or infinity"),
    ({"json_schema": {"properties": {1: {}}}},
     "routes[0].validate.json_schema.properties: keys must be strings, got integer 1 "
     "(quote it)"),
    ({"max_json_depth": 0}, "routes[0].validate.max_json_depth: must be >= 1"),
    ({"max_json_depth": 1025}, "routes[0].validate.max_json_depth: must be <= 1024"),
    ({"json_schema": {}, "max_json_bytes": 10},
     "routes[0].validate.max_json_bytes: unknown key (did you mean 'max_json_depth'?)"),
    ([], "routes[0].validate: expected a mapping, got list"),
])
def test_config_errors(section, error):
    assert errors_of(section) == [error]


def test_remote_refs_are_never_fetched():
    errs = errors_of({"json_schema": {"$ref": "http://127.0.0.1:9/schema.json"}})
    assert len(errs) == 1 and errs[0].startswith("routes[0].validate.json_schema: ")
    assert "remote references are not fetched" in errs[0]


def test_misspelt_key_is_an_error_with_a_hint():
    with pytest.raises(ConfigError) as info:
        parse_config({"listeners": [{"bind": "127.0.0.1:0"}],
                      "routes": [{"name": "r", "paths": ["/"], "respond": {"status": 200},
                                  "validat": {}}]})
    assert info.value.errors == ["routes[0].validat: unknown key (did you mean 'validate'?)"]


def test_schema_text_from_yaml_with_env():
    cfg = parse_config(
        "listeners: [{bind: '127.0.0.1:0'}]\n"
        "routes:\n"
        "  - name: r\n    paths: [/r]\n    respond: {status: 200}\n"
        "    validate: {json_schema: {type: object, properties: {t: {const: '${T}'}}}}\n",
        {"T": "tenant-a"})
    v = cfg.routes[0].validate.validator
    assert v.is_valid({"t": "tenant-a"}) and not v.is_valid({"t": "b"})


# ---------------------------------------------------------------------------- depth scan

@pytest.mark.parametrize("text, expected", [
    (b"1", 0), (b'"[[[["', 0), (b"[]", 1), (b"{}", 1), (b"[[]]", 2), (b"[{},[[]],{}]", 3),
    (b'{"a":{"b":{"c":[1,2,{"d":null}]}}}', 5),
    (b'["]]]]", ["[[[", {"k}": "{{{"}]]', 3),
    (b'["\\"[[[[", "\\\\", [[1]]]', 3),              # escaped quote, escaped backslash
    (b'["\\\\\\"]]]", [2]]', 2),                      # \\ then \" inside one string
    (b'{"a\\"": ["x\\\\"], "b": [[[]]]}', 4),
    (b'  [ [ ] , [ [ ] ] ]  ', 3),
    (b'"\\u005b\\u005b"', 0),                         # \u005b is "[" only once decoded
])
def test_depth_table(text, expected):
    assert depth(text) == expected
    for limit in range(0, expected + 3):
        assert too_deep(text, limit) == (expected > limit), limit


def test_bombs_are_too_deep():
    assert too_deep(b"[" * 100000 + b"]" * 100000, 32)
    assert too_deep(b"[" * 100000, 32)                  # unterminated: still refused
    assert too_deep(b'{"a":' * 50000 + b"1" + b"}" * 50000, 32)
    assert too_deep(b"[1," * 50000 + b"]" * 50000, 1024)
    comb = b"[" + (b"[" * 32 + b"]" * 32) * 1000 + b"]"   # no run of 33 opening brackets
    assert too_deep(comb, 32) and not too_deep(comb, 33) and depth(comb) == 33
    flat = orjson.dumps([{"a": [i, {"b": "]]]"}]} for i in range(20000)])
    assert not too_deep(flat, 4) and too_deep(flat, 3)


def _depth_of(v) -> int:
    if isinstance(v, dict):
        return 1 + max(map(_depth_of, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth_of, v), default=0)
    return 0


_text = st.text(alphabet='[]{}"\\ab \u00e9\u2028', max_size=6)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | _text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4),
    max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(_json, st.booleans())
def test_depth_matches_the_parsed_value(value, indent):
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    d = _depth_of(value)
    assert depth(text) == d
    for limit in {0, 1, max(d - 1, 0), d, d + 1}:
        assert too_deep(text, limit) == (d > limit)


# ---------------------------------------------------------------------------- helpers

@pytest.mark.parametrize("value, ok", [
    (b"application/json", True), (b"Application/JSON", True),
    (b"application/json; charset=utf-8", True), (b'application/json;charset="UTF-8"', True),
    (b"application/merge-patch+json", True), (b"application/problem+json; charset=utf8", True),
    (b"application/json; charset=latin-1", False), (b"text/json", False),
    (b"text/plain", False), (b"application/jsonx", False), (b"", False), (None, False),
    (b"multipart/form-data; boundary=x", False), (b"application/x-www-form-urlencoded", False),
])
def test_json_content_types(value, ok):
    assert is_json_type(value) is ok


@pytest.mark.parametrize("parts, text", [
    ([], "$"), (["items", 2, "qty"], "$.items[2].qty"), ([0], "$[0]"),
    (["a b", "c"], "$['a b'].c"), (["it's"], "$['it\\'s']"), (["_x1"], "$._x1"),
    (["1a"], "$['1a']"), (["\u00e9t\u00e9"], "$.\u00e9t\u00e9"),
])
def test_json_paths(parts, text):
    assert json_path(parts) == text


# ---------------------------------------------------------------------------- the policy


def ctx_for(method=b"POST", content_type=b"application/json"):
    rec = _Heads()
    raw = method + b" /orders HTTP/1.1\r\nhost: x\r\n"
    if content_type is not None:
        raw += b"content-type: " + content_type + b"\r\n"
    RequestParser(rec).feed(raw + b"\r\n")
    ctx = RequestContext()
    ctx.head = rec.heads[0]
    return ctx


def policy_for(section):
    return validate.build(make_config(section).routes[0], None)


def refusal(policy, body, **kw):
    r = policy.request_body(ctx_for(**kw), body)
    if r is None:
        return None
    assert isinstance(r, Reject) and (r.status, r.code) == (400, "invalid_request")
    return r.message


def test_no_policy_without_validate():
    cfg = parse_config({"listeners": [{"bind": "127.0.0.1:0"}],
                        "routes": [{"name": "r", "paths": ["/"], "respond": {"status": 200}}]})
    assert validate.build(cfg.routes[0], None) is None


def test_policy_asks_for_the_body_phase_only():
    p = policy_for({"json_schema": ORDER})
    assert hasattr(p, "request_body")
    assert not any(hasattr(p, m) for m in ("access", "request_chunk", "response", "log"))


def test_valid_bodies_pass():
    p = policy_for({"json_schema": ORDER})
    assert refusal(p, orjson.dumps(GOOD)) is None
    assert refusal(p, orjson.dumps(GOOD), content_type=b"application/json; charset=utf-8") is None
    assert refusal(p, orjson.dumps(dict(GOOD, email="ann@example.com"))) is None


@pytest.mark.parametrize("body, message", [
    ({"id": "ord_1", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 1},
                               {"sku": "c", "qty": 0}]},
     "$.items[2].qty: 0 is less than the minimum of 1"),
    ({"items": [{"sku": "a", "qty": 1}]}, '$: "id" is a required property'),
    ({"id": "nope", "items": [{"sku": "a", "qty": 1}]},
     '$.id: "nope" does not match "^ord_[0-9]+$"'),
    (dict(GOOD, email="not-an-address"), '$.email: "not-an-address" is not a "email"'),
    (dict(GOOD, meta={"a b": 1}), "$.meta['a b']: 1 is not of type \"string\""),
    ({"id": "ord_1", "items": []}, "$.items: [] has less than 1 item"),
    ([1], '$: [1] is not of type "object"'),
])
def test_schema_failures_name_the_json_path(body, message):
    assert refusal(policy_for({"json_schema": ORDER}), orjson.dumps(body)) == message


def test_long_values_are_cut_in_messages():
    msg = refusal(policy_for({"json_schema": {"type": "object",
                                              "properties": {"s": {"maxLength": 3}}}}),
                  orjson.dumps({"s": "x" * 10000}))
    assert msg.startswith('$.s: "xxx') and msg.endswith("...") and len(msg) == 200


def test_not_json():
    p = policy_for({"json_schema": ORDER})
    assert refusal(p, b"{nope").startswith("$: not valid JSON: unexpected character")
    assert refusal(p, b'{"id": 1} trailing').startswith("$: not valid JSON: ")
    assert refusal(p, b"\xff\xfe{}").startswith("$: not valid JSON: ")
    assert refusal(p, orjson.dumps(GOOD), content_type=b"text/plain") == \
        "$: expected a JSON body (Content-Type: application/json)"
    assert refusal(p, orjson.dumps(GOOD), content_type=None) == \
        "$: expected a JSON body (Content-Type: application/json)"
    assert refusal(p, orjson.dumps(GOOD), content_type=b"application/json; charset=utf-16") \
        == "$: expected a JSON body (Content-Type: application/json)"


def test_too_deep_refused_before_parsing():
    p = policy_for({"max_json_depth": 3})
    assert refusal(p, b'{"a": [{"b": 1}]}') is None
    assert refusal(p, b'{"a": [{"b": []}]}') == "$: JSON nested deeper than 3 levels"
    # deeper than orjson itself would parse: refused by the scan, not by the parser
    bomb = b"[" * 5000 + b"]" * 5000
    assert refusal(policy_for({}), bomb) == "$: JSON nested deeper than 32 levels"


def test_empty_bodies():
    strict = policy_for({"json_schema": ORDER})
    assert refusal(strict, b"", content_type=None) == "$: a JSON request body is required"
    assert refusal(strict, b"", method=b"PUT") == "$: a JSON request body is required"
    for method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        assert refusal(strict, b"", method=method, content_type=None) is None
    # a schema that accepts null accepts "no document"; no schema accepts anything JSON
    assert refusal(policy_for({"json_schema": {"type": ["object", "null"]}}), b"",
                   content_type=None) is None
    assert refusal(policy_for({}), b"", content_type=None) is None
    # a body on a GET is checked like any other
    assert refusal(strict, b"[]", method=b"GET") == '$: [] is not of type "object"'


# ---------------------------------------------------------------------------- end to end

def validate_config(upstream_port, section, **route_extra):
    cfg = simple_config(upstream_port)
    cfg["routes"][0].update({"validate": section, **route_extra})
    return cfg


@pytest.fixture
def orders_gw(upstream, gateway_factory):
    return gateway_factory(validate_config(upstream.port, {"json_schema": ORDER},
                                           max_body_bytes=2 << 20))


def test_gateway_forwards_valid_bodies_unchanged(upstream, orders_gw):
    body = b'{"id":"ord_7",  "items":[{"sku":"a","qty":3}], "note":"\\u00e9"}'
    with httpx.Client(base_url=orders_gw.url, timeout=10) as c:
        r = c.post("/echo", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200
        assert upstream.requests[-1].body == body
        assert c.get("/echo").status_code == 200              # no body, GET: not checked


def test_gateway_refuses_invalid_bodies_before_the_upstream(upstream, orders_gw):
    bad = dict(GOOD, items=[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 1},
                            {"sku": "c", "qty": 0}])
    with httpx.Client(base_url=orders_gw.url, timeout=10) as c:
        r = c.post("/echo", json=bad)
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        err = r.json()["error"]
        assert err == {"status": 400, "code": "invalid_request", "request_id": err["request_id"],
                       "message": "$.items[2].qty: 0 is less than the minimum of 1"}
        assert r.headers["x-request-id"] == err["request_id"]
        assert c.post("/echo", content=b"id=1", headers={
            "content-type": "application/x-www-form-urlencoded"}).status_code == 400
        assert c.post("/echo", content=b"{", headers={
            "content-type": "application/json"}).json()["error"]["message"].startswith(
            "$: not valid JSON")
        assert c.post("/echo").json()["error"]["message"] == "$: a JSON request body is required"
        # the connection stays usable after a refusal
        assert c.post("/echo", json=GOOD).status_code == 200
    assert len(upstream.requests) == 1


def test_gateway_refuses_a_megabyte_depth_bomb(upstream, orders_gw):
    bomb = b"[" * (1 << 19) + b"]" * (1 << 19)
    with httpx.Client(base_url=orders_gw.url, timeout=20) as c:
        r = c.post("/echo", content=bomb, headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "$: JSON nested deeper than 32 levels"
        # a chunked one too (the body phase buffers either framing)
        r = c.post("/echo", content=iter([b"[" * 40000, b"]" * 40000]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 400 and "deeper than 32" in r.text
        r = c.post("/echo", content=iter([orjson.dumps(GOOD)[:5], orjson.dumps(GOOD)[5:]]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 200
    assert len(upstream.requests) == 1


def test_gateway_size_bound_is_max_body_bytes(upstream, gateway_factory):
    gw = gateway_factory(validate_config(upstream.port, {}, max_body_bytes=1000))
    big = orjson.dumps({"s": "x" * 2000})
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/echo", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = c.post("/echo", content=iter([big]), headers={"content-type": "application/json"})
        assert r.status_code == 413
    assert not upstream.requests


def test_gateway_pipelined_refusal_then_valid(upstream, orders_gw):
    good = orjson.dumps(GOOD)
    s = socket.create_connection(("127.0.0.1", orders_gw.port), timeout=10)
    req = (b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n")
    s.sendall(req % 2 + b"[]" + req % len(good) + good +
              b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"400", b"200", b"200"]
    assert len(upstream.requests) == 2
