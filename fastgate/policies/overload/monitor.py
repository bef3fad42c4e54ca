"""What the overload policy decides on, measured off the request path (Envoy's overload
manager's resource monitors): one timer every ``TICK_S`` keeps three numbers current, and a
request only compares them.

* in flight: the exchanges admitted by the policy (access phase) and not yet logged (log
  phase), as a set, so a log phase that runs twice cannot count a request out twice. The
  core does not run the log phase for every exchange that passed access (a client that
  disconnects after the response head went out, a malformed pipelined request behind a
  response under way): once a second the set is swept of exchanges their connection has
  moved past, so a missed log phase costs capacity for at most ``SWEEP_EVERY`` ticks,
  never for good.
* loop lag: how late the timer's own callback runs (the event loop was busy or the process
  did not run). Peak-hold with decay: a late tick raises the value at once, timely ones
  bring it down by a quarter of the gap per tick, so a single 100 ms stall reads below
  50 ms three ticks (150 ms) later while a loop that stays busy keeps it high.
* RSS: /proc/self/statm, read every ``RSS_EVERY`` ticks with one pread on a descriptor kept
  open (about 2 us).

One monitor per process, kept across reloads (``services.keep``): requests admitted under
the old snapshot are logged into the same set. Started by ``warm`` (the loop runs then),
stopped by ``close`` when a config without ``overload`` retires it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

log = logging.getLogger("fastgate")

TICK_S = 0.05
RSS_EVERY = 10          # ticks: every 0.5 s
SWEEP_EVERY = 20        # ticks: every 1 s (also when the gauges are published)
DECAY = 0.75            # of the previous lag value kept per timely tick

_monotonic = time.monotonic


class LoadMonitor:
    __slots__ = ("inflight", "lag_ms", "rss_mb", "metrics", "_loop", "_handle", "_due",
                 "_ticks", "_fd", "_pid", "_page", "_peak_ms", "swept")

    def __init__(self, metrics=None):
        self.inflight: set = set()
        self.lag_ms = 0.0           # smoothed loop lag (ms) the policy compares
        self.rss_mb = 0.0           # resident set size (MiB), last sample
        self.metrics = metrics
        self.swept = 0              # exchanges removed by the sweep (their log phase never ran)
        self._loop = None
        self._handle = None
        self._due = 0.0
        self._ticks = 0
        self._fd = -1
        self._pid = 0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._peak_ms = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    async def warm(self) -> None:
        self.start()

    def start(self) -> None:
        """Start the timer on the running loop (idempotent)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._open_statm()
        self.sample_rss()
        self._due = _monotonic() + TICK_S
        self._handle = self._loop.call_later(TICK_S, self._tick)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        self.inflight = set()
        if self.metrics is not None:
            self.metrics.overload_state(0, 0.0, 0)

    # -- the timer ----------------------------------------------------------------------
    def _tick(self) -> None:
        now = _monotonic()
        late_ms = (now - self._due) * 1000.0
        if late_ms < 0.0:
            late_ms = 0.0
        lag = self.lag_ms
        self.lag_ms = late_ms if late_ms >= lag else lag * DECAY + late_ms * (1.0 - DECAY)
        if self.lag_ms > self._peak_ms:
            self._peak_ms = self.lag_ms
        n = self._ticks = self._ticks + 1
        if n % RSS_EVERY == 0:
            self.sample_rss()
        if n % SWEEP_EVERY == 0:
            self.sweep()
            self.publish()
        # From now, not from the missed due time: a stall is measured once, not caught up.
        self._due = now + TICK_S
        self._handle = self._loop.call_later(TICK_S, self._tick)

    def sweep(self) -> int:
        """Drop the exchanges whose connection moved past them without a log phase (or that
        finished without one); their count."""
        inflight = self.inflight
        gone = [ctx for ctx in inflight
                if ctx.finished or getattr(ctx.conn, "ex", ctx) is not ctx]
        for ctx in gone:
            inflight.discard(ctx)
        if gone:
            self.swept += len(gone)
            log.debug("overload: %d requests counted out without a log phase", len(gone))
        return len(gone)

    def publish(self) -> None:
        """Hand the gauges to the metrics (the largest lag since the last call)."""
        m = self.metrics
        if m is not None:
            m.overload_state(len(self.inflight), self._peak_ms / 1000.0,
                             int(self.rss_mb * 1048576))
        self._peak_ms = self.lag_ms

    # -- RSS ----------------------------------------------------------------------------
    def _open_statm(self) -> None:
        pid = os.getpid()
        if self._fd >= 0 and self._pid == pid:
            return
        if self._fd >= 0:           # inherited across a fork: it names the parent
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._pid = pid
        except OSError as exc:
            log.error("overload: cannot read the process's memory size (%s); max_rss_mb "
                      "never sheds here", exc)

    def sample_rss(self) -> float:
        fd = self._fd
        if fd >= 0:
            try:
                fields = os.pread(fd, 128, 0).split()
                self.rss_mb = int(fields[1]) * self._page / 1048576.0
            except (OSError, IndexError, ValueError):
                pass
        return self.rss_mb
