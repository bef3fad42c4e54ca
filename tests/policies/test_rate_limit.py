"""The rate-limit policy on hand-built request contexts (local scope), its hooks and sizing."""
from __future__ import annotations

import math

import pytest

from fastgate._core.buckets import TokenBucketTable
from fastgate._core.http import RequestParser
from fastgate.config import parse_config
from fastgate.config.compile import phase_callable
from fastgate.config import schema as S
from fastgate.observe.metrics import Metrics
from fastgate.policies import rate_limit, rate_limit_hooks
from fastgate.policies.base import Reject
from fastgate.server.context import RequestContext
from fastgate.server.services import Services, SharedState
from tests.helpers.heads import HeadRecorder as _Heads

def make_config(*rate_limits, route_extra=None, consumers=None, auth=None, **top):
    route = {"name": "orders", "paths": ["/orders"], "respond": {"status": 200},
             "rate_limits": list(rate_limits)}
    route.update(route_extra or {})
    doc = {"listeners": [{"bind": "127.0.0.1:0"}], "routes": [route]}
    doc.update(top)
    return parse_config(doc)


def services_for(config):
    shared = SharedState(config)
    services = Services(shared, config)
    services.metrics = Metrics()
    return services


def request_head(headers=()):
    rec = _Heads()
    raw = b"GET /orders HTTP/1.1\r\nhost: x\r\n" + b"".join(
        k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    RequestParser(rec).feed(raw)
    return rec.heads[0]


def ctx_for(ip="10.0.0.1", consumer=None, claims=None, headers=()):
    ctx = RequestContext()
    ctx.head = request_head(headers)
    ctx.route_name = "orders"
    ctx.client_ip = ip
    ctx.consumer = consumer
    ctx.claims = claims
    ctx.response_headers = []
    return ctx


def headers_of(ctx):
    return {k: v for k, v in ctx.response_headers}


def run(policy, **ctx_kw):
    ctx = ctx_for(**ctx_kw)
    result = phase_callable(policy, "access")(ctx)     # what a route runs (compiled or not)
    assert result is None or isinstance(result, Reject)
    return result, headers_of(ctx)


# ---------------------------------------------------------------------------- basics

def test_no_rate_limits_no_policy():
    config = make_config()
    assert rate_limit.build(config.routes[0], services_for(config)) is None


def test_burst_then_429_with_headers():
    config = make_config({"limit": 3, "per": "minute", "by": "ip"})
    services = services_for(config)
    policy = rate_limit.build(config.routes[0], services)
    for left in (2, 1, 0):
        result, h = run(policy)
        assert result is None
        assert h == {b"ratelimit-limit": b"3", b"ratelimit-remaining": b"%d" % left,
                     b"ratelimit-reset": b"%d" % (20 * (3 - left))}
    result, h = run(policy)
    assert isinstance(result, Reject)
    assert (result.status, result.code) == (429, "rate_limited")
    assert dict(result.headers) == {b"retry-after": b"20"}
    assert h[b"ratelimit-remaining"] == b"0" and h[b"ratelimit-limit"] == b"3"
    assert h[b"ratelimit-reset"] == b"60"
    snap = services.metrics.snapshot()
    assert ["orders", 1] in snap["counters"]["fastgate_rate_limited_total"]


def test_burst_above_limit_is_reported_as_the_capacity():
    config = make_config({"limit": 1, "per": "hour", "burst": 5, "by": "ip"})
    policy = rate_limit.build(config.routes[0], services_for(config))
    _, h = run(policy)
    assert h[b"ratelimit-limit"] == b"5" and h[b"ratelimit-remaining"] == b"4"
    assert h[b"ratelimit-reset"] == b"3600"


def test_metrics_may_be_absent():
    config = make_config({"limit": 1, "per": "day", "by": "ip"})
    services = services_for(config)
    services.metrics = None
    policy = rate_limit.build(config.routes[0], services)
    assert run(policy)[0] is None
    assert run(policy)[0].status == 429


# ---------------------------------------------------------------------------- keys

def test_by_ip_separates_clients():
    config = make_config({"limit": 1, "per": "day", "by": "ip"})
    policy = rate_limit.build(config.routes[0], services_for(config))
    assert run(policy, ip="10.0.0.1")[0] is None
    assert run(policy, ip="10.0.0.1")[0] is not None
    assert run(policy, ip="10.0.0.2")[0] is None
    assert run(policy, ip="::1")[0] is None


def test_by_route_is_one_bucket_for_everybody():
    config = make_config({"limit": 2, "per": "day", "by": "route"})
    policy = rate_limit.build(config.routes[0], services_for(config))
    assert run(policy, ip="10.0.0.1")[0] is None
    assert run(policy, ip="10.0.0.2")[0] is None
    assert run(policy, ip="10.0.0.3")[0] is not None


def test_by_header_with_fallback_to_ip():
    config = make_config({"limit": 1, "per": "day", "by": "header:X-Tenant"})
    policy = rate_limit.build(config.routes[0], services_for(config))
    t1 = [(b"x-tenant", b"acme")]
    assert run(policy, headers=t1, ip="10.0.0.1")[0] is None
    assert run(policy, headers=t1, ip="10.0.0.2")[0] is not None     # same tenant
    assert run(policy, headers=[(b"X-Tenant", b"other")])[0] is None
    # No header: limited by IP instead, not free.
    assert run(policy, ip="10.0.0.9")[0] is None
    assert run(policy, ip="10.0.0.9")[0] is not None
    assert run(policy, ip="10.0.0.9", headers=[(b"x-tenant", b"")])[0] is not None
    # A header value equal to an IP does not share that IP's fallback bucket.
    assert run(policy, headers=[(b"x-tenant", b"10.0.0.9")])[0] is None


def test_by_consumer_with_anonymous_fallback_to_ip():
    # Built from the schema directly: by: consumer needs auth, which has its own tests.
    limit = S.RateLimit(limit=1, per="day", per_s=86400, burst=1, by="consumer",
                        by_kind="consumer")
    route = S.Route(name="orders", paths=["/orders"], rate_limits=[limit])
    config = S.Config(listeners=[], routes=[route])
    policy = rate_limit.build(route, services_for(config))
    assert run(policy, consumer="alice", ip="10.0.0.1")[0] is None
    assert run(policy, consumer="alice", ip="10.0.0.2")[0] is not None
    assert run(policy, consumer="bob", ip="10.0.0.1")[0] is None
    assert run(policy, consumer=None, ip="10.0.0.1")[0] is None
    assert run(policy, consumer=None, ip="10.0.0.1")[0] is not None
    assert run(policy, consumer=None, ip="10.0.0.3")[0] is None


def test_by_claim():
    limit = S.RateLimit(limit=1, per="day", per_s=86400, burst=1, by="claim:tenant",
                        by_kind="claim", by_name="tenant")
    route = S.Route(name="orders", paths=["/orders"], rate_limits=[limit])
    policy = rate_limit.build(route, services_for(S.Config(listeners=[], routes=[route])))
    assert run(policy, claims={"tenant": "acme"}, ip="1.1.1.1")[0] is None
    assert run(policy, claims={"tenant": "acme"}, ip="2.2.2.2")[0] is not None
    assert run(policy, claims={"tenant": 42})[0] is None
    assert run(policy, claims={"tenant": "42"})[0] is not None          # same text, same key
    assert run(policy, claims={"tenant": ["a", "b"]})[0] is None
    assert run(policy, claims={"tenant": ["a", "b"]})[0] is not None
    assert run(policy, claims={"tenant": {"b": 1, "a": 2}})[0] is None
    assert run(policy, claims={"tenant": {"a": 2, "b": 1}})[0] is not None
    assert run(policy, claims={"tenant": "\ud800"})[0] is None          # lone surrogate
    assert run(policy, claims={}, ip="3.3.3.3")[0] is None               # falls back to IP
    assert run(policy, claims=None, ip="3.3.3.3")[0] is not None


def test_routes_and_limits_never_share_buckets():
    config = parse_config({
        "listeners": [{"bind": "127.0.0.1:0"}],
        "routes": [
            {"name": "a", "paths": ["/a"], "respond": {},
             "rate_limits": [{"limit": 1, "per": "day", "by": "ip"}]},
            {"name": "b", "paths": ["/b"], "respond": {},
             "rate_limits": [{"limit": 1, "per": "day", "by": "ip"}]},
        ],
    })
    services = services_for(config)
    pa = rate_limit.build(config.routes[0], services)
    pb = rate_limit.build(config.routes[1], services)
    assert run(pa)[0] is None
    assert run(pb)[0] is None
    assert run(pa)[0] is not None


# ---------------------------------------------------------------------------- several limits

def test_all_limits_apply_all_or_nothing():
    config = make_config({"limit": 5, "per": "day", "by": "ip"},
                         {"limit": 2, "per": "day", "by": "route"})
    services = services_for(config)
    policy = rate_limit.build(config.routes[0], services)
    _, h = run(policy, ip="10.0.0.1")
    # The most restrictive (fewest tokens left) is reported.
    assert h[b"ratelimit-limit"] == b"2" and h[b"ratelimit-remaining"] == b"1"
    assert run(policy, ip="10.0.0.2")[0] is None
    r, h = run(policy, ip="10.0.0.1")           # the route limit refuses
    assert r.status == 429 and h[b"ratelimit-limit"] == b"2"
    table = services.local_buckets
    lim = policy.local[0]
    # ... and the per-IP bucket was not charged for the refused request.
    ip_key = lim.prefix + b"10.0.0.1"
    assert table.peek(ip_key, lim.rate, lim.burst) == pytest.approx(4.0, abs=1e-3)


def test_more_limits_than_one_take_all_holds():
    limits = [{"limit": 100 + i, "per": "day", "by": "ip"} for i in range(10)]
    limits.append({"limit": 1, "per": "day", "by": "route"})
    config = make_config(*limits)
    policy = rate_limit.build(config.routes[0], services_for(config))
    assert len(policy.groups) == 2
    assert run(policy)[0] is None
    r, h = run(policy)
    assert r.status == 429 and h[b"ratelimit-limit"] == b"1"


# ---------------------------------------------------------------------------- tokens unit

def test_tokens_unit_admits_until_exhausted_then_charge_makes_it_wait():
    tok = S.RateLimit(limit=1000, per="minute", per_s=60, burst=1000, by="consumer",
                      by_kind="consumer", unit="tokens")
    req = S.RateLimit(limit=100, per="minute", per_s=60, burst=100, by="consumer",
                      by_kind="consumer")
    route = S.Route(name="llm", paths=["/v1/chat/completions"], rate_limits=[tok, req])
    services = services_for(S.Config(listeners=[], routes=[route]))
    policy = rate_limit.build(route, services)
    ctx = ctx_for(consumer="alice")
    assert policy.access(ctx) is None
    policy.charge(ctx, 600)
    assert policy.access(ctx_for(consumer="alice")) is None     # 400 tokens left
    policy.charge(ctx, 600)                                      # now 200 in debt
    r = policy.access(ctx_for(consumer="alice"))
    assert r.status == 429
    # 201 tokens to come back at 1000/min: 12.06 s.
    assert dict(r.headers)[b"retry-after"] == b"13"
    assert policy.access(ctx_for(consumer="bob")) is None
    # The refused request took nothing from the request limit: 100 - 2 admitted.
    lim = policy.local[1]
    assert services.local_buckets.peek(lim.prefix + b"alice", lim.rate, lim.burst) == \
        pytest.approx(98.0, abs=0.01)


# ---------------------------------------------------------------------------- hooks

def test_prefork_creates_one_shared_table_that_reload_keeps():
    config = make_config({"limit": 1, "per": "day", "by": "ip"})
    shared = SharedState(config)
    table = shared.local_buckets
    assert isinstance(table, TokenBucketTable) and table.shared
    services = Services(shared, config)
    assert services.local_buckets is table
    policy = rate_limit.build(config.routes[0], services)
    assert run(policy)[0] is None
    # A reload: same services, new config, new policy objects: the bucket carries on.
    config2 = make_config({"limit": 1, "per": "day", "by": "ip"},
                          route_extra={"paths": ["/orders", "/orders/{id}"]})
    services.config = config2
    assert services.local_buckets is table
    policy2 = rate_limit.build(config2.routes[0], services)
    assert run(policy2)[0].status == 429


def test_table_sizing():
    small = make_config({"limit": 1, "per": "day", "by": "route"})
    assert rate_limit_hooks.table_slots(small) == rate_limit_hooks.MIN_SLOTS
    by_ip = make_config(*[{"limit": 1, "per": "day", "by": "ip"}] * 3)
    assert rate_limit_hooks.table_slots(by_ip) == 1 << 19
    huge = make_config(*[{"limit": 1, "per": "day", "by": "ip"}] * 40)
    assert rate_limit_hooks.table_slots(huge) == rate_limit_hooks.MAX_TABLE_SLOTS
    assert rate_limit_hooks.table_slots(make_config()) == rate_limit_hooks.MIN_SLOTS


def test_without_redis_no_cluster_limiter():
    config = make_config({"limit": 1, "per": "day", "by": "ip"})
    assert services_for(config).cluster_limiter is None


def test_cluster_limiter_follows_the_redis_section():
    def cluster_config(redis=None):
        return make_config({"limit": 1, "per": "day", "by": "ip", "scope": "cluster"},
                           redis=redis) if redis else make_config()

    def compile_routes(services, config):
        build = services.begin(config)
        policies = [rate_limit.build(r, build) for r in config.routes]
        return build, policies

    cfg1 = cluster_config({"url": "redis://127.0.0.1:1/0"})
    services = services_for(cfg1)
    build, _ = compile_routes(services, cfg1)
    build.commit()
    first = services.cluster_limiter
    assert first is not None and first.cfg == cfg1.redis
    build, _ = compile_routes(services, cluster_config({"url": "redis://127.0.0.1:1/0"}))
    build.commit()
    assert services.cluster_limiter is first           # unchanged section: same leases
    build, policies = compile_routes(services, cluster_config({"url": "redis://127.0.0.1:2/0"}))
    second = policies[0].limiter
    assert second is not first and services.cluster_limiter is first  # not live before commit
    build.abort()                                       # a failed reload touches nothing
    assert services.cluster_limiter is first and not first._closed
    build, _ = compile_routes(services, cluster_config())
    build.commit()
    assert services.cluster_limiter is None             # retired (closed after the drain)


def test_scope_cluster_without_limiter_is_refused():
    limit = S.RateLimit(limit=1, per="day", per_s=86400, burst=1, by="ip", by_kind="ip",
                        scope="cluster")
    route = S.Route(name="r", paths=["/"], rate_limits=[limit])
    with pytest.raises(ValueError):
        rate_limit.build(route, services_for(S.Config(listeners=[], routes=[route])))


def test_retry_after_is_whole_seconds_at_least_one():
    config = make_config({"limit": 100, "per": "second", "by": "ip"})
    policy = rate_limit.build(config.routes[0], services_for(config))
    for _ in range(100):
        assert run(policy)[0] is None
    r, h = run(policy)
    assert dict(r.headers)[b"retry-after"] == b"1"
    assert h[b"ratelimit-reset"] == b"1"
    assert math.isfinite(float(h[b"ratelimit-reset"]))
