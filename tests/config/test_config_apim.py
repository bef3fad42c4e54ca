"""Config of the API-management keys: catalog metadata, teams, subscriptions."""
from __future__ import annotations

import pytest

from fastgate.config import ConfigError, parse_config

KEY = "sha256:" + "a" * 64


def base(**extra):
    doc = {
        "listeners": [{"bind": "127.0.0.1:8080"}],
        "admin": {"bind": "127.0.0.1:9901", "token": "t" * 20,
                  "users": [{"name": "ops", "token_hash": "sha256:" + "b" * 64,
                             "role": "operator"}]},
        "teams": {"pay": {"members": ["ops"]}},
        "auth": {"keys": {"type": "api_key", "header": "X-API-Key"}},
        "consumers": [{"name": "shop", "api_keys": ["sha256:" + "c" * 64]}],
        "routes": [{"name": "r", "paths": ["/r"], "respond": {"status": 200}, "owner": "pay",
                    "auth": {"using": ["keys"]}, "description": "R", "visibility": "internal",
                    "docs_url": "https://docs.example.com/r",
                    "subscription": {"required": True, "approval": "auto"}}],
    }
    doc.update(extra)
    return doc


def errors(doc):
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    return exc.value.errors


def test_catalog_keys_and_subscriptions_parse():
    sub = {"id": "s1", "consumer": "shop", "route": "r", "state": "approved", "key_hash": KEY,
           "key_hint": "fgk_abcd", "requested_by": "ops"}
    c = parse_config(base(subscriptions=[sub, dict(sub, id="s2", state="pending",
                                                   key_hash=None)]))
    r = c.routes[0]
    assert (r.owner, r.description, r.visibility, r.docs_url) == (
        "pay", "R", "internal", "https://docs.example.com/r")
    assert (r.subscription.required, r.subscription.approval) == (True, "auto")
    assert [s.id for s in c.subscriptions] == ["s1", "s2"]
    assert c.teams["pay"].members == ["ops"]


def test_every_mistake_is_reported_with_its_path():
    doc = base(subscriptions=[
        {"id": "s1", "consumer": "ghost", "route": "nowhere", "state": "approved"},
        {"id": "s1", "consumer": "shop", "route": "r", "state": "maybe"},
        {"id": "s3", "consumer": "shop", "route": "r", "state": "approved",
         "key_hash": "sha256:" + "c" * 64},
    ])
    doc["teams"]["pay"]["members"].append("nobody")
    doc["routes"][0].update(owner="other", visibility="secret", docs_url="ftp://x")
    doc["routes"].append({"name": "open", "paths": ["/o"], "respond": {},
                          "subscription": {"required": True}})
    assert errors(doc) == [
        "teams.pay.members[1]: unknown admin user 'nobody' (admin.users: ops)",
        "routes[0].owner: unknown team 'other' (teams: pay)",
        "routes[0].visibility: must be one of public | internal, got 'secret'",
        "routes[0].docs_url: scheme must be http:// or https://, got 'ftp://x'",
        "routes[1].subscription.required: needs auth on the route: it names the consumer "
        "whose subscription is checked",
        "subscriptions[0].consumer: unknown consumer 'ghost'",
        "subscriptions[0].route: unknown route 'nowhere'",
        "subscriptions[0].key_hash: an approved subscription needs the hash of its key",
        "subscriptions[1].id: duplicate subscription id (also subscriptions[0])",
        "subscriptions[1].state: must be one of pending | approved | rejected | revoked, "
        "got 'maybe'",
        "subscriptions[2].key_hash: already an api_key of consumer 'shop'",
    ]


def test_admin_users_need_unique_hashes_and_a_known_role():
    doc = base()
    doc["admin"]["users"].append({"name": "ops2", "token_hash": "sha256:" + "b" * 64,
                                  "role": "root"})
    doc["admin"]["users"].append({"name": "ops", "token_hash": "plain", "role": "viewer"})
    errs = errors(doc)
    assert any(e.startswith("admin.users[1].role: must be one of viewer | operator | admin")
               for e in errs), errs
    assert any(e.startswith("admin.users[2].token_hash: ") for e in errs), errs
