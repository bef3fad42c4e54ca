"""Token buckets and the rate-limit policy: micro-benchmarks.

Run: .venv/bin/python -m pytest benchmarks/micro/test_bench_buckets.py --benchmark-enable \
       --benchmark-warmup=on --benchmark-time-unit=ns -q

Targets: ``TokenBucketTable.take()`` under 1 us (it is the whole cost of a local limit);
the policy's ``access()`` for one local limit under 2 us including its three response headers.
The cluster benchmark runs 100 requests per round against a real redis-server while the leases
are warm (the steady state: no Redis round trip on the request path); divide by 100. Each
benchmark checks its result first, so a wrong answer cannot hide behind a fast number.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys

import pytest

from fastgate._core.buckets import BucketPlan, TokenBucketTable
from fastgate.config import schema as S
from fastgate.policies import rate_limit
from fastgate.server.context import RequestContext
from fastgate.server.services import Services, SharedState

KEY = b"orders\x000\x00consumer\x00alice@example.com"     # a typical composed key (33 B)


def test_take_hot_key(benchmark):
    t = TokenBucketTable(1 << 16)
    assert t.take(KEY, 1e9, 1e9).allowed
    r = benchmark(t.take, KEY, 1e9, 1e9, 1.0)
    assert r.allowed


def test_take_denied(benchmark):
    t = TokenBucketTable(1 << 16)
    assert t.take(KEY, 1e-9, 1.0).allowed
    r = benchmark(t.take, KEY, 1e-9, 1.0, 1.0)
    assert not r.allowed


def test_take_many_keys(benchmark):
    # 50,000 keys in a 64k-slot table: every call touches a different cache line.
    t = TokenBucketTable(1 << 16)
    keys = [b"orders\x000\x00ip\x0010.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255)
            for i in range(50_000)]
    it = iter(range(1 << 62))
    n = len(keys)
    take = t.take

    def one():
        return take(keys[next(it) % n], 1e6, 1e6, 1.0)

    assert one().allowed
    assert benchmark(one).allowed


def test_take_all_two_limits(benchmark):
    t = TokenBucketTable(1 << 16)
    plan = BucketPlan([1e9, 1e9], [1e9, 1e9])
    keys = (KEY, b"orders\x001\x00route\x00")
    assert benchmark(t.take_all, keys, plan, 1.0).allowed


def test_debit(benchmark):
    t = TokenBucketTable(1 << 16)
    assert benchmark(t.debit, KEY, 1e9, 1e9, 100.0).allowed


# ---------------------------------------------------------------------------- the policy

def _policy(*limits, redis=None):
    route = S.Route(name="orders", paths=["/orders"], rate_limits=list(limits))
    config = S.Config(listeners=[], routes=[route], redis=redis)
    services = Services(SharedState(config), config)
    return rate_limit.build(route, services), services


def _ctx():
    ctx = RequestContext()
    ctx.head = None
    ctx.route_name = "orders"
    ctx.client_ip = "203.0.113.77"
    ctx.consumer = "alice"
    ctx.response_headers = []
    return ctx


def _access_fn(policy):
    ctx = _ctx()
    access = policy.access

    def one():
        ctx.response_headers = []     # a fresh list per request, as the core makes
        return access(ctx)
    return one


BIG = dict(limit=10**9, per="second", per_s=1, burst=10**9)


def test_policy_one_local_limit(benchmark):
    policy, _ = _policy(S.RateLimit(by="ip", by_kind="ip", **BIG))
    one = _access_fn(policy)
    assert one() is None
    assert benchmark(one) is None


def test_policy_two_local_limits(benchmark):
    policy, _ = _policy(S.RateLimit(by="consumer", by_kind="consumer", **BIG),
                        S.RateLimit(by="route", by_kind="route", **BIG))
    one = _access_fn(policy)
    assert one() is None
    assert benchmark(one) is None


def test_policy_refusal(benchmark):
    policy, _ = _policy(S.RateLimit(limit=1, per="day", per_s=86400, burst=1, by="ip",
                                    by_kind="ip"))
    one = _access_fn(policy)
    assert one() is None
    assert benchmark(one).status == 429


@pytest.fixture
def redis_url(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    from tests.policies.test_rate_limit_servers import RedisServer
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


def test_policy_cluster_limit_warm_lease_per_100(benchmark, redis_url):
    loop = asyncio.new_event_loop()
    policy, services = _policy(
        S.RateLimit(by="ip", by_kind="ip", scope="cluster", **BIG),
        redis=S.Redis(url=redis_url, timeout_ms=1000))
    limiter = services.cluster_limiter
    ctx = _ctx()

    async def warm():
        for _ in range(2000):
            ctx.response_headers = []
            r = policy.access(ctx)
            if r is not None:
                r = await r
            assert r is None
            await asyncio.sleep(0)
    loop.run_until_complete(warm())
    access = policy.access

    def hundred():
        for _ in range(100):
            ctx.response_headers = []
            r = access(ctx)
            if r is not None:          # the lease ran dry: the request waits for Redis
                r = loop.run_until_complete(r)
            assert r is None
        loop.run_until_complete(asyncio.sleep(0))   # let background refills land

    calls = limiter.calls
    benchmark.pedantic(hundred, rounds=300, iterations=1, warmup_rounds=10)
    print(f"\nredis calls during the benchmark: {limiter.calls - calls} "
          f"for {310 * 100} requests")
    loop.run_until_complete(services.close())
    loop.close()
