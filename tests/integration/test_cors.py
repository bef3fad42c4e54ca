"""CORS preflights and actual requests through the real gateway, in front of auth."""
from __future__ import annotations

import hashlib

import httpx

from tests.helpers.gateway import simple_config

APP = "https://app.example.com"


def test_cors_preflight_before_auth_and_actual_requests(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["consumers"] = [{"name": "web", "api_keys": ["sha256:" + hashlib.sha256(b"key-1").hexdigest()]}]
    cfg["auth"] = {"keys": {"type": "api_key", "header": "X-API-Key"}}
    cfg["routes"] = [{
        "name": "api", "paths": ["/echo", "/echo/*"], "methods": ["GET"], "upstream": "app",
        "auth": {"using": ["keys"]},
        "cors": {"origins": [APP], "headers": ["X-API-Key"], "expose_headers": ["X-Request-ID"],
                 "credentials": True, "max_age_s": 600},
    }]
    gw = gateway_factory(cfg)
    pre = {"Origin": APP, "Access-Control-Request-Method": "GET",
           "Access-Control-Request-Headers": "x-api-key"}
    r = httpx.options(gw.url + "/echo", headers=pre)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == APP
    assert "GET" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "X-API-Key"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-max-age"] == "600"
    assert upstream.requests == []  # answered by the gateway
    assert httpx.options(gw.url + "/echo", headers={**pre, "Origin": "https://evil.example"}).status_code == 403
    # asking for a method the route does not serve: not allowed, no CORS grant
    r = httpx.options(gw.url + "/echo", headers={**pre, "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    # a plain OPTIONS (not a preflight) is still not allowed on a GET-only route
    assert httpx.options(gw.url + "/echo").status_code == 405

    r = httpx.get(gw.url + "/echo", headers={"Origin": APP, "X-API-Key": "key-1"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-expose-headers"] == "X-Request-ID"
    r = httpx.get(gw.url + "/echo", headers={"Origin": APP})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == APP
    r = httpx.get(gw.url + "/echo", headers={"Origin": "https://evil.example", "X-API-Key": "key-1"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
