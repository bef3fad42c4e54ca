"""The gateway process: listeners, the current config snapshot, signals, reload, drain.

One Gateway per process (each worker has its own). The snapshot reference is the only thing
a reload changes; connections read it when a request head arrives.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time

from fastgate.config import ConfigError, validate
from fastgate.config.compile import compile_snapshot
from fastgate._core.conn import check_all_deadlines, record as _record, shift_deadlines
from fastgate._core.state import GatewayCore, trim_heap
from fastgate.server.connection import ClientConnection, TlsClientConnection
from fastgate.server.listen import PlainServer, SocketPoller, bind_sockets, owned_sockets
from fastgate.server.services import Services, SharedState
from fastgate.upstream.pool import PoolRegistry

log = logging.getLogger("fastgate")

SWEEP_INTERVAL_S = 0.25
STALL_S = SWEEP_INTERVAL_S   # a sweep this late: the process did not run (SIGSTOP, a stall)


def format_bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Gateway(GatewayCore):
    """One process's gateway. ``snapshot``, ``draining``, ``metrics`` and ``access_log`` are
    declared in its compiled base (fastgate/_core/state.pyx), which the request path reads."""

    def __init__(self, config, config_path: str | None = None, *, shared: SharedState | None = None,
                 reuse_port: bool = False, sockets=None, worker_id: int | None = None,
                 controlled: bool = False):
        self.config = config
        self.config_path = config_path
        self.shared = shared if shared is not None else SharedState(config)
        self.reuse_port = reuse_port
        self.inherited_sockets = sockets  # pre-bound listening sockets (workers)
        self.worker_id = worker_id
        # A worker whose config changes come from the admin process (over the channel),
        # never from its own SIGHUP.
        self.controlled = controlled
        self.control = None               # the control plane, when this process hosts it
        self.pools = PoolRegistry()
        self.connections: set = set()
        self.per_ip: dict = {}
        self.servers = []
        self.poller = None                # SocketPoller of the plain-TCP listeners
        self.admin = None
        self.draining = False
        self.generation = 0
        self.loop = None
        self.services = None
        self.snapshot = None
        self._stopped = None
        self.metrics = None
        self.access_log = None
        self._reloading = None
        self._reload_again = False
        self._sweep_due = 0.0
        self._sweep_deferred = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.services = Services(self.shared, self.config, self.loop)
        self._setup_observability(self.config)
        # Everything the first request may need is built and warmed (Redis connected,
        # JWKS fetched, IdP connections open) before this process says `listening on`.
        build = self.services.begin(self.config)
        self.snapshot = compile_snapshot(self.config, build, self.pools, 0)
        await build.warm()
        build.commit()
        # Everything made so far lives as long as the process: out of the collector's
        # sight, so its full collections only walk what requests allocate.
        gc.collect()
        gc.freeze()
        from fastgate.upstream.health import HealthChecker
        self.health = HealthChecker(self.metrics)
        self.health.configure(self.config, self.snapshot)
        self._stopped = self.loop.create_future()
        if self.config.admin is not None and self.worker_id is None:
            # Settles the version in service and, with redis, takes the deployment's newer
            # shared config -- all before the first connection is accepted.
            from fastgate.admin.appliers import LocalApplier
            from fastgate.admin.control import ControlPlane
            self.control = ControlPlane(self.config, self.config_path, LocalApplier(self),
                                        on_reload=self._reload_counted)
            await self.control.start()
        await self._open_listeners(self.config)
        if self.control is not None:
            await self._start_admin(self.config)
        self._install_signals()
        trim_heap()
        self._sweep_due = time.monotonic() + SWEEP_INTERVAL_S
        self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _setup_observability(self, config):
        from fastgate.observe.metrics import Metrics
        self.metrics = Metrics()
        self.services.metrics = self.metrics
        from fastgate.observe.access_log import AccessLog
        self.access_log = AccessLog.from_config(config)
        self.access_log_settings = config.logging
        self.services.access_log = self.access_log

    async def _start_admin(self, config):
        from fastgate.admin.server import AdminServer
        a = config.admin
        self.admin = AdminServer(
            host=a.host, port=a.port, token=a.token,
            metrics_source=self.metrics_snapshot,
            config_getter=lambda: self.snapshot.config,
            ready_getter=lambda: not self.draining,
            control=self.control,
        )
        await self.admin.start()
        print(f"admin listening on {format_bind(a.host, a.port)}", file=sys.stderr, flush=True)

    def config_digest(self) -> str:
        from fastgate.admin.documents import digest
        return digest(self.config.raw)

    def _reload_counted(self, ok: bool) -> None:
        self.metrics.config_reload(ok)

    def metrics_snapshot(self):
        """Merged metrics of this instance (the supervisor overrides this with all workers)."""
        return self.metrics.snapshot()

    async def _open_listeners(self, config):
        for i, lst in enumerate(config.listeners):
            tls_ctx = None
            if lst.tls is not None:
                from fastgate.server.tls import server_ssl_context
                tls_ctx = server_ssl_context(lst.tls)
            is_tls = tls_ctx is not None
            factory = ((lambda: TlsClientConnection(self)) if is_tls
                       else (lambda: ClientConnection(self, False)))
            if not is_tls and owned_sockets():
                if self.poller is None:
                    self.poller = SocketPoller(self.loop)
                socks = ([self.inherited_sockets[i]] if self.inherited_sockets is not None
                         else bind_sockets(lst.host, lst.port, reuse_port=self.reuse_port,
                                           backlog=4096))
                server = PlainServer(self.poller, socks, self)
            elif self.inherited_sockets is not None:
                server = await self.loop.create_server(
                    factory, sock=self.inherited_sockets[i], ssl=tls_ctx, backlog=4096)
            else:
                server = await self.loop.create_server(
                    factory, lst.host, lst.port, ssl=tls_ctx, backlog=4096,
                    reuse_address=True, reuse_port=self.reuse_port or None)
            self.servers.append(server)
            if self.worker_id is None:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    print(f"listening on {format_bind(host, port)}", file=sys.stderr, flush=True)

    def _install_signals(self):
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self.begin_drain)
        loop.add_signal_handler(signal.SIGINT, self.begin_drain)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)

    def _reopen_logs(self):
        if self.access_log is not None:
            self.access_log.reopen()

    async def wait_stopped(self):
        await self._stopped

    # ------------------------------------------------------------------ connections
    def admit_connection(self, proto) -> bool:
        limits = self.snapshot.limits
        if len(self.connections) >= limits.max_connections:
            return False
        ip = proto.client_ip
        per_ip = limits.max_connections_per_ip
        if per_ip:
            n = self.per_ip.get(ip, 0)
            if n >= per_ip:
                return False
            self.per_ip[ip] = n + 1
        self.connections.add(proto)
        self.metrics.conn_opened()
        return True

    def release_connection(self, proto):
        if proto in self.connections:
            self.connections.discard(proto)
            self.metrics.conn_closed()
            n = self.per_ip.get(proto.client_ip)
            if n is not None:
                if n <= 1:
                    del self.per_ip[proto.client_ip]
                else:
                    self.per_ip[proto.client_ip] = n - 1
        if self.draining and not self.connections:
            self._finish_stop()

    def record(self, ctx):
        """Log phase: after the last byte of a response (or a refusal): metrics and the
        access log (compiled, fastgate/_core/conn_response.pxi)."""
        _record(self, ctx)

    def log_error(self, msg, *args):
        log.warning(msg, *args)

    def _sweep(self):
        now = time.monotonic()
        if now - self._sweep_due > STALL_S and not self._sweep_deferred:
            # The process did not run for a while: the answers and requests that arrived
            # meanwhile are waiting in the sockets. Read them first (timers run before I/O in
            # a loop iteration), then count deadlines, so a stall alone times nothing out.
            # With thousands of sockets ready, reading them takes several loop iterations
            # (an epoll call returns at most 1,024 of them): every deadline also moves by the time
            # the process stood still, which it could not have spent waiting.
            shift_deadlines(self.connections, now - self._sweep_due)
            self._sweep_deferred = True
            self.loop.call_later(0.001, self._sweep)
            return
        self._sweep_deferred = False
        check_all_deadlines(self.connections, now)
        if not self._stopped.done():
            self._sweep_due = now + SWEEP_INTERVAL_S
            self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    # ------------------------------------------------------------------ reload
    def reload(self):
        """SIGHUP: re-read the file and apply it in the background (warming included);
        a SIGHUP during a reload runs one more reload after it."""
        if self.config_path is None or self.controlled:
            return False
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return True
        self._reload_again = False
        self._reloading = self.loop.create_task(self._reload_loop())
        return True

    async def _reload_loop(self):
        while True:
            if self.control is not None:   # versioned, audited, shared
                await self.control.reload_file()
                if not self._reload_again:
                    return
                self._reload_again = False
                continue
            # With workers, every worker reloads the same file: one of them reports errors.
            config = read_config_for_reload(self.config_path,
                                            report=self.worker_id in (None, 0))
            if config is None:
                self.metrics.config_reload(False)
            else:
                await self.apply_config(config)
            if not self._reload_again:
                return
            self._reload_again = False

    async def apply_config(self, config, version: int | None = None) -> bool:
        """Build, warm and swap in ``config``; on any failure the running snapshot and its
        state stay exactly as they are."""
        try:
            prepared = await self.prepare_config(config)
        except Exception as exc:  # compile must never take the running config down
            log.error("reload rejected: %s", exc)
            self.metrics.config_reload(False)
            return False
        return self.commit_config(prepared, version)

    async def prepare_config(self, config):
        """The first half of an apply: compile and warm ``config`` beside the running one.
        Returns what ``commit_config`` swaps in or ``abort_config`` drops; raises (with the
        build already aborted) when it cannot be built."""
        build = self.services.begin(config)
        try:
            snap = compile_snapshot(config, build, self.pools, self.generation + 1)
        except BaseException:
            build.abort()
            raise
        try:
            await build.warm()
        except BaseException:
            build.abort()
            raise
        return config, snap, build

    def abort_config(self, prepared) -> None:
        prepared[2].abort()

    def commit_config(self, prepared, version: int | None = None) -> bool:
        config, snap, build = prepared
        if self.draining:
            build.abort()
            return False
        old_listeners = [(l.host, l.port, l.tls) for l in self.config.listeners]
        # port 0 was resolved once at start: the same document still names the same sockets
        ports = [p for _, p, _ in old_listeners]
        new_listeners = [(l.host, l.port or (ports[i] if i < len(ports) else 0), l.tls)
                         for i, l in enumerate(config.listeners)]
        if old_listeners != new_listeners:
            log.warning("reload: listener changes take effect after a restart")
        self.generation += 1
        self.config = config
        self.services.config = config
        self.snapshot = snap  # the one atomic swap
        build.commit(config.drain_timeout_s)
        self.pools.prune(snap.pool_keys)
        self.health.configure(config, snap)
        if config.logging != self.access_log_settings:
            self._replace_access_log(config)
        if version is not None:
            self.metrics.config_version = version
        self.metrics.config_reload(True)
        log.warning("config reloaded (generation %d%s)", self.generation,
                    f", version {version}" if version is not None else "")
        return True

    def _replace_access_log(self, config):
        from fastgate.observe.access_log import AccessLog
        try:
            new = AccessLog.from_config(config)
        except OSError as exc:
            log.error("reload: access log %s cannot be opened (%s); keeping the old one",
                      config.logging.access_log, exc)
            return
        old, self.access_log = self.access_log, new
        self.services.access_log = new
        self.access_log_settings = config.logging
        old.close()

    # ------------------------------------------------------------------ drain / stop
    def begin_drain(self):
        if self.draining:
            return
        self.draining = True
        log.warning("draining: stopped accepting, finishing in-flight requests")
        for server in self.servers:
            server.close()
        for proto in list(self.connections):
            proto.drain()
        if not self.connections:
            self._finish_stop()
            return
        timeout = self.config.drain_timeout_s
        self.loop.call_later(timeout, self._drain_timeout)

    def _drain_timeout(self):
        if self._stopped.done():
            return
        log.warning("drain timeout: closing %d connections", len(self.connections))
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        self._finish_stop()

    def _finish_stop(self):
        if not self._stopped.done():
            self._stopped.set_result(None)

    async def close(self):
        if self._reloading is not None and not self._reloading.done():
            self._reloading.cancel()
        self.health.stop()
        if self.admin is not None:
            await self.admin.close()
        if self.control is not None:
            await self.control.close()
        for server in self.servers:
            server.close()
        if self.poller is not None:
            self.poller.close()
        self.pools.close_all()
        if self.access_log is not None:
            self.access_log.close()
        await self.services.close()


def read_config_for_reload(path, *, report=True):
    """The config now in `path`, or None when it cannot be used (each error logged with its
    key path when `report`, the lines `fastgate check` prints): the running config then
    stays in place."""
    try:
        return validate(path)
    except ConfigError as exc:
        if report:
            for err in exc.errors:
                log.error("reload rejected: %s", err)
            log.error("reload rejected: keeping the running config (%d errors)", len(exc.errors))
    return None


def run_gateway(config, config_path):
    """Single-process serve until drained. Returns the exit status."""
    import uvloop

    async def main():
        gw = Gateway(config, config_path)
        await gw.start()
        await gw.wait_stopped()
        await gw.close()
        return 0

    return uvloop.run(main())
