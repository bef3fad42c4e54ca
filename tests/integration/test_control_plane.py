"""The control plane on one instance: real `fastgate run --workers 2` processes, real admin
requests, the config file and the SQLite state on disk."""
from __future__ import annotations

import os
import signal

import httpx
import pytest
import yaml

from tests.helpers.util import wait_for
from tests.integration.cp_helpers import (ALICE, BOB, HMAC_SECRET, ROOT, VIEWER, Admin,
                                          admin_port, config, read_file, start, with_version)


@pytest.fixture
def gw(tmp_path):
    port = admin_port()
    cfg = config(port)
    proc = start(tmp_path, cfg)
    try:
        yield proc, Admin(port), cfg
    finally:
        proc.stop()


def ok(fn):
    def probe():
        try:
            return fn()
        except httpx.HTTPError:
            return False
    return probe


def served(gw_proc, path="/pay"):
    r = httpx.get(gw_proc.url + path, timeout=10)
    return r.status_code, r.text, r.headers.get("x-v")


def every_worker_serves(gw_proc, body, n=20):
    # connections are spread over the workers by the kernel: many short ones reach both
    return all(httpx.get(gw_proc.url + "/pay", timeout=10).text == body for _ in range(n))


def test_put_applies_to_every_worker_writes_the_file_and_versions(gw):
    proc, admin, cfg = gw
    r = admin.get("/config")
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    assert r.json()["x-fastgate"]["version"] == 1
    assert served(proc) == (200, "v1", "v1")

    new = with_version(cfg, "v2")
    r = admin.put(new, if_match='"1"')
    assert r.status_code == 200, r.text
    assert r.json() == {"version": 2} and r.headers["etag"] == '"2"'
    assert every_worker_serves(proc, "v2")
    assert served(proc, "/find")[1] == "find-v2"
    on_disk = read_file(proc.path)
    assert on_disk["routes"][0]["respond"]["body"] == "v2"
    # references stay references: the file never receives a resolved secret
    assert on_disk["admin"]["token"] == "${TOK}"
    assert on_disk["routes"][0]["transform"]["response"]["set_headers"]["x-secret"] == \
        "${UPSTREAM_SECRET}"
    assert admin.get("/config").headers["etag"] == '"2"'
    metrics = admin.get("/metrics").text
    assert "fastgate_config_version 2.0" in metrics

    # YAML is accepted as well; no If-Match means "whatever is current"
    r = admin.put(with_version(cfg, "v3"), yaml_body=True)
    assert r.status_code == 200 and r.json() == {"version": 3}
    assert every_worker_serves(proc, "v3")


def test_stale_if_match_is_412_and_changes_nothing(gw):
    proc, admin, cfg = gw
    assert admin.put(with_version(cfg, "v2"), if_match='"1"').status_code == 200
    # a second operator who read version 1 does not overwrite the first one's change
    r = admin.put(with_version(cfg, "v-lost"), if_match='"1"')
    assert r.status_code == 412
    assert r.headers["etag"] == '"2"'
    assert every_worker_serves(proc, "v2")
    assert read_file(proc.path)["routes"][0]["respond"]["body"] == "v2"
    assert admin.put(with_version(cfg, "v3"), if_match='"2"').status_code == 200


def test_invalid_document_is_400_with_every_error_and_nothing_changes(gw, tmp_path):
    proc, admin, cfg = gw
    before = open(proc.path, "rb").read()
    bad = with_version(cfg, "v2")
    bad["routes"][0]["upstream"] = "nowhere"            # two targets + unknown upstream
    bad["routes"][1]["paths"] = ["no-slash"]
    bad["limits"] = {"max_headers": -1}
    r = admin.put(bad)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert any(e.startswith("routes[0].upstream: ") for e in errors), errors
    assert any(e.startswith("routes[1].paths[0]: ") for e in errors), errors
    assert any(e.startswith("limits.max_headers: ") for e in errors), errors
    # exactly what `fastgate check` says of the same document
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dict(bad, admin=cfg["admin"]), sort_keys=False))
    import subprocess
    import sys
    check = subprocess.run([sys.executable, "-m", "fastgate", "check", "-c", str(path)],
                           capture_output=True, env=dict(os.environ, TOK="x" * 32,
                                                         UPSTREAM_SECRET="y"))
    assert check.returncode == 2
    assert [e for e in errors] == check.stdout.decode().splitlines()
    assert admin.put(b"routes: [unclosed").status_code == 400
    assert admin.put(b"- a list").status_code == 400
    assert open(proc.path, "rb").read() == before
    assert admin.version() == 1 and every_worker_serves(proc, "v1")


def test_node_sections_need_a_restart(gw):
    proc, admin, cfg = gw
    moved = with_version(cfg, "v2")
    moved["listeners"] = [{"bind": "127.0.0.1:1"}]
    r = admin.put(moved)
    assert r.status_code == 400 and r.json()["errors"] == [
        "listeners: changing it needs a restart of this instance"]
    other = with_version(cfg, "v2")
    other["admin"] = dict(other["admin"], token="another-token-0123456789")
    assert admin.put(other).status_code == 400
    assert admin.version() == 1


def test_secrets_never_shown_and_a_round_trip_keeps_them(gw):
    proc, admin, cfg = gw
    text = admin.get("/config").text
    assert HMAC_SECRET not in text and "cp-admin-token" not in text
    shown = admin.get("/config").json()
    assert shown["auth"]["hs"]["secret"] == "***"
    assert shown["admin"]["token"] == "***"
    assert all(u["token_hash"] == "***" for u in shown["admin"]["users"])
    # read, modify, write back: the *** placeholders stand for the running values
    shown["routes"][0]["respond"]["body"] = "v2"
    shown["routes"][0]["transform"]["response"]["set_headers"]["x-v"] = "v2"
    r = admin.put(shown, if_match='"1"')
    assert r.status_code == 200, r.text
    on_disk = read_file(proc.path)
    assert on_disk["auth"]["hs"]["secret"] == HMAC_SECRET
    assert on_disk["admin"]["users"] == cfg["admin"]["users"]
    assert "x-fastgate" not in on_disk
    assert served(proc) == (200, "v2", "v2")
    # the audit diff names the change, never a secret
    rotated = read_file(proc.path)
    rotated["auth"]["hs"]["secret"] = HMAC_SECRET[::-1]
    assert admin.put(rotated).status_code == 200
    entries = admin.audit()
    last = entries[-1]
    assert last["diff"] == [{"path": "auth.hs.secret", "op": "changed", "old": "***",
                             "new": "***"}]
    assert HMAC_SECRET not in admin.get("/audit").text
    assert HMAC_SECRET[::-1] not in admin.get("/audit").text


def test_roles_and_team_scopes(gw):
    proc, admin, cfg = gw
    assert admin.as_("not-a-token").get("/config").status_code == 401
    viewer = admin.as_(VIEWER)
    assert viewer.get("/config").status_code == 200
    assert viewer.get("/audit").status_code == 200
    assert viewer.get("/metrics").status_code == 200
    assert viewer.put(with_version(cfg, "v2")).status_code == 403

    alice = admin.as_(ALICE)      # operator of team payments, which owns route pay
    mine = yaml.safe_load(yaml.safe_dump(cfg))
    mine["routes"][0]["respond"]["body"] = "alice-v2"
    r = alice.put(mine)
    assert r.status_code == 200, r.text
    assert served(proc)[1] == "alice-v2"
    theirs = yaml.safe_load(yaml.safe_dump(mine))
    theirs["routes"][1]["respond"]["body"] = "alice-was-here"     # route find: team search
    r = alice.put(theirs)
    assert r.status_code == 403 and r.json()["errors"] == [
        "routes[find]: not within the teams of alice"]
    stolen = yaml.safe_load(yaml.safe_dump(mine))
    stolen["routes"][1]["owner"] = "payments"                     # taking it over is a change too
    assert alice.put(stolen).status_code == 403
    node = yaml.safe_load(yaml.safe_dump(mine))
    node["limits"] = {"max_headers": 50}
    assert alice.put(node).status_code == 403
    consumer = yaml.safe_load(yaml.safe_dump(mine))
    consumer["consumers"][0]["groups"] = ["payments", "vip"]       # shop is a payments consumer
    assert alice.put(consumer).status_code == 200
    consumer["consumers"][1]["groups"] = ["search", "vip"]         # crawler is not
    assert alice.put(consumer).status_code == 403

    bob = admin.as_(BOB)
    find = read_file(proc.path)
    find["routes"][1]["respond"]["body"] = "bob-v"
    assert bob.put(find).status_code == 200
    assert served(proc, "/find")[1] == "bob-v"
    root = admin.as_(ROOT)
    assert root.put(with_version(cfg, "root-v")).status_code == 200
    actors = [(e["actor"], e["action"]) for e in admin.audit()]
    assert actors == [("file", "load"), ("alice", "put"), ("alice", "put"), ("bob", "put"),
                      ("root", "put")]


def test_audit_log_survives_restarts_and_records_sighup(tmp_path):
    port = admin_port()
    cfg = config(port)
    proc = start(tmp_path, cfg)
    admin = Admin(port)
    try:
        assert admin.put(with_version(cfg, "v2")).status_code == 200
        edited = read_file(proc.path)
        edited["routes"][1]["respond"]["body"] = "edited-by-hand"
        proc.write_config(edited)
        proc.signal(signal.SIGHUP)
        assert wait_for(lambda: served(proc, "/find")[1] == "edited-by-hand")
        assert wait_for(lambda: admin.version() == 3)
        # an invalid edit keeps the running config and is no change
        proc.write_config("routes: [broken")
        proc.signal(signal.SIGHUP)
        assert wait_for(lambda: "keeping the running config" in proc.stderr())
        assert served(proc, "/find")[1] == "edited-by-hand"
        proc.write_config(edited)
    finally:
        assert proc.stop() == 0
    proc = start(tmp_path, read_file(proc.path))
    try:
        assert admin.version() == 3          # the same document is the same version
        entries = admin.audit()
        assert [(e["actor"], e["action"], e["version"]) for e in entries] == [
            ("file", "load", 1), ("admin", "put", 2), ("file", "reload", 3)]
        assert entries[2]["diff"] == [{"path": "routes[find].respond.body", "op": "changed",
                                       "old": "find-v2", "new": "edited-by-hand"}]
        for e in entries:
            assert set(e) >= {"id", "at", "actor", "action", "version", "diff"}
            assert e["at"].endswith("Z") and "T" in e["at"]
        ids = [e["id"] for e in entries]
        assert ids == sorted(ids)
        assert admin.audit(since=ids[0]) == entries[1:]
        assert admin.audit(since=ids[0], limit=1) == entries[1:2]
        assert admin.get("/audit?limit=0").status_code == 400
        assert admin.get("/audit?since=x").status_code == 400
    finally:
        proc.stop()
    # edited while stopped: a new version at the next start, audited as a load
    changed = read_file(proc.path)
    changed["routes"][0]["respond"]["body"] = "offline-edit"
    proc = start(tmp_path, changed)
    try:
        assert admin.version() == 4
        assert admin.audit()[-1]["action"] == "load"
        assert served(proc)[1] == "offline-edit"
    finally:
        proc.stop()


def test_a_replaced_worker_serves_the_applied_config(gw):
    proc, admin, cfg = gw
    assert admin.put(with_version(cfg, "v2")).status_code == 200
    import subprocess
    pids = subprocess.run(["pgrep", "-P", str(proc.proc.pid)], capture_output=True,
                          text=True).stdout.split()
    assert len(pids) == 3
    for n, pid in enumerate(pids, 1):      # every worker and the admin process, one by one
        os.kill(int(pid), signal.SIGKILL)
        assert wait_for(lambda: proc.stderr().count("replacing it") == n)
    assert wait_for(ok(lambda: admin.get("/healthz").status_code == 200), timeout=15)
    assert wait_for(ok(lambda: every_worker_serves(proc, "v2")), timeout=15), proc.stderr()
    assert admin.version() == 2


def test_hostile_bodies_are_refused_cleanly(gw):
    proc, admin, cfg = gw
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    r = admin.put(bomb.encode())
    assert r.status_code == 400
    assert admin.put(b"\xff\xfe not utf-8").status_code == 400
    assert admin.put(b"[" * 10000).status_code == 400
    r = httpx.put(admin.url + "/config", headers=admin.headers, content=b"x" * (5 << 20))
    assert r.status_code == 413
    # a stranger gets 401 before any body is read, whatever it announces
    r = httpx.put(admin.url + "/config", content=yaml.safe_dump(cfg))
    assert r.status_code == 401
    assert admin.version() == 1 and served(proc)[1] == "v1"
