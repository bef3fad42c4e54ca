"""JWT authentication and route authorization, at the policy boundary: real parser heads,
real Services, keys generated per test, JWKS from files (URL-fetched JWKS: test_auth_jwks.py).

Attacks covered: alg=none in its spellings, HS256 forged with the RSA public key (PEM and
JWK JSON as the HMAC secret), algorithm outside the allow-list, a key used with another
algorithm family or curve, tampered payload/header/signature, expiry/nbf/iat/iss/aud,
crit headers, duplicate Authorization headers, header injection through claims, spoofed
forwarded-claim headers.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from fastgate.policies.auth import common
from tests.policies.test_auth_servers import (
    Harness, Key, b64u, bearer, challenge, claims, gateway_config, hs_token, jwks, raw_token,
)

SECRET = "0123456789abcdef0123456789abcdef-hs-secret"


def run(coro):
    return asyncio.run(coro)


def jwks_file(tmp_path, *keys, name="jwks.json"):
    p = tmp_path / name
    p.write_text(json.dumps(jwks(*keys)))
    return str(p)


def jwt_auth(**kw):
    base = {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders-api"]}
    base.update(kw)
    return base


CONSUMERS = [
    {"name": "alice", "groups": ["payments", "ops"], "jwt_subjects": ["user-123"]},
    {"name": "bob", "groups": ["support"], "jwt_subjects": ["user-456"]},
]


def harness(tmp_path, *keys, route_auth=None, consumers=CONSUMERS, **auth_kw):
    if "secret" not in auth_kw and "jwks_url" not in auth_kw:
        auth_kw.setdefault("jwks_file", jwks_file(tmp_path, *keys))
    cfg = gateway_config({"sso": jwt_auth(**auth_kw)}, route_auth or {"using": ["sso"]},
                         consumers=consumers)
    return Harness(cfg)


def decide(h, *headers, **kw):
    return run(h.decide(headers, **kw))


# ------------------------------------------------------------------------------ algorithms
@pytest.mark.parametrize("kind,alg", [
    ("RSA", "RS256"), ("RSA", "RS384"), ("RSA", "RS512"),
    ("RSA", "PS256"), ("RSA", "PS384"), ("RSA", "PS512"),
    ("EC", "ES256"), ("EC", "ES384"), ("EC", "ES512"), ("OKP", "EdDSA"),
])
def test_every_asymmetric_algorithm(tmp_path, kind, alg):
    key = Key(kind, alg=alg if kind == "EC" else None)
    h = harness(tmp_path, key, algorithms=[alg])
    r, ctx = decide(h, bearer(key.sign(claims(), alg=alg)))
    assert r is None
    assert ctx.consumer == "alice" and ctx.claims["sub"] == "user-123"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms(tmp_path, alg):
    secret = SECRET * 2   # 84 bytes: enough for HS512
    h = harness(tmp_path, secret=secret, algorithms=[alg])
    tok = hs_token({"alg": alg, "typ": "JWT"}, claims(), secret.encode())
    assert decide(h, bearer(tok))[0] is None
    forged = hs_token({"alg": alg, "typ": "JWT"}, claims(), b"x" * 84)
    r, _ = decide(h, bearer(forged))
    assert r.status == 401 and r.code == "unauthorized"


def test_alg_none_in_every_spelling_is_refused(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    for alg in ("none", "None", "NONE", "nOnE"):
        for sig in (b"", b"x"):
            tok = raw_token({"alg": alg, "kid": "k1"}, claims(), sig)
            r, ctx = decide(h, bearer(tok))
            assert r.status == 401, alg
            assert ctx.consumer is None and ctx.claims is None
    assert h.authn("sso").verifications == 0, "no key was ever tried for alg=none"


def test_hs256_signed_with_the_rsa_public_key_is_refused(tmp_path):
    """The classic key confusion: an attacker signs HS256 with the (public) RSA key."""
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    for secret in (key.public_pem, json.dumps(key.jwk).encode(),
                   key.jwk["n"].encode()):
        tok = hs_token({"alg": "HS256", "kid": "k1"}, claims(), secret)
        r, _ = decide(h, bearer(tok))
        assert r.status == 401 and "algorithm" in r.message
    assert h.failures() == {("orders", "invalid"): 3}


def test_algorithm_outside_the_allow_list(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    r, _ = decide(h, bearer(key.sign(claims(), alg="RS384")))
    assert r.status == 401
    r, _ = decide(h, bearer(key.sign(claims(), alg="PS256")))
    assert r.status == 401


def test_key_only_used_with_its_own_family_and_curve(tmp_path):
    rsa_key = Key("RSA", kid="r")
    ec256 = Key("EC", kid="e", alg="ES256")
    h = harness(tmp_path, rsa_key, ec256, algorithms=["RS256", "ES256", "ES384"])
    # An ES384 token naming the P-256 key: a curve mismatch, never tried.
    from cryptography.hazmat.primitives.asymmetric import ec
    p384 = Key("EC", kid="e", alg="ES384", curve=ec.SECP384R1())
    r, _ = decide(h, bearer(p384.sign(claims(), alg="ES384", kid="e")))
    assert r.status == 401 and "does not match" in r.message
    # An RS256 token naming the EC key.
    r, _ = decide(h, bearer(rsa_key.sign(claims(), kid="e")))
    assert r.status == 401
    assert decide(h, bearer(ec256.sign(claims())))[0] is None
    assert decide(h, bearer(rsa_key.sign(claims())))[0] is None


def test_jwk_alg_member_narrows_the_key(tmp_path):
    key = Key()
    key.jwk["alg"] = "RS256"
    h = harness(tmp_path, key, algorithms=["RS256", "PS256"])
    assert decide(h, bearer(key.sign(claims(), alg="RS256")))[0] is None
    r, _ = decide(h, bearer(key.sign(claims(), alg="PS256")))
    assert r.status == 401


def test_token_without_kid_tries_the_keys_of_its_algorithm(tmp_path):
    a, b = Key(kid="a"), Key(kid="b")
    h = harness(tmp_path, a, b, algorithms=["RS256"])
    assert decide(h, bearer(b.sign(claims(), kid=None)))[0] is None


# ------------------------------------------------------------------------------ tampering
def test_tampered_payload_header_and_signature(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    tok = key.sign(claims(sub="user-456"))
    head, payload, sig = tok.split(".")
    evil_payload = b64u(json.dumps(claims(sub="user-123")).encode())
    for bad in (
        f"{head}.{evil_payload}.{sig}",                          # payload swapped
        f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{sig}",
        f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",
        f"{head}.{payload}.",                                    # signature stripped
        f"{b64u(json.dumps({'alg': 'RS256', 'kid': 'k1', 'x': 1}).encode())}.{payload}.{sig}",
    ):
        r, ctx = decide(h, bearer(bad))
        assert r is not None and r.status == 401, bad
        assert ctx.consumer is None
    assert decide(h, bearer(tok))[1].consumer == "bob"


@pytest.mark.parametrize("value", [
    b"Bearer a.b.c", b"Bearer !!!.abc.def", b"Bearer eyJ9.eyJ9.", b"Bearer e30.W10.",
    b"Bearer " + b"A" * 20000 + b".e30.e30",
])
def test_malformed_tokens(tmp_path, value):
    h = harness(tmp_path, Key(), algorithms=["RS256"])
    r, _ = decide(h, (b"authorization", value))
    assert r.status == 401 and challenge(r)[0].startswith('Bearer realm="fastgate", error="invalid_token"')


def test_bearer_token_of_another_shape_is_invalid_not_missing(tmp_path):
    h = harness(tmp_path, Key(), algorithms=["RS256"])
    r, _ = decide(h, (b"authorization", b"Bearer opaque-thing"))
    assert r.status == 401 and 'error="invalid_token"' in challenge(r)[0]
    r, _ = decide(h, (b"authorization", b"Basic dXNlcjpwYXNz"))
    assert r.status == 401 and challenge(r) == ['Bearer realm="fastgate"']
    assert h.failures() == {("orders", "invalid"): 1, ("orders", "missing"): 1}


def test_crit_header_is_refused(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    tok = key.sign(claims(), headers={"crit": ["exp"], "exp": 1})
    r, _ = decide(h, bearer(tok))
    assert r.status == 401 and "critical" in r.message


def test_two_authorization_headers_are_refused(tmp_path):
    """The upstream might read the other one than the one we verified."""
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    good = key.sign(claims())
    r, _ = decide(h, bearer(good))
    assert r is None  # now cached: the duplicate must be caught on the cache-hit path too
    for pair in ((bearer(good), bearer(good)),
                 (bearer(good), bearer(key.sign(claims(sub="user-456"))))):
        r, ctx = decide(h, *pair)
        assert (r.status, r.code) == (400, "bad_request")
        assert 'error="invalid_request"' in challenge(r)[0]
        assert ctx.consumer is None


# ------------------------------------------------------------------------------ claims
@pytest.mark.parametrize("over,reason", [
    ({"exp": -100}, "expired"),                 # offsets from now
    ({"nbf": 300}, "not_yet_valid"),
    ({"iat": 300}, "not_yet_valid"),
    ({"iss": "https://evil.test/"}, "invalid_issuer"),
    ({"iss": None}, "invalid_issuer"),
    ({"aud": "other-api"}, "invalid_audience"),
    ({"aud": ["a", "b"]}, "invalid_audience"),
    ({"aud": None}, "invalid_audience"),
    ({"exp": None}, "invalid"),
    ({"exp": "9999999999"}, "invalid"),
    ({"nbf": "0"}, "invalid"),
])
def test_claim_checks(tmp_path, over, reason):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], clock_skew_s=30)
    now = int(time.time())
    c = claims()
    for k, v in over.items():
        if k in ("exp", "nbf", "iat") and isinstance(v, int):
            c[k] = now + v
        elif v is None:
            c.pop(k, None)
        else:
            c[k] = v
    r, ctx = decide(h, bearer(key.sign(c)))
    assert r is not None and r.status == 401, over
    assert h.failures() == {("orders", reason): 1}
    assert ctx.claims is None


def test_clock_skew_is_allowed_both_ways(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], clock_skew_s=30)
    now = int(time.time())
    assert decide(h, bearer(key.sign(claims(exp=now - 10))))[0] is None
    assert decide(h, bearer(key.sign(claims(nbf=now + 10, iat=now + 10))))[0] is None


def test_audience_list_and_no_audience_configured(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    assert decide(h, bearer(key.sign(claims(aud=["x", "orders-api"]))))[0] is None
    h2 = harness(tmp_path, key, algorithms=["RS256"], audiences=[], issuer=None)
    assert decide(h2, bearer(key.sign(claims(aud="anything", iss="any"))))[0] is None


# ------------------------------------------------------------------------------ caches
def test_verified_token_is_cached_until_exp(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], clock_skew_s=0)
    a = h.authn("sso")
    tok = key.sign(claims(exp=int(time.time()) + 2))
    for _ in range(5):
        assert decide(h, bearer(tok))[0] is None
    assert a.verifications == 1
    entry = a.cache[b"Bearer " + tok.encode()]
    entry.expires = time.time() - 1   # as if exp passed: the next use checks it again
    r, _ = decide(h, bearer(tok))
    assert a.verifications == 2
    assert r is None or r.status == 401


def test_failures_are_cached_briefly(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    a = h.authn("sso")
    bad = key.sign(claims())[:-3] + "AAA"
    for _ in range(5):
        assert decide(h, bearer(bad))[0].status == 401
    assert a.verifications == 1
    assert h.failures() == {("orders", "invalid"): 5}


def test_caches_are_bounded(tmp_path, monkeypatch):
    from fastgate.policies.auth import jwt_auth
    monkeypatch.setattr(jwt_auth, "CACHE_SIZE", 64)
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    for i in range(300):
        assert decide(h, bearer(key.sign(claims(jti=str(i)))))[0] is None
    assert len(h.authn("sso").cache) <= 64


def test_cache_entries_survive_a_reload_with_the_same_settings(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    a = h.authn("sso")
    tok = key.sign(claims())
    decide(h, bearer(tok))
    cfg2 = gateway_config({"sso": jwt_auth(algorithms=["RS256"], jwks_file=a.cfg.jwks_file)},
                          {"using": ["sso"], "groups": ["support"]}, consumers=CONSUMERS)
    from fastgate.policies import auth
    h.services.config = cfg2
    p2 = auth.build(cfg2.routes[0], h.services)
    assert p2.authenticators[0] is a
    from tests.policies.test_auth_servers import ctx_for
    ctx = ctx_for([bearer(tok)])
    r = p2.access(ctx)
    assert r.status == 403 and r.code == "forbidden"   # alice is not in support
    assert a.verifications == 1


# ------------------------------------------------------------------------------ consumers
def test_identity_goes_upstream(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"],
                forward_claims={"sub": "X-User-Id", "scope": "X-User-Scopes",
                                "email": "X-User-Email"})
    r, ctx = decide(h, bearer(key.sign(claims(scope="orders:read orders:write",
                                              email="a@example.com"))))
    assert r is None
    assert ctx.consumer == "alice" and ctx.consumer_groups == ("payments", "ops")
    assert ctx.upstream_headers == [
        (b"x-consumer-name", b"alice"), (b"x-consumer-groups", b"payments,ops"),
        (b"x-user-id", b"user-123"), (b"x-user-scopes", b"orders:read orders:write"),
        (b"x-user-email", b"a@example.com")]


def test_unknown_subject_is_authenticated_without_consumer(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"])
    r, ctx = decide(h, bearer(key.sign(claims(sub="someone-else"))))
    assert r is None and ctx.consumer is None and ctx.consumer_groups == ()
    assert ctx.claims["sub"] == "someone-else" and ctx.upstream_headers == []


def test_consumer_claim(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], consumer_claim="client_id")
    r, ctx = decide(h, bearer(key.sign(claims(sub="nobody", client_id="user-456"))))
    assert r is None and ctx.consumer == "bob"


def test_claims_that_would_inject_headers_are_not_forwarded(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"],
                forward_claims={"name": "X-User-Name", "roles": "X-Roles", "org": "X-Org",
                                "n": "X-N", "ok": "X-Ok"})
    tok = key.sign(claims(name="Mallory\r\nX-Admin: true", roles=["a", "b"],
                          org={"id": 7, "t": "x"}, n=12, ok=True))
    r, ctx = decide(h, bearer(tok))
    assert r is None
    fwd = dict(ctx.upstream_headers)
    assert b"x-user-name" not in fwd
    assert fwd[b"x-roles"] == b"a,b" and fwd[b"x-org"] == b'{"id":7,"t":"x"}'
    assert fwd[b"x-n"] == b"12" and fwd[b"x-ok"] == b"true"


def forwarded(policy, ctx) -> bytes:
    """The header block the proxy would send upstream: compile folds the policy's
    strip_request_headers into the route's drop set, applied when the head is written."""
    from fastgate._core.writer import header_lines, join_head
    from fastgate.server.headers import DROP_REQUEST_HEADERS
    drop = DROP_REQUEST_HEADERS | policy.strip_request_headers
    return join_head(b"", ctx.head.headers, drop, (), [header_lines(ctx.upstream_headers)])


def test_client_sent_forwarded_claim_headers_are_removed(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], forward_claims={"sub": "X-User-Id"})
    assert h.policy.strip_request_headers == frozenset({b"x-user-id"})
    r, ctx = decide(h, bearer(key.sign(claims())), (b"x-user-id", b"admin"),
                    (b"X-User-Id", b"root"))
    assert r is None
    sent = forwarded(h.policy, ctx)
    assert b"x-user-id: admin" not in sent and b"x-user-id: root" not in sent
    assert sent.count(b"x-user-id: ") == 1 and b"x-user-id: user-123\r\n" in sent
    # A refused request goes nowhere: nothing to strip.
    r, ctx = decide(h, (b"x-user-id", b"admin"))
    assert r.status == 401


def test_forwarded_claim_may_name_the_credential_header(tmp_path):
    """Stripping happens after the credentials were read (forward_claims may name any header,
    even the one carrying the key)."""
    import hashlib
    key = Key()
    cfg = gateway_config(
        {"sso": jwt_auth(algorithms=["RS256"], jwks_file=jwks_file(tmp_path, key),
                         forward_claims={"sub": "X-API-Key"}),
         "keys": {"type": "api_key", "header": "X-API-Key"}},
        {"using": ["keys", "sso"]},
        consumers=[{"name": "k", "api_keys": ["sha256:" + hashlib.sha256(b"k-1").hexdigest()]},
                   *CONSUMERS])
    h = Harness(cfg)
    r, ctx = run(h.decide([(b"x-api-key", b"k-1")]))
    assert r is None and ctx.consumer == "k"
    assert b"x-api-key: k-1" not in forwarded(h.policy, ctx)  # the credential does not travel on


# ------------------------------------------------------------------------------ authorization
def test_scopes_all_required(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"],
                route_auth={"using": ["sso"], "scopes": ["orders:read", "orders:write"]})
    assert decide(h, bearer(key.sign(claims(scope="orders:write x orders:read"))))[0] is None
    assert decide(h, bearer(key.sign(claims(scp=["orders:read", "orders:write"]))))[0] is None
    r, ctx = decide(h, bearer(key.sign(claims(scope="orders:read"))))
    assert (r.status, r.code) == (403, "forbidden")
    assert challenge(r) == ['Bearer realm="fastgate", error="insufficient_scope", '
                            'error_description="token lacks a required scope", '
                            'scope="orders:read orders:write"']
    assert ctx.consumer is None and ctx.upstream_headers == []
    assert h.failures() == {("orders", "insufficient_scope"): 1}


def test_groups_any(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"],
                route_auth={"using": ["sso"], "groups": ["support", "admins"]})
    assert decide(h, bearer(key.sign(claims(sub="user-456"))))[0] is None
    r, _ = decide(h, bearer(key.sign(claims(sub="user-123"))))
    assert (r.status, r.code) == (403, "forbidden") and challenge(r) == []
    r, _ = decide(h, bearer(key.sign(claims(sub="stranger"))))
    assert r.status == 403
    assert h.failures() == {("orders", "not_in_group"): 2}


def test_mfa_from_amr(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], route_auth={"using": ["sso"], "mfa": True})
    for amr in (["pwd", "otp"], ["hwk"], ["mfa"], ["pwd", "sms"], ["swk", "fpt"]):
        assert decide(h, bearer(key.sign(claims(amr=amr))))[0] is None, amr
    for amr in (["pwd"], ["pwd", "pin"], [], "pwd", None):
        r, ctx = decide(h, bearer(key.sign(claims(amr=amr))))
        assert (r.status, r.code) == (401, "insufficient_user_authentication"), amr
        assert challenge(r) == ['Bearer realm="fastgate", error="insufficient_user_authentication", '
                                'error_description="multi-factor authentication required"']
        assert ctx.consumer is None


def test_mfa_from_acr_values(tmp_path):
    key = Key()
    h = harness(tmp_path, key, algorithms=["RS256"], route_auth={
        "using": ["sso"], "mfa": True, "acr_values": ["urn:example:mfa", "phr"]})
    assert decide(h, bearer(key.sign(claims(acr="phr"))))[0] is None
    assert decide(h, bearer(key.sign(claims(amr=["otp"], acr="low"))))[0] is None
    r, _ = decide(h, bearer(key.sign(claims(acr="urn:example:pwd", amr=["pwd"]))))
    assert r.status == 401
    assert challenge(r) == ['Bearer realm="fastgate", error="insufficient_user_authentication", '
                            'error_description="multi-factor authentication required", '
                            'acr_values="urn:example:mfa phr"']
    assert h.failures() == {("orders", "mfa_required"): 1}


def test_missing_credentials_challenge_every_scheme(tmp_path):
    key = Key()
    cfg = gateway_config(
        {"sso": jwt_auth(algorithms=["RS256"], jwks_file=jwks_file(tmp_path, key)),
         "keys": {"type": "api_key", "header": "X-API-Key", "query": "api_key"},
         "bkeys": {"type": "api_key", "bearer": True}},
        {"using": ["sso", "keys", "bkeys"]}, consumers=CONSUMERS)
    h = Harness(cfg)
    r, _ = run(h.decide())
    assert (r.status, r.code, r.message) == (401, "unauthorized", "credentials required")
    assert challenge(r) == ['Bearer realm="fastgate"',
                            'ApiKey realm="fastgate", header="X-API-Key", query="api_key"']


def test_first_authenticator_carrying_credentials_decides(tmp_path):
    import hashlib
    key = Key()
    digest = "sha256:" + hashlib.sha256(b"sk-live-opaque-key-1").hexdigest()
    cfg = gateway_config(
        {"sso": jwt_auth(algorithms=["RS256"], jwks_file=jwks_file(tmp_path, key)),
         "keys": {"type": "api_key", "bearer": True}},
        {"using": ["sso", "keys"]},
        consumers=[{"name": "carol", "api_keys": [digest]}, *CONSUMERS])
    h = Harness(cfg)
    # An opaque bearer value is not a JWT: the API key authenticator takes it.
    r, ctx = run(h.decide([(b"authorization", b"Bearer sk-live-opaque-key-1")]))
    assert r is None and ctx.consumer == "carol"
    # A JWT-shaped one is the jwt authenticator's: refused there, no fall-through.
    good = key.sign(claims())
    # Flip a signature character well inside it (the last ones carry padding bits, and
    # "xx" there could decode to the very same bytes: a 1 in 256 flake).
    i = len(good) - 10
    bad = good[:i] + ("A" if good[i] != "A" else "B") + good[i + 1:]
    r, ctx = run(h.decide([bearer(bad)]))
    assert r.status == 401 and ctx.consumer is None
    r, ctx = run(h.decide([bearer(key.sign(claims()))]))
    assert r is None and ctx.consumer == "alice"


def test_rejects_are_shared_objects(tmp_path):
    """A refusal allocates nothing per request (the Reject is built once per failure kind)."""
    h = harness(tmp_path, Key(), algorithms=["RS256"])
    r1, _ = decide(h)
    r2, _ = decide(h)
    assert r1 is r2


def test_fail_messages_carry_no_request_data():
    for name in dir(common):
        obj = getattr(common, name)
        if isinstance(obj, common.Fail):
            assert "{" not in obj.message and obj.status in (400, 401, 403, 503)


def test_two_issuers_on_one_route(tmp_path):
    """Each jwt authenticator takes the tokens of its own issuer; a foreign token costs the
    first one no signature check and no key lookup."""
    corp, partner = Key(kid="c"), Key(kid="p")
    cfg = gateway_config(
        {"corp": jwt_auth(algorithms=["RS256"], issuer="https://corp/",
                          jwks_file=jwks_file(tmp_path, corp, name="c.json")),
         "partner": jwt_auth(algorithms=["RS256"], issuer="https://partner/",
                             jwks_file=jwks_file(tmp_path, partner, name="p.json"))},
        {"using": ["corp", "partner"]}, consumers=CONSUMERS)
    h = Harness(cfg)
    r, ctx = run(h.decide([bearer(corp.sign(claims(iss="https://corp/")))]))
    assert r is None and ctx.consumer == "alice"
    for _ in range(3):
        r, ctx = run(h.decide([bearer(partner.sign(claims(iss="https://partner/",
                                                          sub="user-456")))]))
        assert r is None and ctx.consumer == "bob"
    assert h.authn("corp").verifications == 1 and h.authn("partner").verifications == 1
    # A partner-issued token signed with the corp key: partner's check refuses it.
    r, _ = run(h.decide([bearer(corp.sign(claims(iss="https://partner/"), kid="p"))]))
    assert r.status == 401
    # An issuer neither knows: the last one refuses it as such.
    r, _ = run(h.decide([bearer(corp.sign(claims(iss="https://evil/")))]))
    assert r.status == 401 and h.failures()[("orders", "invalid_issuer")] == 1
