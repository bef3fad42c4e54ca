"""Config fan-out: several real instances sharing a real redis-server (and Redis Cluster)."""
from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers.util import wait_for
from tests.integration.cp_helpers import Admin, admin_port, config, start, with_version
from tests.policies.test_rate_limit_servers import (  # noqa: F401  (fixtures)
    RedisServer, redis_cluster, redis_server)


def body(proc, path="/pay"):
    try:
        return httpx.get(proc.url + path, timeout=5).text
    except httpx.HTTPError:
        return None


def instance(tmp_path, name, redis, version="v1", workers=2, env=None):
    port = admin_port()
    cfg = config(port, version, redis=redis, state_dir=tmp_path / f"state-{name}")
    return start(tmp_path, cfg, workers=workers, name=name, env=env), Admin(port), cfg


def test_an_apply_reaches_every_instance_and_a_later_one_catches_up(tmp_path, redis_server):
    redis = {"url": redis_server.url}
    a, admin_a, cfg = instance(tmp_path, "a", redis)
    b, admin_b, cfg_b = instance(tmp_path, "b", redis, workers=None)
    c = None
    try:
        assert admin_a.version() == admin_b.version() == 1
        t0 = time.monotonic()
        r = admin_a.put(with_version(cfg, "v2"), if_match='"1"')
        assert r.status_code == 200 and r.json() == {"version": 2}
        assert wait_for(lambda: body(b) == "v2", timeout=10, interval=0.01)
        print(f"\nfan-out: B served v2 {1000 * (time.monotonic() - t0):.0f} ms after A's PUT "
              "was sent")
        assert wait_for(lambda: admin_b.version() == 2)
        assert body(b, "/find") == "find-v2"
        # B's own node sections stay B's: its file still names its own admin port
        assert admin_b.get("/config").json()["admin"]["bind"] == admin_b.url[7:]
        # the stale version is stale on every instance
        assert admin_b.put(with_version(cfg_b, "lost"), if_match='"1"').status_code == 412
        # B applies too; A follows
        r = admin_b.put(with_version(cfg_b, "v3"), if_match='"2"')
        assert r.status_code == 200 and r.json() == {"version": 3}
        assert wait_for(lambda: body(a) == "v3", timeout=10)
        # an instance started later (its file still at v1) serves the current one at once
        c, admin_c, _ = instance(tmp_path, "c", redis, version="v1")
        assert body(c) == "v3" and admin_c.version() == 3
        # one audit log for the deployment, every entry with its instance
        assert wait_for(lambda: [e["action"] for e in admin_c.audit()
                                 if e["action"] == "put"] == ["put", "put"])
        versions = admin_a.get("/config").json()["x-fastgate"]["instances"]
        assert wait_for(lambda: sorted(i["version"] for i in
                                       admin_a.get("/config").json()["x-fastgate"]["instances"])
                        == [3, 3, 3]), versions
        assert "fastgate_config_version 3.0" in admin_c.get("/metrics").text
    finally:
        for p in (a, b, c):
            if p is not None:
                p.stop()


def test_redis_down_and_restarted_empty(tmp_path, redis_server):
    redis = {"url": redis_server.url, "connect_timeout_ms": 300}
    a, admin_a, cfg = instance(tmp_path, "a", redis)
    b, admin_b, _ = instance(tmp_path, "b", redis, workers=None)
    try:
        assert admin_a.put(with_version(cfg, "v2")).status_code == 200
        assert wait_for(lambda: body(b) == "v2", timeout=10)
        redis_server.kill()
        # the other instances cannot be told: refused, nothing changes anywhere
        r = admin_a.put(with_version(cfg, "v-alone"))
        assert r.status_code == 503 and "redis" in r.json()["errors"][0]
        assert body(a) == "v2" and admin_a.version() == 2
        # Redis comes back empty (no persistence): the instances seed it again and go on
        redis_server.start()
        import redis as redis_py
        client = redis_py.Redis(port=redis_server.port, socket_timeout=2)
        assert wait_for(lambda: client.get("{fastgate-cp}:version") == b"2", timeout=15)
        r = admin_a.put(with_version(cfg, "v3"), if_match='"2"')
        assert r.status_code == 200, r.text
        assert wait_for(lambda: body(b) == "v3", timeout=10)

        # restarted right after an apply, before B could fetch it: B still gets it
        b.proc.send_signal(__import__("signal").SIGSTOP)
        try:
            assert admin_a.put(with_version(cfg, "v4")).status_code == 200
            redis_server.kill()
            redis_server.start()
        finally:
            b.proc.send_signal(__import__("signal").SIGCONT)
        assert wait_for(lambda: body(b) == "v4", timeout=20)
        assert wait_for(lambda: admin_b.version() == 4)
    finally:
        a.stop()
        b.stop()


def test_an_instance_that_cannot_apply_keeps_its_version_and_says_so(tmp_path, redis_server):
    redis = {"url": redis_server.url}
    a, admin_a, cfg = instance(tmp_path, "a", redis, env={"ONLY_ON_A": "here"})
    b, admin_b, _ = instance(tmp_path, "b", redis, workers=None)
    try:
        new = with_version(cfg, "v2")
        new["routes"][1]["respond"]["body"] = "${ONLY_ON_A}"     # B has no such variable
        r = admin_a.put(new)
        assert r.status_code == 200
        assert body(a, "/find") == "here"

        def b_failed():
            rows = admin_a.get("/config").json()["x-fastgate"]["instances"]
            return any(i.get("failed", {}).get("version") == 2 and i["version"] == 1
                       for i in rows)
        assert wait_for(b_failed, timeout=10)
        assert body(b) == "v1" and admin_b.version() == 1
        failed = [e for e in admin_b.audit() if e["action"] == "apply_failed"]
        assert len(failed) == 1 and failed[0]["version"] == 2
        assert "ONLY_ON_A" in failed[0]["diff"][0]["new"]
        # visible from A as well: the audit log is the deployment's
        assert wait_for(lambda: any(e["action"] == "apply_failed" for e in admin_a.audit()))
        # the next version B can build brings it back in line
        assert admin_a.put(with_version(cfg, "v3")).status_code == 200
        assert wait_for(lambda: body(b) == "v3", timeout=10)
        assert wait_for(lambda: all("failed" not in i for i in
                                    admin_a.get("/config").json()["x-fastgate"]["instances"]))
    finally:
        a.stop()
        b.stop()


def test_fan_out_through_redis_cluster(tmp_path, redis_cluster):
    redis = {"cluster_nodes": redis_cluster.addresses}
    a, admin_a, cfg = instance(tmp_path, "a", redis)
    b, admin_b, cfg_b = instance(tmp_path, "b", redis, workers=None)
    try:
        assert admin_a.put(with_version(cfg, "v2")).status_code == 200
        assert wait_for(lambda: body(b) == "v2", timeout=10)
        assert admin_b.put(with_version(cfg_b, "v3"), if_match='"2"').status_code == 200
        assert wait_for(lambda: body(a) == "v3", timeout=10)
        assert admin_a.put(with_version(cfg, "lost"), if_match='"2"').status_code == 412
    finally:
        a.stop()
        b.stop()
