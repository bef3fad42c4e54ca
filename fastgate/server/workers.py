"""`fastgate run --workers N`: a supervisor process and N forked workers.

* The supervisor has no event loop (so forking a replacement worker is always clean). It
  creates the shared state (shared-memory token buckets) before the first fork, reserves each
  listening port with a bound, non-listening SO_REUSEPORT socket (so `port 0` and the port
  stay fixed while workers come and go), and forks: N traffic workers, plus one admin process
  when `admin` is configured.
* Each worker binds its own SO_REUSEPORT listening socket on the reserved address: the kernel
  spreads connections across workers.
* A worker that dies is replaced. SIGTERM/SIGINT drain all workers and exit 0 when they have
  exited. SIGHUP goes to the admin process's control plane when there is one (it applies the
  file to all workers or none), else to every worker.
* The admin process (with `admin` configured) starts after the workers and hosts the control
  plane (fastgate.admin.control); it talks to the workers over private unix sockets
  (fastgate.server.channel): metric snapshots summed at scrape time, and config applies.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import time

import orjson

from fastgate.server import channel
from fastgate.server.app import Gateway, format_bind, read_config_for_reload
from fastgate.server.services import SharedState

log = logging.getLogger("fastgate.supervisor")

RESPAWN_BACKOFF_S = 0.5


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    return sock


def _listen_socket(host: str, port: int) -> socket.socket:
    sock = _reserve(host, port)
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _child_reset():
    # A fresh process image for asyncio: default signal dispositions, no inherited wakeup fd.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)


def _worker_main(config, config_path, shared, worker_id, rundir, ready_fd,
                 controlled) -> int:
    import uvloop

    async def main():
        nonlocal config
        version = None
        if controlled:   # a replacement worker starts from what its siblings serve now
            config, version = await _current_config(config, rundir)
        sockets = [_listen_socket(l.host, l.port) for l in config.listeners]
        gw = Gateway(config, config_path, shared=shared, sockets=sockets, worker_id=worker_id,
                     controlled=controlled)
        await gw.start()
        if version is not None:
            gw.metrics.config_version = version
        chan = await channel.serve_worker(gw, os.path.join(rundir, f"w{worker_id}.sock"))
        try:  # tell the supervisor this worker accepts connections now
            os.write(ready_fd, b"r")
        except OSError:
            pass
        os.close(ready_fd)
        await gw.wait_stopped()
        chan.close()
        await gw.close()
        return 0

    return uvloop.run(main())


async def _current_config(config, rundir):
    from fastgate.admin.documents import digest
    from fastgate.config import ConfigError, validate
    current = await channel.fetch_current(rundir)
    if current is None:
        return config, None
    if current["digest"] == digest(config.raw):
        return config, current["version"]
    try:
        fresh = validate(document=current["document"], base_dir=current["base_dir"],
                         source=current["source"])
    except ConfigError as exc:   # the admin process reconciles this worker later
        log.error("the current config does not validate here: %s", "; ".join(exc.errors))
        return config, None
    # The listeners are the supervisor's: it resolved port 0 once for every worker, and a
    # listener change needs a restart anyway.
    import dataclasses
    return dataclasses.replace(fresh, listeners=config.listeners), current["version"]


def _admin_main(config, config_path, rundir, ready_fd) -> int:
    import uvloop
    from fastgate.admin.appliers import WorkersApplier
    from fastgate.admin.control import ControlPlane
    from fastgate.admin.server import AdminServer
    from fastgate.observe.metrics import Metrics, merge_snapshots

    async def main():
        nonlocal config
        loop = asyncio.get_running_loop()
        # A replacement admin process starts from the file, which every apply rewrites.
        config = read_config_for_reload(config_path, report=False) or config
        state = {"draining": False}
        stopped = loop.create_future()
        own = Metrics()     # reload failures and the version; the workers count the rest
        plane = ControlPlane(config, config_path, WorkersApplier(rundir),
                             on_reload=own.config_reload)
        await plane.start()

        async def current(reader, writer):
            try:
                if (await channel.recv(reader) or {}).get("op") == "current":
                    await channel.send(writer, {
                        "version": plane.version, "digest": plane.digest,
                        "document": plane.document, "base_dir": plane.base_dir,
                        "source": plane.source})
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
        chan = await channel.serve(os.path.join(rundir, channel.ADMIN_SOCKET), current)

        async def metrics_source():
            own.config_version = plane.version
            return merge_snapshots(await channel.gather_snapshots(rundir) + [own.snapshot()])

        reloading = set()

        def reload():
            task = loop.create_task(plane.reload_file())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        def draining():
            state["draining"] = True  # /readyz answers 503 while the workers drain

        def stop():
            state["draining"] = True
            if not stopped.done():
                stopped.set_result(None)

        a = plane.config.admin
        admin = AdminServer(host=a.host, port=a.port, token=a.token,
                            metrics_source=metrics_source,
                            config_getter=lambda: plane.config,
                            ready_getter=lambda: not state["draining"],
                            control=plane)
        await admin.start()
        loop.add_signal_handler(signal.SIGHUP, reload)
        loop.add_signal_handler(signal.SIGUSR2, draining)
        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            os.write(ready_fd, b"a")
        except OSError:
            pass
        os.close(ready_fd)
        await stopped
        chan.close()
        await admin.close()
        await plane.close()
        return 0

    return uvloop.run(main())


class Supervisor:
    def __init__(self, config, config_path, workers: int):
        self.config = config
        self.config_path = config_path
        self.n = workers
        self.children: dict[int, tuple[str, int]] = {}  # pid -> (kind, worker id)
        self.stopping = False
        self.pending_signals: list[int] = []
        self.rundir = tempfile.mkdtemp(prefix="fastgate-")
        self.shared = None
        self.reserved = []

    def _fork(self, kind: str, wid: int) -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _child_reset()
                for sock in self.reserved:
                    sock.close()
                os.close(self.ready_r)
                if kind == "worker":
                    code = _worker_main(self.config, self.config_path, self.shared, wid,
                                        self.rundir, self.ready_w,
                                        self.config.admin is not None)
                else:
                    code = _admin_main(self.config, self.config_path, self.rundir,
                                       self.ready_w)
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = (kind, wid)
        return pid

    def _on_signal(self, signum, frame):
        self.pending_signals.append(signum)

    def run(self) -> int:
        config = self.config
        self.shared = SharedState(config)
        for l in config.listeners:
            sock = _reserve(l.host, l.port)
            self.reserved.append(sock)
        # Resolve port 0 once so every worker binds the same address.
        resolved = []
        for l, sock in zip(config.listeners, self.reserved):
            port = sock.getsockname()[1]
            resolved.append((l, port))
        if any(l.port == 0 for l in config.listeners):
            import dataclasses
            config = dataclasses.replace(config, listeners=[
                dataclasses.replace(l, port=port) for l, port in resolved])
            self.config = config
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        self.ready_r, self.ready_w = os.pipe()
        os.set_blocking(self.ready_w, False)
        for wid in range(self.n):
            self._fork("worker", wid)
        if not self._wait_ready(self.n):
            return self._abort_start()
        if config.admin is not None:
            # After the workers: it settles the version (and takes a newer one from redis)
            # by applying to them before this instance says `listening on`.
            self._fork("admin", -1)
            if not self._wait_ready(1):
                return self._abort_start()
        for l, port in resolved:
            print(f"listening on {format_bind(l.host, port)}", file=sys.stderr, flush=True)
        if config.admin is not None:
            print(f"admin listening on {format_bind(config.admin.host, config.admin.port)}",
                  file=sys.stderr, flush=True)
        last_respawn: dict = {}
        while self.children:
            while self.pending_signals:
                sig = self.pending_signals.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    if not self.stopping:
                        self.stopping = True
                        # Workers drain first; the admin process keeps answering (readyz:
                        # 503) until the last worker is gone.
                        self._signal_children(signal.SIGTERM, "worker")
                        self._signal_children(signal.SIGUSR2, "admin")
                elif sig == signal.SIGHUP:
                    self._reload()
                elif sig == signal.SIGUSR1:
                    self._signal_children(signal.SIGUSR1)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            kind, wid = self.children.pop(pid)
            if self.stopping:
                if not any(k == "worker" for k, _ in self.children.values()):
                    self._signal_children(signal.SIGTERM, "admin")
                continue
            code = os.waitstatus_to_exitcode(status)
            log.error("%s %s (pid %d) exited with %s; replacing it", kind, wid, pid, code)
            now = time.monotonic()
            if now - last_respawn.get((kind, wid), 0) < RESPAWN_BACKOFF_S:
                time.sleep(RESPAWN_BACKOFF_S)
            last_respawn[(kind, wid)] = time.monotonic()
            self._fork(kind, wid)
        self._cleanup()
        return 0

    def _cleanup(self):
        for sock in self.reserved:
            sock.close()
        try:
            for name in os.listdir(self.rundir):
                os.unlink(os.path.join(self.rundir, name))
            os.rmdir(self.rundir)
        except OSError:
            pass

    def _wait_ready(self, n: int, timeout: float = 30.0) -> bool:
        """`listening on` is printed only once every worker accepts connections."""
        import select
        got = 0
        deadline = time.monotonic() + timeout
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("workers did not start within %.0f s", timeout)
                return False
            readable, _, _ = select.select([self.ready_r], [], [], min(left, 0.1))
            if readable:
                got += len(os.read(self.ready_r, n - got))
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid:
                kind, wid = self.children.pop(pid)
                log.error("%s %s exited during start-up", kind, wid)
                return False
        return True

    def _abort_start(self) -> int:
        self.stopping = True
        self._signal_children(signal.SIGTERM)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()
        self._cleanup()
        return 1

    def _signal_children(self, sig, kind=None):
        for pid, (k, _) in list(self.children.items()):
            if kind is not None and k != kind:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _reload(self):
        # With an admin process, its control plane applies the file to every worker (all or
        # none, versioned, audited); without, the workers read, report and count it
        # themselves. The supervisor keeps the newest valid config for workers it may start
        # later (they ask the admin process for the current one first).
        config = read_config_for_reload(self.config_path, report=False)
        if config is not None:
            self.config = config
        self._signal_children(signal.SIGHUP, "admin" if self.config.admin is not None
                              else "worker")


def run_supervisor(config, config_path, workers: int) -> int:
    return Supervisor(config, config_path, workers).run()
