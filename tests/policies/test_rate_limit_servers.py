"""Real redis-server processes for the rate-limit tests (fixtures; no tests of its own).

Import the fixtures into a test module: ``from tests.policies.test_rate_limit_servers import
redis_server, redis_cluster  # noqa: F401``.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

needs_redis = pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None,
                                 reason="redis-server / redis-cli not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A port whose cluster bus port (port + 10000) is free as well, below the kernel's
    ephemeral range so neither is likely to be taken meanwhile."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a redis cluster node")


def _command(port: int, *args: bytes, timeout: float = 1.0) -> bytes:
    """One raw RESP command; the raw reply (enough for PING / CLUSTER INFO / DBSIZE)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(parts))
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"\r\n") and (not data.startswith(b"$") or data.count(b"\r\n") >= 2):
                break
        return data


class RedisServer:
    def __init__(self, workdir, port: int | None = None, cluster: bool = False):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.port = port or (free_cluster_port() if cluster else free_port())
        self.cluster = cluster
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self.workdir,
               "--protected-mode", "no", "--loglevel", "warning",
               "--logfile", os.path.join(self.workdir, f"redis-{self.port}.log")]
        if self.cluster:
            cmd += ["--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{self.port}.conf",
                    "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("redis-server exited: " + self.log())
            try:
                if _command(self.port, b"PING").startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def log(self) -> str:
        try:
            with open(os.path.join(self.workdir, f"redis-{self.port}.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def command(self, *args: bytes) -> bytes:
        return _command(self.port, *args)

    def kill(self) -> None:
        """Die like a crash: no shutdown, connections reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """Freeze the process: connections stay open, nothing answers (a slow Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class RedisClusterNodes:
    """Three masters, no replicas, all 16384 slots assigned."""

    def __init__(self, workdir):
        self.nodes = [RedisServer(os.path.join(str(workdir), f"n{i}"), cluster=True)
                      for i in range(3)]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def start(self, timeout: float = 30.0) -> "RedisClusterNodes":
        try:
            for n in self.nodes:
                n.start()
            subprocess.run([REDIS_CLI, "--cluster", "create", *self.addresses,
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all(b"cluster_state:ok" in n.command(b"CLUSTER", b"INFO") for n in self.nodes):
                    return self
                time.sleep(0.1)
            raise RuntimeError("redis cluster did not reach cluster_state:ok")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def redis_server(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server / redis-cli not installed")
    cluster = RedisClusterNodes(tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()
