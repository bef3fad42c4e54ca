"""Rate limiting: ``routes[].rate_limits``.

Each limit is a token bucket per key: capacity ``burst`` (default ``limit``), refilled at
``limit / per`` tokens per second; a request costs 1.

``unit: tokens`` limits (AI routes) admit a request while the bucket holds at least one token
(else 429 as below) and are charged by the AI target, not by ``access``:
``ai_reserve(ctx, tokens) -> handle`` once the request is parsed (the caller's estimate:
max_tokens plus a prompt estimate) debits every tokens-unit limit of the route for this
request's keys; ``ai_settle(ctx, handle, actual_tokens)`` once the provider counted debits the
difference, or credits it back when the estimate was larger (never above the burst). Buckets
may go negative; later requests wait until they have refilled. Overshoot is bounded by the
reservations in flight when a bucket ran dry (each admitted on >= 1 token) plus what the
providers counted beyond the estimates. ``charge(ctx, amount)`` debits without a reservation.

Keys (``by``): ``consumer`` (ctx.consumer), ``ip`` (ctx.client_ip), ``route`` (one bucket for
the route), ``header:NAME`` (first value of that request header), ``claim:NAME`` (that claim of
the verified token). A request without the value (anonymous, header absent or empty, claim
missing) is limited by its client IP instead, in buckets of their own: leaving the header out
must not be a way around the limit. Buckets belong to (route, limit position, by), so two
routes or two limits never share one.

Every limit of the route applies, all or nothing: a request refused by one limit takes nothing
from the others (local limits are checked and charged under one lock; cluster leases are
checked first and charged only once the local verdict is in).

``scope: local`` buckets live in a shared-memory table (fastgate._core.buckets) that every
worker of the instance maps, so workers share one limit exactly. ``scope: cluster`` buckets
live in Redis and are leased in batches (see cluster.py).

Answers: a refused request gets ``429`` (code ``rate_limited``) with ``Retry-After`` (whole
seconds, at least 1). Every response of a limited route carries ``RateLimit-Limit`` (the
bucket's capacity: the most requests that can be made at once), ``RateLimit-Remaining``
(whole tokens left) and ``RateLimit-Reset`` (seconds until the bucket is full again), for the
limit with the fewest tokens left, or for the refusing one. For cluster limits the figures are
the last ones Redis reported, brought forward locally: approximate. Responses the gateway gives
before this policy runs (404, a 401 from auth) carry none: no bucket was consulted.
"""
from __future__ import annotations

import asyncio
import math

from fastgate._core.buckets import MAX_KEYS, BucketPlan, TokenBucketTable
from fastgate._core.limitcore import H_LIMIT, H_REMAINING, H_RESET, KeyBy, LocalLimitAccess
from fastgate.policies.base import Reject
from fastgate.policies.rate_limit_hooks import cluster_limiter, table_slots

from .cluster import DENY, OK, TOKEN_RECHECK_S, WAIT

H_RETRY_AFTER = b"retry-after"

WAIT_ROUNDS = 4      # lease fetches one request may wait for, within its deadline
MAX_AI_TOKENS = 1e12  # sanity bound on one reservation or count (a client's max_tokens)

_NUMS = tuple(b"%d" % i for i in range(4096))   # header values without formatting


def num_bytes(x: int) -> bytes:
    """x as a header value (the budget policy's Retry-After uses it too)."""
    return _NUMS[x] if 0 <= x < 4096 else b"%d" % x


_num = num_bytes


class Limit(KeyBy):
    """One configured limit, compiled."""

    __slots__ = ("index", "cfg", "rate", "burst", "limit_b", "tokens_unit", "need",
                 "cost_scale", "per_s", "recheck_s")

    def __init__(self, route_name: str, index: int, cfg):
        ident = f"{route_name}\x00{index}\x00{cfg.by}".encode("utf-8", "surrogatepass")
        KeyBy.__init__(self, ident, cfg.by_kind, cfg.by_name)
        self.index = index
        self.cfg = cfg
        self.per_s = float(cfg.per_s)
        self.rate = cfg.limit / self.per_s
        self.burst = float(cfg.burst if cfg.burst is not None else cfg.limit)
        self.limit_b = _num(int(self.burst))
        self.tokens_unit = cfg.unit == "tokens"
        # Request limits take 1 per request; token limits need 1 left and are charged later.
        self.need = 1.0
        self.cost_scale = 0.0 if self.tokens_unit else 1.0
        # A cluster lease believes "Redis is dry" this long at most (see cluster.py).
        self.recheck_s = TOKEN_RECHECK_S if self.tokens_unit else math.inf


class TokenReservation:
    """What ``ai_reserve`` debited: the limits and keys, and the amount (for ``ai_settle``)."""

    __slots__ = ("keys", "tokens", "settled")

    def __init__(self, keys, tokens: float):
        self.keys = keys            # ((Limit, key bytes), ...)
        self.tokens = tokens
        self.settled = False

    def __repr__(self) -> str:
        return f"TokenReservation({self.tokens:g} tokens on {len(self.keys)} limits)"


class RateLimitPolicy:
    name = "rate_limit"

    __slots__ = ("route_name", "services", "table", "limiter", "local", "groups", "cluster",
                 "limits", "single", "token_limits", "compiled")

    def __init__(self, route_name: str, limits: list[Limit], services):
        self.route_name = route_name
        self.services = services
        self.limits = tuple(limits)
        self.local = tuple(l for l in limits if l.cfg.scope == "local")
        self.cluster = tuple(l for l in limits if l.cfg.scope == "cluster")
        self.token_limits = tuple(l for l in limits if l.tokens_unit)
        self.table = None
        if self.local:
            table = services.local_buckets
            if table is None:
                # Only when no SharedState ran prefork (embedding, tests): per-process buckets.
                table = services.local_buckets = TokenBucketTable(
                    table_slots(services.config), shared=False)
            self.table = table
        # A take_all() covers up to MAX_KEYS limits under one lock; a route with more (rare)
        # is all-or-nothing within each group only.
        self.groups = tuple(
            (chunk, BucketPlan([l.rate for l in chunk], [l.burst for l in chunk],
                               [l.cost_scale for l in chunk], [l.need for l in chunk]))
            for chunk in (self.local[i:i + MAX_KEYS] for i in range(0, len(self.local), MAX_KEYS))
        )
        self.single = self.groups[0] if len(self.local) == 1 and not self.cluster else None
        self.limiter = None
        if self.cluster:
            self.limiter = cluster_limiter(services)
        if self.cluster and self.limiter is None:
            raise ValueError(f"route {route_name!r}: scope: cluster rate limits need redis")
        # One local limit (the usual route): admitted in C, refused through _deny.
        self.compiled = {"access": LocalLimitAccess(self)} if self.single is not None else None

    # ------------------------------------------------------------------ access phase
    def access(self, ctx):
        single = self.single
        if single is not None:      # the common case: one local limit
            limits, plan = single
            lim = limits[0]
            r = self.table.take_all((lim.key(ctx),), plan)
            if not r.allowed:
                return self._deny(ctx, lim.limit_b, r.retry_after_s, r.remaining, r.reset_s,
                                  lim.per_s)
            ctx.response_headers += ((H_LIMIT, lim.limit_b), (H_REMAINING, r.remaining_b),
                                     (H_RESET, r.reset_b))
            return None
        r = self._decide(ctx, True, True)
        if r.__class__ is list:
            return self._after_fetch(ctx, r)
        return r

    def _decide(self, ctx, may_wait: bool, first: bool):
        """None (admitted), a Reject, or the list of lease fetches to await first."""
        best_rem = math.inf
        best_reset = 0.0
        best_limit = None
        held = None
        if self.cluster:
            limiter = self.limiter
            now = limiter.clock()
            waits = None
            held = []
            for lim in self.cluster:
                lease = limiter.lease(lim.key(ctx), lim.rate, lim.burst, now, lim.recheck_s)
                st = lease.status(lim.need, now, may_wait, first)
                if st == OK:
                    held.append((lim, lease))
                elif st == WAIT:
                    if waits is None:
                        waits = []
                    waits.append(lease.task)
                elif st == DENY:
                    _, reset = lease.figures(now)
                    return self._deny(ctx, lim.limit_b, lease.retry_after(now), 0.0, reset,
                                      lim.per_s)
                else:   # ERROR: Redis is down and the lease is short
                    if not limiter.fail_open:
                        wait = limiter.error_retry_after(now)
                        return self._deny(ctx, lim.limit_b, wait, 0.0, wait, lim.per_s)
                    rem, reset = lease.figures(now)   # admitted unmetered
                    if rem < best_rem:
                        best_rem, best_reset, best_limit = rem, reset, lim.limit_b
            if waits is not None:
                return waits
        for limits, plan in self.groups:
            r = self.table.take_all(tuple([l.key(ctx) for l in limits]), plan)
            lim = limits[r.index]
            if not r.allowed:
                return self._deny(ctx, lim.limit_b, r.retry_after_s, r.remaining, r.reset_s,
                                  lim.per_s)
            if r.remaining < best_rem:
                best_rem, best_reset, best_limit = r.remaining, r.reset_s, lim.limit_b
        if held:
            for lim, lease in held:
                lease.consume(lim.need * lim.cost_scale, now)
                rem, reset = lease.figures(now)
                if rem < best_rem:
                    best_rem, best_reset, best_limit = rem, reset, lim.limit_b
        if best_limit is not None:
            rh = ctx.response_headers
            rh.append((H_LIMIT, best_limit))
            rh.append((H_REMAINING, _num(int(best_rem))))
            rh.append((H_RESET, _num(math.ceil(best_reset))))
        return None

    async def _after_fetch(self, ctx, tasks):
        # One request waits at most timeout_ms (plus a margin against a stuck loop) in
        # all. A fetch may bring less than every waiter needs (it was sized before they
        # came): they ask again, within that deadline, rather than being refused while
        # Redis still has tokens.
        limiter = self.limiter
        deadline = limiter.clock() + limiter.timeout_s + 0.1
        for _ in range(WAIT_ROUNDS):
            await asyncio.wait(tasks, timeout=max(deadline - limiter.clock(), 0.0))
            r = self._decide(ctx, limiter.clock() < deadline, False)
            if r.__class__ is not list:
                return r
            tasks = r
        return self._decide(ctx, False, False)

    def _deny(self, ctx, limit_b, retry_s, remaining, reset_s, per_s):
        metrics = self.services.metrics
        if metrics is not None:
            metrics.rate_limited(ctx.route_name)
        if not retry_s < math.inf:
            retry_s = per_s          # a cost no bucket can hold: say "much later"
        retry = math.ceil(retry_s)
        if retry < 1:
            retry = 1
        rh = ctx.response_headers
        rh.append((H_LIMIT, limit_b))
        rh.append((H_REMAINING, _num(int(remaining))))
        rh.append((H_RESET, _num(math.ceil(reset_s))))
        return Reject(429, "rate_limited", "rate limit exceeded; retry later",
                      headers=((H_RETRY_AFTER, _num(retry)),))

    # ------------------------------------------------------------------ AI accounting
    def ai_reserve(self, ctx, tokens: int):
        """Debit the estimate ``tokens`` from every ``unit: tokens`` limit of the route for
        this request's keys, whatever the buckets hold (the request was admitted by
        ``access``). Returns the handle for ``ai_settle``; None when the route has no token
        limit. Never waits: cluster limits debit their lease and owe the rest to Redis."""
        lims = self.token_limits
        if not lims:
            return None
        amount = float(min(tokens, MAX_AI_TOKENS)) if tokens > 0 else 0.0
        keys = tuple([(lim, lim.key(ctx)) for lim in lims])
        if amount > 0.0:
            self._move(keys, amount)
        return TokenReservation(keys, amount)

    def ai_settle(self, ctx, handle, actual_tokens: int) -> None:
        """Replace the reservation by the provider's count: debit ``actual - reserved``, or
        credit the difference back when the estimate was larger (a bucket never rises above
        its burst). Once per handle; later calls, and a None handle, do nothing."""
        if handle is None or handle.settled:
            return
        handle.settled = True
        actual = float(min(actual_tokens, MAX_AI_TOKENS)) if actual_tokens > 0 else 0.0
        delta = actual - handle.tokens
        if delta != 0.0:
            self._move(handle.keys, delta)

    def charge(self, ctx, amount: float) -> None:
        """Charge ``amount`` (e.g. AI tokens the provider reported) to every ``unit: tokens``
        limit of the route, for this request's keys, without a reservation."""
        if amount > 0 and self.token_limits:
            self._move(tuple([(lim, lim.key(ctx)) for lim in self.token_limits]),
                       float(min(amount, MAX_AI_TOKENS)))

    def _move(self, keys, amount: float) -> None:
        """Debit ``amount`` (> 0) or credit ``-amount`` (< 0) on each (limit, key)."""
        for lim, key in keys:
            if lim.cfg.scope == "local":
                if amount > 0.0:
                    self.table.debit(key, lim.rate, lim.burst, amount)
                else:
                    self.table.credit(key, lim.rate, lim.burst, -amount)
            else:
                limiter = self.limiter
                now = limiter.clock()
                lease = limiter.lease(key, lim.rate, lim.burst, now, lim.recheck_s)
                if amount > 0.0:
                    lease.debit(amount, now)
                else:
                    lease.credit(-amount, now)


def build(route_cfg, services):
    """The route's RateLimitPolicy, or None when it has no rate_limits."""
    cfgs = getattr(route_cfg, "rate_limits", None)
    if not cfgs:
        return None
    limits = [Limit(route_cfg.name, i, c) for i, c in enumerate(cfgs)]
    return RateLimitPolicy(route_cfg.name, limits, services)


__all__ = ["KeyBy", "Limit", "RateLimitPolicy", "TokenReservation", "build"]
