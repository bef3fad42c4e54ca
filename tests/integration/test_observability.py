"""Admin listener, Prometheus metrics and the access log, through the real gateway."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.util import quietly, wait_for
from tests.helpers.gateway import free_port, simple_config

TOKEN = "admin-secret-token-123"


def obs_config(upstream_port, admin_port, log_path, **extra):
    cfg = simple_config(upstream_port)
    cfg["admin"] = {"bind": f"127.0.0.1:{admin_port}", "token": "${ADMIN_TOKEN}"}
    cfg["logging"] = {"access_log": str(log_path), "redact_headers": ["authorization", "cookie", "x-api-key"]}
    cfg["upstreams"]["down"] = {"targets": [{"url": f"http://127.0.0.1:{free_port()}"}], "retries": 0}
    cfg["routes"] = [
        {"name": "limited", "paths": ["/limited"], "upstream": "app",
         "rate_limits": [{"limit": 1, "per": "minute", "by": "ip"}]},
        {"name": "down", "paths": ["/down"], "upstream": "down"},
        {"name": "app", "paths": ["/echo", "/echo/*"], "upstream": "app"},
    ]
    cfg.update(extra)
    return cfg


def scrape(admin_port, token=TOKEN):
    r = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.text


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text, name, **labels):
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def obs_gateway(upstream, gateway_factory, tmp_path):
    admin_port = free_port()
    log_path = tmp_path / "access.log"
    gw = gateway_factory(obs_config(upstream.port, admin_port, log_path), env={"ADMIN_TOKEN": TOKEN})
    gw.admin_port = admin_port
    gw.log_path = log_path
    assert any(l.startswith("admin listening on") for l in gw.stderr_lines) or wait_for(lambda: _up(admin_port))
    return gw


def _up(port):
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_admin_auth_and_health(obs_gateway):
    base = f"http://127.0.0.1:{obs_gateway.admin_port}"
    assert httpx.get(base + "/healthz").status_code == 200
    assert httpx.get(base + "/readyz").status_code == 200
    r = httpx.get(base + "/metrics")
    assert r.status_code == 401 and "bearer" in r.headers["www-authenticate"].lower()
    assert httpx.get(base + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    cfg = httpx.get(base + "/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert cfg.status_code == 200
    assert TOKEN not in cfg.text
    # the traffic port does not serve admin paths
    assert httpx.get(obs_gateway.url + "/metrics").status_code == 404


def test_exact_counts_after_known_traffic(obs_gateway):
    gw = obs_gateway
    with httpx.Client() as c:
        for _ in range(3):
            assert c.get(gw.url + "/echo").status_code == 200
        for _ in range(2):
            assert c.get(gw.url + "/nothing-here").status_code == 404
        assert c.get(gw.url + "/down").status_code == 502
        assert c.get(gw.url + "/limited").status_code == 200
        assert c.get(gw.url + "/limited").status_code == 429
        assert c.post(gw.url + "/echo", content=b"x" * 1000).status_code == 200
    text = scrape(gw.admin_port)
    v = lambda name, **l: value(text, name, **l)  # noqa: E731
    assert v("fastgate_requests_total", route="app", method="GET", code="200") == 3
    assert v("fastgate_requests_total", route="app", method="POST", code="200") == 1
    assert v("fastgate_requests_total", route="_none", method="GET", code="404") == 2
    assert v("fastgate_requests_total", route="down", method="GET", code="502") == 1
    assert v("fastgate_requests_total", route="limited", method="GET", code="429") == 1
    assert v("fastgate_requests_total", route="limited", method="GET", code="200") == 1
    assert v("fastgate_rate_limited_total", route="limited") == 1
    assert v("fastgate_request_duration_seconds_count", route="app") == 4
    assert v("fastgate_upstream_duration_seconds_count", route="app", upstream="app") == 4
    assert v("fastgate_bytes_received_total", route="app") >= 1000
    assert v("fastgate_bytes_sent_total", route="app") > 0
    assert ("fastgate_connections_active", ()) in samples(text)
    assert v("fastgate_config_reloads_total", result="success") == 0


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_exposition(obs_gateway):
    httpx.get(obs_gateway.url + "/echo")
    text = scrape(obs_gateway.admin_port)
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_reload_counted(obs_gateway):
    gw = obs_gateway
    gw.signal(signal.SIGHUP)  # same valid file
    assert wait_for(lambda: value(scrape(gw.admin_port), "fastgate_config_reloads_total", result="success") == 1)
    good = open(gw.path).read()
    gw.write_config("bogus: 1\n")
    gw.signal(signal.SIGHUP)
    assert wait_for(lambda: value(scrape(gw.admin_port), "fastgate_config_reloads_total", result="failure") == 1)
    gw.write_config(good)


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_access_log_fields_redaction_and_rotation(obs_gateway):
    gw = obs_gateway
    httpx.get(gw.url + "/echo/x?api_key=supersecret&page=2",
              headers={"Authorization": "Bearer tok-SECRET", "X-API-Key": "k-SECRET",
                       "User-Agent": "fg-test", "X-Request-ID": "log-check-1"})
    assert wait_for(lambda: os.path.exists(gw.log_path) and any(
        e.get("request_id") == "log-check-1" for e in read_log(gw.log_path)))
    text = open(gw.log_path).read()
    assert "SECRET" not in text and "supersecret" not in text
    entry = [e for e in read_log(gw.log_path) if e["request_id"] == "log-check-1"][0]
    for field in ("time", "request_id", "client_ip", "method", "path", "status", "bytes_in",
                  "bytes_out", "duration_ms", "upstream_duration_ms", "route", "consumer",
                  "upstream", "user_agent"):
        assert field in entry, field
    assert entry["method"] == "GET" and entry["path"] == "/echo/x" and entry["status"] == 200
    assert entry["route"] == "app" and entry["user_agent"] == "fg-test"
    assert "page=2" in entry["query"]
    # rotation: rename, SIGUSR1, new lines go to a new file at the configured path
    rotated = str(gw.log_path) + ".1"
    os.rename(gw.log_path, rotated)
    gw.signal(signal.SIGUSR1)
    time.sleep(0.3)
    httpx.get(gw.url + "/echo", headers={"X-Request-ID": "after-rotate"})
    assert wait_for(lambda: os.path.exists(gw.log_path) and any(
        e["request_id"] == "after-rotate" for e in read_log(gw.log_path)))
    assert not any(e["request_id"] == "after-rotate" for e in read_log(rotated))


def test_readyz_503_while_draining(upstream, gateway_factory, tmp_path):
    admin_port = free_port()
    cfg = obs_config(upstream.port, admin_port, tmp_path / "a.log", drain_timeout_s=5)
    gw = gateway_factory(cfg, env={"ADMIN_TOKEN": TOKEN})
    import threading
    # a request held in flight (its body arrives slowly) keeps the drain going
    holder = threading.Thread(target=lambda: quietly(lambda: _slow_request(gw.port)))
    holder.start()
    time.sleep(0.3)
    gw.signal(signal.SIGTERM)
    assert wait_for(lambda: _status(admin_port, "/readyz") == 503, 5)
    holder.join(10)


def _slow_request(port):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        time.sleep(1.5)
        s.sendall(b"defghij")
        s.recv(65536)


def _status(port, path):
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}").status_code
    except httpx.HTTPError:
        return None


def test_workers_one_scrape_shows_the_whole_instance(upstream, gateway_factory, tmp_path):
    admin_port = free_port()
    gw = gateway_factory(obs_config(upstream.port, admin_port, tmp_path / "w.log"),
                         workers=2, env={"ADMIN_TOKEN": TOKEN})
    assert wait_for(lambda: _up(admin_port))
    for _ in range(20):
        with httpx.Client() as c:  # new connections: spread over both workers
            assert c.get(gw.url + "/echo").status_code == 200
    text = scrape(admin_port)
    assert value(text, "fastgate_requests_total", route="app", method="GET", code="200") == 20


def test_workers_readyz_503_while_draining(upstream, gateway_factory, tmp_path):
    import threading
    admin_port = free_port()
    cfg = obs_config(upstream.port, admin_port, tmp_path / "d.log", drain_timeout_s=5)
    gw = gateway_factory(cfg, workers=2, env={"ADMIN_TOKEN": TOKEN})
    assert wait_for(lambda: _up(admin_port))
    holder = threading.Thread(target=lambda: quietly(lambda: _slow_request(gw.port)))
    holder.start()
    time.sleep(0.3)
    gw.signal(signal.SIGTERM)
    assert wait_for(lambda: _status(admin_port, "/readyz") == 503, 5)
    holder.join(10)
    assert gw.proc.wait(15) == 0
