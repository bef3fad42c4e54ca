"""Rate limits end to end: the real `fastgate run` on loopback, a real upstream, httpx, and
(for scope: cluster) a real redis-server."""
from __future__ import annotations

import signal
import time

import httpx
import pytest

from fastgate.config import check_file
from tests.helpers.gateway import simple_config
from tests.policies.test_rate_limit_servers import redis_server  # noqa: F401  (fixture)


def limited_config(upstream_port, *limits, **extra):
    cfg = simple_config(upstream_port, **extra)
    cfg["routes"][0]["rate_limits"] = list(limits)
    return cfg


def until_refused(client, path="/echo", most=50):
    """GET until the first 429: (responses admitted before it, the 429)."""
    admitted = []
    for _ in range(most):
        r = client.get(path)
        if r.status_code == 429:
            return admitted, r
        assert r.status_code == 200, r.text
        admitted.append(r)
    raise AssertionError(f"no 429 after {most} requests")


def test_config_with_rate_limits_and_redis_validates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "listeners: [{bind: 127.0.0.1:0}]\n"
        "redis: {url: redis://127.0.0.1:6379/0, timeout_ms: 50, on_error: allow}\n"
        "routes:\n"
        "  - {name: r, paths: [/], respond: {status: 200},\n"
        "     rate_limits: [{limit: 100, per: second, burst: 200, by: ip, scope: local},\n"
        "                   {limit: 1000, per: minute, by: 'header:X-Tenant', scope: cluster}]}\n")
    assert check_file(str(path)) == []


def test_burst_then_refill(upstream, gateway_factory):
    gw = gateway_factory(limited_config(upstream.port,
                                        {"limit": 1, "per": "second", "burst": 5, "by": "ip"}))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        t0 = time.monotonic()
        admitted, refused = until_refused(client)
        elapsed = time.monotonic() - t0
        # The burst, plus at most the tokens that came back while the requests ran.
        assert 5 <= len(admitted) <= 5 + int(elapsed) + 1
        first = admitted[0].headers
        assert first["ratelimit-limit"] == "5" and first["ratelimit-remaining"] == "4"
        assert first["ratelimit-reset"] == "1"
        assert admitted[-1].headers["ratelimit-remaining"] == "0"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit-limit"] == "5"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["content-type"] == "application/json"
        err = refused.json()["error"]
        assert err["status"] == 429 and err["code"] == "rate_limited" and err["request_id"]
        # The refused request never reached the upstream.
        assert len(upstream.requests) == len(admitted)
        time.sleep(1.1)
        r = client.get("/echo")
        assert r.status_code == 200 and r.headers["ratelimit-limit"] == "5"


def test_other_clients_and_routes_unaffected(upstream, gateway_factory):
    cfg = limited_config(upstream.port, {"limit": 2, "per": "day", "by": "header:X-Tenant"})
    cfg["routes"].insert(0, {"name": "free", "paths": ["/free"], "upstream": "app"})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        a = {"x-tenant": "a"}
        assert [client.get("/echo", headers=a).status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/echo", headers={"x-tenant": "b"}).status_code == 200
        r = client.get("/free")
        assert r.status_code == 200 and "ratelimit-limit" not in r.headers


def test_two_workers_share_one_local_limit(upstream, gateway_factory):
    gw = gateway_factory(limited_config(upstream.port,
                                        {"limit": 20, "per": "day", "by": "route"}),
                         workers=2)
    codes = []
    for _ in range(60):
        # A new connection each time: the kernel spreads them over both workers.
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            codes.append(client.get("/echo").status_code)
    assert codes.count(200) == 20 and codes.count(429) == 40


def test_reload_keeps_the_buckets(upstream, gateway_factory):
    cfg = limited_config(upstream.port, {"limit": 3, "per": "day", "by": "ip"})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert [client.get("/echo").status_code for _ in range(2)] == [200, 200]
        cfg["routes"].insert(0, {"name": "other", "paths": ["/other"], "upstream": "app"})
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reloaded" not in gw.stderr():
            assert time.monotonic() < deadline, gw.stderr()
            time.sleep(0.05)
        assert client.get("/other").status_code == 200
        assert [client.get("/echo").status_code for _ in range(2)] == [200, 429]


def test_three_instances_share_one_cluster_limit(upstream, gateway_factory, redis_server):
    cfg = limited_config(
        upstream.port, {"limit": 15, "per": "day", "by": "route", "scope": "cluster"},
        redis={"url": redis_server.url, "timeout_ms": 1000, "on_error": "deny"})
    gws = [gateway_factory(cfg, name=f"gw{i}") for i in range(3)]
    clients = [httpx.Client(base_url=g.url, timeout=10) for g in gws]
    try:
        codes = [[], [], []]
        for i in range(45):
            codes[i % 3].append(clients[i % 3].get("/echo").status_code)
        admitted = [c.count(200) for c in codes]
        assert sum(admitted) == 15 and all(admitted), admitted
        assert sum(c.count(429) for c in codes) == 30
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("on_error,expect", [("allow", 200), ("deny", 429)])
def test_cluster_limit_when_redis_is_down(upstream, gateway_factory, redis_server, on_error,
                                          expect):
    cfg = limited_config(
        upstream.port, {"limit": 100, "per": "second", "by": "ip", "scope": "cluster"},
        redis={"url": redis_server.url, "timeout_ms": 100, "on_error": on_error})
    gw = gateway_factory(cfg)
    redis_server.kill()
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        for _ in range(5):
            assert client.get("/echo").status_code == expect
