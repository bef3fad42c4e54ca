"""A fresh instance is fully warm before it says `listening on` (and a reload before its
swap): the real `fastgate run`, a real redis-server, a real IdP on loopback.

Before, the first cluster-limit call of a process imported the Redis client, built it and
connected inside the 50 ms `timeout_ms`, timed out, and the breaker applied `on_error` for
its backoff: 429 for every request of a new instance (deny), or unmetered traffic (allow)."""
from __future__ import annotations

import hashlib
import signal
import threading
import time

import httpx
import pytest

from fastgate.policies.rate_limit.cluster import LUA
from tests.helpers.gateway import GatewayProc, free_port, simple_config
from tests.policies.test_auth_servers import (  # noqa: F401  (idp is a fixture)
    Key, bearer, claims, idp, jwks,
)
from tests.policies.test_rate_limit_servers import RedisServer, redis_server  # noqa: F401

LUA_SHA = hashlib.sha1(LUA.encode()).hexdigest().encode()


def cluster_config(upstream_port, redis_url, on_error, limit, per="second", burst=None,
                   **redis_extra):
    cfg = simple_config(upstream_port)
    rl = {"limit": limit, "per": per, "by": "route", "scope": "cluster"}
    if burst is not None:
        rl["burst"] = burst
    cfg["routes"][0]["rate_limits"] = [rl]
    cfg["redis"] = {"url": redis_url, "on_error": on_error, **redis_extra}  # timeout_ms: 50
    return cfg


def hammer(url, n_threads, per_thread=None, until=None, path="/echo"):
    """Requests from `n_threads` keep-alive clients at once; the status codes. `until`: a
    one-element list holding the monotonic end time (it may be moved while they run)."""
    codes = []
    lock = threading.Lock()

    def run():
        mine = []
        with httpx.Client(base_url=url, timeout=10) as client:
            i = 0
            while (per_thread is None or i < per_thread) and (until is None
                                                               or time.monotonic() < until[0]):
                mine.append(client.get(path).status_code)
                i += 1
        with lock:
            codes.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes


def script_loaded(server) -> bool:
    return server.command(b"SCRIPT", b"EXISTS", LUA_SHA).endswith(b":1\r\n")


@pytest.mark.parametrize("workers", [None, 2])
def test_fresh_instance_in_deny_mode_refuses_nothing(upstream, gateway_factory, redis_server,
                                                      workers):
    gw = gateway_factory(cluster_config(upstream.port, redis_server.url, "deny", 10_000_000),
                         workers=workers)
    # Connected and the script loaded before `listening on`: no request has been sent yet.
    assert script_loaded(redis_server)
    codes = hammer(gw.url, 8, per_thread=25)
    assert codes == [200] * 200, {c: codes.count(c) for c in set(codes)}
    assert "redis unavailable" not in gw.stderr() and "unreachable" not in gw.stderr()


def test_fresh_instance_in_allow_mode_admits_exactly_the_limit(upstream, gateway_factory,
                                                              redis_server):
    gw = gateway_factory(cluster_config(upstream.port, redis_server.url, "allow", 50,
                                        per="hour"))
    codes = hammer(gw.url, 8, per_thread=25)
    assert codes.count(200) == 50 and codes.count(429) == 150, \
        {c: codes.count(c) for c in set(codes)}
    assert len(upstream.requests) == 50


def test_two_instances_started_together_under_load(upstream, tmp_path, redis_server):
    rate, burst, seconds = 100, 100, 3.0
    cfg = cluster_config(upstream.port, redis_server.url, "allow", rate, burst=burst)
    gws = [GatewayProc(cfg, tmp_path, name=f"gw{i}") for i in range(2)]
    results = [None, None]
    try:
        def load(i):
            gws[i].wait_ready()
            # Load from the moment each instance says `listening on`.
            results[i] = (time.monotonic(), hammer(gws[i].url, 2, until=deadline))
        deadline = [time.monotonic() + 60]
        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        while any(not g.addresses for g in gws):
            time.sleep(0.005)
        deadline[0] = time.monotonic() + seconds
        for t in threads:
            t.join(60)
        start = min(r[0] for r in results)
        elapsed = deadline[0] - start
        codes = results[0][1] + results[1][1]
        admitted = codes.count(200)
        assert codes.count(200) + codes.count(429) == len(codes)
        expected = burst + rate * elapsed
        assert len(codes) > 3 * expected, "the load must exceed the limit"
        assert abs(admitted - expected) <= 0.05 * expected, (admitted, expected)
    finally:
        for g in gws:
            g.stop()


@pytest.mark.parametrize("on_error", ["deny", "allow"])
def test_redis_down_at_start(upstream, gateway_factory, tmp_path, on_error):
    server = RedisServer(tmp_path / "redis")           # its port, nothing listening yet
    limit = 10_000_000 if on_error == "deny" else 5
    gw = gateway_factory(cluster_config(upstream.port, server.url, on_error, limit,
                                        per="second" if on_error == "deny" else "hour"))
    err = gw.stderr()
    assert err.count("redis unreachable at start") == 1, err
    fail_mode = 429 if on_error == "deny" else 200
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        for _ in range(5):
            assert client.get("/echo").status_code == fail_mode
        server.start()
        try:
            # Metered again once Redis answers (one probe per backoff period, <= 2 s).
            codes = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                codes.append(client.get("/echo").status_code)
                if on_error == "deny" and codes[-1] == 200:
                    break
                if on_error == "allow" and codes[-1] == 429:
                    break
                time.sleep(0.02)
            assert codes[-1] != fail_mode, codes
            after = [client.get("/echo").status_code for _ in range(20)]
            assert after == [codes[-1]] * 20
            assert "redis reachable again" in gw.stderr()
        finally:
            server.stop()


def test_reload_to_another_redis_is_warm_before_the_swap(upstream, gateway_factory,
                                                          redis_server, tmp_path):
    second = RedisServer(tmp_path / "redis2").start()
    try:
        cfg = cluster_config(upstream.port, redis_server.url, "deny", 10_000_000)
        gw = gateway_factory(cfg)
        with httpx.Client(base_url=gw.url, timeout=5) as client:
            assert client.get("/echo").status_code == 200
            cfg["redis"]["url"] = second.url
            gw.write_config(cfg)
            gw.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "config reloaded" not in gw.stderr():
                assert time.monotonic() < deadline, gw.stderr()
                time.sleep(0.01)
            assert script_loaded(second)                 # before any request through it
            codes = [client.get("/echo").status_code for _ in range(100)]
            assert codes == [200] * 100
            # The second Redis meters the route now.
            assert second.command(b"DBSIZE") != b":0\r\n"
    finally:
        second.stop()


def test_jwks_is_fetched_before_listening(upstream, gateway_factory, idp):
    key = Key()
    idp.jwks = jwks(key)
    cfg = simple_config(upstream.port)
    cfg["auth"] = {"sso": {"type": "jwt", "issuer": "https://idp.test/",
                           "audiences": ["orders-api"], "algorithms": ["RS256"],
                           "jwks_url": idp.jwks_url}}
    cfg["routes"][0]["auth"] = {"using": ["sso"]}
    gw = gateway_factory(cfg)
    assert idp.jwks_fetches == 1                         # before any request
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        r = client.get("/echo", headers=[tuple(x.decode() for x in bearer(key.sign(claims())))])
        assert r.status_code == 200
    assert idp.jwks_fetches == 1


def test_idp_down_at_start_still_starts_and_answers_503(upstream, gateway_factory):
    port = free_port()                                   # nothing listens there
    cfg = simple_config(upstream.port)
    cfg["auth"] = {"sso": {"type": "jwt", "issuer": "https://idp.test/",
                           "audiences": ["orders-api"], "algorithms": ["RS256"],
                           "jwks_url": f"http://127.0.0.1:{port}/jwks"}}
    cfg["routes"][0]["auth"] = {"using": ["sso"]}
    gw = gateway_factory(cfg)
    assert "fetch failed" in gw.stderr()
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        r = client.get("/echo", headers={"authorization": "Bearer " + Key().sign(claims())})
        assert r.status_code == 503 and r.json()["error"]["code"] == "idp_unavailable"


def test_no_module_is_imported_on_the_request_path(upstream, redis_server, idp, tmp_path):
    """After `listening on`, requests through every built feature (JWT over a JWKS URL,
    API keys, introspection, local and cluster limits, transform, CORS, lifecycle, ip rules,
    static answers, 404/405, a TLS listener, the access log, a malformed request) import
    nothing: everything was imported and warmed at start."""
    import socket
    import ssl
    import subprocess
    import sys

    import trustme
    import yaml

    from tests.helpers.gateway import REPO

    key = Key()
    idp.jwks = jwks(key)
    idp.tokens["opaque-1"] = {"active": True, "sub": "user-123", "exp": int(time.time()) + 3600}
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port, tls_port = free_port(), free_port()
    app = {"upstream": "app"}
    cfg = {
        "listeners": [{"bind": f"127.0.0.1:{port}"},
                      {"bind": f"127.0.0.1:{tls_port}",
                       "tls": {"cert_file": str(tmp_path / "gw.pem"),
                               "key_file": str(tmp_path / "gw.key")}}],
        "redis": {"url": redis_server.url, "on_error": "deny"},
        "logging": {"access_log": str(tmp_path / "access.log")},
        "upstreams": {"app": {"targets": [{"url": f"http://127.0.0.1:{upstream.port}"}]}},
        "consumers": [{"name": "alice", "jwt_subjects": ["user-123"],
                       "api_keys": ["sha256:" + hashlib.sha256(b"key-1").hexdigest()]}],
        "auth": {
            "sso": {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders-api"],
                    "algorithms": ["RS256"], "jwks_url": idp.jwks_url},
            "keys": {"type": "api_key", "header": "X-API-Key"},
            "intro": {"type": "introspection", "url": idp.introspect_url,
                      "client_id": "gateway", "client_secret": idp.client_secret}},
        "routes": [
            {"name": "jwt", "paths": ["/jwt/*"], **app, "auth": {"using": ["sso"]},
             "rate_limits": [{"limit": 1000000, "per": "second", "by": "consumer",
                              "scope": "cluster"},
                             {"limit": 100000, "per": "second", "by": "ip"}],
             "transform": {"request": {"set_headers": {"X-A": "1"}, "set_query": {"q": "1"}},
                           "response": {"set_headers": {"X-B": "2"}}},
             "cors": {"origins": ["https://app.example.com"], "methods": ["GET"]},
             "lifecycle": {"state": "deprecated", "sunset": "2030-01-01T00:00:00Z",
                           "successor": "/v2"},
             "ip": {"allow": ["127.0.0.0/8"]}},
            {"name": "key", "paths": ["/key/*"], **app, "auth": {"using": ["keys"]}},
            {"name": "intro", "paths": ["/intro/*"], **app, "auth": {"using": ["intro"]}},
            {"name": "static", "paths": ["/static"], "methods": ["GET"],
             "respond": {"status": 200, "body": "hi"}},
        ],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "modules.txt"
    out.write_text("")
    proc = subprocess.Popen(
        [sys.executable, f"{REPO}/tests/helpers/dump_modules.py", str(out), "run", "-c",
         str(tmp_path / "c.yaml")], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while sum(line.startswith("listening on") for line in seen) < 2:
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)

        def dump():
            n = out.read_text().count("===")
            proc.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 10
            while out.read_text().count("===") == n:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            return set(out.read_text().split("===\n")[n].split())

        before = dump()
        token = "Bearer " + key.sign(claims())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            assert c.get("/jwt/x", headers={"authorization": token,
                                            "origin": "https://app.example.com"}).status_code == 200
            assert c.options("/jwt/x", headers={
                "origin": "https://app.example.com",
                "access-control-request-method": "GET"}).status_code == 204
            assert c.get("/jwt/x", headers={"authorization": "Bearer a.b.c"}).status_code == 401
            assert c.get("/key/x", headers={"x-api-key": "key-1"}).status_code == 200
            assert c.post("/key/x", headers={"x-api-key": "key-1"},
                          content=b"x" * 100_000).status_code == 200
            assert c.get("/key/x").status_code == 401
            assert c.get("/intro/x", headers={"authorization": "Bearer opaque-1"}).status_code == 200
            assert c.get("/static").status_code == 200
            assert c.post("/static").status_code == 405
            assert c.get("/nowhere").status_code == 404
        with httpx.Client(base_url=f"https://127.0.0.1:{tls_port}", timeout=5,
                          verify=ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))) as c:
            assert c.get("/key/x", headers={"x-api-key": "key-1"}).status_code == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400")
        time.sleep(0.5)                        # the access log's batch is written
        assert dump() - before == set()
    finally:
        proc.terminate()
        proc.wait(20)
