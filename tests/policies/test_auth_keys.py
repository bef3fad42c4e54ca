"""API keys (header / query / bearer, hashed only), client-certificate consumers, and the
weak-settings audit for `fastgate check`."""
from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from fastgate.config import parse_config
from fastgate.policies.auth.api_key import query_values
from fastgate.policies.auth.audit import weak_settings
from fastgate.policies.auth.client_cert import cert_name
from tests.policies.test_auth_servers import Harness, Key, challenge, gateway_config

ALICE_KEY = b"ak_live_9f2c6e1d0b7a4c3e8f5a"
BOB_KEY = b"ak_live_1234567890abcdef1234"


def digest(key: bytes) -> str:
    return "sha256:" + hashlib.sha256(key).hexdigest()


CONSUMERS = [
    {"name": "alice", "groups": ["payments"], "api_keys": [digest(ALICE_KEY)]},
    {"name": "bob", "api_keys": [digest(BOB_KEY)]},
]


def key_harness(route_auth=None, **kw):
    auth = {"type": "api_key"}
    auth.update(kw or {"header": "X-API-Key"})
    return Harness(gateway_config({"keys": auth}, route_auth or {"using": ["keys"]},
                                  consumers=CONSUMERS))


def decide(h, *headers, target=b"/orders"):
    return asyncio.run(h.decide(headers, target=target))


# ------------------------------------------------------------------------------ api keys
def test_header_key():
    h = key_harness()
    r, ctx = decide(h, (b"x-api-key", ALICE_KEY))
    assert r is None and ctx.consumer == "alice" and ctx.consumer_groups == ("payments",)
    assert ctx.upstream_headers == [(b"x-consumer-name", b"alice"),
                                    (b"x-consumer-groups", b"payments")]
    assert ctx.claims is None
    r, ctx = decide(h, (b"x-api-key", BOB_KEY))
    assert r is None and ctx.consumer == "bob"
    assert ctx.upstream_headers == [(b"x-consumer-name", b"bob")]


@pytest.mark.parametrize("presented", [
    ALICE_KEY + b"x", ALICE_KEY[:-1], ALICE_KEY.upper(), b" " + ALICE_KEY + b"x",
    digest(ALICE_KEY).encode(), digest(ALICE_KEY)[7:].encode(),   # the hash is not the key
])
def test_hash_mismatch_is_refused(presented):
    h = key_harness()
    r, ctx = decide(h, (b"x-api-key", presented))
    assert (r.status, r.code) == (401, "unauthorized") and ctx.consumer is None
    assert challenge(r) == ['ApiKey realm="fastgate", header="X-API-Key"']
    assert h.failures() == {("orders", "invalid"): 1}


def test_missing_key():
    h = key_harness()
    r, _ = decide(h, (b"x-other", ALICE_KEY))
    assert (r.status, r.message) == (401, "credentials required")
    assert h.failures() == {("orders", "missing"): 1}


def test_query_key_percent_decoded():
    h = key_harness(query="api_key")
    enc = b"".join(b"%%%02X" % c for c in ALICE_KEY)
    for target in (b"/orders?api_key=" + ALICE_KEY, b"/orders?x=1&api_key=" + enc,
                   b"/orders?api%5Fkey=" + ALICE_KEY + b"&y"):
        r, ctx = decide(h, target=target)
        assert r is None and ctx.consumer == "alice", target


def test_bearer_key():
    h = key_harness(bearer=True)
    r, ctx = decide(h, (b"authorization", b"Bearer " + BOB_KEY))
    assert r is None and ctx.consumer == "bob"
    r, _ = decide(h, (b"authorization", b"Basic " + BOB_KEY))
    assert r.status == 401
    r, _ = decide(h, (b"authorization", b"Bearer nope"))
    assert r.status == 401 and challenge(r) == ['Bearer realm="fastgate"']


def test_same_source_twice_or_disagreeing_sources_are_refused():
    h = key_harness(header="X-API-Key", query="api_key", bearer=True)
    cases = [
        ([(b"x-api-key", ALICE_KEY), (b"x-api-key", BOB_KEY)], b"/orders"),
        ([(b"x-api-key", ALICE_KEY), (b"x-api-key", ALICE_KEY)], b"/orders"),
        ([], b"/orders?api_key=" + ALICE_KEY + b"&api_key=" + BOB_KEY),
        ([(b"x-api-key", ALICE_KEY)], b"/orders?api_key=" + BOB_KEY),
        ([(b"x-api-key", BOB_KEY), (b"authorization", b"Bearer " + ALICE_KEY)], b"/orders"),
    ]
    for headers, target in cases:
        r, ctx = decide(h, *headers, target=target)
        assert (r.status, r.code) == (400, "bad_request") and ctx.consumer is None, headers
    assert h.failures() == {("orders", "invalid"): len(cases)}
    # The same key in two places is one credential.
    r, ctx = decide(h, (b"x-api-key", ALICE_KEY), target=b"/orders?api_key=" + ALICE_KEY)
    assert r is None and ctx.consumer == "alice"


def test_groups_on_api_key_routes():
    h = key_harness(route_auth={"using": ["keys"], "groups": ["payments"]})
    assert decide(h, (b"x-api-key", ALICE_KEY))[0] is None
    r, _ = decide(h, (b"x-api-key", BOB_KEY))
    assert (r.status, r.code) == (403, "forbidden")


def test_api_key_route_with_mfa_via_another_authenticator(tmp_path):
    """A route that needs MFA cannot be entered with an API key (it shows no factor)."""
    key = Key()
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [key.jwk]}))
    h = Harness(gateway_config(
        {"sso": {"type": "jwt", "jwks_file": str(jwks_path)},
         "keys": {"type": "api_key", "header": "X-API-Key"}},
        {"using": ["keys", "sso"], "mfa": True}, consumers=CONSUMERS))
    r, _ = decide(h, (b"x-api-key", ALICE_KEY))
    assert (r.status, r.code) == (401, "insufficient_user_authentication")


def test_query_values():
    assert query_values(b"a=1&b=2&a=3", b"a") == [b"1", b"3"]
    assert query_values(b"a", b"a") == [b""]
    assert query_values(b"a+b=c%20d", b"a b") == [b"c d"]
    assert query_values(b"", b"a") == []


def test_loader_refuses_plaintext_keys():
    from fastgate.config import ConfigError
    with pytest.raises(ConfigError) as exc:
        gateway_config({"keys": {"type": "api_key"}}, {"using": ["keys"]},
                       consumers=[{"name": "x", "api_keys": ["plaintext-key"]}])
    assert "plaintext-key" not in "\n".join(exc.value.errors)


# ------------------------------------------------------------------------------ client certs
def peer_cert(cn="alice", sans=()):
    return {"subject": ((("countryName", "DE"),), (("commonName", cn),)),
            "issuer": ((("commonName", "Partner CA"),),),
            "subjectAltName": tuple(sans)}


def cert_harness(consumer_from="subject_cn", route_auth=None):
    return Harness(gateway_config(
        {"mtls": {"type": "client_cert", "consumer_from": consumer_from}},
        route_auth or {"using": ["mtls"]},
        consumers=[{"name": "alice", "groups": ["partners"]}, {"name": "svc.example.com"}],
        listeners=[{"bind": "127.0.0.1:0", "tls": {
            "cert_file": __file__, "key_file": __file__, "client_ca_file": __file__}}]))


def test_consumer_from_certificate_cn():
    h = cert_harness()
    r, ctx = decide_cert(h, peer_cert("alice"))
    assert r is None and ctx.consumer == "alice"
    assert ctx.upstream_headers == [(b"x-consumer-name", b"alice"),
                                    (b"x-consumer-groups", b"partners")]
    r, ctx = decide_cert(h, peer_cert("mallory"))
    assert (r.status, r.code) == (401, "unauthorized") and ctx.consumer is None
    assert challenge(r) == ['ClientCert realm="fastgate"']
    r, _ = decide_cert(h, None)
    assert r.status == 401 and r.message == "credentials required"


def test_consumer_from_san():
    h = cert_harness("san_dns")
    r, ctx = decide_cert(h, peer_cert("ignored", [("email", "a@b"), ("DNS", "svc.example.com")]))
    assert r is None and ctx.consumer == "svc.example.com"
    r, _ = decide_cert(h, peer_cert("alice"))
    assert r.status == 401


def test_cert_name():
    c = peer_cert("x", [("DNS", "d"), ("email", "e@x"), ("URI", "spiffe://t/s")])
    assert [cert_name(c, k) for k in ("subject_cn", "san_dns", "san_email", "san_uri")] == [
        "x", "d", "e@x", "spiffe://t/s"]
    assert cert_name({"subject": ()}, "subject_cn") is None


def decide_cert(h, cert):
    return asyncio.run(h.decide((), peer_cert=cert))


# ------------------------------------------------------------------------------ audit
def _doc(**over):
    doc = {"listeners": [{"bind": "127.0.0.1:0"}], "routes": []}
    doc.update(over)
    return doc


def test_weak_settings_on_documents():
    doc = _doc(
        listeners=[{"bind": "127.0.0.1:0", "tls": {"cert_file": "c", "key_file": "k",
                                                   "min_version": "TLSv1.1"}}],
        consumers=[{"name": "a", "api_keys": ["plain-key", "sha256:" + "0" * 64]}],
        auth={"s": {"type": "jwt", "secret": "short"},
              "t": {"type": "jwt", "secret": "x" * 40, "algorithms": ["HS256"]}},
    )
    found = weak_settings(doc)
    assert found == [
        "listeners[0].tls.min_version: TLSv1.1 is deprecated (RFC 8996); use TLSv1.2 or TLSv1.3",
        "consumers[0].api_keys[0]: API key in plaintext; store its sha256: hash (fastgate hash-key)",
        "auth.s.secret: HMAC secret is 5 bytes; HS256 needs at least 32 (RFC 7518 section 3.2)",
        "auth.s.secret: HMAC secret uses fewer than 8 distinct characters: far weaker than its "
        "length suggests",
        "auth.t.secret: HMAC secret uses fewer than 8 distinct characters: far weaker than its "
        "length suggests",
    ]
    assert not any("plain-key" in f or "short" in f.split(":", 1)[1] for f in found)


def test_weak_settings_on_a_loaded_config(tmp_path):
    secret = "0123456789abcdefghijklmnopqrstuvwxyz"   # 36 bytes: fine for HS256, not HS384
    weak_rsa = Key(kid="old", bits=1024)
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [weak_rsa.jwk, Key(kid="ok").jwk]}))
    cfg = parse_config(_doc(auth={
        "a": {"type": "jwt", "secret": secret, "algorithms": ["HS256", "HS384"]},
        "b": {"type": "jwt", "secret": secret},
        "c": {"type": "jwt", "jwks_file": str(p)},
    }))
    assert weak_settings(cfg) == [
        "auth.a.secret: HMAC secret is 36 bytes; HS384 needs at least 48 (RFC 7518 section 3.2)",
        "auth.c.jwks_file: key 'old' is RSA-1024; at least 2048 bits needed (such keys are "
        "ignored)",
    ]


def test_weak_settings_none_for_a_sound_config():
    cfg = parse_config(_doc(auth={"a": {"type": "jwt", "secret": "k7#Qv9!zR2@mX4$pL8^wN1&bT6*yH3(e"}},
                            consumers=[{"name": "a", "api_keys": [digest(b"x")]}]))
    assert weak_settings(cfg) == []


def test_weak_settings_secret_from_environment(tmp_path):
    cfg = parse_config(_doc(auth={"a": {"type": "jwt", "secret": "${HS}"}}),
                       env={"HS": "ab" * 20})
    assert weak_settings(cfg) == [
        "auth.a.secret: HMAC secret uses fewer than 8 distinct characters: far weaker than its "
        "length suggests"]


def test_findings_severity(tmp_path):
    from fastgate.policies.auth.audit import findings
    leaked = Key(kid="leak")
    from jwt.algorithms import RSAAlgorithm
    priv = json.loads(RSAAlgorithm.to_jwk(leaked.private))
    priv["kid"] = "leak"
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps({"keys": [priv, Key(kid="old", bits=1024).jwk]}))
    cfg = parse_config(_doc(auth={
        "a": {"type": "jwt", "secret": "abababababababababababababababababababababababab",
              "algorithms": ["HS512"]},
        "c": {"type": "jwt", "jwks_file": str(p)}}))
    got = findings(cfg)
    assert [sev for sev, _ in got] == ["high", "medium", "high", "medium"]
    assert "includes its private part" in got[2][1]
