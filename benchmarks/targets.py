"""The proxies under test: fastgate, nginx, ``nginx_modsec`` (the same nginx config plus
ModSecurity v3 and OWASP CRS in blocking mode: the ``waf`` scenario's peer, n/a elsewhere),
HAProxy, the floor relay, the AI gateways LiteLLM and Portkey (benchmarks/peers.py, installed
on demand outside the repo) and ``direct`` (the fake provider itself, no gateway: the baseline
of the added-latency figures).

Each target turns a scenario into a config of its own (in the run's temp dir, never a system
config), starts one instance pinned to the gateway CPUs and says when it is ready. A scenario
names the gateway features it needs (see ``scenarios.FEATURES``); a target that cannot
provide one raises ``NotApplicable`` and the table shows "n/a: needs <feature>". For fastgate
that decision is not hard-coded: its generated config is given to ``fastgate check`` and a
rejection means the feature has not landed yet, so scenarios light up by themselves.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace

from benchmarks import ai
from benchmarks.procs import Proc
from benchmarks.tls_fixture import TLS12_CIPHERS

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUTE_PATHS = ["/tiny", "/health", "/bytes/*", "/sse"]
MAX_BODY = 64 << 20
# 10,000 idle connections plus headroom: every generated config raises its connection cap
MAX_CONNECTIONS = 20000


class NotApplicable(Exception):
    """The target cannot run this scenario; str() is the reason shown in the table."""


class TargetError(Exception):
    """The target failed on a scenario it should support (counts as a gateway error)."""


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port to listen on, below the kernel's ephemeral range: a port chosen by bind(0) is
    an ephemeral one, and between the choice and the target's listen() an outgoing connection
    (another gateway's to the upstream, the load generator's) may take it: EADDRINUSE."""
    import random
    low = _ephemeral_low()
    if low > 2048:
        for _ in range(200):
            p = random.randint(max(1024, low - 12000), low - 1)
            if p in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind((HOST, p))
                except OSError:
                    continue
            _handed_out.add(p)
            return p
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise TargetError(f"{proc.name} exited with {proc.popen.returncode}: "
                              f"{_tail(proc)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TargetError(f"{proc.name} not accepting on {port} after {timeout:.0f}s: "
                      f"{_tail(proc)}")


class Prepared:
    def __init__(self, target, scenario, port, argv, workdir, env=None, access_log=None,
                 extra_headers=(), path=None):
        self.target = target
        self.scenario = scenario
        self.port = port
        self.argv = argv
        self.workdir = workdir
        self.env = env
        self.access_log = access_log  # the file the target logs requests to, if any
        self.tls = "tls" in scenario.features
        self.proc: Proc | None = None
        # what this target's clients send besides the scenario's own request: API keys,
        # Portkey's routing headers; the direct target's path is the fake's own
        self.extra_headers = tuple(extra_headers)
        self.path = path

    def request_head(self, jwt_token=None) -> str:
        return self.scenario.request_head(jwt_token, self.extra_headers, self.path)

    def config_text(self) -> str | None:
        """The generated config (kept with the results: what exactly ran)."""
        for name in ("fastgate.yaml", "nginx.conf", "haproxy.cfg", "litellm.yaml",
                     "package.json"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                with open(path) as f:
                    text = f.read()
                modsec = os.path.join(self.workdir, "main.conf")  # nginx_modsec's rules file
                if name == "nginx.conf" and os.path.exists(modsec):
                    with open(modsec) as f:
                        text += f"\n# ---- {modsec} ----\n" + f.read()
                return text
        return None


def ai_client_headers(scenario, key):
    """An OpenAI client's API key, for AI scenarios only."""
    return (("Authorization", f"Bearer {key}"),) if "ai" in scenario.features else ()


class Target:
    name = "?"
    baseline = False  # not a gateway: left out of the ratio columns

    def __init__(self, ctx):
        self.ctx = ctx  # benchmarks.runner.Context: tmp dir, upstream port, fixtures, workers

    def applies(self, scenario) -> bool:
        """False: the scenario is not for this kind of target, which is left out of its table
        altogether (an AI-only gateway in a passthrough scenario), rather than shown n/a."""
        return True

    def availability(self) -> str | None:
        """None when usable, else the reason it is not."""
        raise NotImplementedError

    def version(self) -> str:
        return ""

    def prepare(self, scenario, connections) -> Prepared:
        """Config for scenario with this many client connections."""
        raise NotImplementedError

    def start(self, prep: Prepared, cpus) -> Proc:
        log = os.path.join(prep.workdir, "stderr.log")
        prep.proc = Proc(f"{self.name}[{prep.scenario.name}]", prep.argv, cpus=cpus,
                         log_path=log, env=prep.env, cwd=prep.workdir)
        self.wait_ready(prep)
        return prep.proc

    def wait_ready(self, prep: Prepared):
        wait_port(prep.port, prep.proc, 15.0)

    def _workdir(self, scenario) -> str:
        d = os.path.join(self.ctx.tmp, f"{self.name}-{scenario.name}")
        os.makedirs(d, exist_ok=True)
        return d

    def ai_base_url(self, scenario) -> str:
        """The fake provider's OpenAI base URL for this scenario's stream shape."""
        return f"http://{HOST}:{self.ctx.upstream_port}{scenario.upstream_base}"

    def redis_url(self) -> str:
        """URL of the scenario's redis-server (started by the runner), or n/a without one."""
        r = getattr(self.ctx, "redis", None)
        if r is None or r.port is None:
            raise NotApplicable(getattr(self.ctx, "redis_error", None)
                                or "redis-server not running")
        return r.url


# A limit that never trips at any rate this machine reaches: what is measured is the cost of
# keeping the counters, not of refusing.
NEVER_TRIPS = 10_000_000


# --- fastgate -------------------------------------------------------------------------------

class Fastgate(Target):
    name = "fastgate"
    repo = REPO

    def _cmd(self):
        if self.ctx.fastgate_cmd:
            return list(self.ctx.fastgate_cmd)
        return [sys.executable, "-m", "fastgate"]

    def _env(self):
        # the checkout's fastgate, whether or not it is pip-installed into this python
        pp = os.environ.get("PYTHONPATH")
        return dict(os.environ, PYTHONPATH=self.repo + (os.pathsep + pp if pp else ""))

    def availability(self):
        try:
            r = subprocess.run(self._cmd() + ["--help"], capture_output=True, timeout=30,
                               env=self._env(), cwd=self.ctx.tmp)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"fastgate not runnable: {e}"
        if r.returncode != 0:
            last = (r.stderr or r.stdout).decode("utf-8", "replace").strip().splitlines()
            return "fastgate not runnable: " + (last[-1] if last else f"exit {r.returncode}")
        return None

    def version(self):
        try:
            r = subprocess.run([sys.executable, "-c",
                                "import fastgate; print(fastgate.__version__)"],
                               capture_output=True, timeout=30, text=True, env=self._env(),
                               cwd=self.ctx.tmp)
            v = r.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            v = ""
        commit = _git_commit(self.repo)
        return f"fastgate {v or '?'}" + (f" ({commit})" if commit else "")

    def config(self, scenario, port):
        route = {"name": "bench", "paths": ROUTE_PATHS, "upstream": "bench"}
        listener = {"bind": f"{HOST}:{port}"}
        cfg = {
            "listeners": [listener],
            "limits": {"max_connections": MAX_CONNECTIONS, "keepalive_timeout_s": 300,
                       "max_body_bytes": MAX_BODY},
            "upstreams": {"bench": {"targets": [{"url": f"http://{HOST}:{self.ctx.upstream_port}"}],
                                    "keepalive": 256}},
            "routes": [route],
            "logging": {"access_log": "off"},
        }
        feats = scenario.features
        if "jwt_rs256" in feats:
            jwt = self.ctx.jwt()
            cfg["auth"] = {"bench-jwt": {"type": "jwt", "issuer": jwt.issuer,
                                         "audiences": [jwt.audience], "algorithms": ["RS256"],
                                         "jwks_file": jwt.jwks_path}}
            cfg["consumers"] = [{"name": "bench", "jwt_subjects": [jwt.subject]}]
            route["auth"] = {"using": ["bench-jwt"]}
        by = "consumer" if "jwt_rs256" in feats else "ip"
        if "rate_limit" in feats:
            route["rate_limits"] = [{"limit": NEVER_TRIPS, "per": "second", "by": by,
                                     "scope": "local"}]
        if "rate_limit_cluster" in feats:
            route["rate_limits"] = [{"limit": NEVER_TRIPS, "per": "second", "by": by,
                                     "scope": "cluster"}]
            # deny, not the default allow: a limiter that lost Redis and let everything through
            # unmetered would be measured cheap; this way it shows up as errors instead
            cfg["redis"] = {"url": self.redis_url(), "on_error": "deny"}
        if "metrics" in feats:
            cfg["admin"] = {"bind": f"{HOST}:{free_port()}", "token": "bench-admin-token"}
        if "tls" in feats:
            tls = self.ctx.tls()
            listener["tls"] = {"cert_file": tls.cert_path, "key_file": tls.key_path,
                               "min_version": "TLSv1.2"}
        if "access_log" in feats:
            cfg["logging"]["access_log"] = self.access_log_path(scenario)
        if "waf" in feats:
            route["waf"] = {"mode": "block"}
        if "ai" in feats:
            # SPEC "AI gateway": one openai provider (the fake), one model, a chat route
            cfg["ai"] = {
                "providers": {"fake": {"type": "openai", "base_url": self.ai_base_url(scenario),
                                       "api_key": ai.PROVIDER_KEY}},
                "models": [{"name": ai.MODEL, "provider": "fake", "model": ai.MODEL,
                            "price": {"input_per_1k": 0.00015, "output_per_1k": 0.0006}}]}
            cfg["routes"].insert(0, {"name": "llm", "paths": ["/v1/chat/completions"],
                                     "ai": {"endpoint": "chat"}})
        # request_id: always on in fastgate (SPEC: X-Request-ID generated and echoed)
        return cfg

    def access_log_path(self, scenario):
        return os.path.join(self._workdir(scenario), "access.log")

    def _check(self, path, wd):
        """(exit code, output lines) of ``fastgate check -c path``."""
        try:
            r = subprocess.run(self._cmd() + ["check", "-c", path], capture_output=True,
                               timeout=60, text=True, cwd=wd, env=self._env())
        except subprocess.TimeoutExpired:
            raise TargetError("fastgate check timed out") from None
        lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        if r.returncode not in (0, 2):
            raise TargetError(f"fastgate check exit {r.returncode}: {lines[-1] if lines else ''}")
        return r.returncode, lines

    def prepare(self, scenario, connections):
        wd = self._workdir(scenario)
        port = free_port()
        path = os.path.join(wd, "fastgate.yaml")
        _write_yaml(path, self.config(scenario, port))
        rc, lines = self._check(path, wd)
        if rc == 2:
            # name the features that are missing: check each one on its own
            missing, why = [], []
            for feat in scenario.features:
                one = os.path.join(wd, f"check-{feat}.yaml")
                _write_yaml(one, self.config(replace(scenario, features=(feat,)), port))
                frc, flines = self._check(one, wd)
                if frc == 2:
                    missing.append(feat)
                    why.extend(flines[:1])
            if not missing:  # only the combination fails, or the base config itself
                missing, why = list(scenario.features) or ["its config"], lines[:1]
            raise NotApplicable(f"needs {', '.join(missing)}"
                                + (f" ({'; '.join(dict.fromkeys(why))})" if why else ""))
        argv = self._cmd() + ["run", "-c", path]
        if self.ctx.workers:
            argv += ["--workers", str(self.ctx.workers)]
        return Prepared(self, scenario, port, argv, wd, env=self._env(),
                        access_log=(self.access_log_path(scenario)
                                    if "access_log" in scenario.features else None),
                        extra_headers=ai_client_headers(scenario, ai.CLIENT_KEY))

    def wait_ready(self, prep):
        # fastgate says "listening on ADDR" on stderr per listener when it is ready
        deadline = time.monotonic() + 30.0
        log = os.path.join(prep.workdir, "stderr.log")
        while time.monotonic() < deadline:
            try:
                with open(log, "rb") as f:
                    if b"listening on" in f.read():
                        break
            except OSError:
                pass
            if not prep.proc.alive():
                raise TargetError(f"fastgate exited with {prep.proc.popen.returncode}: "
                                  f"{_tail(prep.proc)}")
            time.sleep(0.05)
        else:
            raise TargetError(f"fastgate did not log 'listening on' in 30s: {_tail(prep.proc)}")
        wait_port(prep.port, prep.proc, 10.0)


def _write_yaml(path, cfg):
    try:
        import yaml
    except ImportError:  # JSON is valid YAML
        text = json.dumps(cfg, indent=2)
    else:
        text = yaml.safe_dump(cfg, sort_keys=False)
    with open(path, "w") as f:
        f.write(text)


class FastgateBase(Fastgate):
    """Another checkout of fastgate (``--base-repo DIR``, its extensions built in place),
    measured side by side with this one: ``--targets fastgate,fastgate-base`` puts the
    change's cost in the ratio column, from one interleaved run."""

    name = "fastgate-base"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.repo = os.path.abspath(os.environ.get("FASTGATE_BASE_REPO", ""))

    def availability(self):
        if not os.environ.get("FASTGATE_BASE_REPO"):
            return "no --base-repo given"
        return super().availability()


def _git_commit(here=REPO):
    try:
        r = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if r.returncode != 0:
        return ""
    commit = r.stdout.strip()
    try:  # the gateway measured is the work tree, which may be ahead of the commit
        d = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "fastgate",
                            "setup.py"], capture_output=True, text=True, timeout=10)
        if d.returncode == 0 and d.stdout.strip():
            commit += "+uncommitted changes"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return commit


# --- nginx ----------------------------------------------------------------------------------

class Nginx(Target):
    name = "nginx"

    def binary(self):
        return shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
            None)

    def availability(self):
        return None if self.binary() else "nginx not installed"

    def version(self):
        r = subprocess.run([self.binary(), "-v"], capture_output=True, text=True)
        return (r.stderr or r.stdout).strip().replace("nginx version: ", "")

    def config(self, scenario, port, wd):
        w = self.ctx.workers or 1
        http_extra, loc_extra, server_extra = [], [], []
        feats = scenario.features
        if "jwt_rs256" in feats:
            raise NotApplicable("needs jwt_rs256 (nginx open source has no JWT validation)")
        if "rate_limit_cluster" in feats:
            raise NotApplicable("needs rate_limit_cluster (nginx open source keeps limit_req "
                                "state per instance; it has no Redis-backed limit)")
        main_extra = []
        if "waf" in feats:
            waf_main, waf_http = self.waf_directives(scenario, wd)
            main_extra += waf_main
            http_extra += waf_http
        if "rate_limit" in feats:
            http_extra.append("limit_req_zone $binary_remote_addr zone=bench:10m rate=1000000r/s;")
            loc_extra.append("limit_req zone=bench burst=1000000 nodelay;")
        if "access_log" in feats:
            # the fields of fastgate's access-log line, as JSON; defined before its use
            access_log = (
                "log_format bench_json escape=json '{\"time\":\"$time_iso8601\","
                "\"request_id\":\"$request_id\",\"client_ip\":\"$remote_addr\","
                "\"method\":\"$request_method\",\"path\":\"$uri\",\"query\":\"$args\","
                "\"status\":$status,\"bytes_in\":$request_length,\"bytes_out\":$bytes_sent,"
                "\"duration_s\":$request_time,"
                "\"upstream_duration_s\":\"$upstream_response_time\",\"route\":\"bench\","
                "\"upstream\":\"$upstream_addr\",\"user_agent\":\"$http_user_agent\"}';\n    "
                f"access_log {self.access_log_path(scenario, wd)} bench_json "
                "buffer=64k flush=1s;")
        else:
            access_log = "access_log off;"
        listen_extra = ""
        if "tls" in feats:
            tls = self.ctx.tls()
            listen_extra = " ssl"
            server_extra += [f"ssl_certificate {tls.cert_path};",
                             f"ssl_certificate_key {tls.key_path};",
                             "ssl_protocols TLSv1.2 TLSv1.3;",
                             f"ssl_ciphers {TLS12_CIPHERS};",
                             "ssl_prefer_server_ciphers on;"]
        if "metrics" in feats:
            server_extra.append("location = /nginx_status { stub_status; }")
        if "ai" in feats:
            # no AI work at all: the path proxied to the fake provider, the floor of the rows
            server_extra.append(
                "location = /v1/chat/completions { "
                f"proxy_pass http://bench{scenario.upstream_base}/chat/completions; "
                "proxy_http_version 1.1; proxy_set_header Connection \"\"; "
                "proxy_set_header Host $host; "
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }")
        if "request_id" in feats:
            loc_extra.append("proxy_set_header X-Request-ID $request_id;")
            loc_extra.append("add_header X-Request-ID $request_id always;")
        tmp = lambda n: os.path.join(wd, n)  # noqa: E731
        # client plus upstream connections, within the fds this process may open
        worker_connections = max(1024, min(MAX_CONNECTIONS * 2, self.ctx.nofile - 100))
        return f"""
{' '.join(main_extra)}
worker_processes {w};
daemon off;
master_process on;
user root;
pid {tmp('nginx.pid')};
error_log {tmp('error.log')} warn;
worker_rlimit_nofile {self.ctx.nofile};
events {{ worker_connections {worker_connections}; multi_accept on; }}
http {{
    {access_log}
    client_body_temp_path {tmp('client_body')};
    proxy_temp_path {tmp('proxy')};
    fastcgi_temp_path {tmp('fastcgi')};
    uwsgi_temp_path {tmp('uwsgi')};
    scgi_temp_path {tmp('scgi')};
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_max_body_size {MAX_BODY};
    # stream bodies both ways instead of spooling them to temp files
    proxy_request_buffering off;
    proxy_max_temp_file_size 0;
    # the 4k/8k default buffers cost a syscall pair per page on 1 MiB bodies; a deployment
    # that proxies large bodies raises them, so the comparison does too
    client_body_buffer_size 128k;
    proxy_buffer_size 16k;
    proxy_buffers 16 64k;
    proxy_busy_buffers_size 128k;
    {' '.join(http_extra)}
    upstream bench {{
        server {HOST}:{self.ctx.upstream_port};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {HOST}:{port}{listen_extra} backlog=4096;
        {' '.join(server_extra)}
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            {' '.join(loc_extra)}
        }}
    }}
}}
"""

    def waf_directives(self, scenario, wd):
        """(main-context, http-context) directives that turn a WAF on: nginx itself has none."""
        raise NotApplicable("needs waf (nginx has none: the nginx_modsec target is nginx + "
                            "ModSecurity v3 + OWASP CRS)")

    def prepare(self, scenario, connections):
        wd = self._workdir(scenario)
        port = free_port()
        path = os.path.join(wd, "nginx.conf")
        with open(path, "w") as f:
            f.write(self.config(scenario, port, wd))
        r = subprocess.run([self.binary(), "-t", "-p", wd, "-c", path, "-e",
                            os.path.join(wd, "error.log")], capture_output=True, text=True)
        if r.returncode != 0:
            msg = r.stderr.strip().splitlines() or [f"exit {r.returncode}"]
            raise TargetError("nginx -t: " + next((ln for ln in msg if "[emerg]" in ln), msg[-1]))
        return Prepared(self, scenario, port,
                        [self.binary(), "-p", wd, "-c", path, "-e", os.path.join(wd, "error.log")],
                        wd, access_log=(self.access_log_path(scenario, wd)
                                        if "access_log" in scenario.features else None),
                        extra_headers=ai_client_headers(scenario, ai.PROVIDER_KEY))

    def access_log_path(self, scenario, wd):
        return os.path.join(wd, "access.log")


# --- nginx + ModSecurity v3 + OWASP CRS ------------------------------------------------------

MODSEC_MODULE = "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so"
# ModSecurity's recommended base config: upstream's name for it first, then the copies the
# Debian connector package (libnginx-mod-http-modsecurity) ships; each has unicode.mapping
# beside it, which its SecUnicodeMapFile names relative to itself
MODSEC_BASE = ("/etc/modsecurity/modsecurity.conf-recommended",
               "/usr/share/nginx/docs/modsecurity/modsecurity.conf",
               "/etc/nginx/modsecurity.conf")
CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"
CRS_RULES = "/usr/share/modsecurity-crs/rules"
# the Debian package's (optional) exclusion files around the rules, as its owasp-crs.load
CRS_BEFORE = "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"
CRS_AFTER = "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"
CRS_PARANOIA = 1
CRS_INBOUND_THRESHOLD = 5
CRS_OUTBOUND_THRESHOLD = 4


def modsec_base_conf():
    return next((p for p in MODSEC_BASE if os.path.isfile(p)), None)


def crs_rule_files():
    import glob
    return sorted(glob.glob(os.path.join(CRS_RULES, "*.conf")))


class NginxModsec(Nginx):
    """nginx with the ModSecurity v3 connector and OWASP CRS in blocking mode: the peer of
    fastgate's WAF in the ``waf`` scenario (and of benchmarks/waf_compare.py). The nginx
    config is the ``nginx`` target's plus ``modsecurity on; modsecurity_rules_file main.conf``;
    main.conf (in the target's working dir) includes ModSecurity's recommended config, turns
    the rule engine to blocking, keeps request bodies inspected (its rule 200001 hands
    application/json to the JSON body processor), turns off the audit log, the debug log and
    the response body inspection (fastgate's WAF inspects requests only), then includes
    crs-setup.conf at paranoia level 1 (inbound anomaly threshold 5) and the CRS rule files,
    minus any this ModSecurity refuses to load (REQUEST-910 without GeoIP, if so)."""

    name = "nginx_modsec"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.excluded = {}    # rule file -> why ModSecurity refused it
        self._rules = None    # the rule files that load, found once per target

    def availability(self):
        why = super().availability()
        if why:
            return why
        if not os.path.isfile(MODSEC_MODULE):
            return (f"no ModSecurity nginx module ({MODSEC_MODULE}: apt-get install "
                    "libnginx-mod-http-modsecurity)")
        if not modsec_base_conf():
            return "no ModSecurity base config (" + ", ".join(MODSEC_BASE) + ")"
        if not os.path.isfile(CRS_SETUP) or not crs_rule_files():
            return (f"no OWASP CRS ({CRS_SETUP}, {CRS_RULES}/*.conf: apt-get install "
                    "modsecurity-crs)")
        return None

    def version(self):
        import glob
        lib = next(iter(sorted(glob.glob("/usr/lib/*/libmodsecurity.so.3*")
                               + glob.glob("/usr/local/modsecurity/lib/libmodsecurity.so.3*"))),
                   "")
        ms = os.path.basename(os.path.realpath(lib)).replace("libmodsecurity.so.", "") if lib \
            else "?"
        crs = "?"
        try:
            with open(os.path.join(CRS_RULES, "REQUEST-901-INITIALIZATION.conf")) as f:
                for line in f:
                    if "Core Rule Set ver." in line:
                        crs = line.split("ver.", 1)[1].strip()
                        break
        except OSError:
            pass
        return (f"{super().version()} + ModSecurity {ms} + OWASP CRS {crs} "
                f"(PL{CRS_PARANOIA}, blocking)")

    def main_conf(self, wd, rule_files):
        """ModSecurity's rules file for this run (a string; written to wd/main.conf)."""
        tmp = os.path.join(wd, "modsec-tmp")
        os.makedirs(tmp, exist_ok=True)
        lines = [
            "# generated by benchmarks/targets.py (nginx_modsec)",
            f"Include {modsec_base_conf()}",
            "SecRuleEngine On",
            "SecRequestBodyAccess On",
            "SecResponseBodyAccess Off",
            "SecAuditEngine Off",
            f"SecAuditLog {os.path.join(wd, 'modsec_audit.log')}",
            "SecDebugLogLevel 0",
            "SecStatusEngine Off",
            f"SecTmpDir {tmp}",
            f"SecDataDir {tmp}",
            f"Include {CRS_SETUP}",
            # the settings crs-setup.conf ships commented out (ids 900000, 900110); set
            # before REQUEST-901, which only fills in the ones left unset
            f'SecAction "id:900000,phase:1,nolog,pass,t:none,'
            f'setvar:tx.paranoia_level={CRS_PARANOIA}"',
            f'SecAction "id:900110,phase:1,nolog,pass,t:none,'
            f'setvar:tx.inbound_anomaly_score_threshold={CRS_INBOUND_THRESHOLD},'
            f'setvar:tx.outbound_anomaly_score_threshold={CRS_OUTBOUND_THRESHOLD}"',
        ]
        if os.path.isfile(CRS_BEFORE):
            lines.append(f"Include {CRS_BEFORE}")
        lines += [f"Include {p}" for p in rule_files]
        if os.path.isfile(CRS_AFTER):
            lines.append(f"Include {CRS_AFTER}")
        return "\n".join(lines) + "\n"

    def _nginx_t(self, conf_path, wd):
        r = subprocess.run([self.binary(), "-t", "-p", wd, "-c", conf_path, "-e",
                            os.path.join(wd, "error.log")], capture_output=True, text=True,
                           timeout=120)
        return None if r.returncode == 0 else (r.stderr or r.stdout or f"exit {r.returncode}")

    def rule_files(self, wd):
        """The CRS rule files that this ModSecurity loads: every one, minus each that a
        minimal nginx config with it fails ``nginx -t`` on (named in the error)."""
        if self._rules is not None:
            return self._rules
        files = crs_rule_files()
        main = os.path.join(wd, "main.conf")
        probe = os.path.join(wd, "modsec-check.conf")
        with open(probe, "w") as f:
            f.write(f"load_module {MODSEC_MODULE};\npid {os.path.join(wd, 'check.pid')};\n"
                    "events { worker_connections 64; }\n"
                    f"http {{ modsecurity on; modsecurity_rules_file {main}; "
                    f"server {{ listen {HOST}:1; }} }}\n")  # -t binds nothing
        while True:
            with open(main, "w") as f:
                f.write(self.main_conf(wd, files))
            err = self._nginx_t(probe, wd)
            if err is None:
                break
            bad = next((p for p in files if p in err), None)
            if bad is None:
                line = next((ln for ln in err.splitlines() if "[emerg]" in ln), err.strip())
                raise TargetError(f"ModSecurity + CRS do not load: {line}")
            self.excluded[bad] = " ".join(err.split())[:300]
            files.remove(bad)
        self._rules = files
        return files

    def waf_directives(self, scenario, wd):
        main = os.path.join(wd, "main.conf")
        with open(main, "w") as f:
            f.write(self.main_conf(wd, self.rule_files(wd)))
        return ([f"load_module {MODSEC_MODULE};"],
                ["modsecurity on;", f"modsecurity_rules_file {main};"])

    def prepare(self, scenario, connections):
        if "waf" not in scenario.features:
            raise NotApplicable("only the waf scenario")
        return super().prepare(scenario, connections)


# --- HAProxy --------------------------------------------------------------------------------

class Haproxy(Target):
    name = "haproxy"

    def binary(self):
        return shutil.which("haproxy") or next(
            (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
            None)

    def availability(self):
        return None if self.binary() else "haproxy not installed"

    def version(self):
        r = subprocess.run([self.binary(), "-v"], capture_output=True, text=True)
        first = r.stdout.strip().splitlines()[0] if r.stdout.strip() else "?"
        return " ".join(first.split()[:3])

    def maxconn(self):
        # haproxy refuses to start when 2*maxconn + its own fds exceed RLIMIT_NOFILE
        return min(MAX_CONNECTIONS, (self.ctx.nofile - 200) // 2)

    def config(self, scenario, port, wd):
        w = str(self.ctx.workers or 1)
        threads = int(w) if w.isdigit() else max(1, len(self.ctx.gw_cpus or [1]))
        fe = []
        if scenario.streaming:
            # without it HAProxy sends with MSG_MORE and the kernel holds a stream's first
            # bytes until more arrive: measured 88 ms to the response head of an SSE stream
            fe.append("option http-no-delay")
        feats = scenario.features
        if "rate_limit_cluster" in feats:
            raise NotApplicable("needs rate_limit_cluster (HAProxy shares stick-tables only "
                                "with its peers protocol, not through Redis)")
        if "access_log" in feats:
            raise NotApplicable("needs access_log (HAProxy logs to syslog or stdout only: "
                                "no buffered file log without a syslog daemon)")
        if "request_id" in feats:
            fe += ["unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid",
                   "unique-id-header X-Request-ID",
                   "http-response set-header X-Request-ID %[unique-id]"]
        if "jwt_rs256" in feats:
            jwt = self.ctx.jwt()
            # HAProxy verifies the signature on every request (it has no verified-token cache)
            fe += ["http-request set-var(txn.bearer) http_auth_bearer",
                   "http-request set-var(txn.now) date()",
                   f'http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify("RS256","{jwt.public_pem_path}") -m int 1 }}',
                   f"http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.iss') -m str {jwt.issuer} }}",
                   f"http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.aud') -m str {jwt.audience} }}",
                   "http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')",
                   "http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }",
                   "http-request set-header X-User-Id %[var(txn.bearer),jwt_payload_query('$.sub')]"]
        if "rate_limit" in feats:
            # a stick-table per client address counting requests per second, refused above
            # the limit: HAProxy's documented rate-limiting recipe
            fe += ["stick-table type ip size 100k expire 30s store http_req_rate(1s)",
                   "http-request track-sc0 src",
                   "http-request deny deny_status 429 if "
                   f"{{ sc_http_req_rate(0) gt {NEVER_TRIPS} }}"]
        if "metrics" in feats:
            # counters are always on in HAProxy; this exposes them like fastgate's admin API
            fe += ["stats enable", "stats uri /haproxy_stats"]
        if "waf" in feats:
            raise NotApplicable("needs waf (HAProxy open source has none)")
        if "ai" in feats:
            # a plain proxy of the path to the fake provider: a floor, no AI work
            fe.append(f"http-request set-path {scenario.upstream_base}%[path] "
                      "if { path /v1/chat/completions }")
        fe_text = "\n    ".join(fe)
        bind, proto = f"{HOST}:{port} backlog 4096", "http"
        if "tls" in feats:
            tls = self.ctx.tls()
            bind += (f" ssl crt {tls.full_path} ssl-min-ver TLSv1.2 ciphers {TLS12_CIPHERS}"
                     " alpn http/1.1")
            proto = "https"
        return f"""
global
    nbthread {threads}
    maxconn {self.maxconn()}
    tune.maxrewrite 1024
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    option forwardfor
    http-reuse always
    maxconn {self.maxconn()}
frontend bench
    bind {bind}
    http-request set-header X-Forwarded-Proto {proto}
    {fe_text}
    default_backend bench
backend bench
    server up {HOST}:{self.ctx.upstream_port} pool-max-conn 256 pool-purge-delay 300s
"""

    def prepare(self, scenario, connections):
        if connections > self.maxconn():
            raise NotApplicable(
                f"HAProxy reserves 2 fds per connection: maxconn {self.maxconn()} is all "
                f"RLIMIT_NOFILE {self.ctx.nofile} allows, {connections:,} needed")
        wd = self._workdir(scenario)
        port = free_port()
        path = os.path.join(wd, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.config(scenario, port, wd))
        r = subprocess.run([self.binary(), "-c", "-q", "-f", path], capture_output=True, text=True)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise TargetError("haproxy -c: " + (msg[-1] if msg else f"exit {r.returncode}"))
        return Prepared(self, scenario, port, [self.binary(), "-db", "-f", path], wd,
                        extra_headers=ai_client_headers(scenario, ai.PROVIDER_KEY))


class Floor(Target):
    """A minimal uvloop + httptools relay written here (benchmarks/floor.py): what Python
    can do per request with no features at all, beside nginx and HAProxy in every table."""

    name = "floor"

    def availability(self):
        try:
            import httptools  # noqa: F401
            import uvloop  # noqa: F401
        except ImportError as e:
            return f"floor needs {e.name}"
        return None

    def version(self):
        import httptools
        return f"uvloop + httptools {httptools.__version__} relay"

    def prepare(self, scenario, connections):
        if scenario.features:
            raise NotApplicable("no features (a bare relay)")
        wd = self._workdir(scenario)
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.floor", str(port), str(self.ctx.upstream_port)]
        pp = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=REPO + (os.pathsep + pp if pp else ""))
        return Prepared(self, scenario, port, argv, wd, env=env)


class Direct(Target):
    """The fake provider itself, called by the load generator with no gateway in between: a
    second instance of benchmarks.upstream pinned to the gateway CPUs like any target, so
    that "gateway p99 minus direct p99" is what a gateway adds (its work plus one hop)."""

    name = "direct"
    baseline = True

    def applies(self, scenario):
        return "ai" in scenario.features

    def availability(self):
        return None

    def version(self):
        return "the fake OpenAI provider (benchmarks/upstream.py) called directly"

    def prepare(self, scenario, connections):
        if set(scenario.features) - {"ai"}:
            raise NotApplicable("no features (the fake provider itself)")
        wd = self._workdir(scenario)
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.upstream", "--port", str(port)]
        pp = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=REPO + (os.pathsep + pp if pp else ""))
        return Prepared(self, scenario, port, argv, wd, env=env,
                        extra_headers=ai_client_headers(scenario, ai.PROVIDER_KEY),
                        path=scenario.upstream_base + "/chat/completions")


TARGETS = {"fastgate": Fastgate, "fastgate-base": FastgateBase, "nginx": Nginx,
           "nginx_modsec": NginxModsec, "haproxy": Haproxy, "floor": Floor, "direct": Direct}


def _tail(proc, n=3):
    return " | ".join(ln.strip() for ln in proc.log_tail(n).splitlines() if ln.strip())


# the AI gateways (benchmarks/peers.py) build on the classes above and add themselves to
# TARGETS; whichever of the two modules is imported first, both are complete afterwards
import benchmarks.peers  # noqa: E402,F401
