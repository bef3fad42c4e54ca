"""JWKS from a URL: fetched from a real local IdP on loopback. Key rotation without restart,
unknown kids that must not hammer the IdP, IdP down (closed, never open), withdrawn keys,
background refresh, and which JWKS members are (not) usable keys."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from fastgate.policies.auth import jwks as J
from fastgate.policies.auth.jwks import parse_jwks
from tests.policies.test_auth_servers import (  # noqa: F401  (idp is a fixture)
    Harness, Key, bearer, claims, gateway_config, idp, jwks,
)


def url_harness(idp, **kw):
    auth = {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders-api"],
            "algorithms": ["RS256", "ES256"], "jwks_url": idp.jwks_url}
    auth.update(kw)
    return Harness(gateway_config({"sso": auth}, {"using": ["sso"]},
                                  consumers=[{"name": "alice", "jwt_subjects": ["user-123"]}]))


async def settle(h):
    """Let the fetch started at build time finish."""
    src = h.authn("sso").source
    for _ in range(200):
        if src.task is None:
            return
        await asyncio.sleep(0.01)


def test_keys_fetched_at_build_and_used(idp):
    k = Key()
    idp.jwks = jwks(k)

    async def go():
        h = url_harness(idp)
        await settle(h)
        assert idp.jwks_fetches == 1
        r, ctx = await h.decide([bearer(k.sign(claims()))])
        h.close()
        return r, ctx

    r, ctx = asyncio.run(go())
    assert r is None and ctx.consumer == "alice"
    assert idp.jwks_fetches == 1


def test_first_request_waits_for_the_first_fetch(idp):
    k = Key()
    idp.jwks = jwks(k)
    idp.delay_s = 0.2

    async def go():
        h = url_harness(idp)
        r, ctx = await h.decide([bearer(k.sign(claims()))])   # keys not there yet
        h.close()
        return r, ctx

    r, ctx = asyncio.run(go())
    assert r is None and ctx.consumer == "alice"
    assert idp.jwks_fetches == 1, "the request joined the fetch in flight"


def test_kid_rotation_without_restart(idp):
    old, new = Key(kid="2024"), Key(kid="2025")
    idp.jwks = jwks(old)

    async def go():
        h = url_harness(idp)
        await settle(h)
        assert (await h.decide([bearer(old.sign(claims()))]))[0] is None
        idp.jwks = jwks(old, new)                    # the IdP rotates
        r, ctx = await h.decide([bearer(new.sign(claims()))])
        assert r is None and ctx.consumer == "alice"
        assert idp.jwks_fetches == 2                 # exactly one extra fetch
        assert (await h.decide([bearer(new.sign(claims(jti="2")))]))[0] is None
        assert idp.jwks_fetches == 2
        h.close()

    asyncio.run(go())


def test_unknown_kids_cannot_hammer_the_idp(idp):
    k = Key()
    idp.jwks = jwks(k)

    async def go():
        h = url_harness(idp)
        await settle(h)
        # 100 concurrent requests, each with a made-up kid ...
        toks = [k.sign(claims(), kid=f"evil-{i}") for i in range(100)]
        results = await asyncio.gather(*(h.decide([bearer(t)]) for t in toks))
        # ... then 100 more, one after another.
        for i in range(100):
            results.append(await h.decide([bearer(k.sign(claims(), kid=f"late-{i}"))]))
        h.close()
        return results, h.failures()

    results, failures = asyncio.run(go())
    assert all(r.status == 401 for r, _ in results)
    assert idp.jwks_fetches <= 2, f"{idp.jwks_fetches} JWKS fetches for 200 unknown kids"
    assert failures == {("orders", "unknown_kid"): 200}


def test_unknown_kid_refetch_is_rate_limited_then_allowed_again(idp, monkeypatch):
    monkeypatch.setattr(J, "KID_REFRESH_INTERVAL_S", 0.3)
    k, late = Key(kid="a"), Key(kid="b")
    idp.jwks = jwks(k)

    async def go():
        h = url_harness(idp)
        await settle(h)
        r, _ = await h.decide([bearer(late.sign(claims()))])      # fetch 2: still unknown
        assert r.status == 401 and idp.jwks_fetches == 2
        idp.jwks = jwks(k, late)
        r, _ = await h.decide([bearer(late.sign(claims(jti="1")))])
        assert r.status == 401 and idp.jwks_fetches == 2           # within the interval
        await asyncio.sleep(0.35)
        r, _ = await h.decide([bearer(late.sign(claims(jti="2")))])
        assert r is None and idp.jwks_fetches == 3
        h.close()

    asyncio.run(go())


def test_idp_down_is_closed_not_open(idp):
    k = Key()
    idp.jwks = jwks(k)
    idp.fail_status = 500

    async def go():
        h = url_harness(idp)
        out = []
        for _ in range(30):
            out.append(await h.decide([bearer(k.sign(claims()))]))
        h.close()
        return out, h.failures()

    out, failures = asyncio.run(go())
    assert all((r.status, r.code) == (503, "idp_unavailable") for r, _ in out)
    assert all(ctx.consumer is None for _, ctx in out)
    assert idp.jwks_fetches <= 2
    assert failures == {("orders", "idp_unavailable"): 30}


def test_idp_slow_answers_within_its_timeout(idp):
    k = Key()
    idp.jwks = jwks(k)
    idp.delay_s = 3.0

    async def go():
        h = url_harness(idp)
        # Before the first fetch runs (it starts on the next loop iteration).
        h.authn("sso").source.timeout_s = 0.3
        t0 = time.monotonic()
        r, _ = await h.decide([bearer(k.sign(claims()))])
        took = time.monotonic() - t0
        h.close()
        return r, took

    r, took = asyncio.run(go())
    assert r.status == 503
    assert took < 2.5


def test_failed_refresh_keeps_the_previous_keys(idp):
    k = Key()
    idp.jwks = jwks(k)

    async def go():
        h = url_harness(idp, jwks_refresh_s=0.1)
        await settle(h)
        idp.fail_status = 500
        await asyncio.sleep(0.15)
        r1, _ = await h.decide([bearer(k.sign(claims(jti="1")))])  # starts a refresh: fails
        await settle(h)
        r2, _ = await h.decide([bearer(k.sign(claims(jti="2")))])
        h.close()
        return r1, r2

    r1, r2 = asyncio.run(go())
    assert r1 is None and r2 is None
    assert idp.jwks_fetches >= 2


def test_periodic_refresh_in_the_background(idp):
    a, b = Key(kid="a"), Key(kid="b")
    idp.jwks = jwks(a)

    async def go():
        h = url_harness(idp, jwks_refresh_s=0.1)
        await settle(h)
        tok = a.sign(claims())
        assert (await h.decide([bearer(tok)]))[0] is None
        idp.jwks = jwks(a, b)
        await asyncio.sleep(0.15)
        assert (await h.decide([bearer(tok)]))[0] is None   # cache hit; refresh kicked off
        await settle(h)
        assert h.authn("sso").source.keys.by_kid.keys() == {"a", "b"}
        h.close()

    asyncio.run(go())


def test_withdrawn_key_stops_cached_tokens(idp):
    a, b = Key(kid="a"), Key(kid="b")
    idp.jwks = jwks(a, b)

    async def go():
        h = url_harness(idp, jwks_refresh_s=0.1)
        await settle(h)
        tok = a.sign(claims())
        assert (await h.decide([bearer(tok)]))[0] is None
        idp.jwks = jwks(b)          # the IdP withdraws key a (compromised, say)
        await asyncio.sleep(0.15)
        await h.decide([bearer(tok)])   # triggers the refresh
        await settle(h)
        r, _ = await h.decide([bearer(tok)])
        h.close()
        return r

    r = asyncio.run(go())
    assert r is not None and r.status == 401


# ------------------------------------------------------------------------------ JWKS parsing
def test_jwks_members_that_are_not_usable_keys():
    good = Key(kid="good")
    weak = Key(kid="weak", bits=1024)
    enc = Key(kid="enc")
    enc.jwk["use"] = "enc"
    ops = Key(kid="ops")
    ops.jwk["key_ops"] = ["encrypt"]
    oaep = Key(kid="oaep")
    oaep.jwk["alg"] = "RSA-OAEP"
    doc = {"keys": [good.jwk, weak.jwk, enc.jwk, ops.jwk, oaep.jwk,
                    {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                    {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                    "not-a-key", {"kid": "no-kty"}]}
    ks = parse_jwks(json.dumps(doc).encode())
    assert [k.kid for k in ks.keys] == ["good"]


def test_private_members_are_ignored():
    k = Key(kid="p")
    from jwt.algorithms import RSAAlgorithm
    priv = json.loads(RSAAlgorithm.to_jwk(k.private))
    priv["kid"] = "p"
    del priv["key_ops"]   # pyjwt marks it ["sign"], which alone excludes it
    ks = parse_jwks(json.dumps({"keys": [priv]}).encode())
    from cryptography.hazmat.primitives.asymmetric import rsa
    assert isinstance(ks.keys[0].key, rsa.RSAPublicKey)


@pytest.mark.parametrize("doc", [b"", b"[]", b'{"keys": {}}', b"{", b"x" * (600 * 1024)])
def test_not_a_jwks(doc):
    with pytest.raises(ValueError):
        parse_jwks(doc)
