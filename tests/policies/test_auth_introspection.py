"""Token introspection (RFC 7662) against a real local IdP: client authentication, `active`,
caching bounded by exp, single-flight, and failing closed (IdP down, slow, wrong answers)."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.policies.test_auth_servers import (  # noqa: F401  (idp is a fixture)
    Harness, challenge, gateway_config, idp,
)

TOKEN = "opaque-token-AbC.123_~+/"


def intro_harness(idp, route_auth=None, **kw):
    auth = {"type": "introspection", "url": idp.introspect_url, "client_id": "gateway",
            "client_secret": "s3cret-intro", "timeout_s": 2,
            "forward_claims": {"sub": "X-User-Id", "client_id": "X-Client-Id"}}
    auth.update(kw)
    return Harness(gateway_config(
        {"idp": auth}, route_auth or {"using": ["idp"]},
        consumers=[{"name": "alice", "groups": ["payments"], "jwt_subjects": ["user-123"]}]))


def auth_header(token=TOKEN):
    return (b"authorization", b"Bearer " + token.encode())


def active(**kw):
    base = {"active": True, "sub": "user-123", "client_id": "web", "scope": "orders:read",
            "exp": int(time.time()) + 600}
    base.update(kw)
    return base


def test_active_token_lets_in_with_identity(idp):
    idp.tokens[TOKEN] = active()

    async def go():
        h = intro_harness(idp)
        r, ctx = await h.decide([auth_header()])
        h.close()
        return r, ctx

    r, ctx = asyncio.run(go())
    assert r is None
    assert ctx.consumer == "alice" and ctx.claims["client_id"] == "web"
    assert ctx.upstream_headers == [
        (b"x-consumer-name", b"alice"), (b"x-consumer-groups", b"payments"),
        (b"x-user-id", b"user-123"), (b"x-client-id", b"web")]
    assert idp.introspections == 1 and idp.bad_client_auth == 0


def test_answers_are_cached(idp):
    idp.tokens[TOKEN] = active()

    async def go():
        h = intro_harness(idp)
        for _ in range(10):
            r, _ = await h.decide([auth_header()])
            assert r is None
        h.close()

    asyncio.run(go())
    assert idp.introspections == 1


def test_cache_never_outlives_exp(idp):
    idp.tokens[TOKEN] = active(exp=time.time() + 0.3)

    async def go():
        h = intro_harness(idp, cache_ttl_s=60)
        assert (await h.decide([auth_header()]))[0] is None
        assert (await h.decide([auth_header()]))[0] is None
        assert idp.introspections == 1
        await asyncio.sleep(0.35)
        idp.tokens[TOKEN] = {"active": False}
        r, _ = await h.decide([auth_header()])
        h.close()
        return r

    r = asyncio.run(go())
    assert r.status == 401 and idp.introspections == 2


def test_cache_ttl_bounds_too(idp):
    idp.tokens[TOKEN] = active()

    async def go():
        h = intro_harness(idp, cache_ttl_s=0.2)
        assert (await h.decide([auth_header()]))[0] is None
        await asyncio.sleep(0.25)
        idp.tokens[TOKEN] = {"active": False}   # revoked at the IdP
        r, _ = await h.decide([auth_header()])
        h.close()
        return r

    r = asyncio.run(go())
    assert r.status == 401 and idp.introspections == 2


@pytest.mark.parametrize("answer", [
    {"active": False}, {"active": "true"}, {"active": 1}, {}, {"sub": "user-123"},
    {"active": True, "sub": "user-123", "exp": 1000},
])
def test_only_active_true_lets_in(idp, answer):
    idp.tokens[TOKEN] = answer

    async def go():
        h = intro_harness(idp)
        r1, ctx = await h.decide([auth_header()])
        r2, _ = await h.decide([auth_header()])
        h.close()
        return r1, r2, ctx, h.failures()

    r1, r2, ctx, failures = asyncio.run(go())
    assert (r1.status, r1.code) == (401, "unauthorized")
    assert 'error="invalid_token"' in challenge(r1)[0]
    assert ctx.consumer is None and ctx.claims is None
    assert failures == {("orders", "inactive"): 2}
    assert idp.introspections == 1, "the inactive answer is remembered briefly"


@pytest.mark.parametrize("trouble", ["down", "500", "401", "not-json", "slow"])
def test_idp_trouble_fails_closed_within_timeout(idp, trouble):
    idp.tokens[TOKEN] = active()
    if trouble == "down":
        idp.down = True
    elif trouble == "500":
        idp.fail_status = 500
    elif trouble == "401":
        idp.client_secret = "rotated"          # our credentials no longer work
    elif trouble == "slow":
        idp.delay_s = 3.0

    async def go():
        h = intro_harness(idp, timeout_s=0.5)
        if trouble == "not-json":
            idp.tokens[TOKEN] = None           # answers JSON null
        t0 = time.monotonic()
        r, ctx = await h.decide([auth_header()])
        took = time.monotonic() - t0
        r2, _ = await h.decide([auth_header()])
        h.close()
        return r, r2, ctx, took, h.failures()

    r, r2, ctx, took, failures = asyncio.run(go())
    assert (r.status, r.code) == (503, "idp_unavailable")
    assert r2.status == 503
    assert ctx.consumer is None and ctx.upstream_headers == []
    assert took < 2.0
    assert failures == {("orders", "idp_unavailable"): 2}
    assert idp.introspections == 2, "trouble is not cached: the next request asks again"


def test_concurrent_requests_share_one_call(idp):
    idp.tokens[TOKEN] = active()
    idp.delay_s = 0.2

    async def go():
        h = intro_harness(idp)
        out = await asyncio.gather(*(h.decide([auth_header()]) for _ in range(20)))
        h.close()
        return out

    out = asyncio.run(go())
    assert all(r is None for r, _ in out)
    assert idp.introspections == 1


def test_a_cancelled_request_does_not_cancel_the_shared_call(idp):
    idp.tokens[TOKEN] = active()
    idp.delay_s = 0.2

    async def go():
        h = intro_harness(idp)
        first = asyncio.ensure_future(h.decide([auth_header()]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(h.decide([auth_header()]))
        await asyncio.sleep(0.01)
        first.cancel()                       # that client went away
        r, _ = await second
        h.close()
        return r

    assert asyncio.run(go()) is None
    assert idp.introspections == 1


def test_malformed_token_never_reaches_the_idp(idp):
    async def go():
        h = intro_harness(idp)
        r1, _ = await h.decide([(b"authorization", b"Bearer " + b"a" * 5000)])
        r2, _ = await h.decide([(b"authorization", b"Bearer bad\"token")])
        h.close()
        return r1, r2

    r1, r2 = asyncio.run(go())
    assert r1.status == 401 and r2.status == 401
    assert idp.introspections == 0


def test_scopes_and_mfa_from_introspection(idp):
    idp.tokens["a"] = active(scope="orders:read orders:write", amr=["pwd", "otp"])
    idp.tokens["b"] = active(scope="orders:read", amr=["pwd", "otp"])
    idp.tokens["c"] = active(scope="orders:read orders:write", amr=["pwd"])

    async def go():
        h = intro_harness(idp, route_auth={"using": ["idp"], "mfa": True,
                                           "scopes": ["orders:write"]})
        out = [await h.decide([auth_header(t)]) for t in "abc"]
        h.close()
        return out

    (ra, _), (rb, _), (rc, _) = asyncio.run(go())
    assert ra is None
    assert (rb.status, rb.code) == (403, "forbidden")
    assert (rc.status, rc.code) == (401, "insufficient_user_authentication")


def test_client_credentials_are_form_encoded_before_basic(idp):
    idp.client_id = "gw:1"
    idp.client_secret = "p@ss word"
    idp.tokens[TOKEN] = active()

    async def go():
        h = intro_harness(idp, client_id="gw:1", client_secret="p@ss word")
        r, _ = await h.decide([auth_header()])
        h.close()
        return r

    r = asyncio.run(go())
    assert r is None and idp.bad_client_auth == 0
