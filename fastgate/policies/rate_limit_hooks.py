"""Process-lifecycle hooks of the rate-limit module (called by fastgate.server.services).

* ``prefork(shared, config)``: in the supervisor (or the single process), before any worker
  forks: the shared-memory table of ``scope: local`` buckets. Workers inherit the mapping, so
  they all count against the same buckets. Reloads keep it (and its buckets).
* ``cluster_limiter(services)``: at compile time, for a route with ``scope: cluster`` limits:
  the process's Redis-backed limiter, kept across reloads while the redis section is
  unchanged, connected and warmed before the snapshot serves (server/state.py), closed
  (leased tokens handed back) once no snapshot uses it.
"""
from __future__ import annotations

LIMITER = "redis_limiter"   # its kind in the process state

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
        budget = getattr(route, "budget", None)
        local = [rl for rl in route.rate_limits if rl.scope == "local"]
        if budget is not None and getattr(config, "redis", None) is None:
            local.append(budget)        # its per-window counters live in the same table
        for rl in local:
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


def cluster_limiter(services):
    """The Redis-backed limiter for the config being built (one per process and redis
    section: a reload with the same section keeps it, and its leased tokens)."""
    redis_cfg = getattr(services.config, "redis", None)
    if redis_cfg is None:
        return None

    def make():
        from fastgate.policies.rate_limit.cluster import ClusterLimiter
        return ClusterLimiter(redis_cfg)
    return services.keep(LIMITER, None, redis_cfg, make)
