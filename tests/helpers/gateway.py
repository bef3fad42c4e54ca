"""Run the real `fastgate` command on loopback for integration tests."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProc:
    def __init__(self, config: dict | str, tmp_path, *, workers=None, env=None, name="gw"):
        self.path = os.path.join(str(tmp_path), f"{name}.yaml")
        self.write_config(config)
        cmd = [sys.executable, "-m", "fastgate", "run", "-c", self.path]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        full_env = dict(os.environ)
        full_env.setdefault("FASTGATE_LOG_LEVEL", "WARNING")
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.addresses: list[str] = []
        self._ready = threading.Event()
        self._t1 = threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, True), daemon=True)
        self._t2 = threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, False), daemon=True)
        self._t1.start()
        self._t2.start()

    def write_config(self, config):
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def _pump(self, stream, sink, is_err):
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            sink.append(line)
            if is_err:
                m = re.search(r"^listening on (\S+)$", line)
                if m:
                    self.addresses.append(m.group(1))
                    self._ready.set()
        self._ready.set()

    def wait_ready(self, n_listeners=1, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.addresses) >= n_listeners:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("gateway did not start:\n" + "\n".join(self.stderr_lines))

    @property
    def port(self) -> int:
        return int(self.addresses[0].rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._t1.join(2)
        self._t2.join(2)
        return self.proc.returncode


def simple_config(upstream_port: int | None, **extra) -> dict:
    cfg = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "logging": {"access_log": "off"},
        "routes": [],
    }
    if upstream_port is not None:
        cfg["upstreams"] = {"app": {"targets": [{"url": f"http://127.0.0.1:{upstream_port}"}]}}
        cfg["routes"].append({"name": "app", "paths": ["/*"], "upstream": "app"})
    cfg.update(extra)
    return cfg
