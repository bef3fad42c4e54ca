"""Process-wide services that compiled policies hold references to.

Created once per process. ``prefork`` state (shared-memory tables) is created by the
supervisor *before* workers fork so every worker maps the same memory; everything else is
created in the worker after the fork, by the config builds (``begin``; see state.py): event
loop bound objects such as Redis clients are made when a snapshot that needs them is built,
warmed before it serves, and retired after the snapshot that used them is gone.
"""
from __future__ import annotations

from fastgate.server.state import Build, ProcessState


class SharedState:
    """State created before fork and inherited by every worker of one instance."""

    def __init__(self, config):
        # Local-scope token buckets shared by all workers (fastgate._core.buckets).
        # Filled in by the rate-limit module; None until that module provides it.
        self.local_buckets = None
        from fastgate.policies import rate_limit_hooks
        rate_limit_hooks.prefork(self, config)


class Services:
    """Per-process services: metrics, access log, local buckets and the process state
    (``state``: Redis limiter, authenticators, ...). One per worker.

    The gateway compiles every config through ``begin(config)``. Code that embeds policies
    directly (tests, benchmarks) may pass a Services itself as the build: ``keep`` then
    makes the object live at once and closes the one it replaces."""

    def __init__(self, shared: SharedState, config, loop=None):
        self.shared = shared
        self.config = config
        self.loop = loop
        self.metrics = None      # fastgate.observe.metrics.Metrics
        self.access_log = None   # fastgate.observe.access_log.AccessLog
        self.local_buckets = shared.local_buckets
        self.state = ProcessState()
        self._memo = {}
        self._memo_config = None

    def begin(self, config) -> Build:
        """A build for ``config``: compile with it, warm it, then commit or abort it."""
        return Build(self, config)

    # direct use (no separate build) ---------------------------------------------------
    def keep(self, kind: str, name, settings, factory):
        key = (kind, name)
        live = self.state.live.get(key)
        if live is not None and live[0] == settings:
            return live[1]
        obj = factory()
        self.state.live[key] = (settings, obj)
        if live is not None:
            self.state.retire([live[1]], 0.0)
        return obj

    def memo(self, key, factory):
        if self._memo_config is not self.config:
            self._memo = {}
            self._memo_config = self.config
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = factory()
            return value

    @property
    def cluster_limiter(self):
        """The Redis-backed limiter of the running config, or None."""
        from fastgate.policies.rate_limit_hooks import LIMITER
        return self.state.get(LIMITER)

    def live(self, kind: str, name=None):
        return self.state.get(kind, name)

    async def close(self):
        await self.state.close()
