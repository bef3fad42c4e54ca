"""`scope: cluster` rate limits against real redis-server processes: exact limits through
leases, several instances (separate processes) sharing one limit, Redis killed / frozen and
brought back, a 3-node Redis Cluster."""
from __future__ import annotations

import asyncio
import math
import multiprocessing
import time

import pytest

from fastgate.config import schema as S
from fastgate.policies import rate_limit
from fastgate.policies.base import Reject
from fastgate.policies.rate_limit import cluster as C
from fastgate.server.context import RequestContext
from fastgate.server.services import Services, SharedState
from tests.policies.test_rate_limit_servers import (  # noqa: F401  (fixtures)
    RedisServer, redis_cluster, redis_server,
)

PER_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def setup_policy(redis_cfg, limit, per, burst=None, by="route"):
    kind, _, name = by.partition(":")
    rl = S.RateLimit(limit=limit, per=per, per_s=PER_S[per], burst=burst or limit, by=by,
                     by_kind=kind, by_name=name or None, scope="cluster")
    route = S.Route(name="shared", paths=["/"], rate_limits=[rl])
    config = S.Config(listeners=[], routes=[route], redis=redis_cfg)
    services = Services(SharedState(config), config)
    return rate_limit.build(route, services), services


def make_ctx(ip="10.0.0.1"):
    ctx = RequestContext()
    ctx.head = None
    ctx.route_name = "shared"
    ctx.client_ip = ip
    ctx.response_headers = []
    return ctx


async def attempt(policy, ip="10.0.0.1", bound=3.0):
    """One access() as the core runs it; the awaited part must finish (never hang)."""
    ctx = make_ctx(ip)
    result = policy.access(ctx)
    if result is not None and not isinstance(result, Reject):
        result = await asyncio.wait_for(result, bound)
    return result, dict(ctx.response_headers)


async def admitted(policy, n, ip="10.0.0.1"):
    return [(await attempt(policy, ip))[0] is None for _ in range(n)]


def redis_cfg(server, timeout_ms=500, on_error="allow"):
    return S.Redis(url=server.url, timeout_ms=timeout_ms, on_error=on_error)


# ---------------------------------------------------------------------------- one instance

def test_exact_limit_through_leases(redis_server):
    async def main():
        policy, services = setup_policy(redis_cfg(redis_server), 10, "minute")
        try:
            assert await admitted(policy, 12) == [True] * 10 + [False] * 2
            r, h = await attempt(policy)
            assert r.status == 429 and r.code == "rate_limited"
            assert 1 <= int(dict(r.headers)[b"retry-after"]) <= 6
            assert h[b"ratelimit-limit"] == b"10" and h[b"ratelimit-remaining"] == b"0"
            # Denials are answered from memory, not by asking Redis again.
            calls = services.cluster_limiter.calls
            for _ in range(50):
                await attempt(policy)
            assert services.cluster_limiter.calls == calls
        finally:
            await services.close()
    asyncio.run(main())


def test_headers_on_admitted_requests(redis_server):
    async def main():
        policy, services = setup_policy(redis_cfg(redis_server), 100, "hour")
        try:
            for i in range(1, 4):
                r, h = await attempt(policy)
                assert r is None
                assert h[b"ratelimit-limit"] == b"100"
                assert h[b"ratelimit-remaining"] == b"%d" % (100 - i)
                assert 0 < int(h[b"ratelimit-reset"]) <= 3 * 36 + 1
        finally:
            await services.close()
    asyncio.run(main())


def test_keys_and_instances_share_redis_buckets(redis_server):
    async def main():
        p1, s1 = setup_policy(redis_cfg(redis_server), 3, "minute", by="ip")
        p2, s2 = setup_policy(redis_cfg(redis_server), 3, "minute", by="ip")
        try:
            assert await admitted(p1, 2, "1.1.1.1") == [True, True]
            assert await admitted(p2, 2, "1.1.1.1") == [True, False]
            assert await admitted(p2, 3, "2.2.2.2") == [True] * 3
        finally:
            await s1.close()
            await s2.close()
    asyncio.run(main())


def test_idle_leases_are_handed_back(redis_server, monkeypatch):
    monkeypatch.setattr(C, "IDLE_RETURN_S", 0.2)
    monkeypatch.setattr(C, "SWEEP_S", 0.1)

    async def main():
        p1, s1 = setup_policy(redis_cfg(redis_server), 200, "hour")
        p2, s2 = setup_policy(redis_cfg(redis_server), 200, "hour")
        try:
            # Busy instance: its leases grow to a batch (5% of the burst).
            for _ in range(100):
                assert (await attempt(p1))[0] is None
                await asyncio.sleep(0.001)
            lease = next(iter(s1.cluster_limiter.leases.values()))
            deadline = time.monotonic() + 5
            while lease.avail > 0 or lease.task is not None:
                assert time.monotonic() < deadline, "lease not returned"
                await asyncio.sleep(0.05)
            # Everything the first instance did not use is there for the second.
            got = await admitted(p2, 101)
            assert got == [True] * 100 + [False]
        finally:
            await s1.close()
            await s2.close()
    asyncio.run(main())


def test_close_returns_leased_tokens(redis_server):
    async def main():
        p1, s1 = setup_policy(redis_cfg(redis_server), 1000, "day")
        for _ in range(200):
            assert (await attempt(p1))[0] is None
        lease = next(iter(s1.cluster_limiter.leases.values()))
        held = lease.avail
        await s1.close()
        p2, s2 = setup_policy(redis_cfg(redis_server), 1000, "day")
        try:
            got = await admitted(p2, 801)
            assert got == [True] * 800 + [False], held
        finally:
            await s2.close()
    asyncio.run(main())


def test_debit_is_charged_to_redis(redis_server):
    async def main():
        tok = S.RateLimit(limit=1000, per="hour", per_s=3600, burst=1000, by="route",
                          by_kind="route", scope="cluster", unit="tokens")
        route = S.Route(name="llm", paths=["/"], rate_limits=[tok])
        config = S.Config(listeners=[], routes=[route], redis=redis_cfg(redis_server))
        services = Services(SharedState(config), config)
        policy = rate_limit.build(route, services)
        try:
            ctx = make_ctx()
            r = policy.access(ctx)
            if r is not None:
                r = await r
            assert r is None
            policy.charge(ctx, 1500)                 # far beyond any lease: debt
            lease = next(iter(services.cluster_limiter.leases.values()))
            while lease.task is not None or lease.debt > 0:
                await asyncio.sleep(0.01)
            reply = redis_server.command(b"HGET", lease.rkey.encode(), b"tk")
            level = float(reply.split(b"\r\n")[1])
            assert level == pytest.approx(-500, abs=5)
            r, _ = await attempt(policy)
            assert r is not None and r.status == 429
        finally:
            await services.close()
    asyncio.run(main())


# ---------------------------------------------------------------------------- Redis failing

@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_redis_killed_and_restarted(redis_server, tmp_path, on_error):
    restarted = []

    async def main():
        cfg = redis_cfg(redis_server, timeout_ms=200, on_error=on_error)
        policy, services = setup_policy(cfg, 5, "minute", by="ip")
        limiter = services.cluster_limiter
        try:
            assert await admitted(policy, 6, "1.0.0.1") == [True] * 5 + [False]
            redis_server.kill()
            # A key that needs Redis: answered (by on_error) within the timeout, never hung.
            t0 = time.monotonic()
            r, _ = await attempt(policy, "1.0.0.2", bound=2.0)
            assert time.monotonic() - t0 < 2.0
            assert (r is None) == (on_error == "allow")
            assert not limiter.healthy
            # While Redis is down nobody waits for it, and the failure is not retried per
            # request: at most one probe per backoff period.
            calls = limiter.calls
            t0 = time.monotonic()
            for i in range(200):
                r, _ = await attempt(policy, f"1.0.1.{i}", bound=0.5)
                assert (r is None) == (on_error == "allow")
                if r is not None:
                    assert r.status == 429 and int(dict(r.headers)[b"retry-after"]) >= 1
            # Backoff starts at 0.1 s and doubles: probes <= 1 + log2(1 + elapsed / 0.1).
            elapsed = time.monotonic() - t0
            assert limiter.calls - calls <= 1 + math.ceil(math.log2(1 + elapsed / 0.1))
            # The key that was already limited stays limited from its lease state.
            assert (await attempt(policy, "1.0.0.1"))[0] is not None
            # Back: metered again without any intervention.
            restarted.append(RedisServer(tmp_path / "redis", port=redis_server.port).start())
            deadline = time.monotonic() + 10
            while not limiter.healthy:
                assert time.monotonic() < deadline, "no recovery"
                await attempt(policy, "1.0.2.1")
                await asyncio.sleep(0.05)
            assert await admitted(policy, 6, "1.0.3.1") == [True] * 5 + [False]
        finally:
            await services.close()
    try:
        asyncio.run(main())
    finally:
        for server in restarted:
            server.stop()


def test_redis_frozen_then_thawed(redis_server):
    async def main():
        cfg = redis_cfg(redis_server, timeout_ms=100, on_error="deny")
        policy, services = setup_policy(cfg, 5, "minute", by="ip")
        limiter = services.cluster_limiter
        try:
            assert (await attempt(policy, "2.0.0.1"))[0] is None
            redis_server.pause()
            t0 = time.monotonic()
            r, _ = await attempt(policy, "2.0.0.2", bound=2.0)
            assert r is not None and r.status == 429
            assert time.monotonic() - t0 < 2.0
            redis_server.resume()
            deadline = time.monotonic() + 10
            while not limiter.healthy:
                assert time.monotonic() < deadline, "no recovery"
                await attempt(policy, "2.0.0.3")
                await asyncio.sleep(0.05)
            assert await admitted(policy, 6, "2.0.0.4") == [True] * 5 + [False]
        finally:
            await services.close()
    asyncio.run(main())


# ---------------------------------------------------------------------------- Redis Cluster

def test_redis_cluster(redis_cluster):
    async def main():
        nodes = [("127.0.0.1", n.port) for n in redis_cluster.nodes]
        cfg = S.Redis(cluster_nodes=nodes, timeout_ms=1000, on_error="deny")
        policy, services = setup_policy(cfg, 3, "minute", by="ip")
        try:
            for i in range(30):
                assert await admitted(policy, 4, f"3.0.0.{i}") == [True, True, True, False]
        finally:
            await services.close()
        sizes = [int(n.command(b"DBSIZE")[1:].split(b"\r\n")[0]) for n in redis_cluster.nodes]
        assert sum(sizes) == 30 and sum(1 for s in sizes if s) >= 2, sizes
    asyncio.run(main())


# ---------------------------------------------------------------------------- many instances

def _instance(cfg_kwargs, limit, per, start_at, duration, results):
    async def main():
        policy, services = setup_policy(S.Redis(**cfg_kwargs), limit, per)
        ctx_n = allowed = denied = 0
        while time.time() < start_at:
            await asyncio.sleep(0.002)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            ctx = make_ctx()
            r = policy.access(ctx)
            if r is not None and not isinstance(r, Reject):
                r = await r
            ctx_n += 1
            if r is None:
                allowed += 1
            else:
                denied += 1
            await asyncio.sleep(0)
        calls = services.cluster_limiter.calls
        await services.close()
        results.put((allowed, denied, calls))
    asyncio.run(main())


def test_three_instances_share_one_limit(redis_server):
    """Saturating load from 3 processes: the cluster admits burst + rate * t within 5%."""
    limit, burst, duration = 300, 300, 4.0
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 1.0
    cfg = {"url": redis_server.url, "timeout_ms": 1000, "on_error": "deny"}
    procs = [ctx.Process(target=_instance, args=(cfg, limit, "second", start_at, duration, results))
             for _ in range(3)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    allowed = sum(g[0] for g in got)
    attempts = sum(g[0] + g[1] for g in got)
    calls = sum(g[2] for g in got)
    expected = burst + limit * duration
    print(f"admitted {allowed} of {attempts} attempts (expected {expected:.0f}), "
          f"{calls} redis calls; per instance {[g[0] for g in got]}")
    assert attempts > 3 * expected          # the load did saturate the limit
    assert 0.95 * expected <= allowed <= 1.05 * expected
    assert all(g[0] > 0 for g in got)
    assert calls < attempts / 10
