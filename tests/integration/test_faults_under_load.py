"""Faults under load: steady keep-alive traffic whose every answer is checked against its own
request (tests.helpers.idload) while one fault at a time hits the gateway. The traffic must
see no failure, no reset and no mixed-up answer; the faulty requests must get their documented
answer (docs/operations.md) well within their timeouts -- bounds here are hang detectors,
several times the configured timeout, never performance targets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.helpers.gateway import REPO, GatewayProc, free_port
from tests.helpers.util import wait_for
from tests.policies.test_rate_limit_servers import RedisServer, REDIS_SERVER


class Upstream:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.fault_upstream",
                                      str(self.port)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "READY"

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


class Traffic:
    def __init__(self, port, conns=16, rate=0, prefix="/ok"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.idload", str(port), str(conns), str(rate),
             prefix], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "READY"

    def finish(self) -> dict:
        out, _ = self.proc.communicate("", timeout=30)
        summary = json.loads(out.strip().splitlines()[-1])
        print(f"\ntraffic: {summary['ok']} answers checked at {summary['rate']}/s, "
              f"slowest {summary['max_ms']} ms, statuses {summary['statuses']}, "
              f"resets {summary['resets']}")
        return summary


def clean(summary) -> bool:
    return (summary["mixed"] == 0 and summary["resets"] == 0 and not summary["statuses"]
            and summary["ok"] > 0)


def config(up_port, **extra):
    cfg = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "limits": {"body_timeout_s": 0.5},   # below read_timeout_s: a stalled body is 408
        "upstreams": {"up": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}],
                             "connect_timeout_s": 1, "read_timeout_s": 1, "retries": 1}},
        "routes": [{"name": "all", "paths": ["/*"], "upstream": "up"}],
        "logging": {"access_log": "off"},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def upstream():
    up = Upstream()
    try:
        yield up
    finally:
        up.stop()


def timed(fn):
    t0 = time.monotonic()
    try:
        result = fn()
    except httpx.HTTPError as exc:
        result = exc
    return result, time.monotonic() - t0


def test_upstream_faults_under_load(tmp_path, upstream):
    gw = GatewayProc(config(upstream.port), tmp_path).wait_ready()
    traffic = Traffic(gw.port)
    try:
        url = gw.url
        for _ in range(3):
            # RST and garbage before any byte: retried once (GET), then a clean 502
            for mode in ("rst", "garbage"):
                r, took = timed(lambda: httpx.get(f"{url}/{mode}/x", timeout=10))
                assert r.status_code == 502 and took < 5, (mode, r, took)
            # an upstream that never answers: 504 after read_timeout_s (1 s)
            r, took = timed(lambda: httpx.get(f"{url}/stall/x", timeout=10))
            assert r.status_code == 504 and took < 5, (r, took)
            # dies after half the body / goes silent mid-body: the client's connection is
            # aborted (the head was already sent), never a silent truncation reported as done
            for mode in ("half", "drip"):
                r, took = timed(lambda: httpx.get(f"{url}/{mode}/x", timeout=10))
                assert isinstance(r, httpx.RemoteProtocolError) and took < 5, (mode, r, took)
            # dies mid-request-body: 502, and the connection is closed
            r, took = timed(lambda: httpx.post(f"{url}/bodyclose/x", content=b"x" * 300_000,
                                               timeout=10))
            assert (isinstance(r, httpx.HTTPError) or r.status_code == 502) and took < 5, (r, took)
        # a client that stops sending its body: 408 after body_timeout_s, then closed
        import socket
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(b"POST /ok/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5, data
    finally:
        summary = traffic.finish()
        gw.stop()
    assert clean(summary), summary


def test_connection_limit_reached_under_load(tmp_path, upstream):
    gw = GatewayProc(config(upstream.port, limits={"max_connections": 24}), tmp_path).wait_ready()
    traffic = Traffic(gw.port, conns=16)
    try:
        import socket
        extra = []
        for _ in range(40):     # past the limit: 503 `overloaded` at once, then closed
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            extra.append(s)
        time.sleep(0.3)
        refused = 0
        for s in extra:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            refused += data.startswith(b"HTTP/1.1 503") and b"overloaded" in data
            s.close()
        assert refused >= 40 - 8
    finally:
        summary = traffic.finish()
        gw.stop()
    assert clean(summary), summary


def test_stalled_gateway_with_a_full_accept_queue(tmp_path, upstream):
    """The gateway stops accepting (SIGSTOP: a long pause, a stalled host) while more new
    connections arrive than its listen backlog holds (somaxconn), each sending a request.
    Past the backlog the kernel drops their SYNs and the clients retry them; once the gateway
    runs again every connection is taken and answered with its own answer, and the steady
    traffic goes on without a failure."""
    import asyncio
    with open("/proc/sys/net/core/somaxconn") as f:
        n = min(int(f.read()), 4096) + 300
    gw = GatewayProc(config(upstream.port), tmp_path).wait_ready()
    traffic = Traffic(gw.port, conns=16)

    async def one(i, started):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", gw.port), 30)
        started.append(i)
        writer.write(b"GET /ok/q%d HTTP/1.1\r\nHost: t\r\nX-Request-ID: q%d\r\n"
                     b"Connection: close\r\n\r\n" % (i, i))
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"q%d q%d" % (i, i))

    async def flood():
        started = []
        tasks = [asyncio.ensure_future(one(i, started)) for i in range(n)]
        await asyncio.sleep(1.5)          # the backlog fills; the rest wait on SYN retries
        queued = len(started)
        gw.proc.send_signal(signal.SIGCONT)
        return queued, await asyncio.gather(*tasks, return_exceptions=True)
    try:
        time.sleep(0.3)
        gw.proc.send_signal(signal.SIGSTOP)
        try:
            queued, results = asyncio.run(flood())
        finally:
            gw.proc.send_signal(signal.SIGCONT)
    finally:
        summary = traffic.finish()
        gw.stop()
    print(f"{queued} of {n} connections completed their handshake while stopped")
    assert queued < n                         # the queue was full: some had to wait
    assert [r for r in results if r is not True] == []
    assert clean(summary), summary["notes"][:3] + gw.stderr_lines[-5:]


def test_worker_sigkill_under_load(tmp_path, upstream):
    gw = GatewayProc(config(upstream.port), tmp_path, workers=2).wait_ready()
    traffic = Traffic(gw.port, conns=32)
    try:
        time.sleep(0.5)
        kids = subprocess.run(["pgrep", "-P", str(gw.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        os.kill(int(kids[0]), signal.SIGKILL)
        assert wait_for(lambda: "replacing it" in gw.stderr())
        time.sleep(1.0)
    finally:
        summary = traffic.finish()
        gw.stop()
    # Only what was in flight on the killed worker is lost (a reset; the client goes on on a
    # new connection, which the other worker or the replacement takes); nothing is mixed up.
    # (A connect racing the kill can be refused by the dying worker's accept queue.)
    assert summary["mixed"] == 0 and summary["resets"] <= 32, summary
    assert set(summary["statuses"]) <= {"connect"} and \
        summary["statuses"].get("connect", 0) <= 32, summary
    assert summary["ok"] > 0


@pytest.mark.parametrize("with_admin", [False, True], ids=["workers-reload", "control-plane"])
def test_sighup_every_100ms_under_load(tmp_path, upstream, with_admin):
    cfg = config(upstream.port)
    cfg["routes"].append({"name": "v", "paths": ["/v"], "respond": {"status": 200,
                                                                    "body": "0"}})
    if with_admin:
        cfg["admin"] = {"bind": f"127.0.0.1:{free_port()}", "token": "t" * 24}
    gw = GatewayProc(cfg, tmp_path, workers=2).wait_ready()
    seconds = 30 if not with_admin else 10
    traffic = Traffic(gw.port, conns=32, rate=3000)
    n = 0
    try:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            n += 1
            if with_admin:      # a real change every time: applied to both workers or neither
                cfg["routes"][1]["respond"]["body"] = str(n)
                gw.write_config(cfg)
            gw.signal(signal.SIGHUP)
            time.sleep(0.1)
        if with_admin:
            assert wait_for(lambda: httpx.get(gw.url + "/v").text == str(n), timeout=10)
    finally:
        summary = traffic.finish()
        gw.stop()
    print(f"{n} SIGHUPs in {seconds} s")
    assert clean(summary), summary


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")
def test_redis_killed_frozen_restarted_under_load(tmp_path, upstream):
    redis = RedisServer(tmp_path / "redis").start()
    cfg = config(upstream.port, redis={"url": redis.url, "timeout_ms": 50, "on_error": "allow"})
    cfg["routes"][0]["rate_limits"] = [{"limit": 1_000_000, "per": "second", "by": "ip",
                                        "scope": "cluster"}]
    gw = GatewayProc(cfg, tmp_path).wait_ready()
    traffic = Traffic(gw.port, conns=16, rate=2000)
    try:
        time.sleep(1)
        redis.kill()                  # fail open: answered, within timeout_ms
        time.sleep(1.5)
        redis.start()
        time.sleep(1.5)
        redis.pause()                 # frozen: connections open, nothing answers
        time.sleep(1.5)
        redis.resume()
        time.sleep(1.5)
    finally:
        summary = traffic.finish()
        gw.stop()
        redis.stop()
    assert clean(summary), summary
    assert summary["max_ms"] < 2000, summary      # a hang detector: timeout_ms is 50


def test_idp_down_and_slow_under_load(tmp_path, upstream):
    import socket
    slow = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(64)                   # accepts (via the backlog), never answers
    down = free_port()                # nothing listens
    cfg = config(upstream.port)
    cfg["auth"] = {
        "down": {"type": "introspection", "url": f"http://127.0.0.1:{down}/introspect",
                 "client_id": "gw", "client_secret": "s", "timeout_s": 1},
        "slow": {"type": "introspection",
                 "url": f"http://127.0.0.1:{slow.getsockname()[1]}/introspect",
                 "client_id": "gw", "client_secret": "s", "timeout_s": 1},
    }
    cfg["routes"].insert(0, {"name": "a-down", "paths": ["/auth-down/*"], "upstream": "up",
                             "auth": {"using": ["down"]}})
    cfg["routes"].insert(0, {"name": "a-slow", "paths": ["/auth-slow/*"], "upstream": "up",
                             "auth": {"using": ["slow"]}})
    gw = GatewayProc(cfg, tmp_path).wait_ready()
    traffic = Traffic(gw.port, conns=16)
    try:
        for path in ("/auth-down/x", "/auth-slow/x"):
            for _ in range(3):
                r, took = timed(lambda: httpx.get(gw.url + path, timeout=10,
                                                  headers={"Authorization": "Bearer opaque"}))
                assert r.status_code == 503 and took < 5, (path, r, took)
                assert r.json()["error"]["code"] == "idp_unavailable"
    finally:
        summary = traffic.finish()
        gw.stop()
        slow.close()
    assert clean(summary), summary


def test_access_log_on_a_full_disk(tmp_path, upstream):
    # /dev/full: every write fails with ENOSPC, as on a full disk
    gw = GatewayProc(config(upstream.port, logging={"access_log": "/dev/full"}),
                     tmp_path).wait_ready()
    traffic = Traffic(gw.port, conns=16)
    try:
        time.sleep(2)
    finally:
        summary = traffic.finish()
        gw.stop()
    assert clean(summary), summary
    assert "No space left on device" in gw.stderr() or "ENOSPC" in gw.stderr() \
        or "access log" in gw.stderr(), gw.stderr()
