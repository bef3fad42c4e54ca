"""Observability hot-path micro-benchmarks.

Run: .venv/bin/python -m pytest benchmarks/micro/test_bench_metrics.py --benchmark-enable \
       --benchmark-warmup=on --benchmark-time-unit=ns -q

Targets: recording one finished request (Metrics.request_done) under 1 us; request-id and
traceparent helpers under 1 us. The access-log entry and scrape-side rendering are measured for
information (they have no per-request target: the entry is built only when the log is on, and
rendering happens once per scrape). Each benchmark checks its result first, so a wrong answer
cannot hide behind a fast number. For comparison, prometheus_client's own
``Counter.labels(...).inc()`` is measured too: that is the cost the plain counters avoid.
"""
import time

import pytest

from fastgate._core.http import RequestParser
from fastgate.observe.access_log import AccessLog, make_entry, mask_query
from fastgate.observe.ids import request_id_from, traceparent_from
from fastgate.observe.metrics import Metrics, merge_snapshots, render
from fastgate.server.context import RequestContext

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _loaded_metrics(routes=50):
    m = Metrics()
    for r in range(routes):
        for code in (200, 201, 404, 500):
            m.request_done(f"route{r}", "GET", code, 0.003, 100, 1000, f"up{r}", 0.002)
    return m


def test_request_done_with_upstream(benchmark):
    m = _loaded_metrics()
    benchmark(m.request_done, "route7", "GET", 200, 0.0031, 312, 2048, "up7", 0.0024)
    assert m._routes["route7"].codes[("GET", 200)] > 1


def test_request_done_without_upstream(benchmark):
    m = _loaded_metrics()
    benchmark(m.request_done, "_none", "GET", 404, 0.00004, 80, 120, None, None)
    assert m._routes["_none"].codes[("GET", 404)] >= 1


def test_request_done_unknown_method(benchmark):
    m = _loaded_metrics()
    benchmark(m.request_done, "route3", "PROPFIND", 405, 0.0001, 80, 120, None, None)
    assert m._routes["route3"].codes[("OTHER", 405)] >= 1


def test_prometheus_client_labels_inc_for_comparison(benchmark):
    from prometheus_client import CollectorRegistry, Counter
    c = Counter("x_requests", "x", ["route", "method", "code"], registry=CollectorRegistry())
    benchmark(lambda: c.labels("route7", "GET", "200").inc())


def test_request_id_generated(benchmark):
    assert len(request_id_from(None)) == 32
    benchmark(request_id_from, None)


def test_request_id_kept(benchmark):
    assert request_id_from(b"client-req-0001:abc") == "client-req-0001:abc"
    benchmark(request_id_from, b"client-req-0001:abc")


def test_traceparent_propagated(benchmark):
    assert traceparent_from(TP)[3:35] == "4bf92f3577b34da6a3ce929d0e0e4736"
    benchmark(traceparent_from, TP)


def test_traceparent_started(benchmark):
    assert len(traceparent_from(None)) == 55
    benchmark(traceparent_from, None)


def _ctx(target=b"/orders/42"):
    class Cap:
        def on_request(self, head):
            self.head = head
    cap = Cap()
    RequestParser(cap).feed(b"GET " + target + b" HTTP/1.1\r\nHost: api\r\nUser-Agent: curl/8.5\r\n"
                            b"Authorization: Bearer x\r\n\r\n")
    ctx = RequestContext()
    ctx.head = cap.head
    ctx.start = time.monotonic()
    ctx.start_wall = time.time()
    ctx.request_id = "0af7651916cd43dd8448eb211c80319c"
    ctx.client_ip = "203.0.113.9"
    ctx.route_name = "orders"
    ctx.status = 200
    ctx.upstream_target = "127.0.0.1:9001"
    ctx.upstream_duration = 0.002
    return ctx


def test_access_log_entry(benchmark):
    ctx = _ctx()
    assert make_entry(ctx)["path"] == "/orders/42"
    benchmark(make_entry, ctx)


def test_access_log_entry_with_query(benchmark):
    ctx = _ctx(b"/orders/42?page=2&sort=desc")
    assert make_entry(ctx)["query"] == "page=2&sort=desc"
    benchmark(make_entry, ctx)


def test_mask_query_with_secret(benchmark):
    assert mask_query(b"page=2&api_key=abc") == "page=2&api_key=***"
    benchmark(mask_query, b"page=2&api_key=abc")


def test_access_log_log_call(benchmark, tmp_path):
    # the append itself; serialization and writing happen at flush time
    log = AccessLog(str(tmp_path / "a.log"), [])
    entry = make_entry(_ctx())
    try:
        benchmark(log.log, entry)
    finally:
        log.close()
    assert log.lines_written > 0


def test_access_log_serialize_and_write_per_line(benchmark, tmp_path):
    log = AccessLog(str(tmp_path / "a.log"), [])
    entry = make_entry(_ctx())

    calls = []

    def batch():
        calls.append(1)
        for _ in range(256):
            log.log(entry)
        log.flush(wait=True)
    try:
        benchmark.pedantic(batch, rounds=20, iterations=1)
    finally:
        log.close()
    # 20 rounds when benchmarking, 1 under --benchmark-disable
    assert log.lines_written == len(calls) * 256


@pytest.mark.parametrize("workers", [1, 4])
def test_scrape_render_50_routes(benchmark, workers):
    snaps = [_loaded_metrics().snapshot() for _ in range(workers)]
    out = render(merge_snapshots(snaps))
    assert b'fastgate_requests_total{code="200",method="GET",route="route49"}' in out
    benchmark(lambda: render(merge_snapshots(snaps)))
