"""Config of the top-level `overload` section (handler: fastgate.policies.overload).

Overload(max_inflight: int = 0, max_loop_lag_ms: int = 0, max_rss_mb: int = 0)
  0 turns a threshold off; a section whose thresholds are all 0 builds no policy.
  max_inflight: requests in flight in one process (each worker sheds on its own share).
  max_loop_lag_ms: 0, or 10..60000 (below 10 ms ordinary scheduling jitter would shed).
  max_rss_mb: the process's resident set size, in MiB (/proc/self/statm).
"""
from __future__ import annotations

from dataclasses import dataclass

from fastgate.config.check import Obj, c_int
from fastgate.config.sections import TopKey

__all__ = ("Overload", "parse_overload")

MIN_LOOP_LAG_MS = 10


@dataclass(frozen=True, slots=True)
class Overload:
    max_inflight: int = 0
    max_loop_lag_ms: int = 0
    max_rss_mb: int = 0

    @property
    def active(self) -> bool:
        return bool(self.max_inflight or self.max_loop_lag_ms or self.max_rss_mb)


def _c_lag(e, path, v):
    ms = c_int(lo=0, hi=60000)(e, path, v)
    if ms and ms < MIN_LOOP_LAG_MS:
        e.add(path, f"must be 0 (off) or >= {MIN_LOOP_LAG_MS}: a loop is a few ms late "
                    "in ordinary operation")
        return None
    return ms


def parse_overload(ctx, e, path, v):
    o = Obj(e, path, v, ("max_inflight", "max_loop_lag_ms", "max_rss_mb"))
    return Overload(max_inflight=o.get("max_inflight", c_int(lo=0, hi=10_000_000), 0),
                    max_loop_lag_ms=o.get("max_loop_lag_ms", _c_lag, 0),
                    max_rss_mb=o.get("max_rss_mb", c_int(lo=0, hi=1 << 30), 0))


SECTIONS = (TopKey("overload", parse_overload),)
