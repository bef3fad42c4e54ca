"""The harness's own Redis for ``scope: cluster`` rate limits: started on loopback for the
scenarios that need it, stopped after them. Never a system instance, never persisted.

    with RedisServer(workdir, cpus=load_cpus) as r:
        r.url            # redis://127.0.0.1:PORT/0
        r.stats()        # {"commands": total commands processed, "cpu_s": its CPU seconds}
"""
from __future__ import annotations

import os
import shutil
import socket
import time

from benchmarks.procs import Proc

HOST = "127.0.0.1"


def binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
         if os.access(p, os.X_OK)), None)


class RedisError(Exception):
    pass


class RedisServer:
    def __init__(self, workdir: str, *, cpus=None, exe: str | None = None):
        self.workdir = workdir
        self.cpus = cpus
        self.exe = exe or binary()
        self.port: int | None = None
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> "RedisServer":
        if not self.exe:
            raise RedisError("redis-server not installed")
        from benchmarks.targets import free_port
        os.makedirs(self.workdir, exist_ok=True)
        # A port taken between free_port() and redis' bind() makes it exit at once: try again.
        last = ""
        for _ in range(3):
            self.port = free_port()
            self.proc = Proc("redis", [
                self.exe, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--dir", self.workdir, "--daemonize", "no",
                "--logfile", "", "--protected-mode", "yes"],
                cpus=self.cpus, log_path=os.path.join(self.workdir, "redis.log"),
                cwd=self.workdir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.alive():
                try:
                    if self.command("PING") == "PONG":
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            last = self.proc.log_tail(3).strip().replace("\n", " | ")
            self.proc.stop()
            self.proc = None
        raise RedisError(f"redis-server did not answer PING: {last}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    # --- a minimal RESP client: a probe or two per measurement, not worth a pool ----------
    def command(self, *args: str, timeout: float = 2.0):
        with socket.create_connection((HOST, self.port), timeout=timeout) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                b = a.encode()
                out += b"$%d\r\n%s\r\n" % (len(b), b)
            s.sendall(out)
            return _read_reply(s.makefile("rb"))

    def info(self, section: str = "all") -> dict[str, str]:
        fields = {}
        for line in self.command("INFO", section).splitlines():
            k, sep, v = line.partition(":")
            if sep:
                fields[k.strip()] = v.strip()
        return fields

    def commands(self) -> int:
        """Commands Redis has processed so far (the INFO asking for it not included)."""
        return int(self.info("stats")["total_commands_processed"])

    def version(self) -> str:
        return "Redis " + self.info("server").get("redis_version", "?")

    def stats(self) -> dict:
        info = self.info("all")
        cpu = sum(float(info.get(k, 0)) for k in ("used_cpu_sys", "used_cpu_user"))
        return {"commands": int(info.get("total_commands_processed", 0)), "cpu_s": cpu,
                "keys": int(self.command("DBSIZE"))}


def _read_reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RedisError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise RedisError("connection closed mid-reply")
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RedisError(f"unexpected reply {line[:40]!r}")
