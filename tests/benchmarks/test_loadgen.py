"""The harness's own parts on real loopback sockets: framing, histograms, the built-in
upstream and the bundled load generator talking to each other directly (no gateway)."""
import os
import sys

import h11
import pytest

from benchmarks import procs, stats
from benchmarks.framing import ChunkedSkipper, FramingError, is_chunked, parse_content_length
from benchmarks.runner import LoadGen, REPO
from benchmarks.scenarios import SCENARIOS, Scenario
from benchmarks.targets import free_port, wait_port
from benchmarks.upstream import sse_body_bytes


def _chunked_message(chunks, trailers=()):
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    out += b"0\r\n" + b"".join(b"%s: %s\r\n" % t for t in trailers) + b"\r\n"
    return out


@pytest.mark.parametrize("trailers", [(), ((b"x-t", b"1"),)])
def test_chunked_skipper_every_split(trailers):
    chunks = [b"a" * 5, b"b" * 300, b"c"]
    msg = _chunked_message(chunks, trailers)
    for cut in range(len(msg) + 1):
        sk = ChunkedSkipper()
        first = sk.feed(msg[:cut], 0)
        if first >= 0:
            assert first == len(msg) and cut == len(msg)
        else:
            assert sk.feed(msg[cut:], 0) == len(msg) - cut
        assert sk.body_bytes == 306


def test_chunked_skipper_stops_at_message_end_and_rejects_garbage():
    msg = _chunked_message([b"xyz"])
    sk = ChunkedSkipper()
    assert sk.feed(msg + b"NEXT", 0) == len(msg)
    with pytest.raises(FramingError):
        ChunkedSkipper().feed(b"zz\r\n", 0)
    with pytest.raises(FramingError):
        ChunkedSkipper().feed(b"1" * 5000, 0)


def test_head_fields():
    h = b"http/1.1 200 ok\r\ncontent-type: x\r\ncontent-length: 12"
    assert parse_content_length(h) == 12
    assert parse_content_length(b"http/1.1 200 ok\r\nx: y") is None
    assert is_chunked(b"http/1.1 200 ok\r\ntransfer-encoding: gzip, chunked\r\nx: y")
    assert not is_chunked(b"http/1.1 200 ok\r\nx-transfer-encoding: chunked")
    with pytest.raises(FramingError):
        parse_content_length(b"x\r\ncontent-length: -1")


def test_histogram_percentiles_and_merge():
    lat = [i / 1e6 for i in range(1, 10001)]          # 1..10000 us, uniform
    h = stats.merge([stats.bucketize(lat[:5000]), stats.bucketize(lat[5000:])])
    assert sum(h.values()) == 10000
    for q, want in ((50, 5000), (99, 9900), (99.9, 9990)):
        got = stats.percentile(h, q)
        assert abs(got - want) / want < 0.02, (q, got)
    assert stats.percentile({}, 50) is None
    assert stats.median([3, None, 1, 2]) == 2
    assert stats.spread([90, 100, 110]) == pytest.approx(20.0)


def test_request_heads_are_valid_http():
    for sc in SCENARIOS:
        head = sc.request_head("tok").encode("latin-1")
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head + b"x" * sc.body_size)
        ev = conn.next_event()
        assert isinstance(ev, h11.Request), sc.name
        assert ev.method.decode() == sc.method


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    port = free_port()
    log = str(tmp_path_factory.mktemp("up") / "upstream.log")
    p = procs.Proc("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port", str(port)],
                   log_path=log, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        wait_port(port, p, 15)
        yield port
    finally:
        p.stop()
    assert not procs._exists(p.pid)


def _run(port, sc, mode, tmp_path, rate=None, conns=4):
    spec = {"host": "127.0.0.1", "port": port, "request_head": sc.request_head("tok"),
            "body_size": sc.body_size, "expect_body": sc.expect_body,
            "mode": "open" if mode.startswith("open") else mode, "ms_timer": mode == "open_ms",
            "warmup": 0.1, "duration": 0.4, "timeout": 10, "connections": conns, "rate": rate,
            "procs": 1, "proc_index": 0}
    g = LoadGen(spec, None, str(tmp_path), "t")
    try:
        assert int(g.expect("READY", 30)) == conns
        import time
        g.go(time.monotonic() + 0.05)
        return g.result(30)
    finally:
        g.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sc", [
    Scenario("tiny", "t"),
    Scenario("big", "b", method="POST", path="/bytes/300000", body_size=200000,
             expect_body=300000),
    Scenario("sse", "s", path="/sse?n=5&gap_ms=1", expect_body=sse_body_bytes(5)),
], ids=lambda s: s.name)
@pytest.mark.parametrize("mode", ["closed", "open", "open_ms"])
def test_loadgen_against_builtin_upstream(upstream, tmp_path, sc, mode):
    r = _run(upstream, sc, mode, tmp_path, rate=300 if mode != "closed" else None)
    assert r["pacing"] == {"closed": None, "open": "timerfd", "open_ms": "1ms"}[mode]
    assert r["errors"] == {}
    assert r["count"] > 0
    assert sum(int(c) for c in r["hist"].values()) == r["count"]
    assert r["bytes_body"] == r["count"] * sc.expect_body


@pytest.mark.timeout(60)
def test_loadgen_counts_wrong_body_length_as_error(upstream, tmp_path):
    sc = Scenario("tiny", "t", expect_body=3)       # /tiny answers 2 bytes
    r = _run(upstream, sc, "closed", tmp_path)
    assert r["count"] > 0 and r["errors"].get("body_length") == r["count"]


@pytest.mark.timeout(60)
def test_loadgen_idle_mode_holds_connections(upstream, tmp_path):
    sc = Scenario("idle", "i", kind="idle")
    spec = {"host": "127.0.0.1", "port": upstream, "request_head": sc.request_head(),
            "body_size": 0, "expect_body": 2, "mode": "idle", "connections": 50, "timeout": 10}
    g = LoadGen(spec, None, str(tmp_path), "idle")
    try:
        assert int(g.expect("READY", 30)) == 50
        import time
        g.go(time.monotonic())
        assert int(g.expect("HELD", 30)) == 50
        g.release()
        r = g.result(30)
    finally:
        g.stop()
    assert r["errors"] == {} and r["count"] == 50


WRK_OUT = """Running 1s test @ http://127.0.0.1:18777/tiny
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    37.56us  186.15us   4.65ms   99.03%
    Req/Sec   150.68k     4.89k  155.01k    72.73%
  Latency Distribution
     50%   24.00us
     75%   24.00us
     90%   25.00us
     99%    1.98ms
  164384 requests in 1.10s, 10.35MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec: 149459.29
Transfer/sec:      9.41MB
"""


def test_wrk_output_is_parsed():
    from benchmarks import wrk
    r = wrk.parse(WRK_OUT)
    assert r["requests"] == 164384
    assert r["rps"] == pytest.approx(149459.29)
    assert r["latency"]["p50_us"] == pytest.approx(24.0)
    assert r["latency"]["p99_us"] == pytest.approx(1980.0)
    assert r["errors"] == {"read": 2, "timeout": 1, "status_non_2xx": 7}
