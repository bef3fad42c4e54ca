"""`fastgate audit` and the security errors of `fastgate check`."""
from __future__ import annotations

import json

import pytest

from tests.integration.test_lifecycle import fastgate

WEAK = """
listeners: [{bind: "0.0.0.0:18099"}]
admin: {bind: "0.0.0.0:18098", token: "short"}
upstreams: {a: {targets: [{url: "https://127.0.0.1:1"}], tls_verify: false}}
auth: {j: {type: jwt, secret: "0123456789012345678901234567890123", algorithms: [HS512]}}
routes: [{paths: [/x], upstream: a, auth: {using: [j]}}]
"""

FINE = """
listeners: [{bind: "127.0.0.1:18099"}]
admin: {bind: "127.0.0.1:18098", token: "a-long-enough-admin-token"}
upstreams: {a: {targets: [{url: "http://127.0.0.1:1"}]}}
routes: [{paths: [/x], upstream: a}]
"""


def test_audit_reports_severities_and_exits_1_on_high(tmp_path):
    p = tmp_path / "weak.yaml"
    p.write_text(WEAK)
    r = fastgate("audit", "-c", str(p))
    assert r.returncode == 1
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("high: auth.j.secret:")
    assert any(l.startswith("medium: admin.bind:") for l in lines)
    assert any(l.startswith("medium: admin.token:") for l in lines)
    assert any(l.startswith("medium: upstreams.a.tls_verify:") for l in lines)
    assert any(l.startswith("low: listeners[0].bind:") for l in lines)
    assert "0123456789" not in r.stdout.decode()  # secrets are never echoed
    r = fastgate("audit", "-c", str(p), "--format", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert {f["severity"] for f in doc["findings"]} == {"high", "medium", "low"}
    assert all(set(f) == {"severity", "key", "message"} for f in doc["findings"])


def test_audit_clean_config_exits_0(tmp_path):
    p = tmp_path / "fine.yaml"
    p.write_text(FINE)
    r = fastgate("audit", "-c", str(p))
    assert r.returncode == 0, r.stdout
    r = fastgate("audit", "-c", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2


def test_check_refuses_high_findings(tmp_path):
    p = tmp_path / "weak.yaml"
    p.write_text(WEAK)
    r = fastgate("check", "-c", str(p))
    assert r.returncode == 2
    assert r.stdout.decode().startswith("auth.j.secret:")
    r = fastgate("run", "-c", str(p))
    assert r.returncode == 2


def test_check_loads_tls_files(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    a = ca.issue_cert("a.example")
    b = ca.issue_cert("b.example")
    cert, key = tmp_path / "a.pem", tmp_path / "b.key"
    a.cert_chain_pems[0].write_to_path(str(cert))
    b.private_key_pem.write_to_path(str(key))  # a key that is not the certificate's
    p = tmp_path / "tls.yaml"
    p.write_text(f"""
listeners: [{{bind: "127.0.0.1:18443", tls: {{cert_file: "{cert}", key_file: "{key}"}}}}]
routes: [{{paths: [/x], respond: {{status: 200}}}}]
""")
    r = fastgate("check", "-c", str(p))
    assert r.returncode == 2
    assert r.stdout.decode().startswith("listeners[0].tls:")
