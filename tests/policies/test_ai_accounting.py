"""AI accounting without Redis: token rate limits (``unit: tokens``) with reserve/settle on
the shared-memory bucket table, and budgets (``routes[].budget``) in fixed UTC windows on the
same table, shared by the processes that map it. Policies are built from real configs
(fastgate.config.parse_config) with the real Services, and driven as the AI target drives
them: access, then ai_reserve with the estimate, then ai_settle with the provider's count."""
from __future__ import annotations

import hashlib
import os
import struct

import pytest

import fastgate.policies
from fastgate._core.buckets import TokenBucketTable
from fastgate.config import UNSUPPORTED, parse_config
from fastgate.observe.metrics import Metrics
from fastgate.policies import budget, rate_limit
from fastgate.policies.base import Reject
from fastgate.server.services import Services, SharedState
from tests.policies.test_rate_limit import ctx_for, headers_of

FEATURES = ("routes[].budget", "routes[].ai", "ai")
DAY = 86400


@pytest.fixture(autouse=True)
def ai_supported():
    """Budgets (and AI routes) are still in UNSUPPORTED until the AI target lands: clear
    them in place for the test, then put back exactly what was there."""
    saved = {f for f in FEATURES if f in UNSUPPORTED}
    for f in FEATURES:
        UNSUPPORTED.discard(f)
    try:
        yield
    finally:
        UNSUPPORTED.update(saved)


class FakeWall:
    """The budget's wall clock (UTC windows), moved by the test."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wall(monkeypatch):
    clock = FakeWall(1_700_006_400.0 + 3600.0)   # a UTC midnight + 1 h
    assert clock.t % DAY == 3600.0
    monkeypatch.setattr(budget, "_wall", clock)
    return clock


def key_hash(k: str) -> str:
    return "sha256:" + hashlib.sha256(k.encode()).hexdigest()


def ai_config(rate_limits=(), budget_cfg=None, redis=None, auth=True):
    route = {"name": "llm", "paths": ["/v1/chat/completions"], "ai": {"endpoint": "chat"}}
    if auth:
        route["auth"] = {"using": ["keys"]}
    if rate_limits:
        route["rate_limits"] = list(rate_limits)
    if budget_cfg is not None:
        route["budget"] = budget_cfg
    doc = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "ai": {"providers": {"oa": {"type": "openai", "api_key": "sk-test"}},
               "models": [{"name": "m", "provider": "oa", "model": "gpt-4o-mini",
                           "price": {"input_per_1k": 1.0, "output_per_1k": 2.0}}]},
        "auth": {"keys": {"type": "api_key", "header": "X-API-Key"}},
        "consumers": [{"name": n, "api_keys": [key_hash("key-" + n)]}
                      for n in ("alice", "bob")],
        "routes": [route],
    }
    if redis is not None:
        doc["redis"] = redis
    return parse_config(doc)


def services_for(config):
    services = Services(SharedState(config), config)
    services.metrics = Metrics()
    return services


def build_both(config, services=None):
    services = services or services_for(config)
    route = config.routes[0]
    return rate_limit.build(route, services), budget.build(route, services), services


def in_child(fn) -> int:
    """Run ``fn()`` in a forked child (sharing the parent's mappings); its int result."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            os.write(wfd, struct.pack("<q", int(fn())))
        except BaseException:   # noqa: BLE001 - the child must never return into pytest
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and len(data) == 8
    return struct.unpack("<q", data)[0]


def tokens_left(policy, services, consumer, index=0):
    lim = policy.token_limits[index]
    return services.local_buckets.peek(lim.prefix + consumer.encode(), lim.rate, lim.burst)


# ============================================================================ token limits

def test_policies_registered_in_order():
    mods = [b.__module__ for b in fastgate.policies.load_builders()]
    assert mods.index("fastgate.policies.budget") == mods.index("fastgate.policies.rate_limit") + 1
    assert "fastgate.policies.budget" not in fastgate.policies.PENDING


def test_reserve_debits_the_estimate_and_settle_the_difference():
    config = ai_config([{"limit": 1000, "per": "minute", "unit": "tokens"}])
    policy, _, services = build_both(config)
    ctx = ctx_for(consumer="alice")
    assert policy.access(ctx) is None
    h = policy.ai_reserve(ctx, 600)
    assert h.tokens == 600
    assert tokens_left(policy, services, "alice") == pytest.approx(400, abs=0.5)
    # The provider counted more than estimated: the rest is debited.
    policy.ai_settle(ctx, h, 700)
    assert tokens_left(policy, services, "alice") == pytest.approx(300, abs=0.5)
    # Settling twice changes nothing.
    policy.ai_settle(ctx, h, 0)
    assert tokens_left(policy, services, "alice") == pytest.approx(300, abs=0.5)
    # Another consumer has a bucket of its own.
    assert tokens_left(policy, services, "bob") == pytest.approx(1000)


def test_settle_below_the_estimate_credits_back_never_above_capacity():
    config = ai_config([{"limit": 1000, "per": "hour", "unit": "tokens"}])
    policy, _, services = build_both(config)
    ctx = ctx_for(consumer="alice")
    h1 = policy.ai_reserve(ctx, 500)
    h2 = policy.ai_reserve(ctx, 300)
    assert tokens_left(policy, services, "alice") == pytest.approx(200, abs=0.5)
    policy.ai_settle(ctx, h1, 100)                 # 400 come back
    assert tokens_left(policy, services, "alice") == pytest.approx(600, abs=0.5)
    policy.ai_settle(ctx, h2, 0)                   # the provider failed: all 300 back
    assert tokens_left(policy, services, "alice") == pytest.approx(900, abs=0.5)
    # A credit larger than what is missing stops at the burst (a full bucket is not even
    # stored: it equals no bucket).
    h3 = policy.ai_reserve(ctx, 50)
    policy.ai_settle(ctx, h3, 0)
    policy.ai_settle(ctx, policy.ai_reserve(ctx, 0), 0)
    fake = rate_limit.TokenReservation(h3.keys, 5000.0)
    policy.ai_settle(ctx, fake, 0)                 # 5000 credited onto ~900
    assert tokens_left(policy, services, "alice") == pytest.approx(1000)
    assert services.local_buckets.stats()["below_capacity"] == 0


def test_exhausted_token_limit_answers_429_with_headers():
    config = ai_config([{"limit": 600, "per": "minute", "unit": "tokens"}])
    policy, _, _ = build_both(config)
    ctx = ctx_for(consumer="alice")
    assert policy.access(ctx) is None
    h = policy.ai_reserve(ctx, 1000)               # the estimate exceeds what is left
    ctx2 = ctx_for(consumer="alice")
    r = policy.access(ctx2)
    assert isinstance(r, Reject) and (r.status, r.code) == (429, "rate_limited")
    # 401 tokens to come back at 600/min (10/s): 40.1 s.
    assert dict(r.headers)[b"retry-after"] == b"41"
    hd = headers_of(ctx2)
    assert hd[b"ratelimit-limit"] == b"600" and hd[b"ratelimit-remaining"] == b"0"
    assert hd[b"ratelimit-reset"] == b"100"
    # The provider used little: the credit makes the consumer welcome again at once.
    policy.ai_settle(ctx, h, 10)
    ctx3 = ctx_for(consumer="alice")
    assert policy.access(ctx3) is None
    assert headers_of(ctx3)[b"ratelimit-remaining"] == b"590"
    assert policy.access(ctx_for(consumer="bob")) is None


def test_every_token_limit_of_the_route_is_reserved_request_limits_are_not():
    config = ai_config([{"limit": 1000, "per": "minute", "unit": "tokens"},
                        {"limit": 10, "per": "minute"},
                        {"limit": 5000, "per": "day", "unit": "tokens", "by": "route"}])
    policy, _, services = build_both(config)
    ctx = ctx_for(consumer="alice")
    assert policy.access(ctx) is None
    h = policy.ai_reserve(ctx, 800)
    assert [lim.index for lim, _ in h.keys] == [0, 2]
    table = services.local_buckets
    per_min, per_day = policy.token_limits
    assert table.peek(per_min.prefix + b"alice", per_min.rate, per_min.burst) == \
        pytest.approx(200, abs=0.5)
    assert table.peek(per_day.prefix, per_day.rate, per_day.burst) == pytest.approx(4200, abs=0.5)
    req = policy.limits[1]
    assert table.peek(req.prefix + b"alice", req.rate, req.burst) == pytest.approx(9, abs=0.01)
    policy.ai_settle(ctx, h, 300)
    assert table.peek(per_day.prefix, per_day.rate, per_day.burst) == pytest.approx(4700, abs=0.5)


def test_route_without_token_limits_reserves_nothing():
    config = ai_config([{"limit": 10, "per": "minute"}])
    policy, _, _ = build_both(config)
    ctx = ctx_for(consumer="alice")
    h = policy.ai_reserve(ctx, 1000)
    assert h is None
    policy.ai_settle(ctx, h, 5000)                 # a no-op, no error


def test_anonymous_requests_reserve_under_their_ip():
    config = ai_config([{"limit": 1000, "per": "minute", "unit": "tokens", "by": "consumer"}])
    policy, _, services = build_both(config)
    policy.ai_reserve(ctx_for(consumer=None, ip="10.9.9.9"), 1000)
    assert policy.access(ctx_for(consumer=None, ip="10.9.9.9")).status == 429
    assert policy.access(ctx_for(consumer=None, ip="10.9.9.8")) is None
    assert policy.access(ctx_for(consumer="alice", ip="10.9.9.9")) is None


def test_token_reservations_are_shared_by_processes_of_one_table():
    config = ai_config([{"limit": 1000, "per": "hour", "unit": "tokens"}])
    policy, _, services = build_both(config)
    assert services.local_buckets.shared

    def worker():
        ctx = ctx_for(consumer="alice")
        assert policy.access(ctx) is None
        h = policy.ai_reserve(ctx, 700)
        policy.ai_settle(ctx, h, 650)
        return 1
    assert in_child(worker) == 1
    assert tokens_left(policy, services, "alice") == pytest.approx(350, abs=0.5)
    ctx = ctx_for(consumer="alice")
    h = policy.ai_reserve(ctx, 400)                 # the parent overdraws the shared bucket
    assert in_child(lambda: policy.access(ctx_for(consumer="alice")) is not None) == 1
    policy.ai_settle(ctx, h, 100)                   # 300 back
    assert in_child(lambda: policy.access(ctx_for(consumer="alice")) is None) == 1


# ============================================================================ budgets (local)

BUDGET = {"usd": 1, "per": "day", "by": "consumer"}


def test_no_budget_no_policy():
    config = ai_config()
    assert budget.build(config.routes[0], services_for(config)) is None


def test_budget_spent_answers_402_with_retry_after(wall):
    _, policy, services = build_both(ai_config(budget_cfg=BUDGET))
    ctx = ctx_for(consumer="alice")
    assert policy.access(ctx) is None
    h = policy.ai_reserve(ctx, 0.6)
    policy.ai_settle(ctx, h, 0.7)
    assert policy.spent(ctx) == pytest.approx(0.7)
    assert policy.access(ctx_for(consumer="alice")) is None      # 0.70 < 1
    h = policy.ai_reserve(ctx, 0.2)
    policy.ai_settle(ctx, h, 0.3)                                 # exactly 1.00: spent
    r = policy.access(ctx_for(consumer="alice"))
    assert isinstance(r, Reject)
    assert (r.status, r.code) == (402, "payment_required")
    assert r.message == "budget spent; retry after the period resets"
    assert dict(r.headers) == {b"retry-after": b"%d" % (DAY - 3600)}
    # Another consumer's budget is its own.
    assert policy.access(ctx_for(consumer="bob")) is None
    wall.t += DAY - 3600 - 0.5                                    # half a second before reset
    assert dict(policy.access(ctx_for(consumer="alice")).headers) == {b"retry-after": b"1"}


def test_window_resets_at_the_utc_boundary(wall):
    _, policy, _ = build_both(ai_config(budget_cfg={"usd": 2, "per": "hour"}))
    ctx = ctx_for(consumer="alice")
    late = policy.ai_reserve(ctx, 1.0)          # still in flight at the reset
    policy.ai_settle(ctx, policy.ai_reserve(ctx, 1.5), 1.5)
    r = policy.access(ctx_for(consumer="alice"))
    assert r.status == 402 and dict(r.headers) == {b"retry-after": b"3600"}
    wall.t += 3599.0
    assert policy.access(ctx_for(consumer="alice")).status == 402
    wall.t += 1.0                                # the next hour: a fresh budget
    assert policy.access(ctx_for(consumer="alice")) is None
    assert policy.spent(ctx) == 0.0
    # A request admitted in the old window is settled there, not in the new one.
    policy.ai_settle(ctx, late, 1.9)
    assert policy.spent(ctx) == 0.0
    policy.ai_settle(ctx, policy.ai_reserve(ctx, 0.5), 1.9)
    assert policy.access(ctx_for(consumer="alice")) is None
    policy.ai_reserve(ctx, 0.1)
    assert policy.access(ctx_for(consumer="alice")).status == 402


def test_reservations_in_flight_count_until_settled(wall):
    _, policy, _ = build_both(ai_config(budget_cfg=BUDGET))
    ctx = ctx_for(consumer="alice")
    handles = [policy.ai_reserve(ctx, 0.25) for _ in range(4)]   # four requests in flight
    assert policy.access(ctx_for(consumer="alice")).status == 402
    for h in handles[:2]:
        policy.ai_settle(ctx, h, 0.05)           # two were cheap
    assert policy.spent(ctx) == pytest.approx(0.6)
    assert policy.access(ctx_for(consumer="alice")) is None
    # A failed provider call (settled at 0) gives the whole estimate back; twice is once.
    policy.ai_settle(ctx, handles[2], 0.0)
    policy.ai_settle(ctx, handles[2], 0.0)
    assert policy.spent(ctx) == pytest.approx(0.35)
    policy.ai_settle(ctx, None, 3.0)             # a None handle is a no-op


def test_budget_by_consumer_falls_back_to_ip_for_anonymous(wall):
    _, policy, _ = build_both(ai_config(budget_cfg=BUDGET))
    policy.ai_reserve(ctx_for(consumer=None, ip="10.0.0.7"), 1.0)
    assert policy.access(ctx_for(consumer=None, ip="10.0.0.7")).status == 402
    assert policy.access(ctx_for(consumer=None, ip="10.0.0.8")) is None
    # A consumer coming from that IP has a budget of its own, and vice versa.
    assert policy.access(ctx_for(consumer="alice", ip="10.0.0.7")) is None
    policy.ai_reserve(ctx_for(consumer="alice", ip="10.0.0.9"), 1.0)
    assert policy.access(ctx_for(consumer="alice", ip="10.0.0.1")).status == 402
    assert policy.access(ctx_for(consumer=None, ip="10.0.0.9")) is None


def test_budget_by_ip_and_by_header(wall):
    _, by_ip, _ = build_both(ai_config(budget_cfg={"usd": 1, "per": "day", "by": "ip"},
                                       auth=False))
    by_ip.ai_reserve(ctx_for(ip="10.1.0.1"), 1.0)
    assert by_ip.access(ctx_for(ip="10.1.0.1")).status == 402
    assert by_ip.access(ctx_for(ip="10.1.0.2")) is None
    _, by_h, _ = build_both(ai_config(
        budget_cfg={"usd": 1, "per": "day", "by": "header:x-team"}, auth=False))
    by_h.ai_reserve(ctx_for(ip="10.1.0.1", headers=((b"x-team", b"red"),)), 1.0)
    assert by_h.access(ctx_for(ip="10.1.0.5", headers=((b"x-team", b"red"),))).status == 402
    assert by_h.access(ctx_for(ip="10.1.0.1", headers=((b"x-team", b"blue"),))) is None
    # Leaving the header out is no way around it: the IP's own budget applies.
    by_h.ai_reserve(ctx_for(ip="10.1.0.3"), 1.0)
    assert by_h.access(ctx_for(ip="10.1.0.3")).status == 402


def test_routes_and_periods_never_share_a_budget(wall):
    config = ai_config(budget_cfg=BUDGET)
    services = services_for(config)
    _, p1, _ = build_both(config, services)
    p1.ai_reserve(ctx_for(consumer="alice"), 1.0)
    assert p1.access(ctx_for(consumer="alice")).status == 402
    # A reload that raises the budget keeps the spend ...
    config2 = ai_config(budget_cfg={"usd": 3, "per": "day", "by": "consumer"})
    services.config = config2
    p2 = budget.build(config2.routes[0], services)
    assert p2.spent(ctx_for(consumer="alice")) == pytest.approx(1.0)
    assert p2.access(ctx_for(consumer="alice")) is None
    # ... one that changes the period starts afresh.
    config3 = ai_config(budget_cfg={"usd": 1, "per": "hour", "by": "consumer"})
    services.config = config3
    p3 = budget.build(config3.routes[0], services)
    assert p3.spent(ctx_for(consumer="alice")) == 0.0


def test_budget_is_shared_by_processes_of_one_table(wall):
    _, policy, services = build_both(ai_config(budget_cfg={"usd": 10, "per": "day"}))
    assert services.local_buckets.shared

    def worker():
        ctx = ctx_for(consumer="alice")
        for _ in range(100):
            assert policy.access(ctx) is None
            h = policy.ai_reserve(ctx, 0.05)
            policy.ai_settle(ctx, h, 0.04)
        return 1
    assert in_child(worker) == 1 and in_child(worker) == 1
    assert policy.spent(ctx_for(consumer="alice")) == pytest.approx(8.0)
    policy.ai_reserve(ctx_for(consumer="alice"), 2.0)
    assert in_child(lambda: policy.access(ctx_for(consumer="alice")).status) == 402


def test_budget_counters_without_prefork_are_per_process(wall):
    config = ai_config(budget_cfg=BUDGET)
    shared = SharedState(config)
    shared.local_buckets = None              # as when embedded without prefork
    services = Services(shared, config)
    policy = budget.build(config.routes[0], services)
    assert isinstance(services.local_buckets, TokenBucketTable)
    assert not services.local_buckets.shared
    policy.ai_reserve(ctx_for(consumer="alice"), 1.0)
    assert policy.access(ctx_for(consumer="alice")).status == 402


def test_budget_and_token_limit_together(wall):
    config = ai_config([{"limit": 1000, "per": "minute", "unit": "tokens"}],
                       budget_cfg={"usd": 0.5, "per": "day"})
    rl, bp, services = build_both(config)
    ctx = ctx_for(consumer="alice")
    assert rl.access(ctx) is None and bp.access(ctx) is None
    th, bh = rl.ai_reserve(ctx, 300), bp.ai_reserve(ctx, 0.3)
    rl.ai_settle(ctx, th, 200)
    bp.ai_settle(ctx, bh, 0.5)
    assert rl.access(ctx_for(consumer="alice")) is None
    assert bp.access(ctx_for(consumer="alice")).status == 402
    assert tokens_left(rl, services, "alice") == pytest.approx(800, abs=0.5)
