"""Latency histograms that merge across processes, percentiles and medians.

Latencies are bucketed log-linearly in microseconds (HdrHistogram's layout with 64 sub-buckets
per power of two, so a reported percentile is within ~1.6% of the true value). A histogram is
a dict {bucket lower bound in us: count}; merging is adding counts.
"""
from __future__ import annotations

import statistics

SUB_BITS = 6  # 64 sub-buckets per octave


def bucket_of(us: int) -> int:
    if us < (1 << SUB_BITS):
        return us
    shift = us.bit_length() - SUB_BITS - 1
    return (us >> shift) << shift


def bucketize(latencies_s) -> dict[str, int]:
    """Seconds -> {str(lower bound us): count} (string keys survive JSON)."""
    hist: dict[int, int] = {}
    for v in latencies_s:
        us = int(v * 1e6)
        if us < 0:
            us = 0
        b = bucket_of(us)
        hist[b] = hist.get(b, 0) + 1
    return {str(k): c for k, c in hist.items()}


def merge(hists) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for k, c in h.items():
            k = int(k)
            out[k] = out.get(k, 0) + c
    return out


def _width(lower: int) -> int:
    if lower < (1 << SUB_BITS):
        return 1
    return 1 << (lower.bit_length() - SUB_BITS - 1)


def percentile(hist: dict[int, int], q: float) -> float | None:
    """q in [0, 100] -> microseconds (bucket midpoint), None for an empty histogram."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q / 100.0 * total
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return k + _width(k) / 2.0
    k = max(hist)
    return k + _width(k) / 2.0


def summary(hist: dict[int, int]) -> dict:
    return {
        "samples": sum(hist.values()),
        "p50_us": percentile(hist, 50),
        "p99_us": percentile(hist, 99),
        "p999_us": percentile(hist, 99.9),
        "max_us": percentile(hist, 100),
    }


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def spread(values):
    """(max - min) / median, in percent: how far rounds disagreed."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    m = statistics.median(vals)
    return (max(vals) - min(vals)) / m * 100.0 if m else None
