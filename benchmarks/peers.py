"""The AI gateways measured beside fastgate: LiteLLM's proxy and Portkey's gateway.

Neither is a dependency of fastgate. Each is installed once, on demand, into a folder of its
own outside the repository: ``$FASTGATE_BENCH_PEERS`` or ``~/.cache/fastgate-bench/``:

  litellm-<series>/   ``python -m venv`` + ``pip install 'litellm[proxy]==<series>.*'``
  portkey-<version>/  ``npm install @portkey-ai/gateway@<version>`` with an npm ``overrides``
                      entry pinning ``@hono/node-server`` (newer ones break its streaming)

An install is complete when its marker file exists (a failed or interrupted one is removed
and redone); a lock file serialises concurrent harness runs. Whether the harness installs
is ``--install-peers``: ``auto`` (default) installs a peer named in ``--targets`` and uses one
that is already installed otherwise; ``yes`` always; ``no`` never (a missing peer is n/a).

At run time both talk to loopback only: LiteLLM starts with its local model cost map,
telemetry off and an unreachable loopback HTTP(S) proxy for anything that is not 127.0.0.1;
Portkey is given a preload (peers_loopback.cjs) that binds its listener to 127.0.0.1 (it
would listen on every interface) and calls only the custom host the client names.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from benchmarks import ai
from benchmarks.targets import (HOST, TARGETS, NotApplicable, Prepared, Target, TargetError,
                                _tail, free_port, wait_port)

HERE = os.path.dirname(os.path.abspath(__file__))
LITELLM_SERIES = os.environ.get("FASTGATE_BENCH_LITELLM", "1.108")
PORTKEY_VERSION = os.environ.get("FASTGATE_BENCH_PORTKEY", "1.15.2")
HONO_NODE_SERVER = "1.14.1"
MARKER = ".fastgate-bench-installed"
INSTALL_TIMEOUT = 1800
# a closed loopback port: an HTTP(S) proxy there makes any call off the machine fail fast
DEAD_PROXY = "http://127.0.0.1:9"


def peers_dir() -> str:
    return os.environ.get("FASTGATE_BENCH_PEERS") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastgate-bench")


def _dir_size(path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512  # as du counts
            except OSError:
                pass
    return total


class Peer(Target):
    """A gateway installed into peers_dir()/<folder> by ``install_steps``."""

    folder = "?"
    what = "?"
    threads_share_cpu = True  # see runner._interference

    def __init__(self, ctx):
        super().__init__(ctx)
        self.home = os.path.join(peers_dir(), self.folder)
        self.install_info = None  # {"seconds", "bytes", "log"} when this run installed it

    def applies(self, scenario):
        return "ai" in scenario.features

    def installed(self) -> bool:
        return os.path.exists(os.path.join(self.home, MARKER))

    def install_steps(self) -> list[list[str]]:
        raise NotImplementedError

    def prerequisites(self) -> str | None:
        return None

    def availability(self):
        why = self.prerequisites()
        if why:
            return why
        if self.installed():
            return None
        mode = getattr(self.ctx, "install_peers", "auto")
        explicit = self.name in (getattr(self.ctx, "explicit_targets", None) or ())
        if mode == "no" or (mode == "auto" and not explicit):
            return (f"not installed in {self.home} (--targets {self.name} or --install-peers "
                    "yes installs it)")
        return self.install()

    def install(self) -> str | None:
        """Install into self.home; None on success, else the reason (shown as n/a)."""
        log = getattr(self.ctx, "log", print)
        os.makedirs(peers_dir(), exist_ok=True)
        logfile = os.path.join(peers_dir(), f"{self.folder}-install.log")
        with open(os.path.join(peers_dir(), f".{self.folder}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another harness run may be installing it
            if self.installed():
                return None
            if os.path.exists(self.home):  # an earlier attempt that did not finish
                shutil.rmtree(self.home, ignore_errors=True)
            os.makedirs(self.home)
            log(f"{self.name}: installing {self.what} into {self.home} (once; log {logfile})")
            t0 = time.monotonic()
            with open(logfile, "wb") as out:
                try:
                    self.prepare_home()
                    for argv in self.install_steps():
                        out.write(("$ " + " ".join(argv) + "\n").encode())
                        out.flush()
                        r = subprocess.run(argv, cwd=self.home if os.path.isdir(self.home)
                                           else peers_dir(), stdout=out, stderr=out,
                                           stdin=subprocess.DEVNULL, timeout=INSTALL_TIMEOUT)
                        if r.returncode != 0:
                            raise RuntimeError(f"{os.path.basename(argv[0])} exit "
                                               f"{r.returncode}")
                    self.verify()
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                    shutil.rmtree(self.home, ignore_errors=True)
                    tail = ""
                    try:
                        with open(logfile, "rb") as f:
                            lines = [ln for ln in f.read().decode("utf-8", "replace")
                                     .splitlines() if ln.strip() and "is ignored" not in ln]
                        tail = lines[-1].strip()[:200] if lines else ""
                    except OSError:
                        pass
                    return f"could not install {self.what}: {e}" + (f" ({tail})" if tail else "")
            secs = time.monotonic() - t0
            size = _dir_size(self.home)
            with open(os.path.join(self.home, MARKER), "w") as f:
                json.dump({"what": self.what, "seconds": round(secs, 1), "bytes": size,
                           "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
            self.install_info = {"seconds": secs, "bytes": size, "log": logfile}
            log(f"{self.name}: installed in {secs:.0f} s, {size / 1048576:.0f} MiB")
            return None

    def prepare_home(self):
        pass

    def verify(self):
        pass

    def install_record(self) -> dict:
        """The marker's record: how long the install took and how big it is."""
        try:
            with open(os.path.join(self.home, MARKER)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _prepare_ai(self, scenario):
        if "ai" not in scenario.features:
            raise NotApplicable("an AI gateway: the ai_* scenarios only")
        other = [f for f in scenario.features if f != "ai"]
        if other:
            raise NotApplicable(f"needs {', '.join(other)} (not configured for {self.name})")

    def wait_http(self, prep, path, timeout, headers=None):
        """Until GET path answers 2xx (these start slowly and bind before they are ready)."""
        wait_port(prep.port, prep.proc, timeout)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not prep.proc.alive():
                raise TargetError(f"{self.name} exited with {prep.proc.popen.returncode}: "
                                  f"{_tail(prep.proc)}")
            try:
                req = urllib.request.Request(f"http://{HOST}:{prep.port}{path}",
                                             headers=headers or {})
                with _NO_PROXY.open(req, timeout=5) as r:
                    if 200 <= r.status < 300:
                        return
                    last = r.status
            except urllib.error.HTTPError as e:
                last = e.code
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise TargetError(f"{self.name}: GET {path} not ready after {timeout:.0f}s ({last}): "
                          f"{_tail(prep.proc)}")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _loopback_env(extra=None):
    env = dict(os.environ)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
              "all_proxy"):
        env[k] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


# --- LiteLLM ------------------------------------------------------------------------------

class LiteLLM(Peer):
    """LiteLLM's proxy (``litellm --config``, uvicorn, 1 worker unless --workers), with a
    model_list entry ``openai/bench-chat`` whose api_base is the fake provider. No database:
    the master key is the client's API key. Logging as its production guide has it
    (LITELLM_LOG=ERROR) and uvicorn's per-request access log off, as for every target."""

    name = "litellm"
    folder = f"litellm-{LITELLM_SERIES}"
    what = f"litellm[proxy]=={LITELLM_SERIES}.*"

    def bin(self, name):
        return os.path.join(self.home, "bin", name)

    def install_steps(self):
        return [[sys.executable, "-m", "venv", self.home],
                [self.bin("pip"), "install", "-q", "--disable-pip-version-check", self.what]]

    def prepare_home(self):
        os.rmdir(self.home)  # venv makes it

    def verify(self):
        if not os.access(self.bin("litellm"), os.X_OK):
            raise RuntimeError("no bin/litellm after pip install")

    def version(self):
        try:
            r = subprocess.run([self.bin("python"), "-c", "import importlib.metadata as m; "
                                "print(m.version('litellm'))"], capture_output=True, text=True,
                               timeout=60)
            v = r.stdout.strip() or "?"
        except (OSError, subprocess.TimeoutExpired):
            v = "?"
        w = self.ctx.workers if str(self.ctx.workers or "").isdigit() else 1
        return f"LiteLLM proxy {v} (uvicorn, {w} worker{'s' if str(w) != '1' else ''})"

    def config(self, scenario):
        return {
            "model_list": [{"model_name": ai.MODEL,
                            "litellm_params": {"model": f"openai/{ai.MODEL}",
                                               "api_base": self.ai_base_url(scenario),
                                               "api_key": ai.PROVIDER_KEY}}],
            "general_settings": {"master_key": ai.LITELLM_KEY},
        }

    def prepare(self, scenario, connections):
        self._prepare_ai(scenario)
        wd = self._workdir(scenario)
        port = free_port()
        path = os.path.join(wd, "litellm.yaml")
        with open(path, "w") as f:
            json.dump(self.config(scenario), f, indent=2)  # JSON is YAML
        logcfg = os.path.join(wd, "log_config.json")
        with open(logcfg, "w") as f:
            json.dump(_UVICORN_LOGGING, f)
        argv = [self.bin("litellm"), "--config", path, "--host", HOST, "--port", str(port),
                "--log_config", logcfg]
        if self.ctx.workers and str(self.ctx.workers).isdigit():
            argv += ["--num_workers", str(self.ctx.workers)]
        env = _loopback_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True",
                             "LITELLM_TELEMETRY_DISABLED": "true", "LITELLM_TELEMETRY": "False",
                             "LITELLM_MASTER_KEY": ai.LITELLM_KEY, "LITELLM_LOG": "ERROR",
                             "LITELLM_MODE": "PRODUCTION", "DISABLE_SCHEMA_UPDATE": "true"})
        return Prepared(self, scenario, port, argv, wd, env=env,
                        extra_headers=(("Authorization", f"Bearer {ai.LITELLM_KEY}"),))

    def wait_ready(self, prep):
        self.wait_http(prep, "/health/liveliness", 180.0)


# uvicorn's logging with the per-request access log off (errors still go to stderr)
_UVICORN_LOGGING = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                             "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
                "uvicorn.error": {"level": "INFO"},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
}


# --- Portkey ------------------------------------------------------------------------------

class Portkey(Peer):
    """Portkey's open-source gateway on Node (one process), routed by the client's headers:
    ``x-portkey-provider: openai`` and ``x-portkey-custom-host`` = the fake's base URL."""

    name = "portkey"
    folder = f"portkey-{PORTKEY_VERSION}"
    what = f"@portkey-ai/gateway@{PORTKEY_VERSION} (npm, @hono/node-server {HONO_NODE_SERVER})"

    def node(self):
        return shutil.which("node")

    def prerequisites(self):
        node, npm = self.node(), shutil.which("npm")
        if not node or (not npm and not self.installed()):
            return "node and npm are not installed"
        try:
            v = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
            major = int(v.stdout.strip().lstrip("v").split(".")[0])
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return "node --version failed"
        if major < 18:
            return f"node {v.stdout.strip()} is older than 18"
        return None

    def prepare_home(self):
        with open(os.path.join(self.home, "package.json"), "w") as f:
            json.dump({"name": "fastgate-bench-portkey", "private": True,
                       "description": "Portkey's gateway for fastgate's load harness",
                       "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
                       "overrides": {"@hono/node-server": HONO_NODE_SERVER}}, f, indent=2)

    def install_steps(self):
        return [[shutil.which("npm") or "npm", "install", "--no-audit", "--no-fund",
                 "--loglevel=error"]]

    def server_js(self):
        return os.path.join(self.home, "node_modules", "@portkey-ai", "gateway", "build",
                            "start-server.js")

    def verify(self):
        if not os.path.exists(self.server_js()):
            raise RuntimeError("no build/start-server.js after npm install")

    def version(self):
        try:
            with open(os.path.join(self.home, "node_modules", "@portkey-ai", "gateway",
                                   "package.json")) as f:
                v = json.load(f).get("version", "?")
            with open(os.path.join(self.home, "node_modules", "@hono", "node-server",
                                   "package.json")) as f:
                hv = json.load(f).get("version", "?")
            nv = subprocess.run([self.node(), "--version"], capture_output=True, text=True,
                                timeout=30).stdout.strip()
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return "Portkey gateway ?"
        return f"Portkey gateway {v} (node {nv}, @hono/node-server {hv}, 1 process)"

    def prepare(self, scenario, connections):
        self._prepare_ai(scenario)
        wd = self._workdir(scenario)
        port = free_port()
        with open(os.path.join(wd, "package.json"), "w") as f:  # kept with the results
            with open(os.path.join(self.home, "package.json")) as src:
                f.write(src.read())
        argv = [self.node(), "--require", os.path.join(HERE, "peers_loopback.cjs"),
                self.server_js(), "--headless", f"--port={port}"]
        headers = (("Authorization", "Bearer sk-anything"),
                   ("x-portkey-provider", "openai"),
                   ("x-portkey-custom-host", self.ai_base_url(scenario)))
        return Prepared(self, scenario, port, argv, wd, env=_loopback_env(),
                        extra_headers=headers)

    def wait_ready(self, prep):
        self.wait_http(prep, "/", 60.0)


TARGETS.update({"litellm": LiteLLM, "portkey": Portkey})


def main(argv=None) -> int:
    """``python -m benchmarks.peers [NAME...]``: install the AI gateway peers (default: all)
    ahead of time, as ``./dev.sh test`` does, so their tests run instead of skipping."""
    from benchmarks.runner import Context
    names = (argv if argv is not None else sys.argv[1:]) or ["litellm", "portkey"]
    ctx = Context("/tmp", 1)
    ctx.install_peers = "yes"
    rc = 0
    for name in names:
        peer = {"litellm": LiteLLM, "portkey": Portkey}[name](ctx)
        why = peer.prerequisites() or (None if peer.installed() else peer.install())
        print(f"{name}: {'ready in ' + peer.home if why is None else why}", file=sys.stderr)
        rc = rc or (why is not None)
    return rc


if __name__ == "__main__":
    sys.exit(main())
