"""Runs scenarios against targets: start, measure round by round, collect, stop.

Per load scenario, every available target is started at once (all pinned to the gateway CPUs,
each on its own port; an instance that is not being measured is idle) and then measured
interleaved, the order rotated each round, so that drift on a shared machine hits all of them
alike:

  1. max phase   closed loop, ``max_rounds`` rounds: requests/s, latency and CPU/request at
                 saturation (on 2 cores the load side saturates before nginx does).
  2. rate phase  open loop at a fixed offered rate, ``rounds`` rounds: CPU microseconds per
                 request and coordinated-omission-corrected latency. The headline figure is the
                 median over rounds, and each ratio is the median of the per-round ratios.
                 When a target's max throughput is below the scenario rate, the rate is
                 lowered for all (and the table says so) so that every target is measured at
                 the same offered load below its saturation.
  3. c1 phase    scenarios with ``c1`` (the AI ones): closed loop on one connection,
                 ``max_rounds`` rounds: latency (and time to first token) with nothing queued,
                 read against the ``direct`` target (the fake provider without a gateway).

Gateway CPU is utime+stime (+ reaped children) from /proc/<pid>/stat of the whole process tree
of the target, sampled at the edges of the measurement window.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks import procs as P
from benchmarks import stats
from dataclasses import replace

from benchmarks.scenarios import Scenario
from benchmarks.targets import TARGETS, HOST, Fastgate, NotApplicable, TargetError, free_port

mono = time.monotonic
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HarnessError(Exception):
    pass


class Context:
    def __init__(self, tmp, upstream_port, workers=None, fastgate_cmd=None, nofile=1024,
                 tls_version=None):
        self.nofile = nofile  # RLIMIT_NOFILE every started process inherits
        self.tmp = tmp
        self.upstream_port = upstream_port
        self.workers = workers
        self.fastgate_cmd = fastgate_cmd
        self.tls_version = tls_version  # client's highest TLS version: None (best) or "1.2"
        self.install_peers = "auto"  # benchmarks.peers: auto | yes | no
        self.explicit_targets = ()   # targets the user named (auto installs those)
        self.log = print
        self.redis = None        # benchmarks.redisd.RedisServer while a scenario needs one
        self.redis_error = None  # why there is none, shown as the n/a reason
        self.load_cpus = None
        self.gw_cpus = None
        self.unavailable = {}
        self._jwt = None
        self._tls = None

    def jwt(self):
        if self._jwt is None:
            from benchmarks.jwt_fixture import JwtFixture
            self._jwt = JwtFixture(self.tmp)
        return self._jwt

    def tls(self):
        """The test CA and server certificate, made once per run in the temp dir."""
        if self._tls is None:
            from benchmarks.tls_fixture import TlsFixture
            self._tls = TlsFixture(self.tmp)
        return self._tls

    def client_tls(self):
        from benchmarks.tls_fixture import client_context
        return client_context(self.tls().ca_path, self.tls_version)


class Settings:
    def __init__(self, *, rounds=5, max_rounds=3, warmup=1.0, duration=3.0, procs=1,
                 rate=None, connections=None, idle_connections=None, loadgen="bundled",
                 smoke=False, pacing="precise", max_wait=0.05, retries=2, tls_version=None,
                 install_peers="auto", explicit_targets=(), log=print):
        self.install_peers = install_peers
        self.explicit_targets = tuple(explicit_targets)
        self.tls_version = tls_version
        self.pacing = pacing
        self.max_wait = max_wait  # runqueue-wait fraction above which a round is retaken
        self.retries = retries
        self.rounds = rounds
        self.max_rounds = max_rounds
        self.warmup = warmup
        self.duration = duration
        self.procs = procs
        self.rate = rate
        self.connections = connections
        self.idle_connections = idle_connections
        self.loadgen = loadgen
        self.smoke = smoke
        self.log = log


# --- talking to load generator processes ---------------------------------------------------

class LineReader:
    """Line-at-a-time reads from a pipe with a deadline (a stuck child must not hang us)."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""

    def readline(self, timeout):
        deadline = mono() + timeout
        while b"\n" not in self.buf:
            left = deadline - mono()
            if left <= 0:
                raise HarnessError("load generator did not answer in time")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise HarnessError("load generator exited")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


class LoadGen:
    """One bundled load generator process."""

    def __init__(self, spec, cpus, logdir, tag):
        log = os.path.join(logdir, f"loadgen-{tag}.log")
        self.proc = P.Proc(f"loadgen-{tag}", [sys.executable, "-m", "benchmarks.loadgen"],
                           cpus=cpus, log_path=log, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=_pythonpath()))
        self.out = LineReader(self.proc.popen.stdout)
        self._send(json.dumps(spec))

    def _send(self, line):
        self.proc.popen.stdin.write((line + "\n").encode())
        self.proc.popen.stdin.flush()

    def expect(self, word, timeout):
        try:
            line = self.out.readline(timeout)
        except HarnessError as e:
            raise HarnessError(f"{e}; its log: {self.proc.log_tail(10)}") from None
        if not line.startswith(word):
            raise HarnessError(f"load generator said {line[:200]!r}, expected {word}")
        return line[len(word):].strip()

    def go(self, t_start):
        self._send(f"GO {t_start!r}")

    def release(self):
        self._send("RELEASE")

    def result(self, timeout):
        return json.loads(self.expect("", timeout))

    def stop(self):
        self.proc.stop(timeout=2.0)


def _pythonpath():
    pp = os.environ.get("PYTHONPATH")
    return REPO + (os.pathsep + pp if pp else "")


# --- measurements ---------------------------------------------------------------------------

def measure_bundled(prep, sc: Scenario, request_head, *, mode, rate, connections, settings,
                    load_cpus, tmp, ctx):
    _alive(prep)
    request_head = getattr(prep, "head", None) or request_head
    nproc = max(1, min(settings.procs, connections))
    base = {"host": HOST, "port": prep.port, "request_head": request_head,
            "body_size": sc.body_size, "expect_body": sc.expect_body, "mode": mode,
            "warmup": settings.warmup, "duration": settings.duration, "timeout": sc.timeout,
            "cpus": load_cpus, "procs": nproc, "ms_timer": settings.pacing == "ms",
            "ttfb": sc.ttfb,
            "grace": min(sc.timeout, 5.0)}
    base.update(_ai_spec(sc))
    if prep.tls:
        base["tls"] = {"ca_file": ctx.tls().ca_path, "server_name": ctx.tls().server_name,
                       "version": ctx.tls_version}
    if prep.access_log:
        _truncate(prep.access_log)  # the closed-loop phase alone writes tens of MB a round
    gens = []
    try:
        for k in range(nproc):
            share = connections // nproc + (1 if k < connections % nproc else 0)
            spec = dict(base, connections=share, proc_index=k,
                        rate=(rate / nproc) if rate else None)
            gens.append(LoadGen(spec, load_cpus, tmp, f"{prep.target.name}-{sc.name}-{k}"))
        connected = sum(int(g.expect("READY", 60.0)) for g in gens)
        meter = P.CpuMeter([prep.proc.pid])
        up_meter = P.CpuMeter([ctx.upstream_pid])
        redis = ctx.redis if ctx.redis is not None and ctx.redis.alive() else None
        redis_meter = P.CpuMeter([redis.pid]) if redis else None
        t_start = mono() + 0.05
        for g in gens:
            g.go(t_start)
        _sleep_until(t_start + settings.warmup)
        busy0 = P.cpu_busy_snapshot()
        log0 = _size(prep.access_log)
        cmds0 = _redis_commands(redis)
        meter.start()
        up_meter.start()
        if redis_meter:
            redis_meter.start()
        _sleep_until(t_start + settings.warmup + settings.duration)
        cpu_s, wall = meter.stop()
        up_s, _ = up_meter.stop()
        redis_s = redis_meter.stop()[0] if redis_meter else None
        cmds1 = _redis_commands(redis)
        log1 = _size(prep.access_log)
        busy1 = P.cpu_busy_snapshot()
        results = [g.result(settings.duration + sc.timeout + 30.0) for g in gens]
    finally:
        for g in gens:
            g.stop()
    _alive(prep)
    m = _combine(results, cpu_s, wall, settings.duration, sc, connected, connections, rate)
    m["cpu_detail"] = meter.last
    w = meter.last.get("runqueue_wait_s")
    m["gateway_wait_frac"] = w / wall if w is not None and wall else None
    m["upstream_cpu_util"] = up_s / wall if wall else None
    m["gateway_cpus_busy"] = P.cpu_busy_delta(busy0, busy1, ctx.gw_cpus)
    m["load_cpus_busy"] = P.cpu_busy_delta(busy0, busy1, ctx.load_cpus)
    m["interference_frac"] = _interference(prep, m, ctx)
    count = m["requests"]
    if redis_s is not None:
        m["redis_cpu_util"] = redis_s / wall if wall else None
        m["redis_cpu_us_per_req"] = redis_s * 1e6 / count if count else None
        if cmds0 is not None and cmds1 is not None:
            # less the INFO that took the first reading
            calls = max(0, cmds1 - cmds0 - 1)
            m["redis_calls_per_s"] = calls / wall if wall else None
            m["redis_calls_per_req"] = calls / count if count else None
    if log0 is not None and log1 is not None:
        m["access_log_bytes_per_req"] = (log1 - log0) / count if count else None
    tls = [r.get("tls") for r in results if r.get("tls")]
    if tls:
        m["tls"] = tls[0]
    return m


def _ai_spec(sc):
    """The load generator's per-response checks of the AI scenarios."""
    out = {}
    if sc.body is not None:
        out["body"] = sc.body.decode("latin-1")
    if sc.markers:
        out["markers"] = [m.decode("latin-1") for m in sc.markers]
    if sc.ttft_marker:
        out["ttft_marker"] = sc.ttft_marker.decode("latin-1")
    if sc.pauses:
        out["pauses"] = True
    return out


def _interference(prep, m, ctx):
    """How much other work delayed the gateway: its run-queue wait. The threads of LiteLLM (a
    thread pool) and Node (GC, libuv pool) also wait for each other on one core, so for them
    it is the wait of their busiest thread, the event loop's."""
    if not getattr(prep.target, "threads_share_cpu", False):
        return m.get("gateway_wait_frac")
    w, wall = (m.get("cpu_detail") or {}).get("busiest_thread_wait_s"), m.get("cpu_wall_s")
    return w / wall if w is not None and wall else None


def _truncate(path):
    try:
        os.truncate(path, 0)
    except OSError:  # not created yet
        pass


def _size(path):
    if not path:
        return None
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _redis_commands(redis):
    if redis is None:
        return None
    try:
        return redis.commands()
    except (OSError, ValueError) as e:
        raise HarnessError(f"the harness's redis-server stopped answering: {e}") from None


def _alive(prep):
    if not prep.proc.alive():
        raise TargetError(f"{prep.target.name} exited with {prep.proc.popen.returncode}")


def _combine(results, cpu_s, wall, duration, sc, connected, connections, rate):
    count = sum(r["count"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if connected < connections:
        errors["not_connected"] = errors.get("not_connected", 0) + connections - connected
    hist = stats.merge(r["hist"] for r in results)
    lg_cpu = sum(r.get("loadgen_cpu", 0.0) for r in results)
    m = {
        "requests": count,
        "rps": count / duration,
        "offered_rps": rate,
        "cpu_s": cpu_s,
        "cpu_wall_s": wall,
        "cpu_util": cpu_s / wall if wall else None,
        "cpu_us_per_req": cpu_s * 1e6 / count if count else None,
        "bytes_body": sum(r.get("bytes_body", 0) for r in results),
        "errors": errors,
        "errors_total": sum(errors.values()),
        "errors_outside_window": sum(r.get("errors_outside_window", 0) for r in results),
        "reconnects": sum(r.get("reconnects", 0) for r in results),
        "unsent": sum(r.get("unsent", 0) for r in results),
        "unfinished": sum(r.get("unfinished", 0) for r in results),
        "send_lag_mean_us": max((r.get("send_lag_mean", 0.0) for r in results), default=0) * 1e6,
        "pacing": results[0].get("pacing") if results else None,
        "loadgen_cpu_util": lg_cpu / duration,
        "latency": stats.summary(hist),
    }
    if sc.ttfb:
        m["ttfb"] = stats.summary(stats.merge(r["ttfb_hist"] or {} for r in results))
    if sc.ttft_marker:
        m["ttft"] = stats.summary(stats.merge(r.get("ttft_hist") or {} for r in results))
    if sc.pauses:
        m["pause"] = stats.summary(stats.merge(r.get("pause_hist") or {} for r in results))
    if sc.unit and count:
        units = count * sc.units_per_request
        m["cpu_us_per_unit"] = cpu_s * 1e6 / units
    return m


def measure_wrk(prep, sc, request_head, *, connections, settings, load_cpus, tmp):
    from benchmarks import wrk
    _alive(prep)
    request_head = getattr(prep, "head", None) or request_head
    meter = P.CpuMeter([prep.proc.pid])
    m = wrk.run(prep, sc, request_head, connections=connections,
                duration=settings.warmup + settings.duration, cpus=load_cpus, tmp=tmp,
                meter=meter)
    _alive(prep)
    return m


def measure_idle(prep, sc, request_head, *, connections, settings, load_cpus, tmp):
    _alive(prep)
    request_head = getattr(prep, "head", None) or request_head
    nproc = max(1, min(settings.procs, connections))
    root = prep.proc.pid
    before = P.memory_kib(root)
    gens = []
    try:
        for k in range(nproc):
            share = connections // nproc + (1 if k < connections % nproc else 0)
            spec = {"host": HOST, "port": prep.port, "request_head": request_head,
                    "body_size": sc.body_size, "expect_body": sc.expect_body, "mode": "idle",
                    "connections": share, "timeout": sc.timeout, "cpus": load_cpus}
            gens.append(LoadGen(spec, load_cpus, tmp, f"{prep.target.name}-{sc.name}-{k}"))
        connected = sum(int(g.expect("READY", 180.0)) for g in gens)
        t_start = mono() + 0.05
        for g in gens:
            g.go(t_start)
        held = sum(int(g.expect("HELD", 180.0)) for g in gens)
        time.sleep(0.5)  # let lazily freed buffers settle
        meter = P.CpuMeter([root])
        meter.start()
        time.sleep(min(2.0, settings.duration))
        idle_cpu_s, wall = meter.stop()
        during = P.memory_kib(root)
        for g in gens:
            g.release()
        results = [g.result(60.0) for g in gens]
    finally:
        for g in gens:
            g.stop()
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if connected < connections:
        errors["not_connected"] = connections - connected
    if held < connected:
        errors["dropped_while_held"] = connected - held
    return {
        "connections": connections,
        "connected": connected,
        "held": held,
        "rss_before_kib": before["rss_kib"],
        "rss_held_kib": during["rss_kib"],
        "hwm_kib": during["hwm_kib"],
        "kib_per_conn": (during["rss_kib"] - before["rss_kib"]) / held if held else None,
        "idle_cpu_util": idle_cpu_s / wall if wall else None,
        "processes": during["processes"],
        "errors": errors,
        "errors_total": sum(errors.values()),
        "latency": stats.summary(stats.merge(r["hist"] for r in results)),
    }


def _sleep_until(t):
    while True:
        d = t - mono()
        if d <= 0:
            return
        time.sleep(d)


WAF_PROBE_PATH = "/tiny?q=1%27%20OR%20%271%27%3D%271"  # q=1' OR '1'='1


def _probe(prep, sc: Scenario, jwt_token, ctx):
    """Real requests through the target before measuring: one that must succeed (catches a
    proxy that answers but does not proxy, e.g. 502 on everything) and, per feature, one that
    shows the feature is really on (a gateway that ignored it would be measured cheap)."""
    import http.client
    evidence = {}

    def send(with_auth=True, path=None):
        headers = {"Host": "bench.local"}
        for k, v in tuple(sc.headers) + prep.extra_headers:
            if "{jwt}" in v and not with_auth:
                continue
            headers[k] = v.replace("{jwt}", jwt_token or "")
        body = sc.request_body()
        if body is not None:
            headers["Content-Type"] = sc.content_type
        if prep.tls:
            conn = _TlsConnection(prep.port, ctx.client_tls(), ctx.tls().server_name,
                                  timeout=sc.timeout)
        else:
            conn = http.client.HTTPConnection(HOST, prep.port, timeout=sc.timeout)
        try:
            conn.request(sc.method, path or prep.path or sc.path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            if prep.tls:
                evidence["tls"] = f"{conn.sock.version()} {conn.sock.cipher()[0]}"
            return r, data
        except (OSError, http.client.HTTPException) as e:
            raise TargetError(f"probe request failed: {e!r}") from None
        finally:
            conn.close()

    redis = ctx.redis if "rate_limit_cluster" in sc.features else None
    keys0 = redis.stats()["keys"] if redis is not None else 0
    r, data = send()
    if r.status != 200:
        raise TargetError(f"probe answered {r.status}: {data[:200]!r}")
    if sc.expect_body is not None and len(data) != sc.expect_body:
        raise TargetError(f"probe body {len(data)} bytes, expected {sc.expect_body}")
    if "ai" in sc.features:
        evidence["ai"] = _check_ai(sc, r, data)
    if "request_id" in sc.features and not r.getheader("X-Request-ID"):
        raise TargetError("request_id: the response has no X-Request-ID")
    if "jwt_rs256" in sc.features:
        r2, _ = send(with_auth=False)
        if r2.status != 401:
            raise TargetError(f"jwt_rs256: a request without a token got {r2.status}, not 401")
    if "waf" in sc.features:
        # the same request with a SQL injection in its query must be refused
        r3, _ = send(path=WAF_PROBE_PATH)
        if r3.status != 403:
            raise TargetError(f"waf: a SQL injection in the query got {r3.status}, not 403")
        evidence["waf"] = f"{WAF_PROBE_PATH} -> 403"
    if isinstance(prep.target, Fastgate) and {"rate_limit", "rate_limit_cluster"} & set(sc.features):
        # SPEC: rate-limited routes answer with RateLimit-* headers
        if r.getheader("RateLimit-Limit") is None:
            raise TargetError("rate limit: the response has no RateLimit-Limit header")
    if redis is not None:
        # the limiter leases tokens from a bucket in Redis: the request must have created it
        deadline = mono() + 3.0
        while redis.stats()["keys"] <= keys0:
            if mono() > deadline:
                raise TargetError("rate_limit_cluster: no bucket appeared in Redis after a "
                                  "request")
            time.sleep(0.05)
    if prep.access_log:
        evidence["access_log"] = _logged_line(prep.access_log, sc.path)
    return evidence


def _check_ai(sc, r, data):
    """The relayed answer is the fake provider's: content, usage, stream framing."""
    from benchmarks import ai
    ctype = (r.getheader("Content-Type") or "").lower()
    try:
        if sc.streaming:
            if "text/event-stream" not in ctype:
                raise ai.BadAnswer(f"Content-Type {ctype!r}, not text/event-stream")
            return ai.check_stream(data, want_usage=b"include_usage" in (sc.body or b""))
        return ai.check_chat(data)
    except ai.BadAnswer as e:
        raise TargetError(f"probe: {e}") from None


def _logged_line(path, want_path, timeout=3.0):
    """The access-log line of the probe request (logs are flushed off the request path, so it
    may take a moment), checked to be JSON naming the path."""
    deadline = mono() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        if lines:
            try:
                entry = json.loads(lines[-1])
            except ValueError:
                raise TargetError(f"access_log: not JSON: {lines[-1][:200]!r}") from None
            if not isinstance(entry, dict) or want_path.split("?")[0] not in json.dumps(entry):
                raise TargetError(f"access_log: the line does not name {want_path}: "
                                  f"{lines[-1][:200]!r}")
            return lines[-1].decode("utf-8", "replace")
        if mono() > deadline:
            raise TargetError(f"access_log: nothing written to {path} {timeout:.0f}s after a "
                              "request")
        time.sleep(0.05)


class _TlsConnection:
    """http.client over TLS to 127.0.0.1 with SNI = the certificate's name (what the load
    generator sends too), trusting the test CA only."""

    def __new__(cls, port, context, server_name, timeout):
        import http.client
        import socket

        class Conn(http.client.HTTPConnection):
            def connect(self):
                raw = socket.create_connection((HOST, port), timeout=timeout)
                self.sock = context.wrap_socket(raw, server_hostname=server_name)
        return Conn(HOST, port, timeout=timeout)


# --- one scenario --------------------------------------------------------------------------

def run_scenario(sc: Scenario, targets, ctx: Context, settings: Settings, load_cpus, gw_cpus):
    log = settings.log
    if settings.smoke and sc.smoke_ai_gap_ms is not None:
        sc = replace(sc, ai_gap_ms=sc.smoke_ai_gap_ms)
    # a target that is not for this kind of scenario (an AI-only gateway on passthrough) is
    # left out of its table rather than shown n/a
    targets = [t for t in targets if t.applies(sc)]
    res = {"name": sc.name, "title": sc.title, "kind": sc.kind, "unit": sc.unit,
           "features": list(sc.features), "method": sc.method, "path": sc.path,
           "targets": {}, "notes": []}
    if sc.ai_chunks:
        res["stream"] = {"chunks": sc.ai_chunks, "gap_ms": sc.ai_gap_ms,
                         "ideal_s": sc.ai_chunks * sc.ai_gap_ms / 1000.0 if sc.ai_gap_ms else 0,
                         "stall_s": sc.stall_s}
    if sc.request_body_size and sc.body is not None:
        res["request_body_bytes"] = sc.request_body_size
    jwt_token = None
    if any("{jwt}" in v for _, v in sc.headers):
        try:
            jwt_token = ctx.jwt().token
        except RuntimeError as e:
            for t in targets:
                res["targets"][t.name] = {"status": "n/a", "reason": str(e)}
            return res
    if "tls" in sc.features:
        try:
            ctx.tls()
        except RuntimeError as e:
            for t in targets:
                res["targets"][t.name] = {"status": "n/a", "reason": str(e)}
            return res
    head = sc.request_head(jwt_token)
    if sc.kind == "idle":
        conns = settings.idle_connections or (sc.smoke_connections if settings.smoke
                                              else sc.connections)
    else:
        conns = settings.connections or (sc.smoke_connections if settings.smoke
                                         else sc.connections)
    res["connections"] = conns
    res["load_cpus"] = load_cpus
    preps = []
    try:
        _start_redis(sc, ctx, res, log)
        return _run_started(sc, targets, ctx, settings, load_cpus, gw_cpus, res, preps, head,
                            jwt_token, conns)
    finally:
        for prep in preps:
            if prep.proc is not None:
                prep.proc.stop()
        if ctx.redis is not None:
            ctx.redis.stop()
            ctx.redis = None
        ctx.redis_error = None


def _start_redis(sc, ctx, res, log):
    """The scenario's own redis-server, on the load side's CPUs: in a deployment Redis is
    another machine, so it must not take the gateway's CPU (its own CPU is reported apart)."""
    from benchmarks.redisd import RedisError, RedisServer
    from benchmarks.scenarios import REDIS_FEATURES
    ctx.redis, ctx.redis_error = None, None
    if not set(REDIS_FEATURES) & set(sc.features):
        return
    r = RedisServer(os.path.join(ctx.tmp, f"redis-{sc.name}"), cpus=ctx.load_cpus)
    try:
        r.start()
    except RedisError as e:
        ctx.redis_error = str(e)
        log(f"  redis: {e}")
        return
    ctx.redis = r
    res["redis"] = r.version()
    log(f"  redis: {res['redis']} on {r.url}")


def _run_started(sc, targets, ctx, settings, load_cpus, gw_cpus, res, preps, head, jwt_token,
                 conns):
    log = settings.log
    for t in targets:
        tr = res["targets"][t.name] = {"status": "ok"}
        why = ctx.unavailable.get(t.name)
        if why:
            tr.update(status="n/a", reason=why)
            continue
        try:
            prep = t.prepare(sc, conns)
            prep.head = prep.request_head(jwt_token)
            preps.append(prep)
            tr["config"] = prep.config_text()
        except NotApplicable as e:
            tr.update(status="n/a", reason=str(e))
        except TargetError as e:
            tr.update(status="error", reason=str(e))
    running = []
    for prep in preps:
        tr = res["targets"][prep.target.name]
        try:
            prep.target.start(prep, gw_cpus)
            ev = _probe(prep, sc, jwt_token, ctx)
            if ev:
                tr["probe"] = ev
            # after start-up and the probe requests, before any load
            tr["memory_idle"] = P.memory_kib(prep.proc.pid)
            running.append(prep)
        except TargetError as e:
            tr.update(status="error", reason=str(e))
            log(f"  {prep.target.name}: ERROR {e}")
            if prep.proc:
                prep.proc.stop()
    if sc.kind == "idle":
        for prep in running:
            tr = res["targets"][prep.target.name]
            _guard(tr, prep, lambda: tr.update(idle=measure_idle(
                prep, sc, head, connections=conns, settings=settings, load_cpus=load_cpus,
                tmp=ctx.tmp)))
            if "idle" in tr:
                i = tr["idle"]
                log(f"  {prep.target.name:9s} idle: held {i['held']}/{conns}, RSS "
                    f"{i['rss_before_kib'] / 1024:.1f} -> {i['rss_held_kib'] / 1024:.1f} MiB"
                    f" ({i['kib_per_conn'] or 0:.2f} KiB/conn), errors {i['errors_total']}")
    else:
        _load_phases(sc, res, running, head, ctx, settings, load_cpus, conns)
    for prep in running:
        tr = res["targets"][prep.target.name]
        if prep.proc and prep.proc.alive():
            tr["memory"] = P.memory_kib(prep.proc.pid)
        elif tr["status"] == "ok":
            tr.update(status="error", reason=f"exited ({prep.proc.popen.returncode}) "
                                             f"{prep.proc.log_tail(3)}".strip())
    if ctx.redis is not None and not ctx.redis.alive():
        raise HarnessError(f"the harness's redis-server died: {ctx.redis.proc.log_tail(5)}")
    tls = {n: (tr.get("probe") or {}).get("tls") for n, tr in res["targets"].items()}
    tls = {n: v for n, v in tls.items() if v}
    if tls:
        res["notes"].append("negotiated: " + "; ".join(f"{n} {v}" for n, v in tls.items()))
    return res


def _guard(tr, prep, fn):
    """Run one measurement; a target that dies or hangs becomes an error entry, not a crash."""
    try:
        fn()
    except (HarnessError, TargetError) as e:
        if prep.proc is not None and not prep.proc.alive():
            tail = " | ".join(ln for ln in prep.proc.log_tail(3).splitlines() if ln.strip())
            tr.update(status="error",
                      reason=f"died (exit {prep.proc.popen.returncode}) {tail}".strip())
        else:
            tr.update(status="error", reason=str(e))


def _load_phases(sc, res, running, head, ctx, settings, load_cpus, conns):
    log = settings.log
    res["loadgen"] = settings.loadgen
    # max phase
    for r in range(settings.max_rounds):
        for prep in _rotate(running, r):
            tr = res["targets"][prep.target.name]
            if tr["status"] != "ok":
                continue

            def one():
                if settings.loadgen == "wrk":
                    m = measure_wrk(prep, sc, head, connections=conns, settings=settings,
                                    load_cpus=load_cpus, tmp=ctx.tmp)
                else:
                    m = measure_bundled(prep, sc, head, mode="closed", rate=None,
                                        connections=conns, settings=settings,
                                        load_cpus=load_cpus, tmp=ctx.tmp, ctx=ctx)
                tr.setdefault("max_rounds", []).append(m)
                log(f"  max  r{r + 1} {prep.target.name:9s} {_line(m)}")
            _guard(tr, prep, one)
    for prep in running:
        tr = res["targets"][prep.target.name]
        if tr.get("max_rounds"):
            tr["max"] = _summarize(tr["max_rounds"])
    # choose the offered rate
    if settings.smoke:
        rate = sc.smoke_rate
    elif settings.rate:
        rate = settings.rate
    else:
        rate = sc.rate
        maxes = [res["targets"][p.target.name].get("max", {}).get("rps") for p in running]
        maxes = [m for m in maxes if m]
        if maxes and min(maxes) < rate * 1.15:
            lowered = max(1.0, _round_rate(0.8 * min(maxes)))
            res["notes"].append(
                f"offered rate lowered from {rate:g} to {lowered:g}/s: the slowest target's "
                f"max was {min(maxes):.0f}/s")
            rate = lowered
    res["rate"] = rate
    for r in range(settings.rounds):
        for prep in _rotate(running, r):
            tr = res["targets"][prep.target.name]
            if tr["status"] != "ok":
                continue

            def one():
                # Another workload on the gateway's CPU batches its requests (it runs less
                # often, with more to do each time), which lowers CPU/request: such a
                # measurement is taken again, and the least disturbed attempt is kept.
                best = None
                for attempt in range(1 + settings.retries):
                    m = measure_bundled(prep, sc, head, mode="open", rate=rate,
                                        connections=conns, settings=settings,
                                        load_cpus=load_cpus, tmp=ctx.tmp, ctx=ctx)
                    m["round"] = r
                    m["attempts"] = attempt + 1
                    log(f"  rate r{r + 1} {prep.target.name:9s} {_line(m)}"
                        + (f"  (attempt {attempt + 1})" if attempt else ""))
                    w = m.get("interference_frac")
                    if best is None or (w or 0) < (best.get("interference_frac") or 0):
                        best = m
                    if w is None or not settings.max_wait or w <= settings.max_wait:
                        break
                best["tries"] = attempt + 1
                tr.setdefault("rate_rounds", []).append(best)
            _guard(tr, prep, one)
    for prep in running:
        tr = res["targets"][prep.target.name]
        if tr.get("rate_rounds"):
            tr["rate"] = _summarize(tr["rate_rounds"])
    if sc.c1:
        # one connection, closed loop: nothing queues, so the latency is the path's own
        for r in range(settings.max_rounds):
            for prep in _rotate(running, r):
                tr = res["targets"][prep.target.name]
                if tr["status"] != "ok":
                    continue

                def one():
                    m = measure_bundled(prep, sc, head, mode="closed", rate=None,
                                        connections=1, settings=settings,
                                        load_cpus=load_cpus, tmp=ctx.tmp, ctx=ctx)
                    tr.setdefault("c1_rounds", []).append(m)
                    log(f"  c1   r{r + 1} {prep.target.name:9s} {_line(m)}")
                _guard(tr, prep, one)
        for prep in running:
            tr = res["targets"][prep.target.name]
            if tr.get("c1_rounds"):
                tr["c1"] = _summarize(tr["c1_rounds"])
    res["ratios"] = _ratios(res, [p.target.name for p in running
                                  if not getattr(p.target, "baseline", False)])


def _round_rate(x):
    for step in (1000, 100, 10, 1):
        if x >= step * 5:
            return float(int(x / step) * step)
    return float(max(1, int(x)))


def _rotate(items, r):
    if not items:
        return []
    k = r % len(items)
    return items[k:] + items[:k]


def _line(m):
    lat = m["latency"]
    p50 = lat.get("p50_us")
    p99 = lat.get("p99_us")
    cpu = m.get("cpu_us_per_req")
    return (f"{m['rps']:9.0f} req/s  cpu {cpu if cpu is not None else float('nan'):7.1f} us/req "
            f"(util {m.get('cpu_util') or 0:4.2f})  p50 {_ms(p50)} p99 {_ms(p99)}  "
            f"err {m['errors_total']}" + (f"  loadgen {m['loadgen_cpu_util']:.2f}"
                                          if "loadgen_cpu_util" in m else "")
            + (f" upstream {m['upstream_cpu_util']:.2f}" if m.get("upstream_cpu_util") is not None
               else "")
            + (f"  gw runq wait {m['gateway_wait_frac'] * 100:.1f}%"
               if m.get("gateway_wait_frac") is not None else ""))


def _ms(us):
    return "   -   " if us is None else f"{us / 1000:6.2f}ms"


def _summarize(rounds):
    """Median over rounds of each figure; errors are summed."""
    def med(key, sub=None):
        vals = [(r.get(sub) or {}).get(key) if sub else r.get(key) for r in rounds]
        return stats.median(vals)
    out = {
        "rounds": len(rounds),
        "rps": med("rps"),
        "cpu_us_per_req": med("cpu_us_per_req"),
        "cpu_us_per_req_spread_pct": stats.spread([r.get("cpu_us_per_req") for r in rounds]),
        "cpu_util": med("cpu_util"),
        "cpu_us_per_unit": med("cpu_us_per_unit"),
        "p50_us": med("p50_us", "latency"),
        "p99_us": med("p99_us", "latency"),
        "p999_us": med("p999_us", "latency"),
        "ttfb_p50_us": med("p50_us", "ttfb"),
        "ttfb_p99_us": med("p99_us", "ttfb"),
        "ttft_p50_us": med("p50_us", "ttft"),
        "ttft_p99_us": med("p99_us", "ttft"),
        "pause_p50_us": med("p50_us", "pause"),
        "pause_p99_us": med("p99_us", "pause"),
        # the longest pause of any stream in any round: one stall is enough
        "pause_max_us": max([(r.get("pause") or {}).get("max_us") for r in rounds
                             if (r.get("pause") or {}).get("max_us") is not None], default=None),
        "interference_frac": med("interference_frac"),
        "errors_total": sum(r["errors_total"] for r in rounds),
        "retaken": sum(r.get("tries", 1) - 1 for r in rounds),
        "unsent": sum(r.get("unsent", 0) for r in rounds),
        "loadgen_cpu_util": med("loadgen_cpu_util"),
        "send_lag_mean_us": med("send_lag_mean_us"),
        "upstream_cpu_util": med("upstream_cpu_util"),
        "load_cpus_busy": med("load_cpus_busy"),
        "gateway_cpus_busy": med("gateway_cpus_busy"),
        "gateway_wait_frac": med("gateway_wait_frac"),
        "rps_spread_pct": stats.spread([r.get("rps") for r in rounds]),
        "redis_cpu_us_per_req": med("redis_cpu_us_per_req"),
        "redis_cpu_util": med("redis_cpu_util"),
        "redis_calls_per_s": med("redis_calls_per_s"),
        "redis_calls_per_req": med("redis_calls_per_req"),
        "access_log_bytes_per_req": med("access_log_bytes_per_req"),
        "tls": next((r["tls"] for r in rounds if r.get("tls")), None),
    }
    errs: dict[str, int] = {}
    for r in rounds:
        for k, v in r["errors"].items():
            errs[k] = errs.get(k, 0) + v
    out["errors"] = errs
    offered = rounds[0].get("offered_rps")
    if offered:
        out["offered_rps"] = offered
        out["saturated"] = out["rps"] is not None and out["rps"] < 0.97 * offered
    return out


def _ratios(res, names):
    """subject/other for each pair, subject = first running target: the median over rounds of
    the per-round ratio of CPU/request (rate phase), plus plain ratios of the medians."""
    out = {}
    if len(names) < 2:
        return out
    subj = names[0]
    st = res["targets"][subj]
    for other in names[1:]:
        ot = res["targets"][other]
        per_round = []
        by_round = {m["round"]: m for m in ot.get("rate_rounds", [])}
        for m in st.get("rate_rounds", []):
            o = by_round.get(m["round"])
            if o and m.get("cpu_us_per_req") and o.get("cpu_us_per_req"):
                per_round.append(m["cpu_us_per_req"] / o["cpu_us_per_req"])
        out[f"{subj}/{other}"] = {
            "cpu_per_req_rate": stats.median(per_round),
            "cpu_per_req_rate_rounds": per_round,
            "cpu_per_req_rate_spread_pct": stats.spread(per_round),
            "max_rps": _div(st.get("max", {}).get("rps"), ot.get("max", {}).get("rps")),
        }
    return out


def _div(a, b):
    return a / b if a is not None and b else None


# --- the whole run -------------------------------------------------------------------------

def run(scenarios, target_names, settings: Settings, *, workers=None, fastgate_cmd=None):
    log = settings.log
    from benchmarks.report import machine
    machine_info = machine()  # before pinning: it counts the usable CPUs
    load_cpus, gw_cpus, pin_note = P.cpu_split()
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    nofile = P.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="fastgate-bench-")
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pinning": pin_note,
               "nofile": nofile, "settings": {k: v for k, v in vars(settings).items()
                                              if k != "log"},
               "workers": workers, "scenarios": [], "machine": machine_info}
    log(f"pinning: {pin_note}; RLIMIT_NOFILE {nofile}; temp dir {tmp}")
    idle_need = max([settings.idle_connections or s.connections for s in scenarios
                     if s.kind == "idle"] or [0])
    if idle_need and not settings.smoke and nofile < idle_need + 1024:
        results["nofile_note"] = (f"RLIMIT_NOFILE {nofile} is below {idle_need + 1024}: the idle "
                                  f"scenario may fail to open its connections")
    prev = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def _bail(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for s in prev:
        signal.signal(s, _bail)
    try:
        up_port = free_port()
        upstream = P.Proc("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port",
                                       str(up_port)], cpus=load_cpus,
                          log_path=os.path.join(tmp, "upstream.log"), cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=_pythonpath()))
        from benchmarks.targets import wait_port
        wait_port(up_port, upstream, 15.0)
        ctx = Context(tmp, up_port, workers=workers, fastgate_cmd=fastgate_cmd, nofile=nofile,
                      tls_version=settings.tls_version)
        ctx.upstream_pid = upstream.pid
        ctx.load_cpus, ctx.gw_cpus = load_cpus, gw_cpus
        ctx.install_peers = settings.install_peers
        ctx.explicit_targets = settings.explicit_targets
        ctx.log = log
        targets = [TARGETS[n](ctx) for n in target_names]
        results["versions"] = {}
        results["peers"] = {}
        for t in targets:
            if not any(t.applies(sc) for sc in scenarios):
                continue  # e.g. an AI gateway when no AI scenario runs: not even installed
            why = t.availability()
            if why:
                ctx.unavailable[t.name] = why
                log(f"{t.name}: n/a ({why})")
            else:
                results["versions"][t.name] = t.version()
            if hasattr(t, "install_record"):
                rec = dict(t.install_record(), dir=t.home)
                if t.install_info:
                    rec["installed_by_this_run"] = True
                results["peers"][t.name] = rec
        results["targets"] = target_names
        for sc in scenarios:
            log(f"== {sc.name}: {sc.title}")
            t0 = mono()
            r = run_scenario(sc, targets, ctx, settings, load_cpus, gw_cpus)
            r["elapsed_s"] = mono() - t0
            results["scenarios"].append(r)
            for name, tr in r["targets"].items():
                if tr["status"] != "ok":
                    log(f"  {name}: {tr['status']}: {tr.get('reason', '')}")
            if not upstream.alive():
                raise HarnessError(f"built-in upstream died: {upstream.log_tail(10)}")
    finally:
        for s, h in prev.items():
            signal.signal(s, h)
        P.stop_all()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return results
