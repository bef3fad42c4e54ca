"""Route lifecycle (Deprecation/Sunset/Link, 410 retired) and client address rules."""
from __future__ import annotations

import httpx

from tests.helpers.gateway import simple_config


def test_deprecated_and_retired_routes(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["routes"] = [
        {"name": "old", "paths": ["/v1/*"], "upstream": "app",
         "lifecycle": {"state": "deprecated", "sunset": "2027-06-30T00:00:00Z", "successor": "/v2/orders"}},
        {"name": "gone", "paths": ["/v0/*"], "upstream": "app",
         "lifecycle": {"state": "retired", "successor": "/v2/orders"}},
        {"name": "new", "paths": ["/v2/*"], "upstream": "app"},
    ]
    gw = gateway_factory(cfg)
    r = httpx.get(gw.url + "/v1/orders")
    assert r.status_code == 200
    assert r.headers["deprecation"] == "true"
    assert r.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert r.headers["link"] == '</v2/orders>; rel="successor-version"'
    before = len(upstream.requests)
    r = httpx.get(gw.url + "/v0/orders")
    assert r.status_code == 410 and r.json()["error"]["code"] == "gone"
    assert r.headers["link"] == '</v2/orders>; rel="successor-version"'
    assert len(upstream.requests) == before
    r = httpx.get(gw.url + "/v2/orders")
    assert "deprecation" not in r.headers and "sunset" not in r.headers


def test_ip_allow_and_deny(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["routes"] = [
        {"name": "denied", "paths": ["/denied"], "upstream": "app", "ip": {"deny": ["127.0.0.0/8"]}},
        {"name": "elsewhere", "paths": ["/elsewhere"], "upstream": "app", "ip": {"allow": ["10.0.0.0/8"]}},
        {"name": "local", "paths": ["/local"], "upstream": "app",
         "ip": {"allow": ["127.0.0.1/32"], "deny": ["10.0.0.0/8"]}},
    ]
    gw = gateway_factory(cfg)
    r = httpx.get(gw.url + "/denied", headers={"X-Forwarded-For": "10.9.9.9"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert httpx.get(gw.url + "/elsewhere", headers={"X-Forwarded-For": "10.1.1.1"}).status_code == 403
    assert httpx.get(gw.url + "/local").status_code == 200
