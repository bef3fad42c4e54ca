"""The control plane under faults and load: kill -9 at any point of an apply, and steady
traffic through 50 applies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.helpers.gateway import REPO
from tests.helpers.util import wait_for
from tests.integration.cp_helpers import (Admin, admin_port, config, read_file, start,
                                          with_version)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def served(proc):
    r = httpx.get(proc.url + "/pay", timeout=10)
    assert r.status_code == 200 and r.headers["x-v"] == r.text
    return r.text


def test_kill_9_at_any_point_of_an_apply_leaves_old_or_new(tmp_path):
    """The whole instance dies at a growing delay into a PUT: on disk and in service after
    the restart there is the old document or the new one, never a mix, and the state (SQLite)
    opens. Both outcomes must have happened over the run."""
    port = admin_port()
    cfg = config(port)
    outcomes = []
    current = "v0"
    proc = start(tmp_path, with_version(cfg, current))
    for i, delay_ms in enumerate((0, 1, 2, 4, 6, 8, 11, 14, 18, 25, 35, 60, 200)):
        admin = Admin(port)
        new = f"v{i + 1}"
        put = threading.Thread(target=lambda: _quiet_put(admin, with_version(cfg, new)))
        put.start()
        time.sleep(delay_ms / 1000)
        pids = children(proc.proc.pid) + [proc.proc.pid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        put.join(30)
        proc.stop()
        on_disk = read_file(proc.path)        # parses: never a torn file
        body = on_disk["routes"][0]["respond"]["body"]
        assert body in (current, new), body
        assert on_disk == with_version(on_disk, body)   # every part of one version
        proc = start(tmp_path, on_disk)
        assert all(served(proc) == body for _ in range(10))
        entries = Admin(port).audit()
        assert entries and entries[-1]["version"] == Admin(port).version()
        outcomes.append("new" if body == new else "old")
        current = body
    proc.stop()
    print("\nkill -9 outcomes by delay:", outcomes)
    assert "old" in outcomes and "new" in outcomes


def _quiet_put(admin, doc):
    try:
        admin.put(doc)
    except httpx.HTTPError:
        pass


def test_kill_9_of_the_admin_process_mid_apply(tmp_path):
    """Only the control plane dies: the workers drop what they prepared or all have the new
    config; its replacement brings every worker to what the file says."""
    port = admin_port()
    cfg = config(port)
    proc = start(tmp_path, cfg)
    admin = Admin(port)
    try:
        for i, delay_ms in enumerate((0, 3, 8, 15, 30)):
            new = f"v{i + 2}"
            kids = children(proc.proc.pid)
            admin_pid = max(kids)        # forked after the workers
            put = threading.Thread(target=lambda: _quiet_put(admin, with_version(cfg, new)))
            put.start()
            time.sleep(delay_ms / 1000)
            os.kill(admin_pid, signal.SIGKILL)
            put.join(30)
            assert wait_for(lambda: _up(admin), timeout=15)
            body = read_file(proc.path)["routes"][0]["respond"]["body"]
            assert wait_for(lambda: all(served(proc) == body for _ in range(20)), timeout=10)
    finally:
        proc.stop()


def _up(admin):
    try:
        return admin.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def with_upstream_version(cfg, version):
    out = with_version(cfg, version)
    up = out["routes"][2]
    up["rewrite"] = "/" + version
    up["transform"]["response"]["set_headers"]["x-v"] = version
    return out


def test_traffic_through_50_applies_never_fails_or_mixes(tmp_path):
    """Keep-alive clients on a local answer and on a proxied route while 50 PUTs land."""
    port, up_port = admin_port(), admin_port()
    cfg = config(port, extra_routes=[
        {"name": "up", "paths": ["/up"], "upstream": "app", "rewrite": "/v1",
         "transform": {"response": {"set_headers": {"x-v": "v1"}}}}])
    cfg["upstreams"] = {"app": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}]}}
    proc = start(tmp_path, cfg)
    admin = Admin(port)
    load = subprocess.Popen([sys.executable, "-m", "tests.helpers.traffic", str(proc.port),
                             "32", str(up_port), "/pay", "/up"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert load.stdout.readline().strip() == "READY"
        time.sleep(0.3)
        t0 = time.monotonic()
        for i in range(50):
            r = admin.put(with_upstream_version(cfg, f"v{i + 2}"), if_match=f'"{i + 1}"')
            assert r.status_code == 200, r.text
        applies_s = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        out, _ = load.communicate("", timeout=30)
        proc.stop()
    summary = json.loads(out.strip().splitlines()[-1])
    print(f"\n50 applies in {applies_s:.2f} s under {summary['rate']:.0f} req/s "
          f"({summary['ok']} answers checked over {summary['seconds']:.1f} s)")
    assert summary["failed"] == 0 and summary["mixed"] == 0, summary["errors"]
    assert summary["ok"] > 0
    assert "v51" in summary["versions"]          # the last version was served
    assert len(summary["versions"]) > 10         # and many in between, under traffic
