"""Process-wide services that compiled policies hold references to.

Created once per process. ``prefork`` state (shared-memory tables) is created by the
supervisor *before* workers fork so every worker maps the same memory; everything else is
created in the worker after the fork (event-loop bound objects such as Redis clients).
"""
from __future__ import annotations


class SharedState:
    """State created before fork and inherited by every worker of one instance."""

    def __init__(self, config):
        # Local-scope token buckets shared by all workers (fastgate._core.buckets).
        # Filled in by the rate-limit module; None until that module provides it.
        self.local_buckets = None
        from fastgate.policies import rate_limit_hooks
        rate_limit_hooks.prefork(self, config)


class Services:
    """Per-process services: metrics, access log, limiters, redis. One per worker."""

    def __init__(self, shared: SharedState, config, loop=None):
        self.shared = shared
        self.config = config
        self.loop = loop
        self.metrics = None      # fastgate.observe.metrics.Metrics
        self.access_log = None   # fastgate.observe.access_log.AccessLog
        self.local_buckets = shared.local_buckets
        self.cluster_limiter = None  # set by the rate-limit module when redis is configured
        from fastgate.policies import rate_limit_hooks
        rate_limit_hooks.postfork(self, config)

    def reconfigure(self, config):
        """Called on reload with the new config before the new snapshot is compiled."""
        self.config = config
        from fastgate.policies import rate_limit_hooks
        rate_limit_hooks.reconfigure(self, config)

    async def close(self):
        from fastgate.policies import auth, rate_limit_hooks
        auth.close(self)  # JWKS refreshes, introspection connections
        await rate_limit_hooks.close(self)
