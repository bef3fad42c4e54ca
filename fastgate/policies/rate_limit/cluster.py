"""`scope: cluster` limits: one token bucket per key in Redis, shared by every instance, with
no Redis round trip on the request path.

How it works: Redis holds the authoritative bucket (refilled by a Lua script from the Redis
server's own clock, so instance clocks do not matter). Each process *leases* tokens from it in
batches: an atomic script call refills the bucket, takes back unused tokens the process
returns, charges usage reported after the fact (AI tokens: a reservation when the request
starts, the difference once the provider counted), gives back what a reservation proved too
large (capped at the burst), and grants up to ``want`` tokens.
Requests are then admitted synchronously from the process's lease. A lease is refilled in the
background before it runs dry, sized to the key's observed demand (about ``LEASE_WINDOW_S``
of traffic, never more than ``BATCH_FRACTION`` of the burst); tokens a process leased but did
not use for ``IDLE_RETURN_S`` are handed back.

Accuracy: tokens are granted before they are spent, so while Redis answers the cluster never
admits more than ``burst + rate * t`` per key (no overshoot). The error is on the other side
and bounded: tokens sitting in other processes' leases (at most ``BATCH_FRACTION`` x burst,
rounded up to a whole token, per process and key; none at all for buckets under
1 / ``BATCH_FRACTION`` = 20 tokens, which lease only what the request in hand needs) are
unavailable to the rest until those processes use them or hand them back. Overshoot happens only when Redis is
unreachable and ``on_error: allow`` lets requests through unmetered, or when Redis loses its
data (a restart without persistence): buckets start full again, one extra burst at most.

Start: the client is built (redis imported) with the limiter, and ``warm()`` connects, loads
the script and runs it once before the snapshot that uses it serves, within
``connect_timeout_ms``: a request never pays for set-up inside its ``timeout_ms``. Redis down
at that moment is logged once and the limiter starts in its on_error mode.

Failure: every Redis call is bounded by ``timeout_ms``. A connection Redis dropped (a
restart) is replaced once inside the call, so a reconnect alone is no verdict. A failure marks Redis down; while it
is down no request waits on it: leased tokens are still used, and beyond them ``on_error``
decides at once (allow = admit unmetered, deny = 429). One probe call per backoff period
(``BACKOFF_MIN_S`` doubling to ``BACKOFF_MAX_S``) finds out when Redis is back, and from then
on everything is metered again.

AI token reservations (``unit: tokens``): a reservation is debited from the lease, beyond it
owed to Redis (paid with the next call, sent at once); a settlement below the reservation
first cancels what is still owed, the rest goes back to Redis with the next call (capped at
the burst there, so a credit never lifts a bucket above its capacity). A credit whose call
fails is not resent (the script may have run: resending could overshoot), so a Redis failure
costs at most under-admission. Requests are admitted while one token is left, so the
overshoot of a token limit is bounded by the reservations in flight when it ran dry plus the
amount by which providers exceeded the estimates.

The same client, timeouts and breaker serve the AI budgets' ledger (fastgate.policies.budget
.ledger): ``run(script, keys, args)`` is the one bounded call path; ``register_script`` /
``load_script`` let another module bring its own script, loaded while warming.

Keys in Redis are ``fg:rl:{<digest>}``: the whole digest is the hash tag, so each script call
touches one key in one slot (Redis Cluster), and a long client-chosen key costs Redis 32 bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time

log = logging.getLogger("fastgate.rate_limit")

LEASE_WINDOW_S = 0.1     # a batch should last about this long at the key's observed demand
BATCH_FRACTION = 0.05    # ... but hold at most this share of the burst
REFETCH_MIN_S = 0.005    # after Redis ran dry, ask again no sooner than this
TOKEN_RECHECK_S = 1.0    # ... and token limits (credited from anywhere) no later than this
IDLE_RETURN_S = 1.0      # hand unused leased tokens back after this long without use
IDLE_FORGET_S = 30.0     # drop a key's state after this long without use
SWEEP_S = 0.5
MAX_LEASES = 100_000     # keys tracked per process; beyond it the least recently added go
MAX_CONCURRENT_CALLS = 64
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0

OK, DENY, WAIT, ERROR = 0, 1, 2, 3
EPS = 1e-9               # float slack when comparing token counts

# KEYS[1] bucket. ARGV: rate (tokens/us), burst, want, need (smallest grant worth having),
# back (unused leased tokens returned), debt (usage charged after the fact).
# Returns {grant, tokens left, us until `need` is there (when nothing granted), us until full}.
LUA = r"""
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local back = tonumber(ARGV[5])
local debt = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
elseif now > ts then
  tokens = tokens + (now - ts) * rate
  ts = now
end
if tokens > burst then tokens = burst end
tokens = tokens + back
if tokens > burst then tokens = burst end
tokens = tokens - debt
local grant = 0
if want > 0 and tokens + 1e-9 >= need then
  grant = want
  if grant > tokens then grant = tokens end
  tokens = tokens - grant
end
local retry = 0
if want > 0 and grant == 0 then retry = (need - tokens) / rate end
local fill = (burst - tokens) / rate
if fill <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tk', string.format('%.17g', tokens), 'ts', string.format('%.0f', ts))
  local ttl = math.ceil(fill / 1000) + 1000
  if ttl > 1e13 then ttl = 1e13 end  -- a huge debt must not make PEXPIRE fail (integers only)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {string.format('%.17g', grant), string.format('%.17g', tokens),
        string.format('%.17g', retry), string.format('%.17g', fill)}
"""


def _floats(res):
    return [float(x) for x in res]


def _describe(exc) -> str:
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def redis_key(key: bytes) -> str:
    return "fg:rl:{" + hashlib.blake2b(key, digest_size=16).hexdigest() + "}"


class Lease:
    """One key's share of its cluster bucket held by this process."""

    __slots__ = (
        "limiter", "key", "rkey", "rate", "burst", "avail", "debt", "back", "task", "not_before",
        "failed", "g_tokens", "g_at", "demand", "demand_since", "target", "last_used",
        "dry_until", "recheck_s",
    )

    def __init__(self, limiter, key: bytes, rate: float, burst: float, now: float,
                 recheck_s: float = math.inf):
        self.limiter = limiter
        self.key = key
        self.rkey = redis_key(key)
        self.rate = rate
        self.burst = burst
        self.avail = 0.0          # tokens leased and not yet spent
        self.debt = 0.0           # usage charged beyond the lease, owed to Redis
        self.back = 0.0           # credits (reservations above the actual) owed back to Redis
        self.task = None          # the fetch in flight
        self.not_before = 0.0     # Redis ran dry: no fetch before this; deny what the lease lacks
        self.dry_until = 0.0      # when Redis said it would have enough (Retry-After)
        # Longest a "dry" answer is believed: token limits get credits back from anywhere
        # in the cluster (reservations above the provider's count), so they ask again
        # sooner than the refill alone would allow.
        self.recheck_s = recheck_s
        self.failed = False       # the last fetch for this key failed
        self.g_tokens = burst     # Redis's level at its last answer (for RateLimit-* headers)
        self.g_at = now
        self.demand = 0.0
        # As if the first request had been the only one for a whole window: the first batch
        # is small, later ones follow the measured demand.
        self.demand_since = now - LEASE_WINDOW_S
        self.target = 0.0
        self.last_used = now

    # ------------------------------------------------------------------ request path
    def status(self, need: float, now: float, may_wait: bool, first: bool = True) -> int:
        """OK: the lease covers `need`; DENY: Redis is dry (see retry_after); WAIT: await
        `self.task`, then ask again (first=False; may_wait while the request's own
        deadline allows: other waiters may have taken what that fetch brought); ERROR:
        Redis is down, on_error decides."""
        self.last_used = now
        if first:
            self.demand += need
        if self.avail >= need - EPS:
            return OK
        if now < self.not_before:
            return DENY         # Redis said dry until then; that holds even while it is down
        lim = self.limiter
        if not lim.healthy:
            lim.maybe_probe(self, now, need)
            return ERROR
        if self.task is not None:
            return WAIT if may_wait else DENY
        if not may_wait:
            return ERROR if self.failed else DENY
        self.fetch(now, need)
        return WAIT

    def consume(self, need: float, now: float) -> None:
        self.avail -= need
        # Refill in the background before the lease runs dry; not for small buckets, where
        # even one token held ahead would be more than BATCH_FRACTION of the burst (their
        # admitted requests each wait for a round trip; their refusals still do not).
        if (self.avail < self.target * 0.5 and self.task is None and now >= self.not_before
                and self.burst * BATCH_FRACTION >= 1.0 and self.limiter.healthy):
            self.fetch(now, need)

    def debit(self, amount: float, now: float) -> None:
        """Charge usage known only afterwards (AI tokens); what the lease lacks becomes debt
        paid with the next fetch."""
        if self.back > 0.0:           # a credit not yet sent cancels first
            d = min(self.back, amount)
            self.back -= d
            amount -= d
            if amount <= 0.0:
                return
        self.avail -= amount
        if self.avail < 0.0:
            self.debt -= self.avail
            self.avail = 0.0
            if self.task is None and self.limiter.healthy:
                self.fetch(now, 1.0)

    def credit(self, amount: float, now: float) -> None:
        """Give back tokens charged in excess (an AI reservation above the provider's count):
        first off the debt not yet paid, the rest to Redis with the next call, where the
        bucket is capped at its burst. Never into the lease: the lease holds only what Redis
        granted, so a credit cannot lift the cluster above capacity."""
        if amount <= 0.0:
            return
        if self.debt > 0.0:
            d = min(self.debt, amount)
            self.debt -= d
            amount -= d
            if amount <= 0.0:
                return
        self.back += amount
        if self.task is None and self.limiter.healthy:
            self.fetch(now, 0.0, settle_only=True)

    def retry_after(self, now: float) -> float:
        wait = self.dry_until - now
        return wait if wait > 0.0 else 1.0 / self.rate

    def figures(self, now: float) -> tuple[float, float]:
        """(remaining, seconds until full) as best known: Redis's level at its last answer,
        refilled since, plus this process's lease. Approximate by nature."""
        level = self.g_tokens + (now - self.g_at) * self.rate
        remaining = min(level + self.avail, self.burst)
        if remaining < 0.0:
            remaining = 0.0
        return remaining, (self.burst - remaining) / self.rate

    # ------------------------------------------------------------------ fetches
    def fetch(self, now: float, need: float, *, give_back: bool = False,
              settle_only: bool = False) -> None:
        if give_back:
            want, back = 0.0, self.avail
            self.avail = 0.0
        elif settle_only:           # only debt and credits to send
            if self.debt <= 0.0 and self.back <= 0.0:
                return
            want, back = 0.0, 0.0
        else:
            elapsed = now - self.demand_since
            if elapsed < 0.01:
                elapsed = 0.01
            cap = self.burst * BATCH_FRACTION
            target = self.demand / elapsed * LEASE_WINDOW_S
            target = min(max(target, need), max(cap, need))
            self.target = target
            self.demand = 0.0
            self.demand_since = now
            want = target - self.avail
            if want < need - self.avail:
                want = need - self.avail
            # Whole tokens: fractions would leave leases a hair short of a request forever.
            want = float(math.ceil(want - EPS)) if want > EPS else 0.0
            back = 0.0
            if want <= 0.0 and self.debt <= 0.0 and self.back <= 0.0:
                return
        self.task = self.limiter.loop().create_task(self._fetch(want, need, back))

    def _net(self) -> None:
        # Debt and credit owed at once cancel here: sent together, the script would cap
        # the credit at the burst before taking the debt.
        if self.debt > 0.0 and self.back > 0.0:
            d = min(self.debt, self.back)
            self.debt -= d
            self.back -= d

    async def _fetch(self, want: float, need: float, back: float) -> None:
        self._net()
        debt = self.debt
        credit = self.back
        self.debt = 0.0
        self.back = 0.0
        lim = self.limiter
        try:
            res = await lim.call(self.rkey, self.rate, self.burst, want, need, back + credit,
                                 debt)
        finally:
            self.task = None
        now = lim.clock()
        if res is None:
            # Whether the script ran is unknown: re-charging the debt risks only under-
            # admission; returned tokens and credits are not re-sent (that could overshoot).
            self.debt += debt
            self._net()
            self.failed = True
            return
        self.failed = False
        grant, level, retry_us, _fill_us = res
        self.avail += grant
        self.g_tokens = level
        self.g_at = now
        if want > 0.0:
            if grant < need:
                wait = max(retry_us / 1e6, REFETCH_MIN_S)
            elif grant < want:
                wait = max(need / self.rate, REFETCH_MIN_S)
            else:
                wait = 0.0
            self.dry_until = now + wait if wait > 0.0 else 0.0
            self.not_before = now + min(wait, self.recheck_s) if wait > 0.0 else 0.0
        elif level >= 1.0 - EPS:
            self.not_before = self.dry_until = 0.0    # tokens are back (a credit, a return)
        if (self.debt > 0.0 or self.back > 0.0) and lim.healthy and self.task is None:
            self.fetch(now, 0.0, settle_only=True)   # charged or credited meanwhile


class ClusterLimiter:
    """Per process: the Redis client, the breaker, and every key's Lease."""

    def __init__(self, cfg, *, clock=time.monotonic):
        self.cfg = cfg
        self.timeout_s = cfg.timeout_ms / 1000.0
        self.connect_timeout_s = max(cfg.connect_timeout_ms / 1000.0, self.timeout_s)
        self.fail_open = cfg.on_error == "allow"
        self.clock = clock
        self.leases: dict[bytes, Lease] = {}
        self.healthy = True
        self.down_until = 0.0
        self.backoff = BACKOFF_MIN_S
        self.calls = 0
        self.failures = 0
        self.warmed = False
        self._loop = None
        self._sweeping = False
        self._closed = False
        # Built now (imports included), connected by warm(): the first request must not pay
        # for either inside its timeout_ms.
        self._client = self._make_client()
        self._script = self._client.register_script(LUA)
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        # Async callables awaited first by close(), while the client still works (the
        # budget ledger flushes spend not yet written).
        self.before_close: list = []

    def loop(self):
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ------------------------------------------------------------------ leases
    def lease(self, key: bytes, rate: float, burst: float, now: float,
              recheck_s: float = math.inf) -> Lease:
        lease = self.leases.get(key)
        if lease is None:
            if len(self.leases) >= MAX_LEASES:
                self._shrink(now)
            lease = self.leases[key] = Lease(self, key, rate, burst, now, recheck_s)
            if not self._sweeping:
                self._sweeping = True
                self.loop().call_later(SWEEP_S, self._sweep)
        elif lease.rate != rate or lease.burst != burst:
            lease.rate = rate       # the limit changed on reload: the bucket carries on
            lease.burst = burst
        return lease

    def _shrink(self, now: float) -> None:
        for key in [k for k, l in self.leases.items()
                    if l.task is None and l.avail <= 0.0 and l.debt <= 0.0 and l.back <= 0.0
                    and now - l.last_used > IDLE_RETURN_S]:
            del self.leases[key]
        # Still full: forget the oldest keys. Their leased tokens are lost to the cluster
        # until their buckets refill (under-admission, never over).
        excess = len(self.leases) - MAX_LEASES * 9 // 10
        if excess > 0:
            for key in list(self.leases)[:excess]:
                if self.leases[key].task is None:
                    del self.leases[key]

    def _sweep(self) -> None:
        if self._closed:
            return
        now = self.clock()
        forget = []
        for key, lease in self.leases.items():
            idle = now - lease.last_used
            if lease.task is not None or idle < IDLE_RETURN_S:
                continue
            if (lease.avail > 0.0 or lease.debt > 0.0 or lease.back > 0.0) and self.healthy:
                lease.fetch(now, 0.0, give_back=True)
            elif (idle > IDLE_FORGET_S and lease.avail <= 0.0 and lease.debt <= 0.0
                  and lease.back <= 0.0):
                forget.append(key)
        for key in forget:
            del self.leases[key]
        if self.leases:
            self.loop().call_later(SWEEP_S, self._sweep)
        else:
            self._sweeping = False

    # ------------------------------------------------------------------ redis
    def _make_client(self):
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        # One immediate retry, on a broken connection only: a pooled connection that Redis
        # closed (a restart) is replaced inside the same call instead of counting as
        # "Redis is down". Timeouts are never retried: our own deadline and the breaker
        # decide, and a retry would only stretch the time a request can wait.
        common = dict(socket_timeout=self.timeout_s,
                      socket_connect_timeout=self.connect_timeout_s,
                      retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        if self.cfg.cluster_nodes:
            from redis.asyncio.cluster import ClusterNode, RedisCluster
            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self.cfg.cluster_nodes],
                max_connections=MAX_CONCURRENT_CALLS, **common)
        from redis.asyncio import Redis
        return Redis.from_url(self.cfg.url, **common)

    async def warm(self) -> None:
        """Before the snapshot that uses this limiter serves: connect (the cluster's slot
        map too), load the script and run it once, within ``connect_timeout_ms``. Redis
        down now is not fatal: the limiter starts in its on_error mode, says so once, and
        meters from the first probe that Redis answers."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                client = self._client
                if self.cfg.cluster_nodes:
                    await client.initialize()
                await client.script_load(LUA)
                # A no-op bucket (want 0, full at once, so nothing is stored): the whole
                # call path, reply parsing included, has run once.
                await self._script(keys=[redis_key(b"\x00warm")], args=[1.0, 1, 0, 0, 0, 0])
        except Exception as exc:  # noqa: BLE001 - any failure is "Redis unavailable"
            self.failures += 1
            self.healthy = False
            self.backoff = BACKOFF_MIN_S
            self.down_until = self.clock() + self.backoff
            log.warning("redis unreachable at start for rate limits (%s); on_error=%s until "
                        "it answers", _describe(exc), "allow" if self.fail_open else "deny")
            return
        self.warmed = True

    def register_script(self, lua: str):
        """A script of another module (the budget ledger) on this client: called through
        ``run``, loaded by ``load_script`` while warming."""
        return self._client.register_script(lua)

    async def load_script(self, lua: str) -> bool:
        """Load ``lua`` now, within ``connect_timeout_ms`` (for another module's warm()).
        A failure is left to the breaker: the script is loaded by its first call."""
        if self._client is None:
            return False
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._client.script_load(lua)
        except Exception:  # noqa: BLE001 - Redis down at start: warm() already said so
            return False
        return True

    async def run(self, script, keys, args, parse=None):
        """One script call bounded by ``timeout_ms``: the reply (``parse(reply)`` when
        given), or None when Redis failed, was too slow or answered nonsense (the breaker
        then marks Redis down)."""
        if self._closed:
            return None
        self.calls += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._sem:
                    res = await script(keys=keys, args=args)
            if parse is not None:
                res = parse(res)
        except Exception as exc:  # noqa: BLE001 - any failure is "Redis unavailable"
            self._failed(exc)
            return None
        self._succeeded()
        return res

    async def call(self, rkey, rate, burst, want, need, back, debt):
        """One lease script call; the parsed reply, or None when Redis failed or was too
        slow."""
        return await self.run(self._script, [rkey], [rate / 1e6, burst, want, need, back, debt],
                              _floats)

    def _failed(self, exc) -> None:
        self.failures += 1
        if self.healthy:
            self.backoff = BACKOFF_MIN_S
            log.warning("redis unavailable for rate limits (%s); on_error=%s until it is back",
                        _describe(exc), "allow" if self.fail_open else "deny")
        else:
            self.backoff = min(self.backoff * 2.0, BACKOFF_MAX_S)
        self.healthy = False
        self.down_until = self.clock() + self.backoff

    def _succeeded(self) -> None:
        if not self.healthy:
            log.warning("redis reachable again: cluster rate limits metered")
            self.healthy = True
            self.backoff = BACKOFF_MIN_S

    def maybe_probe(self, lease: Lease, now: float, need: float) -> None:
        if now >= self.down_until and lease.task is None:
            self.down_until = now + self.backoff   # one probe per backoff period
            lease.fetch(now, need)

    def error_retry_after(self, now: float) -> float:
        wait = self.down_until - now
        return wait if wait > 0.0 else self.backoff

    async def close(self) -> None:
        """Hand unused leased tokens back (best effort, bounded), then disconnect."""
        if self._closed:
            return
        for flush in list(self.before_close):
            try:
                await flush()
            except Exception:  # noqa: BLE001 - best effort, bounded by the flush itself
                log.exception("flushing before the redis client closes failed")
        self._sweeping = True      # no new sweeps
        if self._client is not None and self.healthy:
            # Fetches in flight land first, then everything held goes back in one round.
            for _ in range(2):
                pending = [l.task for l in self.leases.values() if l.task is not None]
                if pending:
                    await asyncio.wait(pending, timeout=self.timeout_s * 2)
                if not self.healthy:
                    break
                for l in self.leases.values():
                    if (l.avail > 0.0 or l.debt > 0.0 or l.back > 0.0) and l.task is None:
                        l.fetch(self.clock(), 0.0, give_back=True)
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001 - closing a dead connection is not an error
                pass
