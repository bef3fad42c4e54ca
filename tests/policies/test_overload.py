"""`overload:` load shedding: the config, the policy on hand-built contexts, the monitor on a
real event loop, and the real `fastgate run` with real clients (in flight counted in and
out, whatever way a request ends; loop lag; memory; the admin listener still answering)."""
from __future__ import annotations

import asyncio
import re
import signal
import socket
import struct
import time

import httpx
import pytest

from fastgate.config import ConfigError, parse_config
from fastgate.config.compile import compile_snapshot
from fastgate.observe.metrics import Metrics, merge_snapshots, render
from fastgate.policies import overload
from fastgate.policies.base import Reject
from fastgate.policies.overload.monitor import LoadMonitor
from fastgate.server.context import RequestContext
from fastgate.server.services import Services, SharedState
from fastgate.upstream.pool import PoolRegistry
from tests.helpers.gateway import free_port, simple_config
from tests.helpers.util import proc_status_kb, wait_for

TOKEN = "overload-test-token-0123456789abcdef"


def make_config(overload_section=None, **top):
    doc = {"listeners": [{"bind": "127.0.0.1:0"}],
           "routes": [{"name": "r", "paths": ["/r"], "respond": {"status": 200}},
                      {"name": "s", "paths": ["/s"], "respond": {"status": 204}}]}
    if overload_section is not None:
        doc["overload"] = overload_section
    doc.update(top)
    return parse_config(doc)


def services_for(config):
    services = Services(SharedState(config), config)
    services.metrics = Metrics()
    return services


def errors_of(section):
    with pytest.raises(ConfigError) as info:
        make_config(section)
    return info.value.errors


class _Conn:
    def __init__(self):
        self.ex = None


class _Exchange(RequestContext):
    """A request context with the two exchange fields the monitor's sweep reads."""
    __slots__ = ("conn", "finished")


def ctx():
    c = _Exchange()
    c.conn = _Conn()
    c.conn.ex = c
    c.finished = False
    return c


# ---------------------------------------------------------------------------- config

def test_config_defaults_and_absent():
    assert make_config().overload is None
    o = make_config({}).overload
    assert (o.max_inflight, o.max_loop_lag_ms, o.max_rss_mb) == (0, 0, 0) and not o.active
    o = make_config({"max_inflight": 100, "max_loop_lag_ms": 200, "max_rss_mb": 2048}).overload
    assert (o.max_inflight, o.max_loop_lag_ms, o.max_rss_mb) == (100, 200, 2048) and o.active
    assert make_config({"max_inflight": None}).overload.max_inflight == 0


def test_config_errors_carry_key_paths():
    assert errors_of({"max_inflight": -1, "max_loop_lag_ms": 5, "max_rss_mb": "lots",
                      "max_inflght": 3}) == [
        "overload.max_inflight: must be >= 0",
        "overload.max_loop_lag_ms: must be 0 (off) or >= 10: a loop is a few ms late in "
        "ordinary operation",
        "overload.max_rss_mb: expected an integer, got string",
        "overload.max_inflght: unknown key (did you mean 'max_inflight'?)",
    ]
    assert errors_of([1]) == ["overload: expected a mapping, got list"]
    assert errors_of({"max_loop_lag_ms": 60001}) == ["overload.max_loop_lag_ms: must be <= 60000"]
    with pytest.raises(ConfigError) as info:
        make_config(None, overlaod={})
    assert info.value.errors == ["overlaod: unknown key (did you mean 'overload'?)"]


def test_config_takes_env_values():
    cfg = parse_config("listeners: [{bind: '127.0.0.1:0'}]\n"
                       "routes: [{name: r, paths: [/r], respond: {status: 200}}]\n"
                       "overload: {max_inflight: '${N}'}\n", {"N": "64"})
    assert cfg.overload.max_inflight == 64


# ---------------------------------------------------------------------------- build

def test_no_policy_without_thresholds():
    for section in (None, {}, {"max_inflight": 0, "max_loop_lag_ms": 0, "max_rss_mb": 0}):
        config = make_config(section)
        services = services_for(config)
        assert overload.build(config.routes[0], services) is None
        snap = compile_snapshot(config, services, PoolRegistry())
        for route in snap.routes:
            assert not any(getattr(f, "__self__", None).__class__.__module__.startswith(
                "fastgate.policies.overload") for f in route.access + route.log)


def test_one_policy_first_on_every_route_and_a_log_phase_only_for_inflight():
    config = make_config({"max_inflight": 3})
    snap = compile_snapshot(config, services_for(config), PoolRegistry())
    policies = {r.access[0].__self__ for r in snap.routes}
    assert len(policies) == 1
    policy = policies.pop()
    assert isinstance(policy, overload.InflightShedder)
    for r in snap.routes:
        assert policy.log in r.log
    config = make_config({"max_loop_lag_ms": 100})
    snap = compile_snapshot(config, services_for(config), PoolRegistry())
    assert isinstance(snap.routes[0].access[0].__self__, overload.Shedder)
    assert snap.routes[0].log == ()


def test_monitor_kept_across_builds_with_other_thresholds():
    a = make_config({"max_inflight": 3})
    b = make_config({"max_inflight": 5, "max_loop_lag_ms": 50})
    services = services_for(a)
    pa = overload.build(a.routes[0], services)
    services.config = b
    pb = overload.build(b.routes[0], services)
    assert pa is not pb and pa.monitor is pb.monitor and pb.max_inflight == 5


# ---------------------------------------------------------------------------- the policy

def test_inflight_admits_up_to_the_limit_then_sheds():
    config = make_config({"max_inflight": 2})
    services = services_for(config)
    policy = overload.build(config.routes[0], services)
    a, b, c = ctx(), ctx(), ctx()
    assert policy.access(a) is None and policy.access(b) is None
    r = policy.access(c)
    assert isinstance(r, Reject) and (r.status, r.code) == (503, "overloaded")
    assert dict(r.headers) == {b"retry-after": b"1"} and "in flight" in r.message
    assert policy.monitor.inflight == {a, b}       # a shed request is not counted
    policy.log(a)
    policy.log(a)                                  # a second log phase changes nothing
    assert policy.access(c) is None
    assert isinstance(policy.access(ctx()), Reject)
    policy.log(ctx())                              # never admitted: nothing to take out
    assert len(policy.monitor.inflight) == 2
    counters = dict((row[0], row[1]) for row in services.metrics.snapshot()["counters"]
                    ["fastgate_overload_shed_total"])
    assert counters == {"inflight": 2}


def test_lag_and_memory_shed_with_their_reasons():
    config = make_config({"max_loop_lag_ms": 100, "max_rss_mb": 500})
    services = services_for(config)
    policy = overload.build(config.routes[0], services)
    m = policy.monitor
    m.lag_ms, m.rss_mb = 99.0, 499.0
    assert policy.access(ctx()) is None
    m.lag_ms = 101.0
    r = policy.access(ctx())
    assert r.code == "overloaded" and "event loop" in r.message
    m.lag_ms, m.rss_mb = 10.0, 501.0
    assert "memory" in policy.access(ctx()).message
    counters = dict((row[0], row[1]) for row in services.metrics.snapshot()["counters"]
                    ["fastgate_overload_shed_total"])
    assert counters == {"loop_lag": 1, "rss": 1}


def test_thresholds_that_are_off_never_shed():
    config = make_config({"max_inflight": 1})
    policy = overload.build(config.routes[0], services_for(config))
    policy.monitor.lag_ms = policy.monitor.rss_mb = 1e12
    assert policy.access(ctx()) is None


# ---------------------------------------------------------------------------- the monitor

def test_sweep_takes_out_exchanges_their_connection_moved_past():
    m = LoadMonitor()
    live, finished, moved_on = ctx(), ctx(), ctx()
    finished.finished = True
    moved_on.conn.ex = None
    m.inflight.update((live, finished, moved_on))
    assert m.sweep() == 2 and m.inflight == {live} and m.swept == 2


def test_lag_peaks_at_once_and_decays():
    async def main():
        metrics = Metrics()
        m = LoadMonitor(metrics)
        m.start()
        try:
            await asyncio.sleep(0.12)
            assert m.lag_ms < 40
            time.sleep(0.3)                  # the loop is blocked: the next tick is late
            await asyncio.sleep(0.01)
            assert m.lag_ms >= 200
            peak = m.lag_ms
            deadline = time.monotonic() + 3
            while m.lag_ms >= 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert m.lag_ms < 50
            m.publish()                      # the gauge shows the peak since the last one
            gauges = metrics.snapshot()["gauges"]
            assert gauges["fastgate_overload_loop_lag_seconds"] == [[peak / 1000.0]]
        finally:
            m.close()
        assert m._handle is None
    asyncio.run(main())


def test_rss_sample_matches_the_kernel():
    async def main():
        m = LoadMonitor()
        m.start()
        try:
            rss_kb = proc_status_kb(__import__("os").getpid(), "VmRSS")
            assert m.rss_mb == pytest.approx(rss_kb / 1024, rel=0.2)
        finally:
            m.close()
    asyncio.run(main())


def test_metrics_render_the_shed_counter_and_gauges():
    a, b = Metrics(), Metrics()
    a.overload_shed("inflight")
    b.overload_shed("inflight")
    a.overload_state(3, 0.02, 100 << 20)
    b.overload_state(4, 0.25, 50 << 20)
    text = render(merge_snapshots([a.snapshot(), b.snapshot()])).decode()
    assert 'fastgate_overload_shed_total{reason="inflight"} 2.0' in text
    assert 'fastgate_overload_shed_total{reason="loop_lag"} 0.0' in text
    assert 'fastgate_overload_shed_total{reason="rss"} 0.0' in text
    assert "fastgate_overload_inflight 7.0" in text            # summed over workers
    assert "fastgate_overload_loop_lag_seconds 0.25" in text   # the worst worker
    assert "fastgate_overload_rss_bytes 1.048576e+08" in text


# ---------------------------------------------------------------------------- end to end

def overload_config(upstream_port, section, **extra):
    cfg = simple_config(upstream_port, **extra)
    cfg["overload"] = section
    cfg["admin"] = {"bind": f"127.0.0.1:{free_port()}", "token": TOKEN}
    return cfg


def admin_url(cfg):
    return "http://" + cfg["admin"]["bind"]


def metric(cfg, name, labels=""):
    text = httpx.get(admin_url(cfg) + "/metrics",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
    m = re.search(r"^" + re.escape(name + (("{" + labels + "}") if labels else "")) +
                  r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def raw_request(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    return s


def assert_shed(r, reason_text):
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == "overloaded" and reason_text in err["message"] and err["request_id"]


def test_inflight_sheds_new_requests_while_admitted_ones_finish(upstream, gateway_factory):
    cfg = overload_config(upstream.port, {"max_inflight": 2})
    gw = gateway_factory(cfg)
    slow = [raw_request(gw.port, "/slow/1500") for _ in range(2)]
    assert wait_for(lambda: sum(r.target.startswith(b"/slow") for r in upstream.requests) == 2)
    seen = len(upstream.requests)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert_shed(c.get("/echo"), "in flight")
        assert_shed(c.post("/echo", content=b"x" * 1000), "in flight")
        assert len(upstream.requests) == seen               # shed: never forwarded
        # The admin listener is no route: it answers while the proxy sheds.
        assert httpx.get(admin_url(cfg) + "/healthz").status_code == 200
        assert httpx.get(admin_url(cfg) + "/readyz").status_code == 200
        assert wait_for(lambda: metric(cfg, "fastgate_overload_inflight") == 2, 3)
        # Admitted requests run to their end.
        for s in slow:
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ")
            s.close()
        assert wait_for(lambda: c.get("/echo").status_code == 200, 3)
        assert metric(cfg, "fastgate_overload_shed_total", 'reason="inflight"') == 2
        assert metric(cfg, "fastgate_overload_shed_total", 'reason="rss"') == 0
        # Finished requests were counted out: a sequence never sheds.
        assert all(c.get("/echo").status_code == 200 for _ in range(20))
        assert wait_for(lambda: metric(cfg, "fastgate_overload_inflight") == 0, 3)


def reset(s):
    """Close with an RST (SO_LINGER 0): the connection is gone, not half-closed."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def slow_seen(upstream):
    return sum(r.target.startswith(b"/slow") for r in upstream.requests)


def test_client_gone_before_the_answer_is_counted_out_at_once(upstream, gateway_factory):
    cfg = overload_config(upstream.port, {"max_inflight": 1})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for i in range(3):
            s = raw_request(gw.port, "/slow/10000")
            assert wait_for(lambda: slow_seen(upstream) == i + 1)
            assert_shed(c.get("/echo"), "in flight")
            reset(s)                             # the client leaves while the upstream works
            assert wait_for(lambda: c.get("/echo").status_code == 200, 2)


def test_half_closed_client_still_counts_until_answered(upstream, gateway_factory):
    """A FIN after a complete request is a half-close (HTTP/1.1 clients may do that and
    wait for the answer): the request stays in flight until its answer went out."""
    cfg = overload_config(upstream.port, {"max_inflight": 1})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        s = raw_request(gw.port, "/slow/1000")
        assert wait_for(lambda: slow_seen(upstream) == 1)
        s.shutdown(socket.SHUT_WR)
        assert_shed(c.get("/echo"), "in flight")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        s.close()
        assert wait_for(lambda: c.get("/echo").status_code == 200, 2)


def test_client_gone_mid_response_is_counted_out(upstream, gateway_factory):
    """The core runs no log phase for a client that leaves after the response head went
    out; the monitor's sweep counts such a request out within a second or so."""
    cfg = overload_config(upstream.port, {"max_inflight": 1})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        s = raw_request(gw.port, "/sse-gated/2")
        got = b""
        while b"event-0" not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 ")
        assert c.get("/echo").status_code == 503        # the stream is in flight
        reset(s)
        assert wait_for(lambda: c.get("/echo").status_code == 200, 4)
        assert wait_for(lambda: metric(cfg, "fastgate_overload_inflight") == 0, 3)
    upstream.gates[0].set()


def test_pipelined_requests_each_counted_out_before_the_next(upstream, gateway_factory):
    cfg = overload_config(upstream.port, {"max_inflight": 1})
    gw = gateway_factory(cfg)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n" * 3 +
              b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.count(b"HTTP/1.1 200 ") == 4 and b"HTTP/1.1 503" not in data


def test_memory_threshold_sheds_everything_but_the_admin(upstream, gateway_factory):
    cfg = overload_config(upstream.port, {"max_rss_mb": 1})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert_shed(c.get("/echo"), "memory")
        assert httpx.get(admin_url(cfg) + "/healthz").status_code == 200
        assert wait_for(lambda: (metric(cfg, "fastgate_overload_rss_bytes") or 0) > 1 << 20, 3)
        assert metric(cfg, "fastgate_overload_shed_total", 'reason="rss"') == 1
    assert not upstream.requests


def test_a_stalled_loop_sheds_then_recovers(upstream, gateway_factory):
    cfg = overload_config(upstream.port, {"max_loop_lag_ms": 100})
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/echo").status_code == 200
        gw.signal(signal.SIGSTOP)               # the process does not run for 0.8 s
        time.sleep(0.8)
        gw.signal(signal.SIGCONT)
        statuses = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            r = c.get("/echo")
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert_shed(r, "event loop")
                break
            time.sleep(0.01)
        assert 503 in statuses
        # The lag decays once the loop keeps time again.
        assert wait_for(lambda: c.get("/echo").status_code == 200, 3)
        assert metric(cfg, "fastgate_overload_shed_total", 'reason="loop_lag"') >= 1


def test_without_overload_nothing_is_counted(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["admin"] = {"bind": f"127.0.0.1:{free_port()}", "token": TOKEN}
    gw = gateway_factory(cfg)
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert all(c.get("/echo").status_code == 200 for _ in range(5))
    assert metric(cfg, "fastgate_overload_inflight") == 0
    assert metric(cfg, "fastgate_overload_shed_total", 'reason="inflight"') == 0

