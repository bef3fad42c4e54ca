"""Process-lifecycle hooks of the rate-limit module (called by fastgate.server.services).

* ``prefork(shared, config)``: in the supervisor (or the single process), before any worker
  forks: the shared-memory table of ``scope: local`` buckets. Workers inherit the mapping, so
  they all count against the same buckets. Reloads keep it (and its buckets).
* ``postfork(services, config)``: in each worker: the Redis-backed limiter for
  ``scope: cluster`` (it connects lazily, on the worker's event loop).
* ``reconfigure(services, config)``: on reload, before the new snapshot is compiled: keeps
  the limiter (and its leased tokens) when the redis section is unchanged.
* ``close(services)``: hands leased tokens back and disconnects.
"""
from __future__ import annotations

import asyncio

# Table sizing: slots are 64 bytes of address space; pages are only used once touched.
MIN_SLOTS = 1 << 14          # 1 MiB: also what a config without local limits gets, so a
                             # reload that adds some has a table to use
MAX_TABLE_SLOTS = 1 << 20    # 64 MiB
OPEN_KEYS = 1 << 16          # active keys budgeted for by: ip / header / claim


def table_slots(config) -> int:
    """Slots for the local buckets of ``config``: twice the keys that may be below capacity
    at once, within [MIN_SLOTS, MAX_TABLE_SLOTS]."""
    keys = 0
    consumers = len(getattr(config, "consumers", None) or ())
    for route in getattr(config, "routes", None) or ():
        for rl in route.rate_limits:
            if rl.scope != "local":
                continue
            if rl.by_kind == "route":
                keys += 1
            elif rl.by_kind == "consumer":
                keys += consumers + 4096      # + anonymous requests, limited by IP
            else:
                keys += OPEN_KEYS
    slots = MIN_SLOTS
    while slots < 2 * keys and slots < MAX_TABLE_SLOTS:
        slots <<= 1
    return slots


def prefork(shared, config):
    from fastgate._core.buckets import TokenBucketTable
    if shared.local_buckets is None:
        shared.local_buckets = TokenBucketTable(table_slots(config), shared=True)


def _limiter_for(redis_cfg):
    from fastgate.policies.rate_limit.cluster import ClusterLimiter
    return ClusterLimiter(redis_cfg)


def postfork(services, config):
    redis_cfg = getattr(config, "redis", None)
    services.cluster_limiter = _limiter_for(redis_cfg) if redis_cfg is not None else None


def _retired(services) -> list:
    retired = getattr(services, "_retired_limiters", None)
    if retired is None:
        retired = services._retired_limiters = []
    return retired


def reconfigure(services, config):
    redis_cfg = getattr(config, "redis", None)
    current = services.cluster_limiter
    if current is not None and current.cfg == redis_cfg:
        return
    retired = _retired(services)
    new = None
    if redis_cfg is not None:
        # A reload that failed to compile reconfigures back: revive the limiter it retired.
        for limiter in retired:
            if limiter.cfg == redis_cfg:
                retired.remove(limiter)
                new = limiter
                break
        if new is None:
            new = _limiter_for(redis_cfg)
    services.cluster_limiter = new
    if current is None:
        return
    # Requests in flight under the old snapshot may still use it: close it after the drain
    # period, unless a reconfigure revived it meanwhile.
    retired.append(current)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    def close_later():
        if current in retired:
            retired.remove(current)
            loop.create_task(current.close())

    loop.call_later(getattr(config, "drain_timeout_s", 20.0), close_later)


async def close(services):
    limiter = services.cluster_limiter
    services.cluster_limiter = None
    retired = _retired(services)
    while retired:
        await retired.pop().close()
    if limiter is not None:
        await limiter.close()
