"""`overload:` load shedding, like Envoy's overload manager.

Past any configured threshold, NEW requests get 503 ``overloaded`` with ``Retry-After: 1``
(the JSON error body) and count in ``fastgate_overload_shed_total{reason}``, reason
``inflight`` | ``loop_lag`` | ``rss``. Requests already admitted run to their end, and the
admin listener (``/healthz``, ``/readyz``, ``/metrics``) is no route: it keeps answering.

* ``max_inflight``: requests in flight in this process: admitted by this policy (the first
  of the access phase) and not yet past their log phase (the last byte, or the client
  gone). With ``--workers N`` each worker counts and sheds its own share: an instance holds
  up to N x max_inflight.
* ``max_loop_lag_ms``: the event loop's lateness, smoothed (monitor.py): the process is
  busier than it can keep up with, whatever the cause.
* ``max_rss_mb``: the process's resident memory. Python seldom hands freed memory back to
  the system, so this one sheds until the process is restarted or its memory shrinks: a
  last line before an OOM kill, set near the container's limit, not a working size.

Cost: a route gets the policy only when a threshold is set (no policy, no cost, otherwise);
per request it is two float comparisons, and with ``max_inflight`` a set length, an add,
and a discard in the log phase.

Requests that match no route (404) are answered before any policy and never shed.
"""
from __future__ import annotations

from fastgate.policies.base import Reject

from .monitor import LoadMonitor

R_INFLIGHT = "inflight"
R_LOOP_LAG = "loop_lag"
R_RSS = "rss"

_RETRY = ((b"retry-after", b"1"),)
_REJECTS = {
    R_INFLIGHT: Reject(503, "overloaded", "the gateway is overloaded (too many requests in "
                                          "flight); retry later", _RETRY),
    R_LOOP_LAG: Reject(503, "overloaded", "the gateway is overloaded (event loop lagging); "
                                          "retry later", _RETRY),
    R_RSS: Reject(503, "overloaded", "the gateway is overloaded (memory); retry later",
                  _RETRY),
}

_OFF = float("inf")
MONITOR_KIND = "overload.monitor"


class Shedder:
    """Sheds on loop lag and memory (no in-flight count: no log phase)."""

    name = "overload"
    __slots__ = ("monitor", "max_lag_ms", "max_rss_mb", "metrics")

    def __init__(self, settings, monitor: LoadMonitor, metrics):
        self.monitor = monitor
        self.max_lag_ms = float(settings.max_loop_lag_ms) if settings.max_loop_lag_ms else _OFF
        self.max_rss_mb = float(settings.max_rss_mb) if settings.max_rss_mb else _OFF
        self.metrics = metrics

    def shed(self, reason: str) -> Reject:
        m = self.metrics
        if m is not None:
            m.overload_shed(reason)
        return _REJECTS[reason]

    def access(self, ctx):
        m = self.monitor
        if m.lag_ms > self.max_lag_ms:
            return self.shed(R_LOOP_LAG)
        if m.rss_mb > self.max_rss_mb:
            return self.shed(R_RSS)
        return None


class InflightShedder(Shedder):
    """Also counts requests in flight: in at the access phase, out at the log phase."""

    __slots__ = ("max_inflight", "inflight", "log")

    def __init__(self, settings, monitor: LoadMonitor, metrics):
        super().__init__(settings, monitor, metrics)
        self.max_inflight = settings.max_inflight
        self.inflight = monitor.inflight
        # The log phase is the set's own discard: no Python frame per request.
        self.log = self.inflight.discard

    def access(self, ctx):
        m = self.monitor
        if m.lag_ms > self.max_lag_ms:
            return self.shed(R_LOOP_LAG)
        if m.rss_mb > self.max_rss_mb:
            return self.shed(R_RSS)
        inflight = self.inflight
        if len(inflight) >= self.max_inflight:
            return self.shed(R_INFLIGHT)
        inflight.add(ctx)
        return None


def _make(settings, monitor, metrics):
    if settings.max_inflight:
        return InflightShedder(settings, monitor, metrics)
    return Shedder(settings, monitor, metrics)


def build(route_cfg, services):
    settings = getattr(services.config, "overload", None)
    if settings is None or not settings.active:
        return None
    metrics = services.metrics
    # One monitor per process whatever the thresholds (a reload that changes them keeps the
    # in-flight set); one policy object per config, shared by every route.
    monitor = services.keep(MONITOR_KIND, None, "monitor", lambda: LoadMonitor(metrics))
    if monitor.metrics is None:
        monitor.metrics = metrics
    return services.memo(("overload", settings), lambda: _make(settings, monitor, metrics))
