"""Attacks by real clients on loopback against the real `fastgate run`, one at a time, while a
legitimate client keeps asking: with the existing limits (limits.header_timeout_s,
body_timeout_s, max_connections_per_ip, rate limits by ip) and overload.max_inflight, the
legitimate client keeps getting its answers.

Each attack runs in a process of its own (attacker_main below: raw sockets under asyncio,
from source addresses 127.0.0.10 and up, so that per-IP limits tell it from the legitimate
client at 127.0.0.1) for a few seconds, bounded in count and time; it prints READY once its
connections are up and a JSON summary when stdin closes (or after its own hard deadline).

What is asserted is behaviour: every legitimate request answered (2xx; under max_inflight
saturation 2xx or a fast 503 `overloaded`, since shedding is not selective), every attacking
connection cut, refused or answered with 408/429/503 as the limits say. Latency is checked
only against a generous ceiling (p99 < 1 s, a hang detector); the figures are printed.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers.gateway import REPO, GatewayProc, free_port
from tests.helpers.upstream import UpstreamServer
from tests.helpers.util import wait_for

TOKEN = "attack-test-token-0123456789abcdef"
LEGIT_S = 3.0            # how long the legitimate client measures, once the attack is up
P99_CEILING_S = 1.0
HARD_DEADLINE_S = 15.0   # an attacker stops by itself after this, whatever happens
FIGURES: dict[str, dict] = {}


# ------------------------------------------------------------------ the attacker process

async def _answer(reader, timeout):
    """Read one response: its status (the body is read and dropped)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    if m:
        await asyncio.wait_for(reader.readexactly(int(m.group(1))), timeout)
    return int(head[9:12])


class Attack:
    def __init__(self, port, spec):
        self.port = port
        self.spec = spec
        self.stop = False
        self.deadline = time.monotonic() + HARD_DEADLINE_S
        self.stats: dict = {"opened": 0, "max_lifetime_s": 0.0, "outcomes": {},
                            "statuses": {}, "max_held": 0}
        self.held = 0

    def over(self):
        return self.stop or time.monotonic() > self.deadline

    def count(self, table, key, n=1):
        d = self.stats[table]
        d[str(key)] = d.get(str(key), 0) + n

    async def connect(self, ip):
        while not self.over():
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(ip, 0))
                self.stats["opened"] += 1
                return r, w
            except OSError:
                self.count("outcomes", "connect_error")
                await asyncio.sleep(0.05)
        return None, None

    async def hold(self, ip, first: bytes, every: float, retry_s: float):
        """Slowloris, slow POST, connection flood: send ``first``, then one byte every
        ``every`` seconds, until the gateway answers or closes; then again."""
        while not self.over():
            reader, writer = await self.connect(ip)
            if reader is None:
                return
            opened = time.monotonic()
            outcome = "open_at_end"
            self.held += 1
            self.stats["max_held"] = max(self.stats["max_held"], self.held)
            try:
                if first:
                    writer.write(first)
                next_byte = opened + every
                while not self.over():
                    wait = min(max(next_byte - time.monotonic(), 0.001), 0.25)
                    try:
                        data = await asyncio.wait_for(reader.read(4096), wait)
                    except asyncio.TimeoutError:
                        if time.monotonic() >= next_byte:
                            writer.write(b"x")      # one more byte of the head or body
                            next_byte += every
                        continue
                    if not data:
                        outcome = "closed"
                        break
                    outcome = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "other"
                    while data:                 # the gateway closes after its answer
                        data = await asyncio.wait_for(reader.read(4096), 5)
                    break
            except (ConnectionError, OSError, asyncio.TimeoutError):
                outcome = "reset"
            finally:
                self.held -= 1
                writer.close()
            lifetime = time.monotonic() - opened
            if outcome != "open_at_end":
                self.stats["max_lifetime_s"] = max(self.stats["max_lifetime_s"], lifetime)
            self.count("outcomes", outcome)
            if outcome == "503":
                await asyncio.sleep(retry_s)

    async def pipeline(self, ip, path: str, batch: int):
        """Request flood: batches of pipelined GETs on keep-alive connections."""
        req = f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode() * batch
        while not self.over():
            reader, writer = await self.connect(ip)
            if reader is None:
                return
            try:
                while not self.over():
                    writer.write(req)
                    for _ in range(batch):
                        self.count("statuses", await _answer(reader, 5))
            except (ConnectionError, OSError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError):
                self.count("outcomes", "reset")
            finally:
                writer.close()

    async def sequential(self, ip, path: str):
        """Concurrency flood: one request at a time per connection, as fast as answered."""
        req = f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
        while not self.over():
            reader, writer = await self.connect(ip)
            if reader is None:
                return
            try:
                while not self.over():
                    writer.write(req)
                    self.count("statuses", await _answer(reader, 10))
            except (ConnectionError, OSError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError):
                self.count("outcomes", "reset")
            finally:
                writer.close()

    async def run(self):
        tasks = []
        for group in self.spec["groups"]:
            for i in range(group["conns"]):
                ip = group["ips"][i % len(group["ips"])]
                kind = group["kind"]
                if kind == "hold":
                    coro = self.hold(ip, group["first"].encode(), group["every"],
                                     group.get("retry_s", 0.05))
                elif kind == "pipeline":
                    coro = self.pipeline(ip, group["path"], group["batch"])
                else:
                    coro = self.sequential(ip, group["path"])
                tasks.append(asyncio.ensure_future(coro))
        await asyncio.sleep(self.spec.get("ramp_s", 1.0))
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)      # until the test closes stdin
        self.stop = True
        await asyncio.wait(tasks, timeout=6)
        for t in tasks:
            t.cancel()
        return self.stats


def attacker_main():
    port, spec = int(sys.argv[1]), json.loads(sys.argv[2])
    stats = asyncio.run(Attack(port, spec).run())
    print(json.dumps(stats), flush=True)


class Attacker:
    def __init__(self, port, spec):
        code = "from tests.integration.test_attacks import attacker_main; attacker_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(port), json.dumps(spec)],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().strip()
        assert line == "READY", line

    def finish(self) -> dict:
        out, _ = self.proc.communicate("", timeout=30)
        return json.loads(out.strip().splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ------------------------------------------------------------------ the legitimate client

def legit_client(port, path, seconds=LEGIT_S, interval=0.02, during=None):
    """Keep-alive GETs from 127.0.0.1 for ``seconds``: [(status, latency_s, body)]; a request
    that fails outright counts as status 0. ``during()`` runs once, half way."""
    results = []
    conn = None
    end = time.monotonic() + seconds
    half = time.monotonic() + seconds / 2
    while time.monotonic() < end:
        if during is not None and time.monotonic() >= half:
            during()
            during = None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                              source_address=("127.0.0.1", 0))
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            results.append((resp.status, time.perf_counter() - t0, resp.getheader("retry-after"),
                            body))
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            results.append((0, time.perf_counter() - t0, None, b""))
            conn.close()
            conn = None
        time.sleep(interval)
    if conn is not None:
        conn.close()
    return results


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def report(name, results, attack_stats, **more):
    lat = [r[1] for r in results]
    fig = {"legit_n": len(results), "legit_p50_ms": round(percentile(lat, 0.5) * 1000, 2),
           "legit_p99_ms": round(percentile(lat, 0.99) * 1000, 2),
           "legit_max_ms": round(max(lat) * 1000, 2),
           "legit_statuses": sorted({r[0] for r in results}), **more, "attack": attack_stats}
    FIGURES[name] = fig
    print(f"\n[{name}] {json.dumps(fig)}")
    return fig


def check_legit(results, fig, allowed=(200,)):
    assert len(results) >= 30, "the legitimate client hardly got to ask"
    statuses = [r[0] for r in results]
    assert set(statuses) <= set(allowed), statuses
    assert fig["legit_p99_ms"] < P99_CEILING_S * 1000, fig


# ------------------------------------------------------------------ fixtures

class TrackingUpstream(UpstreamServer):
    """The test upstream, counting how many /slow requests it holds at once."""

    def __init__(self):
        super().__init__()
        self.slow_now = 0
        self.slow_max = 0

    async def _respond(self, conn, writer, path, rec, sha):
        if not path.startswith("/slow"):
            return await super()._respond(conn, writer, path, rec, sha)
        self.slow_now += 1
        self.slow_max = max(self.slow_max, self.slow_now)
        try:
            return await super()._respond(conn, writer, path, rec, sha)
        finally:
            self.slow_now -= 1


@pytest.fixture
def upstream():
    server = TrackingUpstream().start()
    try:
        yield server
    finally:
        server.stop()


def gateway_config(up_port, limits=None, routes=None, **extra):
    cfg = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "admin": {"bind": f"127.0.0.1:{free_port()}", "token": TOKEN},
        "logging": {"access_log": "off"},
        "limits": {"header_timeout_s": 2, "body_timeout_s": 1, "max_connections_per_ip": 20,
                   **(limits or {})},
        "upstreams": {"app": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}],
                              "keepalive": 64}},
        "routes": (routes or []) + [{"name": "app", "paths": ["/*"], "upstream": "app"}],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def gateway(tmp_path):
    started = []

    def start(cfg):
        gw = GatewayProc(cfg, tmp_path, name=f"gw{len(started)}")
        started.append(gw)
        gw.cfg = cfg
        return gw.wait_ready()

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


def metric(gw, name, labels=""):
    text = httpx.get("http://" + gw.cfg["admin"]["bind"] + "/metrics",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
    m = re.search(r"^" + re.escape(name + (("{" + labels + "}") if labels else "")) +
                  r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def ips(first, n):
    return [f"127.0.0.{first + i}" for i in range(n)]


def run_attack(gw, spec, path="/echo", interval=0.02, during=None):
    attacker = Attacker(gw.port, spec)
    try:
        results = legit_client(gw.port, path, interval=interval, during=during)
        stats = attacker.finish()
    finally:
        attacker.kill()
    return results, stats


# ------------------------------------------------------------------ the attacks

def test_slowloris(upstream, gateway):
    """200 connections from 10 addresses each send a request head one byte a second:
    header_timeout_s (a deadline for the whole head, not reset by each byte) answers 408
    and closes each one; the attacker reconnects at once."""
    gw = gateway(gateway_config(upstream.port))
    spec = {"groups": [{"kind": "hold", "conns": 200, "ips": ips(10, 10), "every": 1.0,
                        "first": "GET /echo HTTP/1.1\r\nHost: x\r\n"}]}
    results, stats = run_attack(gw, spec)
    fig = report("slowloris", results, stats)
    check_legit(results, fig)
    outcomes = stats["outcomes"]
    assert outcomes.get("408", 0) >= 150, outcomes
    assert set(outcomes) <= {"408", "503", "closed", "reset", "open_at_end"}, outcomes
    # header_timeout_s (2) + the sweep's 0.25 s + scheduling on a busy machine
    assert stats["max_lifetime_s"] < 2 + 2.5, stats
    assert not any(r.target.startswith(b"/echo") and r.header(b"x-forwarded-for") != b"127.0.0.1"
                   for r in upstream.requests), "a slowloris head reached the upstream"


def test_slow_post(upstream, gateway):
    """Bodies trickled: one group slower than body_timeout_s (a byte every 1.5 s: 408 after
    1 s of silence), one faster (a byte every 0.3 s: body_timeout_s is an idle timeout, as
    nginx's client_body_timeout, so these are never cut; max_connections_per_ip bounds how
    many one address holds, the rest are refused with 503 at connect)."""
    gw = gateway(gateway_config(upstream.port))
    head = ("POST /upload HTTP/1.1\r\nHost: x\r\ncontent-type: application/octet-stream\r\n"
            "content-length: 100000\r\n\r\n")
    spec = {"groups": [
        {"kind": "hold", "conns": 100, "ips": ips(10, 5), "every": 1.5, "first": head},
        {"kind": "hold", "conns": 40, "ips": ["127.0.0.20"], "every": 0.3, "first": head,
         "retry_s": 0.2},
    ]}
    active = []
    results, stats = run_attack(
        gw, spec, during=lambda: active.append(metric(gw, "fastgate_connections_active")))
    fig = report("slow_post", results, stats, gateway_connections_mid_attack=active)
    check_legit(results, fig)
    outcomes = stats["outcomes"]
    assert outcomes.get("408", 0) >= 80, outcomes            # the slow group, cut
    assert outcomes.get("503", 0) >= 20, outcomes            # the fast group beyond 20
    assert set(outcomes) <= {"408", "503", "closed", "reset", "open_at_end"}, outcomes
    # 100 slow ones (<= 20 per address) + 20 fast ones + the legitimate client
    assert active[0] <= 100 + 20 + 1, active


def test_connection_flood(upstream, gateway):
    """One address opens connections as fast as it can, past max_connections_per_ip: the
    excess is answered 503 at connect and closed; the admitted ones sit idle until
    header_timeout_s."""
    gw = gateway(gateway_config(upstream.port))
    spec = {"groups": [{"kind": "hold", "conns": 150, "ips": ["127.0.0.30"], "every": 30,
                        "first": "", "retry_s": 0.02}]}
    active = []
    results, stats = run_attack(
        gw, spec, during=lambda: active.append(metric(gw, "fastgate_connections_active")))
    fig = report("connection_flood", results, stats, gateway_connections_mid_attack=active)
    check_legit(results, fig)
    outcomes = stats["outcomes"]
    assert outcomes.get("503", 0) >= 500, outcomes
    assert set(outcomes) <= {"408", "503", "closed", "reset", "open_at_end"}, outcomes
    assert active[0] <= 20 + 1, active      # the attacker's 20 and the legitimate client


def test_request_flood_on_a_route_limited_by_ip(upstream, gateway):
    """Pipelined requests from one address as fast as it can send them, against a route
    limited by ip: the attacker gets 429 past its bucket, the legitimate client (another
    address, its own bucket) keeps getting 200."""
    limited = {"name": "limited", "paths": ["/limited/*"], "upstream": "app",
               "strip_prefix": "/limited",
               "rate_limits": [{"limit": 50, "per": "second", "by": "ip"}]}
    gw = gateway(gateway_config(upstream.port, routes=[limited]))
    spec = {"groups": [{"kind": "pipeline", "conns": 4, "ips": ["127.0.0.40"],
                        "path": "/limited/echo", "batch": 20}]}
    t0 = time.monotonic()
    results, stats = run_attack(gw, spec, path="/limited/echo", interval=0.04)
    elapsed = time.monotonic() - t0 + 1.5           # the ramp before READY, and the end
    statuses = stats["statuses"]
    total = sum(statuses.values())
    fig = report("request_flood", results, stats, attacker_requests=total,
                 attacker_rps=round(total / elapsed))
    check_legit(results, fig)
    assert set(statuses) <= {"200", "429"}, statuses
    assert statuses.get("200", 0) <= 50 + 50 * elapsed + 10, statuses
    assert statuses.get("429", 0) >= 0.9 * total, statuses
    assert total >= 1000, "the flood was no flood"


def test_request_flood_against_max_inflight_with_a_slow_upstream(upstream, gateway):
    """40 connections from two addresses each keep a request to a slow upstream (300 ms) in
    flight: overload.max_inflight 10 sheds the rest at once with 503 `overloaded`, the
    upstream never holds more than 10, /healthz answers throughout. Shedding is not
    selective: the legitimate client's requests are answered at once, 200 when a slot is
    free and otherwise 503 with Retry-After, and all 200 again as soon as the flood stops."""
    gw = gateway(gateway_config(upstream.port, overload={"max_inflight": 10},
                                limits={"max_connections_per_ip": 0}))
    spec = {"groups": [{"kind": "sequential", "conns": 40, "ips": ips(50, 2),
                        "path": "/slow/300"}]}
    health = []
    results, stats = run_attack(gw, spec, during=lambda: health.append(
        httpx.get("http://" + gw.cfg["admin"]["bind"] + "/healthz", timeout=5).status_code))
    ok = sum(r[0] == 200 for r in results)
    fig = report("overload_max_inflight", results, stats, upstream_slow_max=upstream.slow_max,
                 legit_200_share=round(ok / len(results), 3), healthz=health)
    check_legit(results, fig, allowed=(200, 503))
    for status, _, retry_after, body in results:
        if status == 503:
            assert retry_after == "1" and b'"overloaded"' in body
    statuses = stats["statuses"]
    assert set(statuses) <= {"200", "503"} and statuses.get("503", 0) > 0, statuses
    assert upstream.slow_max <= 10, upstream.slow_max
    assert health == [200]
    assert metric(gw, "fastgate_overload_shed_total", 'reason="inflight"') > 0
    # the flood is over: every slot comes back
    assert wait_for(lambda: all(r[0] == 200 for r in legit_client(gw.port, "/echo", 0.3)), 5)


def test_request_flood_against_max_inflight_behind_a_rate_limit_by_ip(upstream, gateway):
    """The same flood on a slow route that is also limited by ip (5/s per address): the
    attackers' excess is refused with 429 right after the overload check, so they hold
    about 2 x 5/s x 0.3 s = 3 of max_inflight's 20 slots (more while the flood starves the
    upstream of CPU) and the legitimate client (another route) keeps getting 200."""
    slow = {"name": "slow", "paths": ["/slow/*"], "upstream": "app",
            "rate_limits": [{"limit": 5, "per": "second", "by": "ip"}]}
    gw = gateway(gateway_config(upstream.port, routes=[slow], overload={"max_inflight": 20},
                                limits={"max_connections_per_ip": 0}))
    spec = {"groups": [{"kind": "sequential", "conns": 40, "ips": ips(50, 2),
                        "path": "/slow/300"}]}
    results, stats = run_attack(gw, spec)
    fig = report("overload_behind_rate_limit", results, stats,
                 upstream_slow_max=upstream.slow_max)
    check_legit(results, fig)
    statuses = stats["statuses"]
    assert set(statuses) <= {"200", "429", "503"} and statuses.get("429", 0) > 0, statuses
    assert upstream.slow_max <= 20, upstream.slow_max


def test_zz_print_figures():
    """The figures of the attacks above, once more in one place (pytest -s shows them)."""
    for name, fig in FIGURES.items():
        print(f"{name}: legit p50 {fig['legit_p50_ms']} ms, p99 {fig['legit_p99_ms']} ms, "
              f"max {fig['legit_max_ms']} ms over {fig['legit_n']} requests")

