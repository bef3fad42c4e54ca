"""Process lifecycle through the real command: reload, drain, CLI contract, limits on
connections, bounded memory for huge bodies, workers."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.helpers.util import proc_status_kb, quietly, read_until_close, wait_for
from tests.helpers.gateway import REPO, GatewayProc, free_port, simple_config


def fastgate(*args, input=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "fastgate", *args], cwd=REPO, input=input,
                          capture_output=True, timeout=timeout)


# ---------------------------------------------------------------------------- CLI
def test_check_valid_and_invalid(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("listeners: [{bind: '127.0.0.1:8080'}]\nroutes: [{paths: [/x], respond: {status: 200}}]\n")
    r = fastgate("check", "-c", str(good))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listeners: [{bind: 'nope'}]\n"
        "bogus: 1\n"
        "upstreams: {a: {targets: [{url: 'http://127.0.0.1:1'}]}}\n"
        "routes: [{paths: [/x], upstream: missing}, {paths: [y], upstream: a}]\n")
    r = fastgate("check", "-c", str(bad))
    assert r.returncode == 2
    lines = r.stdout.decode().strip().splitlines()
    assert any(l.startswith("listeners[0].bind:") for l in lines)
    assert any(l.startswith("bogus:") for l in lines)
    assert any(l.startswith("routes[0].upstream:") for l in lines)
    assert any(l.startswith("routes[1].paths[0]:") for l in lines)


def test_hash_key():
    r = fastgate("hash-key", input=b"test\n")
    assert r.returncode == 0
    assert r.stdout.decode().strip() == "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_run_refuses_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: []\nroutes: [{paths: [/x]}]\n")
    r = fastgate("run", "-c", str(bad))
    assert r.returncode == 2
    assert b"listeners" in r.stderr or b"routes[0]" in r.stderr


def test_demo_serves_and_its_curl_commands_work():
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastgate", "demo", "--port", str(port),
                             "--admin-port", str(admin_port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = []
    t = threading.Thread(target=lambda: out.extend(l.decode() for l in proc.stderr), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: any("Ctrl-C" in l for l in out), 15), "".join(out)
        text = "".join(out)
        urls = re.findall(r"curl [^\n#]*?(http://127\.0\.0\.1:\d+/\S*)", text)
        assert len(urls) >= 5
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/hello").text == "hello from FastGate\n"
        assert httpx.get(base + "/echo/anything?x=1").json()["path"] == "/echo/anything"
        assert httpx.get(base + "/api/orders/42").json()["path"] == "/v2/orders/42"
        assert httpx.get(base + "/files/a/b.txt").json()["path"] == "/a/b.txt"
        assert httpx.get(base + "/nowhere").status_code == 404
        assert httpx.delete(base + "/hello").status_code == 405
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Length: 1",
                            "-H", "Transfer-Encoding: chunked", "-d", "x", base + "/echo"],
                           capture_output=True, timeout=10) if shutil_which("curl") else None
        if r is not None:
            assert r.stdout == b"400"
        # the API-key route, the subscription flow and the rate-limited route it prints
        key = re.search(r"X-API-Key: (demo-key-\S+)'", text).group(1)
        admin = re.search(r"Bearer (demo-admin-\S+)'", text).group(1)
        operator = re.search(r"Bearer (demo-ops-\S+)'", text).group(1)
        assert httpx.get(base + "/api/profile", headers={"X-API-Key": key}).json()[
            "headers"]["x-consumer-name"] == "demo-app"
        assert httpx.get(base + "/api/profile").status_code == 401
        assert httpx.get(base + "/api/payments", headers={"X-API-Key": key}).status_code == 403
        abase = f"http://127.0.0.1:{admin_port}"
        pending = httpx.get(abase + "/subscriptions?state=pending",
                            headers={"Authorization": f"Bearer {admin}"}).json()
        assert [s["id"] for s in pending["subscriptions"]] == ["sub-demo"]
        assert "Sign in" in httpx.get(abase + "/portal/").text
        r = httpx.post(abase + "/subscriptions/sub-demo/approve",
                       headers={"Authorization": f"Bearer {operator}"})
        new_key = r.json()["api_key"]
        assert httpx.get(base + "/api/payments", headers={"X-API-Key": new_key}).status_code == 200
        codes = [httpx.get(base + "/limited").status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        # the AI routes, on the built-in echo model: the OpenAI SDK with no provider key
        import openai
        ai = openai.OpenAI(base_url=base + "/v1", api_key="any", max_retries=0)
        r = ai.chat.completions.create(model="echo", messages=[
            {"role": "user", "content": "hello there"}])
        assert r.choices[0].message.content == "echo: hello there"
        chunks = list(ai.chat.completions.create(
            model="echo", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream me"}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            "echo: stream me"
        assert chunks[-1].usage.completion_tokens == 3
        assert [m.id for m in ai.models.list()] == ["echo"]
        assert httpx.post(base + "/apis/sentiment", json={"text": "I love it"}).json()[
            "result"] == "echo: Label the sentiment of: I love it"
        assert wait_for(lambda: any(u["model"] == "echo" and u["output_tokens"] >= 6 for u in
                                    httpx.get(abase + "/usage", headers={
                                        "Authorization": f"Bearer {admin}"}).json()["usage"]),
                        5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def shutil_which(name):
    import shutil
    return shutil.which(name)


# ---------------------------------------------------------------------------- reload
def test_sighup_valid_then_invalid(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    gw = gateway_factory(cfg)
    assert httpx.get(gw.url + "/new").status_code == 200  # proxied by the catch-all
    cfg2 = simple_config(upstream.port)
    cfg2["listeners"] = [{"bind": f"127.0.0.1:{gw.port}"}]
    cfg2["routes"].insert(0, {"name": "new", "paths": ["/new"], "respond": {"status": 201, "body": "v2"}})
    gw.write_config(cfg2)
    gw.signal(signal.SIGHUP)
    assert wait_for(lambda: httpx.get(gw.url + "/new").status_code == 201)
    gw.write_config("listeners: [{bind: '127.0.0.1:1'}]\nroutes: [{paths: [/x], upstream: nope}]\nbogus: true\n")
    gw.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload rejected" in gw.stderr())
    time.sleep(0.2)
    err = gw.stderr()
    assert "routes[0].upstream" in err and "bogus" in err
    r = httpx.get(gw.url + "/new")
    assert (r.status_code, r.text) == (201, "v2")
    assert httpx.get(gw.url + "/echo").status_code == 200


def test_sighup_refuses_what_check_refuses(upstream, gateway_factory):
    # Schema-valid, refused only for a high audit finding: a 40-byte secret for HS512.
    admin_port, token = free_port(), "reload-test-admin-token"
    cfg = simple_config(upstream.port, admin={"bind": f"127.0.0.1:{admin_port}", "token": token})
    cfg["routes"].insert(0, {"name": "v", "paths": ["/v"], "respond": {"status": 200, "body": "v1"}})
    gw = gateway_factory(cfg)
    weak = simple_config(upstream.port, admin=cfg["admin"])
    weak["listeners"] = [{"bind": f"127.0.0.1:{gw.port}"}]
    weak["auth"] = {"j": {"type": "jwt", "secret": "k7#Qv9!zR2@mX4$pL8^wN1&bT6*yH3(eA5%u0?cD",
                          "algorithms": ["HS512"]}}
    weak["routes"].insert(0, {"name": "v", "paths": ["/v"], "auth": {"using": ["j"]},
                              "respond": {"status": 200, "body": "v2"}})
    gw.write_config(weak)
    check = fastgate("check", "-c", gw.path)
    assert check.returncode == 2
    expected = check.stdout.decode().splitlines()
    assert expected and expected[0].startswith("auth.j.secret: HMAC secret is 40 bytes")

    gw.signal(signal.SIGHUP)
    assert wait_for(lambda: "keeping the running config" in gw.stderr())
    logged = [l.split("reload rejected: ", 1)[1] for l in gw.stderr_lines if "reload rejected: " in l]
    assert logged == expected + [f"keeping the running config ({len(expected)} errors)"]
    assert "config reloaded" not in gw.stderr()
    r = httpx.get(gw.url + "/v")
    assert (r.status_code, r.text) == (200, "v1")       # the old config keeps serving
    metrics = httpx.get(f"http://127.0.0.1:{admin_port}/metrics",
                        headers={"Authorization": f"Bearer {token}"}).text
    assert 'fastgate_config_reloads_total{result="failure"} 1.0' in metrics
    assert 'fastgate_config_reloads_total{result="success"} 0.0' in metrics


def test_in_flight_request_keeps_its_snapshot_across_reload(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    gw = gateway_factory(cfg)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=httpx.get(gw.url + "/slow/800", timeout=10)))
    t.start()
    time.sleep(0.2)
    cfg2 = simple_config(None)
    cfg2["listeners"] = [{"bind": f"127.0.0.1:{gw.port}"}]
    cfg2["routes"] = [{"name": "gone", "paths": ["/*"], "respond": {"status": 410, "body": "gone"}}]
    gw.write_config(cfg2)
    gw.signal(signal.SIGHUP)
    t.join(10)
    assert result["r"].status_code == 200
    assert wait_for(lambda: httpx.get(gw.url + "/x").status_code == 410)


# ---------------------------------------------------------------------------- drain
def test_sigterm_drains_in_flight_then_exits_zero(upstream, tmp_path):
    gw = GatewayProc(simple_config(upstream.port), tmp_path)
    gw.wait_ready()
    results = []

    def slow():
        results.append(httpx.get(gw.url + "/slow/1000", timeout=10).status_code)

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gw.signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw.url + "/echo", timeout=2)
    for t in threads:
        t.join(10)
    assert results == [200, 200, 200]
    assert gw.proc.wait(10) == 0
    gw.stop()


def test_drain_timeout_bounds_shutdown(upstream, tmp_path):
    cfg = simple_config(upstream.port, drain_timeout_s=1)
    gw = GatewayProc(cfg, tmp_path)
    gw.wait_ready()
    t = threading.Thread(target=lambda: quietly(lambda: httpx.get(gw.url + "/slow/8000", timeout=15)))
    t.start()
    time.sleep(0.3)
    start = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - start < 5
    t.join(15)
    gw.stop()


# ---------------------------------------------------------------------------- connections
def test_max_connections_and_per_ip(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.port, limits={"max_connections_per_ip": 2}))
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
            data = s.recv(4096)
            assert data.startswith(b"HTTP/1.1 503")
    finally:
        for s in socks:
            s.close()
    assert wait_for(lambda: httpx.get(gw.url + "/echo").status_code == 200)


def test_keepalive_timeout_closes_idle(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.port, limits={"keepalive_timeout_s": 1}))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        s.recv(65536)
        start = time.monotonic()
        assert s.recv(10) == b""  # closed by the gateway, silently
        assert 0.5 < time.monotonic() - start < 4


def _answers(s, n):
    """Read until n complete responses to GET /echo have arrived (each ends its JSON)."""
    data = b""
    while data.count(b"HTTP/1.1 200") < n or not data.rstrip().endswith(b"}"):
        d = s.recv(65536)
        assert d, data
        data += d
    return data


def test_idle_keepalive_connection_serves_again_after_giving_back_its_parser(
        upstream, gateway_factory):
    # An idle keep-alive connection drops its parser after 1 s (the sweep); the next byte
    # makes a new one. Whatever arrives then, whole, split or pipelined, is answered.
    gw = gateway_factory(simple_config(upstream.port, limits={"keepalive_timeout_s": 30,
                                                               "header_timeout_s": 10}))
    req = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(req)
        _answers(s, 1)
        time.sleep(1.8)
        s.sendall(req + req)                      # pipelined, after the parser went
        assert _answers(s, 2).count(b"HTTP/1.1 200") == 2
        time.sleep(1.8)
        s.sendall(req[:9])                        # a head split across the sweeps
        time.sleep(1.8)
        s.sendall(req[9:])
        assert _answers(s, 1).count(b"HTTP/1.1 200") == 1
        time.sleep(1.8)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab")
        time.sleep(0.3)
        s.sendall(b"c" + req)                     # a body's last byte, then the next head
        assert _answers(s, 2).count(b"HTTP/1.1 200") == 2


def test_silent_connections_count_against_the_per_ip_limit_until_they_close(
        upstream, gateway_factory):
    # A connection that never sends a byte holds no parser, but it is counted from accept
    # to close like any other: per-IP slots come back when such connections go, closed by
    # the client or timed out by the gateway (408, then closed).
    gw = gateway_factory(simple_config(upstream.port, limits={"max_connections_per_ip": 3,
                                                               "header_timeout_s": 1}))
    for closer in ("client", "gateway", "client"):
        silent = [socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                  for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
                assert read_until_close(s).startswith(b"HTTP/1.1 503")   # refused at accept
            if closer == "gateway":
                for c in silent:
                    assert read_until_close(c).startswith(b"HTTP/1.1 408")
        finally:
            for c in silent:
                c.close()
        assert wait_for(lambda: httpx.get(gw.url + "/echo").status_code == 200)


def test_body_timeout_408(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.port, limits={"body_timeout_s": 1}))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        data = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 408") or data == b""


# ---------------------------------------------------------------------------- big bodies
GIB = 1 << 30


def test_one_gib_upload_and_download_stream_with_bounded_memory(upstream, gateway_factory):
    cfg = simple_config(upstream.port, limits={"max_body_bytes": 2 * GIB})
    gw = gateway_factory(cfg)
    pid = gw.proc.pid
    before = proc_status_kb(pid, "VmHWM")
    # upload
    with socket.create_connection(("127.0.0.1", gw.port), timeout=60) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % GIB)
        block = b"u" * (1 << 20)
        for _ in range(1024):
            s.sendall(block)
        data = b""
        while b"}" not in data:
            d = s.recv(65536)
            if not d:
                break
            data += d
    assert b'"received":%d' % GIB in data
    # download
    with socket.create_connection(("127.0.0.1", gw.port), timeout=60) as s:
        s.sendall(b"GET /download/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % GIB)
        total = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        head, rest = head.split(b"\r\n\r\n", 1)
        total = len(rest)
        buf = bytearray(1 << 20)
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            total += n
    assert head.startswith(b"HTTP/1.1 200")
    assert total == GIB
    grown_mb = (proc_status_kb(pid, "VmHWM") - before) / 1024
    assert grown_mb < 64, f"gateway peak RSS grew {grown_mb:.0f} MiB while streaming 1 GiB each way"


# ---------------------------------------------------------------------------- workers
def test_workers_serve_replace_crashed_and_drain(upstream, tmp_path):
    gw = GatewayProc(simple_config(upstream.port), tmp_path, workers=2)
    gw.wait_ready()
    try:
        for _ in range(10):
            assert httpx.get(gw.url + "/echo").status_code == 200
        children = _children(gw.proc.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)
        assert wait_for(lambda: len(_children(gw.proc.pid)) == 2 and children[0] not in _children(gw.proc.pid), 10)
        for _ in range(10):
            assert httpx.get(gw.url + "/echo").status_code == 200
    finally:
        assert gw.stop() == 0


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]
