"""Shared pieces of the control-plane tests: configs, tokens and an admin client."""
from __future__ import annotations

import hashlib
import os

import httpx
import yaml

from tests.helpers.gateway import GatewayProc, free_port

TOKEN = "cp-admin-token-0123456789abcdef"
VIEWER, ALICE, BOB, ROOT = ("viewer-token-0123456789", "alice-token-0123456789",
                            "bob-token-0123456789ab", "root-token-0123456789a")
ENV = {"TOK": TOKEN, "UPSTREAM_SECRET": "s3cr3t-upstream-value"}
# a literal secret in the document (not a ${VAR}): GET /config must never show it
HMAC_SECRET = "Zq8#vL2!pR7@wK4$mN9^tB3&yH6*cF1(eA5)uJ0?dG8%sX2"


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def config(admin_port: int, version: str = "v1", *, redis=None, users=True, extra_routes=(),
           state_dir=None) -> dict:
    """Routes answer their version in the body and, through a separate policy (transform), in
    a header: a response mixing two configs would show two versions."""
    admin = {"bind": f"127.0.0.1:{admin_port}", "token": "${TOK}"}
    if users:
        admin["users"] = [
            {"name": "vera", "token_hash": token_hash(VIEWER), "role": "viewer"},
            {"name": "alice", "token_hash": token_hash(ALICE), "role": "operator"},
            {"name": "bob", "token_hash": token_hash(BOB), "role": "operator"},
            {"name": "root", "token_hash": token_hash(ROOT), "role": "admin"},
        ]
    if state_dir is not None:
        admin["state_dir"] = str(state_dir)
    cfg = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "admin": admin,
        "logging": {"access_log": "off"},
        "teams": {"payments": {"members": ["alice"]}, "search": {"members": ["bob"]}}
        if users else {},
        "auth": {"hs": {"type": "jwt", "secret": HMAC_SECRET, "algorithms": ["HS256"]}},
        "consumers": [{"name": "shop", "groups": ["payments"]},
                      {"name": "crawler", "groups": ["search"]}],
        "routes": [
            {"name": "pay", "paths": ["/pay"], "owner": "payments",
             "respond": {"status": 200, "body": version},
             "transform": {"response": {"set_headers": {"x-v": version,
                                                        "x-secret": "${UPSTREAM_SECRET}"}}}},
            {"name": "find", "paths": ["/find"], "owner": "search",
             "respond": {"status": 200, "body": "find-" + version}},
            *extra_routes,
        ],
    }
    if not users:
        del cfg["teams"]
    if redis is not None:
        cfg["redis"] = redis
    return cfg


def with_version(cfg: dict, version: str) -> dict:
    out = yaml.safe_load(yaml.safe_dump(cfg))
    pay = out["routes"][0]
    pay["respond"]["body"] = version
    pay["transform"]["response"]["set_headers"]["x-v"] = version
    out["routes"][1]["respond"]["body"] = "find-" + version
    return out


class Admin:
    def __init__(self, port: int, token: str = TOKEN):
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    def as_(self, token: str) -> "Admin":
        return Admin(int(self.url.rsplit(":", 1)[1]), token)

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=30, **kw)

    def put(self, doc, *, if_match=None, yaml_body=False) -> httpx.Response:
        headers = dict(self.headers)
        if if_match is not None:
            headers["If-Match"] = if_match
        if isinstance(doc, (bytes, str)):
            body = doc
        elif yaml_body:
            body = yaml.safe_dump(doc, sort_keys=False)
            headers["Content-Type"] = "application/yaml"
        else:
            import orjson
            body = orjson.dumps(doc)
            headers["Content-Type"] = "application/json"
        return httpx.put(self.url + "/config", headers=headers, content=body, timeout=60)

    def version(self) -> int:
        return self.get("/config").json()["x-fastgate"]["version"]

    def audit(self, since: int = 0, limit: int = 1000) -> list:
        r = self.get(f"/audit?since={since}&limit={limit}")
        assert r.status_code == 200, r.text
        return r.json()["entries"]


def start(tmp_path, cfg, *, workers=2, name="gw", env=None) -> GatewayProc:
    full = dict(ENV)
    full.update(env or {})
    return GatewayProc(cfg, tmp_path, workers=workers, env=full, name=name).wait_ready()


def admin_port() -> int:
    return free_port()


def read_file(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


__all__ = ["HMAC_SECRET", "TOKEN", "VIEWER", "ALICE", "BOB", "ROOT", "ENV", "config", "with_version", "Admin",
           "start", "admin_port", "read_file", "token_hash", "os"]
