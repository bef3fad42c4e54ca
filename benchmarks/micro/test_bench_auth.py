"""The auth policy: micro-benchmarks of ``AuthPolicy.access()`` per request.

Run: .venv/bin/python -m pytest benchmarks/micro/test_bench_auth.py --benchmark-enable \
       --benchmark-warmup=on --benchmark-time-unit=us -q

Target: a repeated (cached) token adds no more than a few microseconds per request, all
included: finding the Authorization header in a realistic request head (9 headers), the
cache lookup and expiry check, consumer lookup, scope check, and the upstream identity
headers. The cache-miss rows show what the cache saves (one signature check per token).
Each benchmark checks its result first, so a wrong answer cannot hide behind a fast number.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastgate.config import parse_config  # noqa: E402
from fastgate.observe.metrics import Metrics  # noqa: E402
from fastgate.policies import auth  # noqa: E402
from fastgate.policies.base import Reject  # noqa: E402
from fastgate.server.services import Services, SharedState  # noqa: E402
from tests.policies.test_auth_servers import Key, claims, ctx_for  # noqa: E402

API_KEY = b"ak_live_9f2c6e1d0b7a4c3e8f5a1b2c"
COMMON = [(b"user-agent", b"bench/1.0"), (b"accept", b"application/json"),
          (b"accept-encoding", b"gzip"), (b"x-request-id", b"0af7651916cd43dd8448eb211c80319c"),
          (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
          (b"content-type", b"application/json"), (b"cookie", b"session=abc")]


def _policy(tmp_path, auth_cfg: dict, route_auth: dict):
    cfg = parse_config({
        "listeners": [{"bind": "127.0.0.1:0"}],
        "consumers": [{"name": "alice", "groups": ["payments"], "jwt_subjects": ["user-123"],
                       "api_keys": ["sha256:" + hashlib.sha256(API_KEY).hexdigest()]}],
        "auth": auth_cfg,
        "routes": [{"name": "orders", "paths": ["/orders"], "respond": {"status": 200},
                    "auth": route_auth}]})
    services = Services(SharedState(cfg), cfg)
    services.metrics = Metrics()
    return auth.build(cfg.routes[0], services), services


def _jwt(tmp_path, key, forward=None):
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [key.jwk]}))
    a = {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders-api"],
         "algorithms": [key.alg], "jwks_file": str(p)}
    if forward:
        a["forward_claims"] = forward
    return _policy(tmp_path, {"sso": a}, {"using": ["sso"], "scopes": ["orders:read"]})


def _one(policy, headers, reset_cache=None):
    ctx = ctx_for(COMMON[:3] + list(headers) + COMMON[3:])
    access = policy.access

    def one():
        ctx.upstream_headers = []          # a fresh list per request, as the core makes
        ctx.consumer = None
        ctx.claims = None
        if reset_cache is not None:
            reset_cache()
        return access(ctx)
    return one, ctx


def test_jwt_cached_token(benchmark, tmp_path):
    key = Key()
    policy, _ = _jwt(tmp_path, key)
    tok = key.sign(claims(scope="orders:read orders:write", exp=int(time.time()) + 86400))
    one, ctx = _one(policy, [(b"authorization", b"Bearer " + tok.encode())])
    assert one() is None and ctx.consumer == "alice"
    assert benchmark(one) is None
    assert ctx.upstream_headers == [(b"x-consumer-name", b"alice"),
                                    (b"x-consumer-groups", b"payments")]
    assert policy.authenticators[0].verifications == 1


def test_jwt_cached_token_with_forwarded_claims(benchmark, tmp_path):
    """Two forward_claims: includes removing client copies of those headers from the head
    (the policy's interim fallback until the core drops them per route)."""
    key = Key()
    policy, _ = _jwt(tmp_path, key, {"sub": "X-User-Id", "scope": "X-User-Scopes"})
    tok = key.sign(claims(scope="orders:read", exp=int(time.time()) + 86400))
    one, ctx = _one(policy, [(b"authorization", b"Bearer " + tok.encode())])
    assert one() is None
    assert benchmark(one) is None
    assert len(ctx.upstream_headers) == 4


def test_api_key(benchmark, tmp_path):
    policy, _ = _policy(tmp_path, {"keys": {"type": "api_key", "header": "X-API-Key"}},
                        {"using": ["keys"]})
    one, ctx = _one(policy, [(b"x-api-key", API_KEY)])
    assert one() is None and ctx.consumer == "alice"
    assert benchmark(one) is None


def test_missing_credentials_refused(benchmark, tmp_path):
    key = Key()
    policy, _ = _jwt(tmp_path, key)
    one, _ = _one(policy, [])
    assert isinstance(one(), Reject)
    assert benchmark(one).status == 401


def test_introspection_cached(benchmark, tmp_path):
    from tests.policies.test_auth_servers import LocalIdP
    idp = LocalIdP().start()
    try:
        idp.tokens["opaque-1"] = {"active": True, "sub": "user-123", "scope": "orders:read",
                                  "exp": int(time.time()) + 86400}
        loop = asyncio.new_event_loop()

        async def make():
            return _policy(tmp_path, {"idp": {
                "type": "introspection", "url": idp.introspect_url, "client_id": "gateway",
                "client_secret": "s3cret-intro", "cache_ttl_s": 3600}},
                {"using": ["idp"], "scopes": ["orders:read"]})

        policy, services = loop.run_until_complete(make())
        one, ctx = _one(policy, [(b"authorization", b"Bearer opaque-1")])
        async def first():   # the miss starts an IdP call: it must run on this loop
            return await one()

        assert loop.run_until_complete(first()) is None and ctx.consumer == "alice"
        assert benchmark(one) is None
        assert idp.introspections == 1
        for _, obj in services.state.live.values():
            obj.close()
        loop.close()
    finally:
        idp.stop()


@pytest.mark.parametrize("kind,alg", [("RSA", "RS256"), ("EC", "ES256"), ("OKP", "EdDSA")])
def test_jwt_uncached_verification(benchmark, tmp_path, kind, alg):
    key = Key(kind, alg=alg if kind == "EC" else None)
    policy, _ = _jwt(tmp_path, key)
    a = policy.authenticators[0]
    tok = key.sign(claims(scope="orders:read", exp=int(time.time()) + 86400))
    one, ctx = _one(policy, [(b"authorization", b"Bearer " + tok.encode())],
                    reset_cache=a.cache.clear)
    assert one() is None
    before = a.verifications
    assert benchmark(one) is None
    assert a.verifications > before
