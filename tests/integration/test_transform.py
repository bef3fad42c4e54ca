"""Request/response transforms through the real gateway."""
from __future__ import annotations

import httpx

from tests.helpers.gateway import simple_config


def test_request_and_response_transforms(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["routes"][0]["max_body_bytes"] = 1000
    cfg["routes"][0]["transform"] = {
        "request": {
            "set_headers": {"X-Env": "prod"},
            "add_headers": {"X-Added": "1"},
            "remove_headers": ["X-Drop-Me"],
            "rename_headers": {"X-Old": "X-New"},
            "set_query": {"version": "2"},
            "remove_query": ["secret"],
        },
        "response": {"set_headers": {"X-Served-By": "fastgate"}, "remove_headers": ["Content-Type"]},
    }
    gw = gateway_factory(cfg)
    r = httpx.get(gw.url + "/echo?a=1&secret=s&version=1",
                  headers={"X-Env": "dev", "X-Drop-Me": "x", "X-Old": "o", "X-Keep": "k"})
    assert r.status_code == 200
    assert r.headers["x-served-by"] == "fastgate" and "content-type" not in r.headers
    body = r.json()
    hs = body["headers"]
    names = [k for k, _ in hs]
    d = dict(hs)
    assert d["x-env"] == "prod" and names.count("x-env") == 1
    assert d["x-added"] == "1" and d["x-new"] == "o" and d["x-keep"] == "k"
    assert "x-drop-me" not in names and "x-old" not in names
    assert body["target"] == "/echo?a=1&version=2"
    # the gateway's own answers on the route carry the response transform too
    r = httpx.post(gw.url + "/echo", content=b"x" * 2000)
    assert r.status_code == 413 and r.headers["x-served-by"] == "fastgate"
