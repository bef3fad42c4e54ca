"""The tls, limit_local, limit_cluster and access_log scenarios: the test CA and certificate,
TLS in the load generator, the harness's redis-server, each target's generated config, and
the cross-scenario figures printed under the table. Real sockets and processes throughout."""
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest
import yaml

from benchmarks import procs, redisd
from benchmarks.report import derived
from benchmarks.runner import REPO, Context, LoadGen, _start_redis
from benchmarks.scenarios import BY_NAME, Scenario
from benchmarks.targets import Fastgate, Haproxy, Nginx, NotApplicable, free_port, wait_port
from benchmarks.tls_fixture import TlsFixture, client_context

HAS_REDIS = redisd.binary() is not None
needs_redis = pytest.mark.skipif(not HAS_REDIS, reason="redis-server is not installed")


def _have(name):
    return any(os.access(os.path.join(d, name), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin"])


# --- TLS fixture -------------------------------------------------------------------------------

def test_tls_fixture_files(tmp_path):
    from cryptography import x509
    t = TlsFixture(str(tmp_path))
    assert os.stat(t.key_path).st_mode & 0o777 == 0o600
    assert os.stat(t.full_path).st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates(open(t.cert_path, "rb").read())
    ca = x509.load_pem_x509_certificate(open(t.ca_path, "rb").read())
    assert len(chain) == 2 and chain[1] == ca
    leaf = chain[0]
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["bench.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    full = open(t.full_path).read()       # HAProxy's crt: chain then key in one file
    assert full.count("BEGIN CERTIFICATE") == 2 and "BEGIN PRIVATE KEY" in full
    # the pair loads as a server identity
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(t.cert_path, t.key_path)
    with pytest.raises(ValueError):
        client_context(t.ca_path, "1.1")


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory):
    d = tmp_path_factory.mktemp("tlsup")
    t = TlsFixture(str(d))
    port = free_port()
    p = procs.Proc("upstream-tls", [sys.executable, "-m", "benchmarks.upstream", "--port",
                                    str(port), "--tls-cert", t.cert_path, "--tls-key",
                                    t.key_path],
                   log_path=str(d / "upstream.log"), cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=REPO))
    try:
        wait_port(port, p, 15)
        yield port, t
    finally:
        p.stop()
    assert not procs._exists(p.pid)


def _handshake(port, ctx, name):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.version()


def test_client_trusts_the_generated_ca_only(tls_upstream, tmp_path):
    port, t = tls_upstream
    assert _handshake(port, client_context(t.ca_path), "bench.local") == "TLSv1.3"
    assert _handshake(port, client_context(t.ca_path, "1.2"), "bench.local") == "TLSv1.2"
    other = TlsFixture(str(tmp_path))         # another CA: its trust must not carry over
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, client_context(other.ca_path), "bench.local")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, client_context(t.ca_path), "other.local")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode,version", [("closed", None), ("open", None), ("open", "1.2")])
def test_loadgen_speaks_tls(tls_upstream, tmp_path, mode, version):
    port, t = tls_upstream
    sc = Scenario("tiny", "t")
    spec = {"host": "127.0.0.1", "port": port, "request_head": sc.request_head(),
            "body_size": 0, "expect_body": 2, "mode": mode, "warmup": 0.1, "duration": 0.4,
            "timeout": 10, "connections": 4, "rate": 300 if mode == "open" else None,
            "procs": 1, "proc_index": 0,
            "tls": {"ca_file": t.ca_path, "server_name": t.server_name, "version": version}}
    g = LoadGen(spec, None, str(tmp_path), "tls")
    try:
        assert int(g.expect("READY", 30)) == 4
        g.go(time.monotonic() + 0.05)
        r = g.result(30)
    finally:
        g.stop()
    assert r["errors"] == {} and r["count"] > 0
    assert r["bytes_body"] == 2 * r["count"]
    assert r["tls"].startswith("TLSv1.2 " if version == "1.2" else "TLSv1.3 ")


def test_loadgen_refuses_a_server_it_does_not_trust(tls_upstream, tmp_path):
    port, _ = tls_upstream
    other = TlsFixture(str(tmp_path))
    spec = {"host": "127.0.0.1", "port": port, "request_head": Scenario("t", "t").request_head(),
            "mode": "closed", "warmup": 0.1, "duration": 0.2, "timeout": 5, "connections": 2,
            "tls": {"ca_file": other.ca_path, "server_name": "bench.local"}}
    g = LoadGen(spec, None, str(tmp_path), "untrusted")
    try:
        assert int(g.expect("READY", 30)) == 0   # both connections failed verification
    finally:
        g.stop()


# --- redis-server lifecycle -----------------------------------------------------------------------

@needs_redis
def test_redis_server_lifecycle(tmp_path):
    r = redisd.RedisServer(str(tmp_path / "redis"))
    with r:
        assert r.url == f"redis://127.0.0.1:{r.port}/0"
        assert r.command("PING") == "PONG"
        pid, port = r.pid, r.port
        assert r.command("CONFIG", "GET", "save") == ["save", ""]
        assert r.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
        assert r.command("CONFIG", "GET", "bind")[1] == "127.0.0.1"
        n0 = r.commands()
        r.command("SET", "k", "v")
        assert r.command("GET", "k") == "v"
        assert r.commands() - n0 == 3          # the INFO of n0, SET, GET
        assert r.stats()["keys"] == 1
        assert r.version().startswith("Redis ")
        with pytest.raises(redisd.RedisError):
            r.command("NO-SUCH-COMMAND")
    assert r.proc is None and not procs._exists(pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not os.listdir(tmp_path / "redis") or not any(
        f.endswith((".rdb", ".aof")) for f in os.listdir(tmp_path / "redis"))


def _ctx(tmp_path):
    ctx = Context(str(tmp_path), free_port(), nofile=procs.raise_nofile())
    ctx.load_cpus, ctx.gw_cpus, _ = procs.cpu_split()
    return ctx


@needs_redis
def test_runner_starts_redis_only_for_cluster_scope(tmp_path):
    ctx = _ctx(tmp_path)
    res = {}
    _start_redis(BY_NAME["limit_local"], ctx, res, lambda s: None)
    assert ctx.redis is None and "redis" not in res
    _start_redis(BY_NAME["limit_cluster"], ctx, res, lambda s: None)
    try:
        assert ctx.redis.alive() and res["redis"].startswith("Redis ")
    finally:
        ctx.redis.stop()


def test_without_redis_server_cluster_scope_is_not_applicable(tmp_path, monkeypatch):
    monkeypatch.setattr(redisd, "binary", lambda: None)   # as on a machine without it
    ctx = _ctx(tmp_path)
    _start_redis(BY_NAME["limit_cluster"], ctx, {}, lambda s: None)
    assert ctx.redis is None and ctx.redis_error == "redis-server not installed"
    with pytest.raises(NotApplicable, match="redis-server not installed"):
        Fastgate(ctx).prepare(BY_NAME["limit_cluster"], 4)


# --- generated configs, each checked by the target itself --------------------------------------

@pytest.mark.timeout(120)
def test_fastgate_configs_pass_fastgate_check(tmp_path):
    ctx = _ctx(tmp_path)
    fg = Fastgate(ctx)
    scenarios = ["tls", "limit_local", "access_log"] + (["limit_cluster"] if HAS_REDIS else [])
    if HAS_REDIS:
        _start_redis(BY_NAME["limit_cluster"], ctx, {}, lambda s: None)
    try:
        for name in scenarios:
            prep = fg.prepare(BY_NAME[name], 4)     # raises unless `fastgate check` accepts it
            cfg = yaml.safe_load(prep.config_text())
            route = cfg["routes"][0]
            if name == "tls":
                tls = cfg["listeners"][0]["tls"]
                assert tls["cert_file"] == ctx.tls().cert_path
                assert tls["key_file"] == ctx.tls().key_path
                assert tls["min_version"] == "TLSv1.2" and prep.tls
            else:
                assert "tls" not in cfg["listeners"][0] and not prep.tls
            if name.startswith("limit_"):
                scope = name.split("_")[1]
                assert route["rate_limits"] == [{"limit": 10_000_000, "per": "second",
                                                 "by": "ip", "scope": scope}]
                assert ("redis" in cfg) == (scope == "cluster")
                if scope == "cluster":
                    assert cfg["redis"]["url"] == ctx.redis.url
            else:
                assert "rate_limits" not in route
            if name == "access_log":
                assert cfg["logging"]["access_log"] == prep.access_log
                assert prep.access_log.startswith(str(tmp_path))
            else:
                assert cfg["logging"]["access_log"] == "off" and prep.access_log is None
    finally:
        if ctx.redis is not None:
            ctx.redis.stop()


@pytest.mark.skipif(not _have("nginx"), reason="nginx is not installed")
def test_nginx_configs_pass_nginx_t(tmp_path):
    ctx = _ctx(tmp_path)
    ng = Nginx(ctx)
    text = ng.prepare(BY_NAME["tls"], 4).config_text()   # prepare runs nginx -t
    assert " ssl backlog=" in text and f"ssl_certificate {ctx.tls().cert_path};" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    text = ng.prepare(BY_NAME["limit_local"], 4).config_text()
    assert "limit_req_zone" in text and "limit_req zone=bench" in text
    prep = ng.prepare(BY_NAME["access_log"], 4)
    text = prep.config_text()
    assert f"access_log {prep.access_log} bench_json buffer=64k" in text
    assert text.index("log_format bench_json") < text.index("access_log " + prep.access_log)
    with pytest.raises(NotApplicable, match="needs rate_limit_cluster"):
        ng.prepare(BY_NAME["limit_cluster"], 4)


@pytest.mark.skipif(not _have("haproxy"), reason="haproxy is not installed")
def test_haproxy_configs_pass_haproxy_c(tmp_path):
    ctx = _ctx(tmp_path)
    hp = Haproxy(ctx)
    text = hp.prepare(BY_NAME["tls"], 4).config_text()   # prepare runs haproxy -c
    assert f"ssl crt {ctx.tls().full_path} ssl-min-ver TLSv1.2" in text
    assert "X-Forwarded-Proto https" in text
    text = hp.prepare(BY_NAME["limit_local"], 4).config_text()
    assert "stick-table type ip" in text and "gt 10000000" in text
    with pytest.raises(NotApplicable, match="needs rate_limit_cluster"):
        hp.prepare(BY_NAME["limit_cluster"], 4)
    with pytest.raises(NotApplicable, match="needs access_log"):
        hp.prepare(BY_NAME["access_log"], 4)


# --- the figures under the table ------------------------------------------------------------

def _sc(name, rate, **cpu):
    return {"name": name, "rate": rate, "targets": {
        t: ({"status": "ok", "rate": {"cpu_us_per_req": v, "cpu_us_per_req_spread_pct": 4.0}}
            if v is not None else {"status": "n/a"}) for t, v in cpu.items()}}


def test_derived_figures():
    res = {"targets": ["fastgate", "nginx"], "scenarios": [
        _sc("passthrough", 9000, fastgate=50.0, nginx=40.0),
        _sc("limit_local", 9000, fastgate=52.0, nginx=41.0),
        _sc("limit_cluster", 9000, fastgate=57.2, nginx=None),
        _sc("access_log", 9000, fastgate=55.0, nginx=42.0)]}
    text = "\n".join(derived(res))
    assert "limit_cluster / limit_local **1.10×** (±4.0%)" in text
    assert "target ≤ 1.2×: **met**" in text
    assert "limit_local / passthrough **1.04×**" in text
    assert "limit_cluster / passthrough **1.14×**" in text
    assert "fastgate **+5.0 µs/req** (+10%" in text and "nginx **+2.0 µs/req** (+5%" in text
    res["scenarios"][2] = _sc("limit_cluster", 9000, fastgate=65.0)
    assert "**not met**" in "\n".join(derived(res))
    res["scenarios"][2] = _sc("limit_cluster", 5000, fastgate=52.0)   # lowered rate
    text = "\n".join(derived(res))
    assert "offered rates differ (5000/s vs 9000/s)" in text and "met" not in text
    assert derived({"targets": ["fastgate"], "scenarios": [_sc("passthrough", 9000,
                                                               fastgate=50.0)]}) == []


# --- end to end, fastgate -------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_smoke_new_scenarios_against_fastgate(tmp_path):
    import json
    out = tmp_path / "out"
    names = ["passthrough", "tls", "limit_local", "limit_cluster", "access_log"]
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--targets", "fastgate",
                        "--scenarios", ",".join(names), "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=170,
                       env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    by = {s["name"]: s["targets"]["fastgate"] for s in res["scenarios"]}
    for name in names:
        if name == "limit_cluster" and not HAS_REDIS:
            assert by[name]["status"] == "n/a"
            continue
        t = by[name]
        assert t["status"] == "ok", (name, t)
        for phase in ("max", "rate"):
            assert t[phase]["errors_total"] == 0 and t[phase]["rps"] > 0
    assert by["tls"]["probe"]["tls"].startswith("TLSv1.3 ")
    assert by["tls"]["rate"]["tls"].startswith("TLSv1.3 ")       # what the load generator got
    assert '"path":"/tiny"' in by["access_log"]["probe"]["access_log"]
    assert by["access_log"]["max"]["errors_total"] == 0
    if HAS_REDIS:
        rate = by["limit_cluster"]["rate"]
        assert rate["redis_cpu_us_per_req"] is not None and rate["redis_calls_per_s"] >= 0
    md = (out / "results.md").read_text()
    assert "access log adds" in md and (not HAS_REDIS or "limit_cluster / limit_local" in md)
    assert "negotiated: fastgate TLSv1.3" in md
    assert not list(tmp_path.glob("fastgate-bench-*"))
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == ""                             # redis-server included
