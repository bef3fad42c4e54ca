"""Load balancing across an upstream's targets: round_robin, least_conn, hash."""
from __future__ import annotations

import hashlib
import math
import time


class Upstream:
    """A named upstream as compiled from config: its target pools and how to choose one."""

    __slots__ = (
        "name", "pools", "weights", "balance", "hash_on", "connect_timeout",
        "read_timeout", "retries", "prefixes", "_rr_current", "_single",
    )

    def __init__(self, name, pools, weights, balance, hash_on, connect_timeout, read_timeout,
                 retries):
        self.name = name
        self.pools = pools
        self.weights = weights
        self.balance = balance
        self.hash_on = hash_on  # None | ("ip", None) | ("consumer", None) | ("header", b"name")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self._rr_current = [0] * len(pools)
        self._single = pools[0] if len(pools) == 1 else None
        self.prefixes = {}      # pool -> its target URL's path, put before forwarded paths

    def pick(self, ctx, exclude=None):
        """Choose a target pool; `exclude` is a pool that just failed (retry elsewhere).
        None when active health checks have taken every target out (answer 503)."""
        single = self._single
        if single is not None:
            return single if single.healthy else None
        pools = self.pools
        now = time.monotonic()
        candidates = [
            i for i, p in enumerate(pools) if p is not exclude and p.down_until <= now and p.healthy
        ]
        if not candidates:
            # Passive marks (recent connect failures) are hints, not verdicts: with nothing
            # else left, try those too. Active health verdicts are kept.
            candidates = [i for i, p in enumerate(pools) if p.healthy and p is not exclude] \
                or [i for i, p in enumerate(pools) if p.healthy]
            if not candidates:
                return None
        balance = self.balance
        if balance == "least_conn":
            weights = self.weights
            best = min(candidates, key=lambda i: (pools[i].active / weights[i], i))
            return pools[best]
        if balance == "hash":
            key = self._hash_key(ctx)
            if key is not None:
                return pools[self._rendezvous(key, candidates)]
        return pools[self._smooth_rr(candidates)]

    def _smooth_rr(self, candidates):
        # nginx's smooth weighted round robin: even spread, weights honoured.
        current = self._rr_current
        weights = self.weights
        total = 0
        best = -1
        for i in candidates:
            current[i] += weights[i]
            total += weights[i]
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return best

    def _hash_key(self, ctx):
        kind, name = self.hash_on or ("ip", None)
        if kind == "ip":
            return ctx.client_ip.encode()
        if kind == "consumer":
            return ctx.consumer.encode() if ctx.consumer else ctx.client_ip.encode()
        if kind == "header":
            value = ctx.head.get(name)
            return value if value is not None else ctx.client_ip.encode()
        return None

    def _rendezvous(self, key: bytes, candidates):
        # Highest-random-weight hashing: a target leaving moves only its own keys.
        best = -1
        best_score = -1.0
        for i in candidates:
            digest = hashlib.blake2b(key + b"|" + self.pools[i].label.encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "big") / 2.0**64
            # weighted: score = -w / ln(h)
            score = -self.weights[i] / math.log(h if h > 0 else 1e-300)
            if score > best_score:
                best, best_score = i, score
        return best
