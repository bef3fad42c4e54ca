"""API management over the admin API: catalog, subscriptions with approval, usage -- on real
gateway processes, with keys used through the gateway like a consumer would."""
from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.helpers.util import wait_for
from tests.integration.cp_helpers import ALICE, BOB, VIEWER, Admin, admin_port, config, start
from tests.policies.test_rate_limit_servers import redis_server  # noqa: F401  (fixture)

SHOP_KEY = "shop-own-key-0123456789abcdef"


def apim_config(port, redis=None):
    cfg = config(port, redis=redis, state_dir=None)
    cfg["auth"]["keys"] = {"type": "api_key", "header": "X-API-Key"}
    cfg["consumers"][0]["api_keys"] = ["sha256:" + hashlib.sha256(SHOP_KEY.encode()).hexdigest()]
    pay, find = cfg["routes"][0], cfg["routes"][1]
    pay.update(auth={"using": ["keys"]}, description="Payments of the shop",
               docs_url="https://docs.example.com/pay",
               subscription={"required": True, "approval": "manual"},
               lifecycle={"state": "deprecated", "sunset": "2027-06-30T00:00:00Z",
                          "successor": "/v2/pay"})
    find.update(auth={"using": ["keys"]}, visibility="internal",
                subscription={"approval": "auto"})
    return cfg


@pytest.fixture
def gw(tmp_path):
    port = admin_port()
    proc = start(tmp_path, apim_config(port))
    try:
        yield proc, Admin(port)
    finally:
        proc.stop()


def call(proc, path, key):
    return httpx.get(proc.url + path, headers={"X-API-Key": key}, timeout=10)


def all_workers(proc, path, key, status, n=12):
    return all(call(proc, path, key).status_code == status for _ in range(n))


def test_catalog(gw):
    proc, admin = gw
    apis = {a["route"]: a for a in admin.as_(VIEWER).get("/catalog").json()["apis"]}
    assert apis["pay"] == {
        "route": "pay", "description": "Payments of the shop", "owner": "payments",
        "lifecycle": {"state": "deprecated", "sunset": "2027-06-30T00:00:00Z",
                      "successor": "/v2/pay"},
        "docs_url": "https://docs.example.com/pay", "visibility": "public",
        "subscription": {"required": True, "approval": "manual"},
        "paths": ["/pay"], "methods": []}
    assert apis["find"]["visibility"] == "internal"
    assert apis["find"]["subscription"] == {"required": False, "approval": "auto"}
    assert admin.as_("nope").get("/catalog").status_code == 401


def test_subscription_flow_with_manual_approval(gw):
    proc, admin = gw
    vera, alice, bob = admin.as_(VIEWER), admin.as_(ALICE), admin.as_(BOB)
    # valid credentials, no subscription: refused
    r = call(proc, "/pay", SHOP_KEY)
    assert r.status_code == 403 and r.json()["error"]["code"] == "subscription_required"
    r = httpx.post(vera.url + "/subscriptions", headers=vera.headers,
                   json={"consumer": "shop", "route": "pay"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["state"] == "pending" and "api_key" not in sub
    assert sub["consumer"] == "shop" and sub["route"] == "pay" and sub["requested_by"] == "vera"
    sid = sub["id"]
    again = httpx.post(vera.url + "/subscriptions", headers=vera.headers,
                       json={"consumer": "shop", "route": "pay"})
    assert again.status_code == 409
    # who sees the request: the requester, the owning team's operator, admins; not bob
    assert [s["id"] for s in vera.get("/subscriptions").json()["subscriptions"]] == [sid]
    pending = alice.get("/subscriptions?state=pending").json()["subscriptions"]
    assert [s["id"] for s in pending] == [sid]
    assert bob.get("/subscriptions").json()["subscriptions"] == []
    assert httpx.post(f"{bob.url}/subscriptions/{sid}/approve", headers=bob.headers
                      ).status_code == 404
    assert httpx.post(f"{vera.url}/subscriptions/{sid}/approve", headers=vera.headers
                      ).status_code == 403
    r = httpx.post(f"{alice.url}/subscriptions/{sid}/approve", headers=alice.headers)
    assert r.status_code == 200, r.text
    approved = r.json()
    key = approved["api_key"]
    assert approved["state"] == "approved" and approved["decided_by"] == "alice"
    assert key.startswith("fgk_") and len(key) > 40
    # accepted at once, by every worker; only on the route it was granted for
    assert all_workers(proc, "/pay", key, 200)
    assert call(proc, "/pay", key).text == "v1"
    assert all_workers(proc, "/pay", SHOP_KEY, 200)      # the consumer is now subscribed
    assert call(proc, "/find", key).status_code == 401
    # the key is never shown again, and stored only as a hash
    listed = admin.get(f"/subscriptions/{sid}").json()
    assert "api_key" not in listed and "key_hash" not in listed
    text = admin.get("/config").text + open(proc.path).read() + admin.get("/audit").text
    assert key not in text
    on_disk = open(proc.path).read()
    assert "sha256:" + hashlib.sha256(key.encode()).hexdigest() in on_disk
    assert httpx.post(f"{alice.url}/subscriptions/{sid}/approve", headers=alice.headers
                      ).status_code == 409
    # usage per consumer, route and day
    for _ in range(5):
        assert call(proc, "/pay", key).status_code == 200

    def counted():
        rows = admin.get("/usage").json()["requests"]
        return sum(r["requests"] for r in rows if (r["consumer"], r["route"]) == ("shop", "pay"))
    assert wait_for(lambda: counted() >= 5 + 12 + 12 + 1, timeout=10)
    usage = admin.get("/usage").json()
    assert usage["usage"] == []             # no AI traffic went through this gateway
    # revoked: the key stops at once
    r = httpx.delete(f"{vera.url}/subscriptions/{sid}", headers=vera.headers)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert all_workers(proc, "/pay", key, 401)
    assert all_workers(proc, "/pay", SHOP_KEY, 403)
    actions = [e["action"] for e in admin.audit() if e["action"].startswith("subscription")]
    assert actions == ["subscription.request", "subscription.approve", "subscription.revoke"]


def test_auto_approval_and_refusals(gw):
    proc, admin = gw
    bob = admin.as_(BOB)
    r = httpx.post(bob.url + "/subscriptions", headers=bob.headers,
                   json={"consumer": "crawler", "route": "find"})
    assert r.status_code == 201 and r.json()["state"] == "approved"
    assert all_workers(proc, "/find", r.json()["api_key"], 200)
    for body, status in (({"consumer": "ghost", "route": "find"}, 400),
                         ({"consumer": "shop", "route": "nowhere"}, 404),
                         ({"consumer": "shop"}, 400), ("not json", 400)):
        kw = {"json": body} if isinstance(body, dict) else {"content": body}
        assert httpx.post(bob.url + "/subscriptions", headers=bob.headers,
                          **kw).status_code == status
    assert httpx.post(admin.url + "/subscriptions/sub-nope/reject",
                      headers=admin.headers).status_code == 404
    assert admin.get("/subscriptions?state=bogus").status_code == 400
    r = httpx.post(admin.url + "/subscriptions", headers=admin.headers,
                   json={"consumer": "shop", "route": "pay"})
    sid = r.json()["id"]
    r = httpx.post(f"{admin.url}/subscriptions/{sid}/reject", headers=admin.headers)
    assert r.status_code == 200 and r.json()["state"] == "rejected" and "api_key" not in r.json()
    assert call(proc, "/pay", SHOP_KEY).status_code == 403


def test_revocation_reaches_a_second_instance(tmp_path, redis_server):
    redis = {"url": redis_server.url}
    pa, pb = admin_port(), admin_port()
    cfg_a = apim_config(pa, redis)
    cfg_a["admin"]["state_dir"] = str(tmp_path / "sa")
    cfg_b = apim_config(pb, redis)
    cfg_b["admin"]["state_dir"] = str(tmp_path / "sb")
    a = start(tmp_path, cfg_a, name="a")
    b = start(tmp_path, cfg_b, name="b", workers=None)
    try:
        admin_a, admin_b = Admin(pa), Admin(pb)
        r = httpx.post(admin_a.url + "/subscriptions", headers=admin_a.headers,
                       json={"consumer": "shop", "route": "pay"})
        sid = r.json()["id"]
        key = httpx.post(f"{admin_a.url}/subscriptions/{sid}/approve",
                         headers=admin_a.headers).json()["api_key"]
        assert wait_for(lambda: call(b, "/pay", key).status_code == 200, timeout=10)
        # revoked on B: A stops taking the key
        assert httpx.delete(f"{admin_b.url}/subscriptions/{sid}",
                            headers=admin_b.headers).status_code == 200
        assert wait_for(lambda: all_workers(a, "/pay", key, 401), timeout=10)
        # usage is the deployment's: calls made on A are counted on B
        for _ in range(3):
            call(a, "/pay", SHOP_KEY)
        assert wait_for(lambda: any(r["consumer"] == "shop" and r["requests"] >= 1 for r in
                                    admin_b.get("/usage").json()["requests"]), timeout=10)
    finally:
        a.stop()
        b.stop()
