"""Metrics: exact counts, histogram math, merging across processes, and the exposition text."""
import math
import shutil
import subprocess

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fastgate.observe.metrics import BUCKETS, Metrics, merge_snapshots, render

ALL_NAMES = {
    "fastgate_requests_total": "counter",
    "fastgate_request_duration_seconds": "histogram",
    "fastgate_upstream_duration_seconds": "histogram",
    "fastgate_bytes_received_total": "counter",
    "fastgate_bytes_sent_total": "counter",
    "fastgate_auth_failures_total": "counter",
    "fastgate_rate_limited_total": "counter",
    "fastgate_waf_blocked_total": "counter",
    "fastgate_connections_active": "gauge",
    "fastgate_upstream_healthy": "gauge",
    "fastgate_ai_tokens_total": "counter",
    "fastgate_ai_cost_usd_total": "counter",
    "fastgate_config_reloads_total": "counter",
}


def samples(text: bytes) -> dict:
    """{(sample name, frozenset(labels)): value} of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def val(smp, name, **labels):
    return smp[(name, frozenset(labels.items()))]


def families(text: bytes) -> dict:
    return {f.name: f.type for f in text_string_to_metric_families(text.decode())}


def busy_metrics() -> Metrics:
    m = Metrics()
    m.request_done("orders", "GET", 200, 0.0003, 120, 900, "orders", 0.0002)
    m.request_done("orders", "GET", 200, 0.004, 100, 1000, "orders", 0.003)
    m.request_done("orders", "POST", 201, 0.02, 5000, 80, "orders", 0.015)
    m.request_done("orders", "GET", 502, 1.5, 90, 150, "orders", None)   # no upstream answer
    m.request_done("_none", "GET", 404, 0.00004, 70, 120, None, None)
    m.request_done("_none", "BREW", 405, 0.00004, 70, 120, None, None)
    m.request_done("_none", "get", 400, 0.00004, 70, 120, None, None)   # methods are case-sensitive
    m.auth_failure("orders", "missing_credentials")
    m.auth_failure("orders", "missing_credentials")
    m.auth_failure("orders", "invalid_token")
    m.rate_limited("orders")
    m.waf_blocked("orders", "sqli")
    m.conn_opened(); m.conn_opened(); m.conn_opened(); m.conn_closed()
    m.set_upstream_health("orders", "127.0.0.1:9001", True)
    m.set_upstream_health("orders", "127.0.0.1:9002", True)
    m.set_upstream_health("orders", "127.0.0.1:9002", False)
    m.ai_usage("fast", "alice", 100, 20, 0.0002)
    m.ai_usage("fast", "alice", 50, 10, 0.0001)
    m.ai_usage("fast", None, 5, 1, 0.00001)
    m.config_reload(True); m.config_reload(True); m.config_reload(False)
    return m


def test_exact_counts_in_render():
    smp = samples(render(busy_metrics().snapshot()))
    assert val(smp, "fastgate_requests_total", route="orders", method="GET", code="200") == 2
    assert val(smp, "fastgate_requests_total", route="orders", method="POST", code="201") == 1
    assert val(smp, "fastgate_requests_total", route="orders", method="GET", code="502") == 1
    assert val(smp, "fastgate_requests_total", route="_none", method="GET", code="404") == 1
    # unknown methods (and wrong case) collapse into one label value
    assert val(smp, "fastgate_requests_total", route="_none", method="OTHER", code="405") == 1
    assert val(smp, "fastgate_requests_total", route="_none", method="OTHER", code="400") == 1
    assert val(smp, "fastgate_bytes_received_total", route="orders") == 120 + 100 + 5000 + 90
    assert val(smp, "fastgate_bytes_sent_total", route="orders") == 900 + 1000 + 80 + 150
    assert val(smp, "fastgate_bytes_received_total", route="_none") == 210
    assert val(smp, "fastgate_auth_failures_total", route="orders", reason="missing_credentials") == 2
    assert val(smp, "fastgate_auth_failures_total", route="orders", reason="invalid_token") == 1
    assert val(smp, "fastgate_rate_limited_total", route="orders") == 1
    assert val(smp, "fastgate_waf_blocked_total", route="orders", rule="sqli") == 1
    assert val(smp, "fastgate_connections_active") == 2
    assert val(smp, "fastgate_upstream_healthy", upstream="orders", target="127.0.0.1:9001") == 1
    assert val(smp, "fastgate_upstream_healthy", upstream="orders", target="127.0.0.1:9002") == 0
    assert val(smp, "fastgate_ai_tokens_total", model="fast", consumer="alice", kind="input") == 150
    assert val(smp, "fastgate_ai_tokens_total", model="fast", consumer="alice", kind="output") == 30
    assert val(smp, "fastgate_ai_tokens_total", model="fast", consumer="", kind="input") == 5
    assert val(smp, "fastgate_ai_cost_usd_total", model="fast", consumer="alice") == pytest.approx(0.0003)
    assert val(smp, "fastgate_config_reloads_total", result="success") == 2
    assert val(smp, "fastgate_config_reloads_total", result="failure") == 1
    # route histogram: count, sum and the cumulative buckets
    assert val(smp, "fastgate_request_duration_seconds_count", route="orders") == 4
    assert val(smp, "fastgate_request_duration_seconds_sum", route="orders") == pytest.approx(1.5243)
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="0.0005") == 1
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="0.005") == 2
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="0.025") == 3
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="1.0") == 3
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="2.5") == 4
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="+Inf") == 4
    # the upstream histogram only sees requests that have an upstream duration
    assert val(smp, "fastgate_upstream_duration_seconds_count", route="orders", upstream="orders") == 3
    assert val(smp, "fastgate_upstream_duration_seconds_sum", route="orders", upstream="orders") == pytest.approx(0.0182)
    assert not any(k[0].startswith("fastgate_upstream_duration") and ("route", "_none") in k[1]
                   for k in smp)


def test_every_spec_metric_is_exposed_with_its_type_even_when_idle():
    for m in (Metrics(), busy_metrics()):
        fams = families(render(m.snapshot()))
        assert {n: fams.get(n.removesuffix("_total")) for n in ALL_NAMES} == ALL_NAMES
    # counters are exposed under their _total sample names
    text = render(Metrics().snapshot()).decode()
    assert "fastgate_config_reloads_total{result=\"success\"} 0.0" in text
    assert "fastgate_connections_active 0.0" in text


def test_status_codes_are_strings_and_bounded():
    m = Metrics()
    for code in (200, 599, 100, 99, 600, 1000, -1):
        m.request_done("r", "GET", code, 0.001, 0, 0, None, None)
    smp = samples(render(m.snapshot()))
    codes = {dict(k[1])["code"]: v for k, v in smp.items() if k[0] == "fastgate_requests_total"}
    assert codes == {"200": 1, "599": 1, "100": 1, "other": 4}


def test_every_method_and_code_pair_is_counted_past_the_compiled_slots():
    """A route keeps 32 (method, code) counters in C; the pairs past those are counted in a
    dict, and every one of them comes out exact."""
    m = Metrics()
    pairs = [(meth, code) for meth in ("GET", "POST", "PUT", "DELETE")
             for code in range(200, 215)]            # 60 pairs
    for i, (meth, code) in enumerate(pairs):
        for _ in range(i % 3 + 1):
            m.request_done("r", meth, code, 0.001, 10, 20, None, None)
    assert m.routes["r"].codes == {p: i % 3 + 1 for i, p in enumerate(pairs)}
    smp = samples(render(m.snapshot()))
    assert smp[("fastgate_bytes_received_total", frozenset({("route", "r")}))] == 10 * sum(
        i % 3 + 1 for i in range(len(pairs)))


def test_all_standard_methods_keep_their_label():
    m = Metrics()
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"]
    for meth in methods + ["PROPFIND", "", "X" * 1000]:
        m.request_done("r", meth, 200, 0.001, 0, 0, None, None)
    for meth in methods + ["PROPFIND"]:          # bytes, as the parser produces them
        m.request_done("r", meth.encode(), 200, 0.001, 0, 0, None, None)
    smp = samples(render(m.snapshot()))
    got = {dict(k[1])["method"]: v for k, v in smp.items() if k[0] == "fastgate_requests_total"}
    assert got == {**{x: 2 for x in methods}, "OTHER": 4}


@pytest.mark.parametrize("value, le", [
    (0.0, "0.0001"), (0.0001, "0.0001"), (0.00010000001, "0.00025"), (0.001, "0.001"),
    (0.0010001, "0.0025"), (1.0, "1.0"), (29.9, "30.0"), (30.0, "30.0"), (30.0001, "+Inf"),
    (1e9, "+Inf"), (-0.5, "0.0001"),
])
def test_bucket_boundaries_are_inclusive_upper_bounds(value, le):
    m = Metrics()
    m.request_done("r", "GET", 200, value, 0, 0, None, None)
    smp = samples(render(m.snapshot()))
    buckets = {dict(k[1])["le"]: v for k, v in smp.items()
               if k[0] == "fastgate_request_duration_seconds_bucket"}
    les = [str(b) for b in BUCKETS] + ["+Inf"]
    first = les.index(le)
    assert [buckets[x] for x in les] == [0] * first + [1] * (len(les) - first)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=60))
def test_histogram_matches_naive_counting(durations):
    m = Metrics()
    for d in durations:
        m.request_done("r", "GET", 200, d, 0, 0, "u", d / 2)
    smp = samples(render(m.snapshot()))
    if not durations:
        assert not any(k[0].startswith("fastgate_request_duration") for k in smp)
        return
    for b in BUCKETS:
        want = sum(1 for d in durations if d <= b)
        assert val(smp, "fastgate_request_duration_seconds_bucket", route="r", le=str(b)) == want
        want_up = sum(1 for d in durations if d / 2 <= b)
        assert val(smp, "fastgate_upstream_duration_seconds_bucket", route="r", upstream="u",
                   le=str(b)) == want_up
    assert val(smp, "fastgate_request_duration_seconds_count", route="r") == len(durations)
    assert val(smp, "fastgate_request_duration_seconds_sum", route="r") == pytest.approx(
        math.fsum(durations), rel=1e-9, abs=1e-9)


def test_snapshot_is_plain_json_and_survives_a_round_trip():
    snap = busy_metrics().snapshot()
    again = orjson.loads(orjson.dumps(snap))
    assert again == snap
    assert render(again) == render(snap)


def test_merge_sums_counters_and_histograms_across_workers():
    a, b = busy_metrics(), Metrics()
    b.request_done("orders", "GET", 200, 0.004, 10, 20, "orders", 0.001)
    b.request_done("payments", "PUT", 204, 0.2, 1, 2, None, None)
    b.auth_failure("orders", "invalid_token")
    b.conn_opened()
    b.set_upstream_health("orders", "127.0.0.1:9002", True)    # a says unhealthy
    b.ai_usage("fast", "alice", 1, 2, 0.5)
    b.config_reload(True)
    wire = [orjson.loads(orjson.dumps(x.snapshot())) for x in (a, b)]   # as sent over the pipe
    smp = samples(render(merge_snapshots(wire)))
    assert val(smp, "fastgate_requests_total", route="orders", method="GET", code="200") == 3
    assert val(smp, "fastgate_requests_total", route="payments", method="PUT", code="204") == 1
    assert val(smp, "fastgate_bytes_received_total", route="orders") == 5310 + 10
    assert val(smp, "fastgate_auth_failures_total", route="orders", reason="invalid_token") == 2
    assert val(smp, "fastgate_connections_active") == 3            # summed
    # healthy while any worker still considers the target healthy
    assert val(smp, "fastgate_upstream_healthy", upstream="orders", target="127.0.0.1:9002") == 1
    assert val(smp, "fastgate_upstream_healthy", upstream="orders", target="127.0.0.1:9001") == 1
    assert val(smp, "fastgate_ai_tokens_total", model="fast", consumer="alice", kind="output") == 32
    assert val(smp, "fastgate_ai_cost_usd_total", model="fast", consumer="alice") == pytest.approx(0.5003)
    assert val(smp, "fastgate_config_reloads_total", result="success") == 3
    assert val(smp, "fastgate_request_duration_seconds_count", route="orders") == 5
    assert val(smp, "fastgate_request_duration_seconds_bucket", route="orders", le="0.005") == 3
    assert val(smp, "fastgate_upstream_duration_seconds_count", route="orders", upstream="orders") == 4
    assert val(smp, "fastgate_upstream_duration_seconds_sum", route="orders",
               upstream="orders") == pytest.approx(0.0192)


def test_merge_of_one_is_identity_and_of_none_is_empty():
    snap = busy_metrics().snapshot()
    assert render(merge_snapshots([snap])) == render(snap)
    assert render(merge_snapshots([])) == render(Metrics().snapshot())


def test_merge_rejects_incompatible_snapshots():
    snap = Metrics().snapshot()
    with pytest.raises(ValueError):
        merge_snapshots([snap, {**snap, "v": 99}])
    with pytest.raises(ValueError):
        merge_snapshots([snap, {**snap, "buckets": [0.1, 1.0]}])
    bad = busy_metrics().snapshot()
    bad["histograms"]["fastgate_request_duration_seconds"][0][1] = [1, 2, 3]
    with pytest.raises(ValueError):
        merge_snapshots([bad])


def test_label_values_are_escaped():
    m = Metrics()
    m.request_done('we"ird\\route\n', "GET", 200, 0.001, 0, 0, None, None)
    smp = samples(render(m.snapshot()))
    assert val(smp, "fastgate_requests_total", route='we"ird\\route\n', method="GET", code="200") == 1


def test_upstream_health_can_be_forgotten():
    m = Metrics()
    m.set_upstream_health("u", "a:1", True)
    m.forget_upstream_target("u", "a:1")
    m.forget_upstream_target("u", "never:1")
    assert not any(k[0] == "fastgate_upstream_healthy" for k in samples(render(m.snapshot())))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("make", [Metrics, busy_metrics])
def test_promtool_accepts_the_exposition(make):
    snap = merge_snapshots([make().snapshot(), busy_metrics().snapshot()])
    proc = subprocess.run(["promtool", "check", "metrics"], input=render(snap),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b"", proc.stdout + proc.stderr


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=4e9, allow_nan=False), min_size=1, max_size=20))
def test_usage_is_counted_per_utc_day_as_python_divides(times):
    """consumer_request counts in C (stats.count_usage); the day must be int(now // 86400)
    exactly, at day boundaries too, and a drain empties the same dict."""
    m = Metrics()
    table = m.usage_requests
    edges = [86400.0 * 20424 - 1e-6, 86400.0 * 20424, 86399.99999999999]
    expect = {}
    for t in list(times) + edges:
        m.consumer_request("alice", "orders", t)
        key = ("alice", "orders", int(t // 86400))
        expect[key] = expect.get(key, 0) + 1
    assert m.usage_requests == expect
    drained = m.drain_usage()["requests"]
    assert sorted(map(tuple, drained)) == sorted((c, r, d, n) for (c, r, d), n in expect.items())
    assert m.usage_requests is table and not table
