"""AI budgets: ``routes[].budget: {usd, per, by}`` (config: config.py).

Spend is counted in fixed windows of ``per`` (second, minute, hour, day) aligned to UTC (a
day budget resets at 00:00 UTC, as LiteLLM's budget reset does), per key of ``by``: the same
keys as rate limits (fastgate.policies.rate_limit.KeyBy: consumer, ip, route, header:NAME,
claim:NAME; a request without the value counts under its client IP, in keys of their own).
Budgets belong to (route, period, by): two routes never share one; a reload that changes
``usd`` keeps the spend, one that changes ``per`` starts afresh.

The AI target drives it (fastgate.ai): once the request is parsed, ``ai_reserve(ctx, usd)``
adds the estimated cost (max_tokens and a prompt estimate at the model's price); once the
provider answered (or failed, or the client left), ``ai_settle(ctx, handle, usd_actual)``
replaces the estimate by the cost of the provider's counts. ``access(ctx)`` refuses while the
key's spend in the current window (settled costs plus the estimates of requests in flight)
has reached ``usd``:

    402 payment_required "budget spent; retry after the period resets"
        Retry-After: whole seconds until the window ends (at least 1)

A request that started in one window is settled in that window (its estimate was admitted
there). So the overshoot is bounded by the estimates in flight when the budget was reached
plus what the providers counted beyond the estimates (plus, across instances, the lag below).

Storage:
* Without ``redis``: the instance's shared-memory table (the one the workers' local rate
  limits use, made before the workers fork; ``TokenBucketTable.window_add``): counters keyed
  by window, exact across the workers of the instance (one lock per operation). Lost when
  the instance stops. A counter may be evicted only if its set of slots is full of counters
  and buckets that are all below capacity and expire later (see buckets.pyx); it then
  restarts at 0 (counted in the table's ``evictions``).
* With ``redis``: shared by every instance and kept across restarts; see ledger.py for the
  design, its accuracy bound and its fail modes (Redis down: ``on_error`` allow = admit,
  deny = 503 ``service_unavailable`` with Retry-After; a key known to be spent stays 402).
"""
from __future__ import annotations

import asyncio
import math
import time

from fastgate._core.buckets import TokenBucketTable, monotonic_ns
from fastgate.policies.base import Reject
from fastgate.policies.rate_limit import KeyBy, num_bytes as _num
from fastgate.policies.rate_limit_hooks import cluster_limiter, table_slots

from .ledger import OK, SPENT, WAIT

LEDGER = "budget_ledger"    # its kind in the process state
GRACE_S = 120.0             # a window's counter outlives it by this (late settlements)
EPS = 1e-9                  # USD: float slack when comparing spend with the budget
MAX_USD = 1e6               # sanity bound on one reservation or cost (a client's max_tokens
                            # at a price): keeps Redis's integer counter far from overflow

H_RETRY_AFTER = b"retry-after"
_wall = time.time




class BudgetReservation:
    """What ``ai_reserve`` counted: the counter (window included) and the estimate."""

    __slots__ = ("key", "expires_ns", "entry", "usd", "settled")

    def __init__(self, key, expires_ns, entry, usd):
        self.key = key                # table key (local) or None
        self.expires_ns = expires_ns  # local counter expiry
        self.entry = entry            # ledger Entry (redis) or None
        self.usd = usd
        self.settled = False

    def __repr__(self) -> str:
        return f"BudgetReservation(${self.usd:.6f})"


class BudgetPolicy:
    name = "budget"

    __slots__ = ("route_name", "cfg", "usd", "per_s", "by", "table", "ledger", "services")

    def __init__(self, route_name: str, cfg, services):
        self.route_name = route_name
        self.cfg = cfg
        self.usd = float(cfg.usd)
        self.per_s = int(cfg.per_s)
        self.services = services
        # \xff never occurs in UTF-8, so no rate-limit key (route name first) equals one.
        ident = b"\xffbudget\x00" + route_name.encode("utf-8", "surrogatepass") + \
            b"\x00%d\x00" % self.per_s + cfg.by.encode("utf-8", "surrogatepass")
        self.by = KeyBy(ident, cfg.by_kind, cfg.by_name)
        self.table = None
        self.ledger = None
        if getattr(services.config, "redis", None) is not None:
            self.ledger = budget_ledger(services)
        else:
            table = services.local_buckets
            if table is None:
                # Only when no SharedState ran prefork (embedding, tests): this process only.
                table = services.local_buckets = TokenBucketTable(
                    table_slots(services.config), shared=False)
            self.table = table

    # ------------------------------------------------------------------ windows
    def _window(self, ctx):
        """(counter key, seconds until the window ends, unix time it ends)."""
        now = _wall()
        idx = int(now // self.per_s)
        end = (idx + 1) * self.per_s
        return b"%d\x00" % idx + self.by.key(ctx), end - now, end

    def _expiry_ns(self, left: float) -> int:
        return monotonic_ns() + int((left + GRACE_S) * 1e9)

    # ------------------------------------------------------------------ access phase
    def access(self, ctx):
        key, left, end = self._window(ctx)
        ledger = self.ledger
        if ledger is None:
            spent = self.table.window_add(key, 0.0, self._expiry_ns(left))
            if spent >= self.usd - EPS:
                return self._spent(left)
            return None
        e = ledger.entry(key, end + GRACE_S)
        st = ledger.check(e, self.usd)
        if st == OK:
            return None
        if st == SPENT:
            return self._spent(left)
        if st == WAIT:
            return self._first_read(e, left)
        return self._on_error()

    async def _first_read(self, e, left):
        ledger = self.ledger
        task = e.task
        if task is not None:
            # Bounded by timeout_ms inside; the margin only guards against a stuck loop.
            await asyncio.wait((task,), timeout=ledger.limiter.timeout_s + 0.1)
        st = ledger.decide(e, self.usd)
        if st == OK:
            return None
        if st == SPENT:
            return self._spent(left)
        return self._on_error()

    def _spent(self, left: float):
        retry = math.ceil(left)
        return Reject(402, "payment_required", "budget spent; retry after the period resets",
                      headers=((H_RETRY_AFTER, _num(retry if retry >= 1 else 1)),))

    def _on_error(self):
        limiter = self.ledger.limiter
        if limiter.fail_open:
            return None
        retry = math.ceil(limiter.error_retry_after(limiter.clock()))
        return Reject(503, "service_unavailable",
                      "budget store unavailable; retry later",
                      headers=((H_RETRY_AFTER, _num(retry if retry >= 1 else 1)),))

    # ------------------------------------------------------------------ AI accounting
    def ai_reserve(self, ctx, usd: float):
        """Count the estimated cost ``usd`` in the key's current window, whatever is left
        (the request was admitted by ``access``). Returns the handle for ``ai_settle``.
        Never waits (with Redis the write happens in the background)."""
        amount = float(min(usd, MAX_USD)) if usd > 0 else 0.0
        key, left, end = self._window(ctx)
        if self.ledger is None:
            expires = self._expiry_ns(left)
            if amount > 0.0:
                self.table.window_add(key, amount, expires)
            return BudgetReservation(key, expires, None, amount)
        e = self.ledger.entry(key, end + GRACE_S)
        self.ledger.add(e, amount)
        return BudgetReservation(None, 0, e, amount)

    def ai_settle(self, ctx, handle, usd_actual: float) -> None:
        """Replace the reservation by the actual cost, in the window it was made in. Once
        per handle; later calls, and a None handle, do nothing."""
        if handle is None or handle.settled:
            return
        handle.settled = True
        actual = float(min(usd_actual, MAX_USD)) if usd_actual > 0 else 0.0
        delta = actual - handle.usd
        if delta == 0.0:
            return
        if handle.entry is not None:
            self.ledger.add(handle.entry, delta)
        else:
            self.table.window_add(handle.key, delta, handle.expires_ns)

    # ------------------------------------------------------------------ introspection
    def spent(self, ctx) -> float:
        """The key's spend in the current window as this process knows it (tests, admin)."""
        key, left, end = self._window(ctx)
        if self.ledger is None:
            return self.table.window_add(key, 0.0, self._expiry_ns(left))
        e = self.ledger.entries.get(key)
        return e.spent() if e is not None else 0.0


def budget_ledger(services):
    """The process's Redis budget ledger for the config being built: one per redis section
    (a reload with the same section keeps it, and its unwritten spend), over the rate
    limiter's client, warmed before the snapshot serves, flushed when retired."""
    redis_cfg = services.config.redis
    limiter = cluster_limiter(services)

    def make():
        from .ledger import BudgetLedger
        return BudgetLedger(limiter)
    return services.keep(LEDGER, None, redis_cfg, make)


def build(route_cfg, services):
    """The route's BudgetPolicy, or None when it has no budget."""
    cfg = getattr(route_cfg, "budget", None)
    if cfg is None:
        return None
    return BudgetPolicy(route_cfg.name, cfg, services)


__all__ = ["BudgetPolicy", "BudgetReservation", "build", "budget_ledger"]
