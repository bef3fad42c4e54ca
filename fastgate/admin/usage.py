"""Usage per consumer for ``GET /usage``: requests per consumer, route and UTC day, and AI
tokens and cost per consumer and model.

The serving processes count in plain dicts on the log phase (``Metrics.consumer_request``,
``Metrics.ai_usage``); every ``FLUSH_S`` the control plane drains them (``applier.usage()``)
and adds the counts to SQLite in ``admin.state_dir``, and with ``redis`` to the deployment's
totals (``HINCRBY``), so every instance answers for all of them. Counts that could not reach
Redis wait in memory for the next flush.
"""
from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("fastgate.admin")

__all__ = ["UsageLedger"]

FLUSH_S = 1.0
REQUESTS, AI = "{fastgate-usage}:requests", "{fastgate-usage}:ai"


def _day(n: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(n * 86400))


class UsageLedger:
    def __init__(self, plane):
        self.plane = plane
        self._pending_req: dict[tuple, int] = {}     # not yet in Redis
        self._pending_ai: dict[tuple, list] = {}
        self._lock = asyncio.Lock()

    async def run(self):
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.collect()
            except Exception:
                log.exception("usage: collecting failed")

    async def collect(self) -> None:
        async with self._lock:
            req: dict[tuple, int] = {}
            ai: dict[tuple, list] = {}
            for drained in await self.plane.applier.usage():
                for c, r, d, n in drained.get("requests", ()):
                    k = (_day(d), c, r)
                    req[k] = req.get(k, 0) + n
                for c, m, i, o, cost in drained.get("ai", ()):
                    acc = ai.setdefault((c, m), [0, 0, 0.0])
                    acc[0] += i
                    acc[1] += o
                    acc[2] += cost
            if req or ai:
                await asyncio.to_thread(self.plane.store.add_usage,
                                        [(*k, n) for k, n in req.items()],
                                        [(*k, *v) for k, v in ai.items()])
            fanout = self.plane.fanout
            if fanout is None:
                return
            for k, n in req.items():
                self._pending_req[k] = self._pending_req.get(k, 0) + n
            for k, v in ai.items():
                acc = self._pending_ai.setdefault(k, [0, 0, 0.0])
                for i in range(3):
                    acc[i] += v[i]
            if self._pending_req or self._pending_ai:
                try:
                    async with asyncio.timeout(fanout.timeout_s):
                        pipe = fanout.client.pipeline(transaction=False)
                        for (d, c, r), n in self._pending_req.items():
                            pipe.hincrby(REQUESTS, f"{d}|{c}|{r}", n)
                        for (c, m), (i, o, cost) in self._pending_ai.items():
                            pipe.hincrby(AI, f"{c}|{m}|input", i)
                            pipe.hincrby(AI, f"{c}|{m}|output", o)
                            pipe.hincrbyfloat(AI, f"{c}|{m}|cost", cost)
                        await pipe.execute()
                    self._pending_req.clear()
                    self._pending_ai.clear()
                except Exception as exc:
                    log.warning("usage: redis unreachable, counts kept for later (%s)", exc)

    async def report(self) -> dict:
        """``{"usage": [...AI per consumer and model], "requests": [...per day]}``: the
        deployment's totals with redis (when it answers), else this instance's."""
        await self.collect()
        rows = None
        fanout = self.plane.fanout
        if fanout is not None:
            try:
                async with asyncio.timeout(fanout.timeout_s):
                    raw_req = await fanout.client.hgetall(REQUESTS)
                    raw_ai = await fanout.client.hgetall(AI)
                rows = _from_redis(raw_req, raw_ai)
            except Exception as exc:
                log.warning("usage: redis unreachable, answering this instance's (%s)", exc)
        if rows is None:
            rows = await asyncio.to_thread(self.plane.store.usage)
        req, ai = rows
        return {
            "usage": [{"consumer": c, "model": m, "input_tokens": i, "output_tokens": o,
                       "cost_usd": round(cost, 6)} for c, m, i, o, cost in ai],
            "requests": [{"consumer": c, "route": r, "day": d, "requests": n}
                         for d, c, r, n in req],
        }


def _from_redis(raw_req, raw_ai):
    req = []
    for field, n in raw_req.items():
        d, c, r = field.decode().split("|", 2)
        req.append((d, c, r, int(n)))
    ai: dict[tuple, list] = {}
    for field, v in raw_ai.items():
        c, m, kind = field.decode().rsplit("|", 2)
        acc = ai.setdefault((c, m), [0, 0, 0.0])
        if kind == "input":
            acc[0] = int(v)
        elif kind == "output":
            acc[1] = int(v)
        else:
            acc[2] = float(v)
    return sorted(req), sorted((c, m, *v) for (c, m), v in ai.items())
