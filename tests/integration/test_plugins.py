"""Plugins (SPEC "Plugins") and the core's phases, end to end: plugin packages pip-installed
into this test venv (the example one in examples/plugins/add-tenant, and test-only probes in
tests/plugins/probe that exercise every phase), a real `fastgate run`, real clients and
upstreams on loopback."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers.gateway import REPO, simple_config
from tests.helpers.util import proc_status_kb

PACKAGES = [f"{REPO}/examples/plugins/add-tenant", f"{REPO}/tests/plugins/probe"]
ALICE_KEY = "alice-key-0123456789"


@pytest.fixture(scope="session")
def installed_plugins():
    """pip-install the plugin packages next to fastgate, as a user would."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", *PACKAGES], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return True


def plugin_config(upstream_port, plugins, **route_extra):
    cfg = simple_config(upstream_port)
    cfg["routes"][0]["plugins"] = plugins
    cfg["routes"][0].update(route_extra)
    return cfg


def check(tmp_path, cfg) -> tuple[int, str]:
    import yaml
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "fastgate", "check", "-c", str(path)],
                       capture_output=True, text=True, cwd=REPO)
    return r.returncode, r.stdout + r.stderr


# ---------------------------------------------------------------------------- the example

def test_example_plugin_add_tenant(installed_plugins, upstream, gateway_factory):
    cfg = plugin_config(upstream.port, [{"name": "add-tenant", "config": {"header": "X-Tenant"}}],
                        auth={"using": ["keys"]})
    cfg["auth"] = {"keys": {"type": "api_key", "header": "X-API-Key"}}
    cfg["consumers"] = [{"name": "alice", "api_keys": [
        "sha256:" + hashlib.sha256(ALICE_KEY.encode()).hexdigest()]}]
    cfg["routes"].append({"name": "open", "paths": ["/open/*"], "upstream": "app",
                          "plugins": [{"name": "add-tenant", "config": {"header": "X-Tenant"}}]})
    cfg["routes"].reverse()
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=5) as c:
        r = c.get("/echo", headers={"x-api-key": ALICE_KEY, "x-tenant": "spoofed"})
        assert r.status_code == 200 and r.headers["x-tenant-seen"] == "1"
        sent = [v for k, v in r.json()["headers"] if k.lower() == "x-tenant"]
        assert sent == ["alice"]                      # the client's copy was replaced
        r = c.get("/open/x")
        assert [v for k, v in r.json()["headers"] if k.lower() == "x-tenant"] == ["anonymous"]
        assert c.get("/echo").status_code == 401      # built-in auth ran first


def test_plugin_config_errors_have_key_paths(installed_plugins, upstream, tmp_path):
    rc, out = check(tmp_path, plugin_config(upstream.port, [{"name": "no-such-plugin"}]))
    assert rc == 2 and "routes[0].plugins[0].name: unknown plugin 'no-such-plugin'" in out
    assert "add-tenant" in out                        # the installed ones are listed
    rc, out = check(tmp_path, plugin_config(upstream.port, [
        {"name": "add-tenant", "config": {"header": 5, "extra": True}}]))
    assert rc == 2 and "routes[0].plugins[0].config.header:" in out, out
    rc, out = check(tmp_path, plugin_config(upstream.port, [{"name": "add-tenant"}]))
    assert rc == 2 and "routes[0].plugins[0].config" in out and "header" in out, out
    rc, out = check(tmp_path, plugin_config(upstream.port, [
        {"name": "add-tenant", "config": {"header": "X-Tenant"}}]))
    assert rc == 0, out


# ---------------------------------------------------------------------------- request body

def test_body_phase_sees_the_buffered_body_and_413_past_the_limit(installed_plugins, upstream,
                                                                  gateway_factory):
    gw = gateway_factory(plugin_config(upstream.port, [{"name": "body-probe"}],
                                       max_body_bytes=100_000))
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        body = b"x" * 70_000
        # Chunked from the client, in several pieces: the policy sees it whole, the
        # upstream gets it with a Content-Length.
        r = c.post("/upload", content=iter([body[:1000], body[1000:50_000], body[50_000:]]))
        assert r.status_code == 200 and r.json() == {"received": 70_000}
        rec = upstream.requests[-1]
        assert rec.header(b"x-body-seen") == b"70000:" + hashlib.sha256(body).hexdigest().encode()
        assert rec.header(b"content-length") == b"70000" and rec.header(b"transfer-encoding") is None
        r = c.post("/echo", content=b"replace-me please")
        assert r.json()["body_len"] == len(b"replaced")
        n = len(upstream.requests)
        r = c.post("/echo", content=b"this is forbidden")
        assert r.status_code == 403 and r.text == "refused by body-probe"
        assert len(upstream.requests) == n            # never reached the upstream
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/echo", content=b"y" * 100_001)
        assert r.status_code == 413
        r = c.post("/echo", content=iter([b"y" * 60_000, b"y" * 60_000]))   # chunked
        assert r.status_code == 413
    assert len(upstream.requests) == n


# ---------------------------------------------------------------------------- response body

def test_response_body_phase_rewrites_a_chunked_stream_in_bounded_memory(
        installed_plugins, upstream, gateway_factory):
    gw = gateway_factory(plugin_config(upstream.port, [{"name": "upper"}]))
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        r = c.get("/chunked/5")
        assert r.text == "".join(f"CHUNK-{i}\n" for i in range(5))
        assert r.headers["transfer-encoding"] == "chunked"
        r = c.get("/download/1000")                   # a Content-Length response: re-framed
        assert r.content == b"D" * 1000 and "content-length" not in r.headers
        rss0 = proc_status_kb(gw.proc.pid, "VmHWM")
        total = 0
        with c.stream("GET", "/chunked-big/1024/65536") as s:   # 64 MiB through the filter
            for part in s.iter_bytes():
                assert part == part.upper()
                total += len(part)
        assert total == 64 << 20
        grew_mib = (proc_status_kb(gw.proc.pid, "VmHWM") - rss0) / 1024
        assert grew_mib < 32, f"peak RSS grew {grew_mib:.1f} MiB for a 64 MiB stream"


def test_response_body_phase_rewrites_sse_event_by_event(installed_plugins, upstream,
                                                         gateway_factory):
    gw = gateway_factory(plugin_config(upstream.port, [{"name": "sse-rewrite",
                                                        "config": {"prefix": "seen:"}}]))
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        with c.stream("GET", "/sse-gated/3") as s:
            lines = s.iter_lines()
            got = []
            for i in range(3):
                # The upstream sends event i+1 only after the test saw event i through the
                # gateway: a gateway that held the stream would never get here.
                line = next(lines)
                while not line:
                    line = next(lines)
                got.append(line)
                upstream.gates[i].set()
        assert got == ["data: seen:event-0", "data: seen:event-1", "data: seen:event-2"]


# ---------------------------------------------------------------------------- log phase

def test_log_phase_sees_final_status_and_bytes(installed_plugins, upstream, gateway_factory,
                                               tmp_path):
    path = tmp_path / "probe.log"
    gw = gateway_factory(plugin_config(upstream.port, [
        {"name": "header-edit"}, {"name": "log-probe", "config": {"path": str(path)}}]))
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/status/201", content=b"abc")
        r2 = c.get("/download/5000")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(path.read_text().splitlines() if path.exists()
                                              else []) < 2:
        time.sleep(0.02)
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["status"] == 201 and first["route"] == "app"
    assert first["request_id"] == r.headers["x-request-id"]
    assert first["seen"] == "yes"                     # an earlier plugin's response header
    assert first["bytes_received"] > 3 and first["bytes_sent"] > len(r.content)
    assert second["status"] == 200 and second["bytes_sent"] > 5000


# ---------------------------------------------------------------------------- views, errors

def test_header_edits_and_async_hooks(installed_plugins, upstream, gateway_factory):
    gw = gateway_factory(plugin_config(upstream.port, [{"name": "header-edit"},
                                                       {"name": "slow-access"}]))
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.get("/echo", headers={"x-remove-me": "1", "user-agent": "original"})
        assert r.status_code == 200
        sent = {}
        for k, v in r.json()["headers"]:
            sent.setdefault(k.lower(), []).append(v)
        assert sent["x-added"] == ["1"] and "x-remove-me" not in sent
        assert sent["user-agent"] == ["header-edit"] and sent["x-slow"] == ["waited"]
        assert r.headers["x-probe"] == "yes" and r.headers["x-slow-response"] == "waited"
        r = c.get("/echo", headers={"x-deny": "1"})
        assert r.status_code == 429 and r.text == "slow no"


@pytest.mark.parametrize("phase", ["access", "response", "response_body"])
def test_a_failing_plugin_answers_500_for_that_request_only(installed_plugins, upstream,
                                                            gateway_factory, phase):
    cfg = plugin_config(upstream.port, [{"name": "fail-in", "config": {"phase": phase}}])
    cfg["routes"].insert(0, {"name": "fine", "paths": ["/fine/*"], "upstream": "app"})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for _ in range(3):
            r = c.get("/echo")
            assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
            assert c.get("/fine/x").status_code == 200
    assert gw.proc.poll() is None
    assert f"fail-in {phase}" in gw.stderr()


def test_plugin_instances_are_rebuilt_on_reload(installed_plugins, upstream, gateway_factory):
    import signal
    cfg = plugin_config(upstream.port, [{"name": "add-tenant", "config": {"header": "X-T1"}}])
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert any(k.lower() == "x-t1" for k, _ in c.get("/echo").json()["headers"])
        cfg["routes"][0]["plugins"][0]["config"]["header"] = "X-T2"
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reloaded" not in gw.stderr():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        names = [k.lower() for k, _ in c.get("/echo").json()["headers"]]
        assert "x-t2" in names and "x-t1" not in names


def test_raw_socket_pipelined_through_plugins(installed_plugins, upstream, gateway_factory):
    gw = gateway_factory(plugin_config(upstream.port, [{"name": "upper"}, {"name": "body-probe"}]))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /chunked/2 HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while data.count(b"0\r\n\r\n") < 2:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2 and b"CHUNK-1" in data


def test_a_reload_whose_compile_fails_keeps_the_old_keys(installed_plugins, upstream,
                                                         gateway_factory, tmp_path):
    """The new file validates, but building it fails (a plugin's constructor raises): the
    running snapshot and its state (the authenticator with its old keys) stay untouched."""
    import signal

    from tests.policies.test_auth_servers import Key, claims, jwks

    old, new = Key(kid="old"), Key(kid="new")
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(old)))
    cfg = simple_config(upstream.port)
    cfg["auth"] = {"sso": {"type": "jwt", "issuer": "https://idp.test/",
                           "audiences": ["orders-api"], "algorithms": ["RS256"],
                           "jwks_file": str(keys)}}
    cfg["routes"][0]["auth"] = {"using": ["sso"]}
    gw = gateway_factory(cfg)
    token_old = {"authorization": "Bearer " + old.sign(claims())}
    token_new = {"authorization": "Bearer " + new.sign(claims())}
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/echo", headers=token_old).status_code == 200
        new_keys = tmp_path / "jwks-new.json"
        new_keys.write_text(json.dumps(jwks(new)))
        cfg["auth"]["sso"]["jwks_file"] = str(new_keys)
        cfg["routes"][0]["plugins"] = [{"name": "fail-in", "config": {"phase": "init"}}]
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload rejected" not in gw.stderr():
            assert time.monotonic() < deadline, gw.stderr()
            time.sleep(0.02)
        assert "fail-in init" in gw.stderr()
        assert c.get("/echo", headers=token_old).status_code == 200
        assert c.get("/echo", headers=token_new).status_code == 401


def test_request_chunk_phase_refuses_mid_stream(installed_plugins, upstream, gateway_factory):
    gw = gateway_factory(plugin_config(upstream.port, [{"name": "chunk-guard"}]))
    good = b"g" * 65536
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/upload", content=iter([good] * 8))       # streamed, inspected, passed
        assert r.status_code == 200 and r.json() == {"received": 8 * 65536}
    total = 16 * 65536
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(4):
            s.sendall(good)
        # Wait until the upstream has seen part of this body stream through...
        deadline = time.monotonic() + 10
        while not any(r.body_len > 0 and r.target == b"/upload" for r in upstream.requests[1:]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        s.sendall(b"x" * 1000 + b"evil" + b"x" * 1000)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 403") and data.endswith(b"refused mid-stream"), data[:200]
    assert b"connection: close" in data.lower()
    time.sleep(0.2)
    # ...but it never got the whole request.
    assert all(r.body_len < total for r in upstream.requests[1:])
