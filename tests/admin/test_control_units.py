"""The control plane's pure parts: redaction round trips, diffs, team scopes, the store."""
from __future__ import annotations

import sqlite3

import pytest

from fastgate.admin import documents as D
from fastgate.admin.identity import Actor, Identities, scope_violations, _overlap
from fastgate.admin.store import Store
from fastgate.config import parse_config
from tests.integration.cp_helpers import ALICE, ROOT, TOKEN, VIEWER, config


DOC = {
    "admin": {"bind": "127.0.0.1:9901", "token": "tok-secret",
              "users": [{"name": "a", "token_hash": "sha256:" + "0" * 64, "role": "admin"}]},
    "redis": {"url": "redis://user:pw@127.0.0.1:6379/0"},
    "consumers": [{"name": "c1", "api_keys": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]}],
    "auth": {"j": {"type": "jwt", "secret": "hmac-secret"}},
    "routes": [{"name": "r", "paths": ["/r"], "respond": {"status": 200},
                "transform": {"request": {"set_headers": {"Authorization": "Bearer up"}}}}],
}


def test_redact_hides_every_secret_and_unredact_restores_them():
    shown = D.redact(DOC)
    text = repr(shown)
    for secret in ("tok-secret", "0" * 64, "user:pw", "1" * 64, "hmac-secret", "Bearer up"):
        assert secret not in text
    assert shown["redis"]["url"] == "redis://***@127.0.0.1:6379/0"
    assert D.unredact(shown, DOC) == DOC
    # reordered named items still find their values
    shown["routes"] = list(reversed(shown["routes"]))
    assert D.unredact(shown, DOC)["routes"] == DOC["routes"]
    # a *** with nothing behind it stays *** (and validation refuses it)
    assert D.unredact({"auth": {"new": {"secret": "***"}}}, DOC) == \
        {"auth": {"new": {"secret": "***"}}}
    # a changed URL keeps what was sent
    assert D.unredact({"redis": {"url": "redis://***@other:1/0"}}, DOC)["redis"]["url"] == \
        "redis://***@other:1/0"


def test_diff_by_name_redacted():
    new = D.unredact(D.redact(DOC), DOC)
    new["routes"] = [dict(new["routes"][0], timeout_s=3), {"name": "s", "paths": ["/s"]}]
    new["auth"] = {"j": {"type": "jwt", "secret": "rotated"}}
    del new["redis"]
    out = D.diff(DOC, new)
    assert {"path": "routes[r].timeout_s", "op": "added", "new": 3} in out
    assert {"path": "routes[s]", "op": "added", "new": {"name": "s", "paths": ["/s"]}} in out
    assert {"path": "auth.j.secret", "op": "changed", "old": "***", "new": "***"} in out
    assert {"path": "redis", "op": "removed", "old": {"url": "redis://***@127.0.0.1:6379/0"}} in out
    assert "rotated" not in repr(out) and "hmac-secret" not in repr(out)


def test_split_and_merge_keep_node_sections_local():
    shared, node = D.split(dict(DOC, limits={"max_headers": 10}, **{"x-anchors": 1}))
    assert set(shared) == {"consumers", "auth", "routes"}
    assert set(node) == {"admin", "redis", "limits", "x-anchors"}
    other = {"admin": {"bind": "b"}, "routes": []}
    merged = D.merge(other, shared)
    assert merged["admin"] == {"bind": "b"} and merged["routes"] == DOC["routes"]


def test_identities_and_roles():
    cfg = parse_config(config(9901), env={"TOK": TOKEN, "UPSTREAM_SECRET": "x"})
    ids = Identities(cfg.admin, cfg.teams)
    assert ids.authenticate(TOKEN.encode()).role == "admin"
    alice = ids.authenticate(ALICE.encode())
    assert (alice.name, alice.role, alice.teams) == ("alice", "operator", frozenset({"payments"}))
    assert ids.authenticate(VIEWER.encode()).role == "viewer"
    assert ids.authenticate(ROOT.encode()).name == "root"
    assert ids.authenticate(b"nope") is None
    assert ids.authenticate(TOKEN.encode() + b"x") is None


def test_operator_scope():
    alice = Actor("alice", "operator", frozenset({"payments"}))
    old = {"routes": [{"name": "pay", "owner": "payments", "paths": ["/pay"]},
                      {"name": "find", "owner": "search", "paths": ["/find/{id}"]}],
           "consumers": [{"name": "c", "groups": ["payments"]}],
           "upstreams": {"u": {}}}

    def change(**kw):
        new = D.unredact(old, old)
        for k, v in kw.items():
            new[k] = v
        return scope_violations(alice, old, new)

    assert change() == []
    assert change(routes=[dict(old["routes"][0], timeout_s=1), old["routes"][1]]) == []
    assert change(routes=[old["routes"][0]]) == ["routes[find]"]                 # removal
    assert change(upstreams={}) == ["upstreams"]
    assert change(routes=old["routes"] + [{"name": "n", "owner": "search"}]) == ["routes[n]"]
    # a new route of her team that would answer another team's requests
    assert change(routes=old["routes"] + [{"name": "n", "owner": "payments",
                                           "paths": ["/find/*"]}]) == [
        "routes[n].paths: '/find/*' overlaps routes[find], which is another team's"]
    assert change(routes=old["routes"] + [{"name": "n", "owner": "payments",
                                           "paths": ["/pay/new"]}]) == []
    assert scope_violations(Actor("v", "viewer"), old, old) != []
    assert scope_violations(Actor("r", "admin"), old, {}) == []


@pytest.mark.parametrize("a, b, both", [
    ("/a", "/a", True), ("/a", "/b", False), ("/a/{id}", "/a/x", True), ("/a/*", "/a", True),
    ("/a/*", "/a/b/c", True), ("/a/{id}", "/a/x/y", False), ("/*", "/anything", True),
    ("/a/b", "/a/{x}/c", False),
])
def test_path_overlap(a, b, both):
    assert _overlap(a, b) is both and _overlap(b, a) is both


def test_store_is_append_only_and_ordered(tmp_path):
    store = Store(str(tmp_path))
    entries = [store.append({"actor": "a", "action": "put", "version": i, "diff": [],
                             "instance": "i1"}) for i in range(5)]
    ids = [e["id"] for e in entries]
    assert ids == sorted(set(ids))
    assert [e["version"] for e in store.entries(since=ids[1], limit=2)] == [2, 3]
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    db.close()
    store.record(7, "d", {"routes": []}, None)
    assert store.latest() == (7, "d", {"routes": []})
    # entries of other instances are mirrored once
    theirs = dict(entries[0], id=ids[-1] + 10, instance="i2")
    assert store.mirror([theirs, theirs]) == 1
    store.close()
    again = Store(str(tmp_path))
    assert len(again.entries()) == 6 and again.latest()[0] == 7
    assert again.append({"actor": "a", "action": "put", "version": 8, "diff": [],
                         "instance": "i1"})["id"] > theirs["id"]
