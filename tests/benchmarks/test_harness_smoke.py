"""The load harness end to end: `python -m benchmarks --smoke` against nginx (as CI runs it)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _nginx():
    return shutil.which("nginx") or (os.access("/usr/sbin/nginx", os.X_OK) and "/usr/sbin/nginx")


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _nginx(), reason="nginx is not installed")
def test_smoke_against_nginx(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--targets", "nginx",
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=170, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    by = {s["name"]: s for s in res["scenarios"]}
    assert set(by) == {"passthrough", "tls", "limit_local", "limit_cluster", "access_log",
                       "full_chain", "body_1mib", "idle_10k", "sse", "api_body", "waf",
                       "ai_chat", "ai_stream", "ai_stream_512"}
    # nginx only proxies the AI path to the fake provider: the floor row of those tables
    for name in ("ai_chat", "ai_stream", "ai_stream_512"):
        t = by[name]["targets"]["nginx"]
        assert t["status"] == "ok", t
        assert "intact" in t["probe"]["ai"]
    # nginx open source has no JWT validation nor a shared limit: reported, not failed
    assert by["full_chain"]["targets"]["nginx"]["status"] == "n/a"
    assert "needs jwt_rs256" in by["full_chain"]["targets"]["nginx"]["reason"]
    assert by["limit_cluster"]["targets"]["nginx"]["status"] == "n/a"
    assert "needs rate_limit_cluster" in by["limit_cluster"]["targets"]["nginx"]["reason"]
    assert by["tls"]["targets"]["nginx"]["probe"]["tls"].startswith("TLSv1.3 ")
    # plain nginx has no WAF: the waf scenario is reported n/a, not failed
    assert by["waf"]["targets"]["nginx"]["status"] == "n/a"
    assert by["api_body"]["targets"]["nginx"]["status"] == "ok"
    assert '"path":"/tiny"' in by["access_log"]["targets"]["nginx"]["probe"]["access_log"]
    for name in ("passthrough", "tls", "limit_local", "access_log", "body_1mib", "sse"):
        t = by[name]["targets"]["nginx"]
        assert t["status"] == "ok", t
        for phase in ("max", "rate"):
            assert t[phase]["errors_total"] == 0
            assert t[phase]["rps"] > 0
            assert t[phase]["cpu_us_per_req"] > 0
            assert t[phase]["p50_us"] > 0
        assert t["memory"]["hwm_kib"] > 0
    idle = by["idle_10k"]["targets"]["nginx"]["idle"]
    assert idle["held"] == idle["connections"] == 200
    assert idle["errors_total"] == 0
    md = (out / "results.md").read_text()
    assert "| passthrough |" in md and "n/a: needs jwt_rs256" in md
    # everything the harness started (configs live in its temp dir under TMPDIR) was stopped
    assert not list(tmp_path.glob("fastgate-bench-*"))
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_unknown_target_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--targets", "envoy"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "unknown target" in r.stderr
