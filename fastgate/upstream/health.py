"""Active health checks: each target of an upstream with `health_check` is probed with
`GET path` every `interval_s` on a fresh connection (never a pooled one, so a probe cannot
disturb traffic). `unhealthy_after` consecutive failures take a target out of balancing,
`healthy_after` consecutive successes bring it back. A 2xx or 3xx answer within `timeout_s`
is a success. Targets start healthy (a fresh gateway should not refuse traffic until the
first probes have run).
"""
from __future__ import annotations

import asyncio
import logging
import ssl

log = logging.getLogger("fastgate.health")


async def probe(pool, path: str, timeout: float) -> bool:
    """One probe of one target: True when it answered 2xx/3xx in time."""
    async def go():
        reader, writer = await asyncio.open_connection(
            pool.host, pool.port, ssl=pool.ssl, server_hostname=pool.server_hostname)
        try:
            host = pool.host_header[6:-4]  # b"host: X\r\n\r\n" -> X
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: " + host +
                         b"\r\nuser-agent: fastgate-health\r\nconnection: close\r\n\r\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        parts = line.split(b" ", 2)
        return (len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit()
                and 200 <= int(parts[1]) < 400)
    try:
        return await asyncio.wait_for(go(), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError):
        return False


class _TargetCheck:
    __slots__ = ("upstream", "pool", "cfg", "ok_streak", "fail_streak", "task")

    def __init__(self, upstream, pool, cfg):
        self.upstream = upstream
        self.pool = pool
        self.cfg = cfg
        self.ok_streak = 0
        self.fail_streak = 0
        self.task = None


class HealthChecker:
    def __init__(self, metrics):
        self.metrics = metrics
        self.checks: list[_TargetCheck] = []

    def configure(self, config, snapshot):
        """(Re)start probes for the snapshot's upstreams; called at start and on reload."""
        self.stop()
        for name, up_cfg in config.upstreams.items():
            upstream = snapshot.upstreams[name]
            hc = up_cfg.health_check
            for pool in upstream.pools:
                if hc is None:
                    pool.healthy = True  # no longer checked: nothing can mark it down
                    continue
                check = _TargetCheck(name, pool, hc)
                self.metrics.set_upstream_health(name, pool.label, pool.healthy)
                check.task = asyncio.ensure_future(self._run(check))
                self.checks.append(check)

    async def _run(self, check: _TargetCheck):
        cfg = check.cfg
        pool = check.pool
        while True:
            ok = await probe(pool, cfg.path, cfg.timeout_s)
            if ok:
                check.ok_streak += 1
                check.fail_streak = 0
                if not pool.healthy and check.ok_streak >= cfg.healthy_after:
                    pool.healthy = True
                    log.warning("upstream %s target %s is healthy again", check.upstream, pool.label)
            else:
                check.fail_streak += 1
                check.ok_streak = 0
                if pool.healthy and check.fail_streak >= cfg.unhealthy_after:
                    pool.healthy = False
                    pool.close_idle()
                    log.warning("upstream %s target %s is unhealthy (%d failed probes)",
                                check.upstream, pool.label, check.fail_streak)
            self.metrics.set_upstream_health(check.upstream, pool.label, pool.healthy)
            await asyncio.sleep(cfg.interval_s)

    def stop(self):
        for check in self.checks:
            if check.task is not None:
                check.task.cancel()
        self.checks = []
