"""Gateway metrics: plain counters on the hot path, Prometheus exposition at scrape time.

``prometheus_client`` costs microseconds per ``labels().inc()``, several times our whole
per-request budget for observability. So each process counts in plain dicts and lists
(:class:`Metrics`), hands a JSON-able :meth:`Metrics.snapshot` to whoever scrapes (the
supervisor collects one per worker and sums them with :func:`merge_snapshots`), and
:func:`render` turns the merged snapshot into the text format through a custom collector on
a private registry.

Label cardinality is bounded by construction: routes, upstreams, consumers and models come
from the config, HTTP methods outside the standard set count as ``OTHER``, and status codes
outside 100-599 count as ``"other"``.
"""
from __future__ import annotations

from fastgate._core.stats import BUCKETS, RouteStats, count_usage, request_done as _request_done

__all__ = [
    "Metrics", "merge_snapshots", "render", "BUCKETS", "NO_ROUTE", "SNAPSHOT_VERSION",
    "CONTENT_TYPE",
]

NO_ROUTE = "_none"
SNAPSHOT_VERSION = 1

# BUCKETS: upper bounds (le) in seconds, from a cached sub-millisecond answer to a 30 s LLM
# call; the per-request counting is compiled (fastgate/_core/stats.pyx).
_NBUCKETS = len(BUCKETS) + 1          # the last slot counts values above 30 s (+Inf only)


RELOAD_OK = "success"
RELOAD_FAILED = "failure"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Per-process counters. Not thread-safe: every call comes from the process's event loop."""

    __slots__ = ("_routes", "_auth_failures", "_rate_limited", "_waf_blocked",
                 "_connections", "_upstream_healthy", "_ai_tokens", "_ai_cost", "_reloads",
                 "config_version", "usage_requests", "_usage_ai", "_overload_shed",
                 "_overload_gauges")

    def __init__(self):
        self._routes: dict[str, RouteStats] = {}
        self._auth_failures: dict[tuple[str, str], int] = {}
        self._rate_limited: dict[str, int] = {}
        self._waf_blocked: dict[tuple[str, str], int] = {}
        self._connections = 0
        self._upstream_healthy: dict[tuple[str, str], int] = {}
        self._ai_tokens: dict[tuple[str, str, str], int] = {}
        self._ai_cost: dict[tuple[str, str], float] = {}
        self._reloads = {RELOAD_OK: 0, RELOAD_FAILED: 0}
        self.config_version = 0     # the control plane's version in service (0: none)
        # usage for GET /usage, handed over (and reset) by drain_usage(). usage_requests is
        # one dict for the life of the object (the log phase counts into it from C,
        # fastgate/_core/stats.pyx count_usage, holding it): drained by clearing it.
        self.usage_requests: dict[tuple[str, str, int], int] = {}    # consumer, route, day
        self._usage_ai: dict[tuple[str, str], list] = {}           # consumer, model
        self._overload_shed: dict[str, int] = {}                   # reason -> count
        self._overload_gauges = (0, 0.0, 0)     # in flight, loop lag (s), RSS (bytes)

    # -- the hot call -----------------------------------------------------------------------
    def request_done(self, route: str, method: str, code: int, duration_s: float,
                     bytes_in: int, bytes_out: int, upstream: str | None,
                     upstream_duration_s: float | None) -> None:
        """Record one finished request (after its last byte). ``route`` is "_none" unmatched;
        ``method`` may be str or the parser's bytes. The request path calls the compiled
        function directly (``routes`` is the per-route table it counts into)."""
        _request_done(self._routes, route, method, code, duration_s, bytes_in, bytes_out,
                      upstream, upstream_duration_s)

    @property
    def routes(self):
        return self._routes

    # -- the rarer events ---------------------------------------------------------------------
    def auth_failure(self, route: str, reason: str) -> None:
        key = (route, reason)
        d = self._auth_failures
        d[key] = d.get(key, 0) + 1

    def rate_limited(self, route: str) -> None:
        d = self._rate_limited
        d[route] = d.get(route, 0) + 1

    def waf_blocked(self, route: str, rule: str) -> None:
        key = (route, rule)
        d = self._waf_blocked
        d[key] = d.get(key, 0) + 1

    def overload_shed(self, reason: str) -> None:
        """One request refused by the overload policy (reason: inflight, loop_lag, rss)."""
        d = self._overload_shed
        d[reason] = d.get(reason, 0) + 1

    def overload_state(self, inflight: int, loop_lag_s: float, rss_bytes: int) -> None:
        """The overload monitor's view, handed over once a second (not per request)."""
        self._overload_gauges = (inflight, loop_lag_s, rss_bytes)

    def conn_opened(self) -> None:
        self._connections += 1

    def conn_closed(self) -> None:
        self._connections -= 1

    def set_upstream_health(self, upstream: str, target: str, healthy: bool) -> None:
        self._upstream_healthy[(upstream, target)] = 1 if healthy else 0

    def forget_upstream_target(self, upstream: str, target: str) -> None:
        """Drop the health gauge of a target removed by a reload (a gauge, unlike a counter,
        must not keep reporting a stale value)."""
        self._upstream_healthy.pop((upstream, target), None)

    def ai_usage(self, model: str, consumer: str | None, input_tokens: int,
                 output_tokens: int, cost_usd: float) -> None:
        consumer = consumer or ""
        d = self._ai_tokens
        k = (model, consumer, "input")
        d[k] = d.get(k, 0) + input_tokens
        k = (model, consumer, "output")
        d[k] = d.get(k, 0) + output_tokens
        k = (model, consumer)
        c = self._ai_cost
        c[k] = c.get(k, 0.0) + cost_usd
        u = self._usage_ai.get((consumer, model))
        if u is None:
            u = self._usage_ai[(consumer, model)] = [0, 0, 0.0]
        u[0] += input_tokens
        u[1] += output_tokens
        u[2] += cost_usd

    def consumer_request(self, consumer: str, route: str, now: float) -> None:
        """One request of a known consumer (log phase), counted per UTC day."""
        count_usage(self.usage_requests, consumer, route, now)

    def drain_usage(self) -> dict:
        """The usage counted since the last call, which starts counting afresh."""
        req, ai = self.usage_requests, self._usage_ai
        requests = [[c, r, d, n] for (c, r, d), n in req.items()]
        req.clear()
        self._usage_ai = {}
        return {"requests": requests, "ai": [[c, m, *v] for (c, m), v in ai.items()]}

    def config_reload(self, ok: bool) -> None:
        self._reloads[RELOAD_OK if ok else RELOAD_FAILED] += 1

    @property
    def connections_active(self) -> int:
        return self._connections

    # -- scrape side --------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """All counters as a JSON-able dict (lists, str, int, float only).

        Layout: ``{"v": 1, "buckets": [...], "counters": {name: [[label..., value], ...]},
        "gauges": {...}, "histograms": {name: [[label..., [bucket counts], sum], ...]}}``;
        bucket counts are per bucket (not cumulative), the last one above the largest bound.
        """
        requests: dict[tuple, int] = {}
        durations = []
        up_durations = []
        bytes_in = []
        bytes_out = []
        for route, r in self._routes.items():
            for (method, code), n in r.codes.items():
                # several raw codes may share the label "other": sum them, one sample each
                key = (route, method, _code_label(code))
                requests[key] = requests.get(key, 0) + n
            durations.append([route, list(r.hist), r.dur_sum])
            bytes_in.append([route, r.bytes_in])
            bytes_out.append([route, r.bytes_out])
            for up, h in r.upstreams.items():
                up_durations.append([route, up, list(h.counts), h.total])
        return {
            "v": SNAPSHOT_VERSION,
            "buckets": list(BUCKETS),
            "counters": {
                "fastgate_requests_total": [[*k, n] for k, n in requests.items()],
                "fastgate_bytes_received_total": bytes_in,
                "fastgate_bytes_sent_total": bytes_out,
                "fastgate_auth_failures_total": [[a, b, n] for (a, b), n
                                                 in self._auth_failures.items()],
                "fastgate_rate_limited_total": [[a, n] for a, n in self._rate_limited.items()],
                "fastgate_waf_blocked_total": [[a, b, n] for (a, b), n
                                               in self._waf_blocked.items()],
                "fastgate_ai_tokens_total": [[a, b, c, n] for (a, b, c), n
                                             in self._ai_tokens.items()],
                "fastgate_ai_cost_usd_total": [[a, b, n] for (a, b), n
                                               in self._ai_cost.items()],
                "fastgate_config_reloads_total": [[k, n] for k, n in self._reloads.items()],
                "fastgate_overload_shed_total": [[k, n] for k, n
                                                 in self._overload_shed.items()],
            },
            "gauges": {
                "fastgate_connections_active": [[self._connections]],
                "fastgate_config_version": [[self.config_version]],
                "fastgate_upstream_healthy": [[a, b, n] for (a, b), n
                                              in self._upstream_healthy.items()],
                "fastgate_overload_inflight": [[self._overload_gauges[0]]],
                "fastgate_overload_loop_lag_seconds": [[self._overload_gauges[1]]],
                "fastgate_overload_rss_bytes": [[self._overload_gauges[2]]],
            },
            "histograms": {
                "fastgate_request_duration_seconds": durations,
                "fastgate_upstream_duration_seconds": up_durations,
            },
        }


def _code_label(code) -> str:
    if type(code) is int and 100 <= code <= 599:
        return str(code)
    return "other"


# -- metric catalogue: names, label names, help, how workers combine ----------------------------
_COUNTERS = {
    "fastgate_requests_total": (("route", "method", "code"), "Requests finished, by route, method and status code."),
    "fastgate_bytes_received_total": (("route",), "Request bytes received from clients (head and body)."),
    "fastgate_bytes_sent_total": (("route",), "Response bytes sent to clients (head and body)."),
    "fastgate_auth_failures_total": (("route", "reason"), "Requests rejected by authentication or authorization."),
    "fastgate_rate_limited_total": (("route",), "Requests rejected by a rate limit."),
    "fastgate_waf_blocked_total": (("route", "rule"), "Requests blocked (or flagged in monitor mode) by a WAF rule."),
    "fastgate_ai_tokens_total": (("model", "consumer", "kind"), "AI tokens used, as counted by the provider; kind is input or output."),
    "fastgate_ai_cost_usd_total": (("model", "consumer"), "AI cost in US dollars from the configured model prices."),
    "fastgate_config_reloads_total": (("result",), "Configuration reloads by result (success or failure)."),
    "fastgate_overload_shed_total": (("reason",), "Requests refused with 503 overloaded, by reason (inflight, loop_lag, rss)."),
}
# how a gauge combines across worker processes
_GAUGES = {
    "fastgate_connections_active": ((), "Client connections currently open.", "sum"),
    # A target counts as healthy while any worker still sends it traffic; it reads 0 only
    # once every worker's health checks have marked it down.
    "fastgate_upstream_healthy": (("upstream", "target"), "1 if the upstream target is healthy, else 0.", "max"),
    # every worker of an instance serves the same version once an apply is done; during one,
    # the instance is only as new as its oldest worker
    "fastgate_config_version": ((), "Version of the config in service (admin API; 0 without one).", "min"),
    # the overload policy's inputs (0 without `overload`): each worker sheds on its own
    "fastgate_overload_inflight": ((), "Requests in flight as overload.max_inflight counts them (summed over workers).", "sum"),
    "fastgate_overload_loop_lag_seconds": ((), "Event-loop lag as overload.max_loop_lag_ms sees it, the largest over the last second (of any worker).", "max"),
    "fastgate_overload_rss_bytes": ((), "Resident memory as overload.max_rss_mb sees it (the largest worker).", "max"),
}
# label sets exposed (as 0) even before anything happened, so alerts and rate() see them
_ALWAYS = {
    "fastgate_config_reloads_total": ((RELOAD_OK,), (RELOAD_FAILED,)),
    "fastgate_overload_shed_total": (("inflight",), ("loop_lag",), ("rss",)),
}
_HISTOGRAMS = {
    "fastgate_request_duration_seconds": (("route",), "Time from request head parsed to last response byte sent."),
    "fastgate_upstream_duration_seconds": (("route", "upstream"), "Time from upstream request sent to upstream response complete."),
}


def merge_snapshots(snaps: list[dict]) -> dict:
    """Sum counters and histograms of several processes' snapshots (gauges: see _GAUGES).

    Raises ValueError if the snapshots disagree on version or histogram buckets: summing
    buckets with different bounds would silently publish wrong numbers.
    """
    buckets = list(BUCKETS)
    counters: dict[str, dict[tuple, float]] = {n: {} for n in _COUNTERS}
    gauges: dict[str, dict[tuple, float]] = {n: {} for n in _GAUGES}
    hists: dict[str, dict[tuple, list]] = {n: {} for n in _HISTOGRAMS}
    for snap in snaps:
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported metrics snapshot version {snap.get('v')!r}")
        if list(snap.get("buckets", ())) != buckets:
            raise ValueError("metrics snapshot histogram buckets differ")
        for name, rows in snap.get("counters", {}).items():
            acc = counters.setdefault(name, {})
            for row in rows:
                key = tuple(row[:-1])
                acc[key] = acc.get(key, 0) + row[-1]
        for name, rows in snap.get("gauges", {}).items():
            how = _GAUGES.get(name, ((), "", "sum"))[2]
            acc = gauges.setdefault(name, {})
            for row in rows:
                key = tuple(row[:-1])
                v = row[-1]
                if key not in acc:
                    acc[key] = v
                elif how == "max":
                    acc[key] = max(acc[key], v)
                elif how == "min":
                    acc[key] = min(acc[key], v)
                else:
                    acc[key] += v
        for name, rows in snap.get("histograms", {}).items():
            acc = hists.setdefault(name, {})
            for row in rows:
                key = tuple(row[:-2])
                counts, total = row[-2], row[-1]
                if len(counts) != _NBUCKETS:
                    raise ValueError(f"{name}: {len(counts)} bucket counts, want {_NBUCKETS}")
                cur = acc.get(key)
                if cur is None:
                    acc[key] = [list(counts), total]
                else:
                    c = cur[0]
                    for i, n in enumerate(counts):
                        c[i] += n
                    cur[1] += total
    return {
        "v": SNAPSHOT_VERSION,
        "buckets": buckets,
        "counters": {n: [[*k, v] for k, v in acc.items()] for n, acc in counters.items()},
        "gauges": {n: [[*k, v] for k, v in acc.items()] for n, acc in gauges.items()},
        "histograms": {n: [[*k, c, s] for k, (c, s) in acc.items()] for n, acc in hists.items()},
    }


# -- rendering ----------------------------------------------------------------------------------
def _le_labels():
    from prometheus_client.utils import floatToGoString
    return [floatToGoString(b) for b in BUCKETS] + ["+Inf"]


class _SnapshotCollector:
    """A prometheus_client collector that yields one snapshot's families (scrape time only)."""

    def __init__(self, snapshot: dict):
        self._snap = snapshot

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        snap = self._snap
        counters = snap.get("counters", {})
        for name, (labels, doc) in _COUNTERS.items():
            fam = CounterMetricFamily(name, doc, labels=labels)
            rows = counters.get(name, ())
            seen = set()
            for row in rows:
                lv = [str(x) for x in row[:-1]]
                seen.add(tuple(lv))
                fam.add_metric(lv, row[-1])
            for lv in _ALWAYS.get(name, ()):
                if lv not in seen:
                    fam.add_metric(list(lv), 0)
            yield fam
        gauges = snap.get("gauges", {})
        for name, (labels, doc, _how) in _GAUGES.items():
            fam = GaugeMetricFamily(name, doc, labels=labels)
            rows = gauges.get(name, ())
            if not labels and not rows:
                rows = ([0],)
            for row in rows:
                fam.add_metric([str(x) for x in row[:-1]], row[-1])
            yield fam
        les = _le_labels()
        hists = snap.get("histograms", {})
        for name, (labels, doc) in _HISTOGRAMS.items():
            fam = HistogramMetricFamily(name, doc, labels=labels)
            for row in hists.get(name, ()):
                counts, total = row[-2], row[-1]
                cum = 0
                buckets = []
                for le, n in zip(les, counts):
                    cum += n
                    buckets.append((le, cum))
                fam.add_metric([str(x) for x in row[:-2]], buckets, total)
            yield fam


def render(snapshot: dict) -> bytes:
    """Prometheus text exposition (format 0.0.4) of a (merged) snapshot."""
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
