"""AI budgets shared by every instance through Redis (``routes[].budget`` with ``redis``).

What Redis holds: one integer counter per budget key and window, in nano-dollars (integers:
no float drift however many small costs add up), ``fg:bg:{<digest>}`` where the digest (the
hash tag, so each call touches one key in one slot of a Redis Cluster) covers the route, the
period, the ``by`` key and the window number. The counter is the cluster's spend in that
window: settled costs plus the estimates of requests still in flight. It expires
``GRACE_S`` after its window ends (settlements of requests that straddle the reset still
land), so spend survives a restart of every gateway.

What a process holds: per key and window an ``Entry`` with the counter as Redis last
reported it (``remote``) and what this process added since (``pending``: reservations and
settlements not yet written, ``sending``: the write in flight). Its view of the spend is
``remote + sending + pending``.

Request path, no Redis round trip when avoidable:
* ``access`` decides from the entry. The view is refreshed in the background by an access
  that finds it older than ``REFRESH_S`` (``NEAR_REFRESH_S`` once within ``NEAR_FRACTION`` of
  the budget). Only the first request of a key in a process and window waits, for one read
  bounded by ``timeout_ms`` (requests arriving meanwhile wait for the same read).
* ``reserve`` / ``settle`` add to ``pending``; one script call (INCRBY + PEXPIREAT, or a GET
  when nothing changed) writes it and reads the total back, at most one per entry in flight
  and one per ``FLUSH_S``: writes are batched under load.

Accuracy (Redis answering): this process's own spend is in its view at once; another
instance's at most ``FLUSH_S + REFRESH_S`` plus two round trips later (``NEAR_REFRESH_S``
instead of ``REFRESH_S`` close to the budget). So a budget is overshot by at most the
reservations in flight when it was reached, plus what the instances reserved within that lag,
plus what providers counted beyond the estimates. A write whose reply was lost (timeout) is
sent again: spend may be counted twice (refusing early), never lost. A process that dies with
requests in flight leaves their estimates counted for the rest of the window (conservative).

Redis failing: every call is bounded by ``timeout_ms`` and goes through the rate limiter's
client and breaker (fastgate.policies.rate_limit.cluster: one client per process, one view of
whether Redis is up, one probe per backoff period). While Redis is down a key whose known
spend reached the budget is still refused (402); otherwise ``on_error`` decides at once:
``allow`` admits (spend keeps being counted locally and is written when Redis is back; each
instance still stops at the budget by its own count, so at most one budget per instance is
overshot), ``deny`` answers 503 ``service_unavailable`` with Retry-After. A first request that
finds no answer within ``timeout_ms`` is decided the same way.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging

log = logging.getLogger("fastgate.budget")

REFRESH_S = 0.25         # an access refreshes a view older than this (in the background)
NEAR_FRACTION = 0.1      # within this share of the budget ...
NEAR_REFRESH_S = 0.02    # ... views are refreshed this often
FLUSH_S = 0.02           # own changes are written at most this often per key
SWEEP_S = 1.0
IDLE_FORGET_S = 60.0     # an entry unused this long (nothing unwritten) is dropped
MAX_ENTRIES = 100_000
NANO = 1e9

OK, SPENT, WAIT, ERROR = 0, 1, 2, 3

# KEYS[1] counter. ARGV: delta (integer nano-dollars), expiry (unix ms). Returns the total.
LUA = r"""
local d = tonumber(ARGV[1])
if d ~= 0 then
  local v = redis.call('INCRBY', KEYS[1], d)
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return v
end
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
return tonumber(v)
"""


def redis_key(key: bytes) -> str:
    return "fg:bg:{" + hashlib.blake2b(key, digest_size=16).hexdigest() + "}"


def _int(res) -> int:
    return int(res)


class Entry:
    """One budget key in one window, as this process knows it."""

    __slots__ = ("rkey", "expire_ms", "remote", "pending", "sending", "synced_at", "ready",
                 "task", "timer", "last_used")

    def __init__(self, rkey: str, expire_ms: int, now: float):
        self.rkey = rkey
        self.expire_ms = expire_ms
        self.remote = 0.0         # USD: the counter at Redis's last answer
        self.pending = 0.0        # USD added here and not yet sent
        self.sending = 0.0        # USD in the write in flight
        self.synced_at = -1e18
        self.ready = False        # Redis answered at least once for this entry
        self.task = None
        self.timer = None
        self.last_used = now

    def spent(self) -> float:
        return self.remote + self.sending + self.pending


class BudgetLedger:
    """Per process and redis section: every budget key's Entry, over the rate limiter's
    Redis client (``limiter``: a ClusterLimiter)."""

    def __init__(self, limiter):
        self.limiter = limiter
        self.clock = limiter.clock
        self.fail_open = limiter.fail_open
        self.entries: dict[bytes, Entry] = {}
        self.dirty: set[Entry] = set()      # entries with something unwritten
        self.script = limiter.register_script(LUA)
        self._sweeping = False
        self._closed = False
        limiter.before_close.append(self.flush_all)

    # ------------------------------------------------------------------ request path
    def entry(self, key: bytes, expire_wall: float) -> Entry:
        e = self.entries.get(key)
        if e is None:
            now = self.clock()
            if len(self.entries) >= MAX_ENTRIES:
                self._shrink(now)
            e = self.entries[key] = Entry(redis_key(key), int(expire_wall * 1000), now)
            if not self._sweeping and not self._closed:
                self._sweeping = True
                asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        return e

    def check(self, e: Entry, usd: float) -> int:
        """OK: under budget by the view (refreshed in the background when stale); SPENT;
        WAIT: nothing known yet, await ``e.task`` then ``decide``; ERROR: Redis is down,
        on_error decides."""
        now = self.clock()
        e.last_used = now
        spent = e.spent()
        if spent >= usd - 1e-9:
            return SPENT
        lim = self.limiter
        if not lim.healthy:
            self._probe(e, now)
            return ERROR
        if not e.ready:
            if e.task is None:
                self.sync(e)
            return WAIT
        stale = REFRESH_S if spent < usd * (1.0 - NEAR_FRACTION) else NEAR_REFRESH_S
        if now - e.synced_at >= stale and e.task is None:
            self.sync(e)
        return OK

    def decide(self, e: Entry, usd: float) -> int:
        """After waiting for the first read: OK, SPENT, or ERROR (no answer in time)."""
        if e.spent() >= usd - 1e-9:
            return SPENT
        if not e.ready or not self.limiter.healthy:
            return ERROR
        return OK

    def add(self, e: Entry, usd: float) -> None:
        """Count ``usd`` (negative: take back) on ``e``; written in the background."""
        if usd == 0.0:
            return
        e.pending += usd
        self.dirty.add(e)
        if e.task is not None or e.timer is not None or self._closed:
            return          # the write in flight (or the timer) picks it up
        if not self.limiter.healthy:
            return          # kept; written by the sweep once Redis is back
        wait = e.synced_at + FLUSH_S - self.clock()
        if wait <= 0.0:
            self.sync(e)
        else:
            e.timer = asyncio.get_running_loop().call_later(wait, self._on_timer, e)

    def _on_timer(self, e: Entry) -> None:
        e.timer = None
        if e.task is None and not self._closed:
            self.sync(e)

    def _probe(self, e: Entry, now: float) -> None:
        lim = self.limiter
        if now >= lim.down_until and e.task is None:
            lim.down_until = now + lim.backoff      # one probe per backoff period
            self.sync(e)

    # ------------------------------------------------------------------ redis
    def sync(self, e: Entry) -> None:
        """Write what is pending and read the total back (one script call)."""
        if e.timer is not None:
            e.timer.cancel()
            e.timer = None
        e.task = asyncio.get_running_loop().create_task(self._sync(e))

    async def _sync(self, e: Entry) -> None:
        nano = round(e.pending * NANO)
        sent = nano / NANO
        e.pending -= sent         # a sub-nano-dollar rest stays for the next write
        e.sending = sent
        try:
            res = await self.limiter.run(self.script, [e.rkey], [nano, e.expire_ms], _int)
        finally:
            e.task = None
        if res is None:
            # Whether the script ran is unknown: sending it again may count it twice
            # (refusing early), never lose it.
            e.pending += e.sending
            e.sending = 0.0
            return
        e.sending = 0.0
        e.remote = res / NANO if res > 0 else 0.0
        e.synced_at = self.clock()
        e.ready = True
        if abs(e.pending) * NANO >= 0.5:
            if e.timer is None and not self._closed:
                e.timer = asyncio.get_running_loop().call_later(FLUSH_S, self._on_timer, e)
        else:
            self.dirty.discard(e)

    # ------------------------------------------------------------------ upkeep
    def _shrink(self, now: float) -> None:
        for key in [k for k, e in self.entries.items()
                    if e.task is None and e not in self.dirty and now - e.last_used > 1.0]:
            del self.entries[key]
        excess = len(self.entries) - MAX_ENTRIES * 9 // 10
        if excess > 0:
            # Still full: forget the oldest clean ones; their next request reads Redis again.
            for key in [k for k, e in self.entries.items()
                        if e.task is None and e not in self.dirty][:excess]:
                del self.entries[key]

    def _sweep(self) -> None:
        if self._closed:
            return
        now = self.clock()
        if self.limiter.healthy:
            for e in list(self.dirty):
                if e.task is None and e.timer is None:
                    self.sync(e)
        elif self.dirty:
            self._probe(next(iter(self.dirty)), now)    # nobody asking: find out anyway
        forget = [k for k, e in self.entries.items()
                  if now - e.last_used > IDLE_FORGET_S and e.task is None
                  and e not in self.dirty]
        for key in forget:
            del self.entries[key]
        if self.entries or self.dirty:
            asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        else:
            self._sweeping = False

    async def warm(self) -> None:
        """Load the script before the snapshot serves (the limiter connects in its own
        warm(); Redis down now is left to the breaker, the script loads on first use)."""
        await self.limiter.load_script(LUA)

    async def flush_all(self) -> None:
        """Write everything unwritten (best effort: two rounds, each bounded)."""
        lim = self.limiter
        for _ in range(2):
            tasks = [e.task for e in self.dirty if e.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=lim.timeout_s * 2)
            todo = [e for e in self.dirty if e.task is None]
            if not todo or not lim.healthy:
                break
            for e in todo:
                if e.timer is not None:
                    e.timer.cancel()
                    e.timer = None
                self.sync(e)
        tasks = [e.task for e in self.dirty if e.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=lim.timeout_s * 2)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush_all()
        self._closed = True
        for e in self.dirty:
            if e.timer is not None:
                e.timer.cancel()
                e.timer = None
        if self.flush_all in self.limiter.before_close:
            self.limiter.before_close.remove(self.flush_all)
        if self.dirty:
            log.warning("budget spend of %d keys not written to redis at close", len(self.dirty))
