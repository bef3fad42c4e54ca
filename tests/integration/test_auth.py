"""Authentication and authorization end to end: the real `fastgate run`, a real upstream, a
local IdP over HTTPS (JWKS + introspection, trusted through SSL_CERT_FILE as an operator
would), httpx as the client. Keys, certificates and tokens are made at test time.

Every refusal is checked from the outside (status, JSON error code, WWW-Authenticate) and
from the upstream's side (nothing arrived).
"""
from __future__ import annotations

import hashlib
import json
import re
import signal
import time

import httpx
import pytest
import trustme

from tests.helpers.gateway import GatewayProc, free_port
from tests.helpers.upstream import UpstreamServer
from tests.policies.test_auth_servers import (
    Key, LocalIdP, b64u, claims, hs_token, jwks, raw_token,
)

ADMIN_TOKEN = "admin-token-for-auth-tests"
ALICE_KEY = "ak_live_alice_7d1f0c9e2b"
BOB_KEY = "ak_live_bob_4a8e6f2d1c"


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Stack:
    pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    ca = trustme.CA()
    ca_file = str(d / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    idp = LocalIdP(tls_cert=ca.issue_cert("127.0.0.1")).start()
    upstream = UpstreamServer().start()
    s = Stack()
    s.idp, s.upstream, s.key = idp, upstream, Key(kid="2025-01")
    idp.jwks = jwks(s.key)
    s.admin_port = free_port()
    sso = {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders-api"],
           "algorithms": ["RS256", "ES256"], "jwks_url": idp.jwks_url, "jwks_refresh_s": 300,
           "clock_skew_s": 30, "forward_claims": {"sub": "X-User-Id", "scope": "X-User-Scopes"}}

    def route(name, auth=None, **kw):
        r = {"name": name, "paths": [f"/{name}/*"], "upstream": "app"}
        if auth is not None:
            r["auth"] = auth
        r.update(kw)
        return r

    cfg = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "admin": {"bind": f"127.0.0.1:{s.admin_port}", "token": ADMIN_TOKEN},
        "logging": {"access_log": "off"},
        "upstreams": {"app": {"targets": [{"url": upstream.url}]}},
        "consumers": [
            {"name": "alice", "groups": ["payments", "eu"], "api_keys": [sha(ALICE_KEY)],
             "jwt_subjects": ["user-123"]},
            {"name": "bob", "groups": ["support"], "api_keys": [sha(BOB_KEY)],
             "jwt_subjects": ["user-456"]},
        ],
        "auth": {
            "sso": sso,
            "keys": {"type": "api_key", "header": "X-API-Key", "query": "api_key"},
            "bearer-keys": {"type": "api_key", "bearer": True},
            "opaque": {"type": "introspection", "url": idp.introspect_url,
                       "client_id": "gateway", "client_secret": "${INTRO_SECRET}",
                       "cache_ttl_s": 30, "timeout_s": 1,
                       "forward_claims": {"client_id": "X-Client-Id"}},
        },
        "routes": [
            route("jwt", {"using": ["sso"]}),
            route("scoped", {"using": ["sso"], "scopes": ["orders:read", "orders:write"]}),
            route("mfa", {"using": ["sso"], "mfa": True, "acr_values": ["urn:example:mfa"]}),
            route("payments", {"using": ["sso", "keys"], "groups": ["payments"]}),
            route("keys", {"using": ["keys", "bearer-keys"]}),
            route("intro", {"using": ["opaque"]}),
            route("counted", {"using": ["sso", "keys"], "scopes": ["orders:read"]}),
            route("open"),
        ],
    }
    s.cfg = cfg
    gw = GatewayProc(cfg, d, env={"SSL_CERT_FILE": ca_file, "INTRO_SECRET": idp.client_secret},
                     name="auth-gw")
    try:
        gw.wait_ready()
        s.gw = gw
        s.base = gw.url
        s.client = httpx.Client(base_url=gw.url, timeout=15)
        _wait(lambda: idp.jwks_fetches >= 1)
        yield s
    finally:
        try:
            s.client.close()
        except AttributeError:
            pass
        gw.stop()
        upstream.stop()
        idp.stop()


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def idp_reset(stack):
    yield stack.idp
    stack.idp.down = False
    stack.idp.fail_status = None
    stack.idp.delay_s = 0.0


def upstream_headers(resp) -> dict:
    out = {}
    for k, v in resp.json()["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def refused(stack, resp, status, code, challenge_re=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert (err["status"], err["code"]) == (status, code)
    assert err["request_id"] == resp.headers["x-request-id"]
    if challenge_re is not None:
        got = resp.headers.get_list("www-authenticate")
        assert any(re.fullmatch(challenge_re, c) for c in got), got


def get(stack, path, token=None, headers=None, **kw):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    n = len(stack.upstream.requests)
    r = stack.client.get(path, headers=h, **kw)
    r.reached_upstream = len(stack.upstream.requests) > n
    return r


# ------------------------------------------------------------------------------ JWT
def test_valid_token_identity_goes_upstream(stack):
    tok = stack.key.sign(claims(scope="orders:read"))
    r = get(stack, "/jwt/echo", tok, headers={
        "X-Consumer-Name": "admin", "X-Consumer-Groups": "root",
        "X-User-Id": "root", "X-User-Scopes": "everything"})
    assert r.status_code == 200
    h = upstream_headers(r)
    assert h["x-consumer-name"] == ["alice"]
    assert h["x-consumer-groups"] == ["payments,eu"]
    assert h["x-user-id"] == ["user-123"], "client-sent copies of forwarded claims are dropped"
    assert h["x-user-scopes"] == ["orders:read"]
    assert h["authorization"] == [f"Bearer {tok}"]


def test_kid_rotation_without_restart(stack):
    # First of the JWT tests: no unknown kid has used up the refetch interval yet.
    fetches = stack.idp.jwks_fetches
    new = Key(kid=f"rotated-{time.monotonic_ns()}")
    stack.idp.jwks = jwks(stack.key, new)
    try:
        r = get(stack, "/jwt/echo", new.sign(claims()))
        assert r.status_code == 200 and upstream_headers(r)["x-consumer-name"] == ["alice"]
        assert stack.idp.jwks_fetches == fetches + 1
        r = get(stack, "/jwt/echo", new.sign(claims(jti="again")))
        assert r.status_code == 200 and stack.idp.jwks_fetches == fetches + 1
    finally:
        stack.idp.jwks = jwks(stack.key)


def test_no_credentials(stack):
    r = get(stack, "/jwt/echo")
    refused(stack, r, 401, "unauthorized", r'Bearer realm="fastgate"')
    assert not r.reached_upstream


@pytest.mark.parametrize("attack", [
    "alg_none", "alg_none_upper", "hs256_with_rsa_public_key", "hs256_with_jwk_as_secret",
    "unknown_kid", "tampered_payload", "stripped_signature", "expired", "not_yet_valid",
    "issued_in_future", "wrong_audience", "wrong_issuer", "no_exp", "other_key_same_kid",
    "crit_header", "garbage",
])
def test_token_attacks_are_refused(stack, attack):
    key = stack.key
    good = claims(scope="orders:read")
    now = int(time.time())
    if attack == "alg_none":
        tok = raw_token({"alg": "none", "kid": key.kid}, good)
    elif attack == "alg_none_upper":
        tok = raw_token({"alg": "NONE", "typ": "JWT"}, good, b"")
    elif attack == "hs256_with_rsa_public_key":
        tok = hs_token({"alg": "HS256", "kid": key.kid}, good, key.public_pem)
    elif attack == "hs256_with_jwk_as_secret":
        tok = hs_token({"alg": "HS256", "kid": key.kid}, good, json.dumps(key.jwk).encode())
    elif attack == "unknown_kid":
        tok = Key(kid="attacker").sign(good)
    elif attack == "tampered_payload":
        h, _, sig = key.sign(claims(sub="user-456")).split(".")
        tok = ".".join((h, b64u(json.dumps(claims(sub="user-123")).encode()), sig))
    elif attack == "stripped_signature":
        tok = key.sign(good).rsplit(".", 1)[0] + "."
    elif attack == "expired":
        tok = key.sign(claims(exp=now - 120))
    elif attack == "not_yet_valid":
        tok = key.sign(claims(nbf=now + 600))
    elif attack == "issued_in_future":
        tok = key.sign(claims(iat=now + 600))
    elif attack == "wrong_audience":
        tok = key.sign(claims(aud="billing-api"))
    elif attack == "wrong_issuer":
        tok = key.sign(claims(iss="https://idp.evil/"))
    elif attack == "no_exp":
        tok = key.sign(claims(exp=None))
    elif attack == "other_key_same_kid":
        tok = Key(kid=key.kid).sign(good)
    elif attack == "crit_header":
        tok = key.sign(good, headers={"crit": ["b64"], "b64": False})
    else:
        tok = "eyJhbGciOiJSUzI1NiJ9.%%%.abc"
    r = get(stack, "/jwt/echo", tok, headers={"X-Consumer-Name": "alice"})
    refused(stack, r, 401, "unauthorized", r'Bearer realm="fastgate", error="invalid_token", '
                                           r'error_description="[^"]+"')
    assert not r.reached_upstream


def test_unknown_kids_do_not_hammer_the_idp(stack):
    time.sleep(5.1)   # past the unknown-kid refetch interval other tests may have used
    fetches = stack.idp.jwks_fetches
    attacker = Key(kid="x")
    for i in range(100):
        r = get(stack, "/jwt/echo", attacker.sign(claims(), kid=f"made-up-{i}"))
        refused(stack, r, 401, "unauthorized")
        assert not r.reached_upstream
    assert stack.idp.jwks_fetches - fetches <= 1, stack.idp.jwks_fetches - fetches
    # Legitimate tokens are unaffected meanwhile.
    assert get(stack, "/jwt/echo", stack.key.sign(claims())).status_code == 200


def test_scopes(stack):
    ok = get(stack, "/scoped/echo", stack.key.sign(claims(scope="orders:write orders:read")))
    assert ok.status_code == 200
    r = get(stack, "/scoped/echo", stack.key.sign(claims(scope="orders:read")))
    refused(stack, r, 403, "forbidden",
            r'Bearer realm="fastgate", error="insufficient_scope", error_description="[^"]+", '
            r'scope="orders:read orders:write"')
    assert not r.reached_upstream


def test_mfa_step_up(stack):
    r = get(stack, "/mfa/echo", stack.key.sign(claims(amr=["pwd"])))
    refused(stack, r, 401, "insufficient_user_authentication",
            r'Bearer realm="fastgate", error="insufficient_user_authentication", '
            r'error_description="[^"]+", acr_values="urn:example:mfa"')
    assert not r.reached_upstream
    r = get(stack, "/mfa/echo", stack.key.sign(claims()))   # no amr at all
    assert r.status_code == 401
    assert get(stack, "/mfa/echo", stack.key.sign(claims(amr=["pwd", "otp"]))).status_code == 200
    assert get(stack, "/mfa/echo", stack.key.sign(claims(acr="urn:example:mfa"))).status_code == 200


def test_groups(stack):
    assert get(stack, "/payments/echo", stack.key.sign(claims())).status_code == 200
    r = get(stack, "/payments/echo", stack.key.sign(claims(sub="user-456")))
    refused(stack, r, 403, "forbidden")
    assert "www-authenticate" not in r.headers and not r.reached_upstream
    # Same route, the API key of a payments consumer.
    r = get(stack, "/payments/echo", headers={"X-API-Key": ALICE_KEY})
    assert r.status_code == 200 and upstream_headers(r)["x-consumer-name"] == ["alice"]
    refused(stack, get(stack, "/payments/echo", headers={"X-API-Key": BOB_KEY}), 403, "forbidden")


# ------------------------------------------------------------------------------ API keys
def test_api_keys(stack):
    r = get(stack, "/keys/echo", headers={"X-API-Key": ALICE_KEY, "X-Consumer-Name": "bob"})
    assert r.status_code == 200
    h = upstream_headers(r)
    assert h["x-consumer-name"] == ["alice"] and h["x-consumer-groups"] == ["payments,eu"]
    r = get(stack, "/keys/echo", params={"api_key": BOB_KEY})
    assert r.status_code == 200 and upstream_headers(r)["x-consumer-name"] == ["bob"]
    assert "x-consumer-groups" in upstream_headers(r)
    r = get(stack, "/keys/echo", headers={"Authorization": f"Bearer {BOB_KEY}"})
    assert r.status_code == 200 and upstream_headers(r)["x-consumer-name"] == ["bob"]


@pytest.mark.parametrize("headers,params", [
    ({"X-API-Key": ALICE_KEY + "x"}, None),
    ({"X-API-Key": ALICE_KEY[:-1]}, None),
    ({"X-API-Key": sha(ALICE_KEY)}, None),          # the stored hash is not a key
    ({"X-API-Key": sha(ALICE_KEY)[7:]}, None),
    (None, {"api_key": "guess"}),
    ({"Authorization": "Bearer not-a-key"}, None),
])
def test_api_key_mismatch(stack, headers, params):
    r = get(stack, "/keys/echo", headers=headers, params=params)
    refused(stack, r, 401, "unauthorized")
    challenges = r.headers.get_list("www-authenticate")
    assert challenges == ['ApiKey realm="fastgate", header="X-API-Key", query="api_key"',
                          'Bearer realm="fastgate"'] or \
        challenges[0].startswith('ApiKey realm="fastgate"')
    assert not r.reached_upstream


def test_credential_given_twice_is_a_bad_request(stack):
    tok = stack.key.sign(claims())
    r = get(stack, "/keys/echo", headers={"X-API-Key": ALICE_KEY}, params={"api_key": BOB_KEY})
    refused(stack, r, 400, "bad_request")
    assert not r.reached_upstream
    r = stack.client.get("/jwt/echo", headers=[("Authorization", f"Bearer {tok}"),
                                               ("Authorization", f"Bearer {tok}x")])
    refused(stack, r, 400, "bad_request", r'Bearer realm="fastgate", error="invalid_request".*')


# ------------------------------------------------------------------------------ introspection
def test_introspection(stack, idp_reset):
    idp = stack.idp
    idp.tokens["opaque-alice-1"] = {"active": True, "sub": "user-123", "client_id": "web",
                                    "exp": int(time.time()) + 600}
    calls = idp.introspections
    for _ in range(3):
        r = get(stack, "/intro/echo", "opaque-alice-1", headers={"X-Client-Id": "spoof"})
        assert r.status_code == 200
        h = upstream_headers(r)
        assert h["x-consumer-name"] == ["alice"] and h["x-client-id"] == ["web"]
    assert idp.introspections == calls + 1, "answers are cached"
    r = get(stack, "/intro/echo", "opaque-unknown")
    refused(stack, r, 401, "unauthorized", r'Bearer realm="fastgate", error="invalid_token".*')
    assert idp.bad_client_auth == 0


@pytest.mark.parametrize("trouble", ["down", "status", "slow"])
def test_introspection_idp_trouble_is_503_within_timeout(stack, idp_reset, trouble):
    idp = stack.idp
    token = f"opaque-{trouble}-{time.monotonic_ns()}"
    idp.tokens[token] = {"active": True, "sub": "user-123", "exp": int(time.time()) + 600}
    if trouble == "down":
        idp.down = True
    elif trouble == "status":
        idp.fail_status = 502
    else:
        idp.delay_s = 5.0
    t0 = time.monotonic()
    r = get(stack, "/intro/echo", token)
    took = time.monotonic() - t0
    refused(stack, r, 503, "idp_unavailable")
    assert not r.reached_upstream
    assert took < 3.0, took          # timeout_s is 1
    idp.down, idp.fail_status, idp.delay_s = False, None, 0.0
    assert get(stack, "/intro/echo", token).status_code == 200, "trouble is not cached"


# ------------------------------------------------------------------------------ metrics
def test_failure_metrics(stack):
    key = stack.key
    get(stack, "/counted/echo")                                           # missing
    get(stack, "/counted/echo", key.sign(claims(exp=int(time.time()) - 999)))  # expired
    get(stack, "/counted/echo", key.sign(claims()))                      # no scope
    get(stack, "/counted/echo", headers={"X-API-Key": "nope"})            # invalid
    get(stack, "/counted/echo", Key(kid="zzz").sign(claims()))            # unknown kid
    assert get(stack, "/counted/echo", key.sign(claims(scope="orders:read"))).status_code == 200

    def scrape():
        r = httpx.get(f"http://127.0.0.1:{stack.admin_port}/metrics",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
        assert r.status_code == 200
        found = {}
        for line in r.text.splitlines():
            m = re.match(r'fastgate_auth_failures_total\{(.*)\} (\S+)$', line)
            if m:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                if labels.get("route") == "counted":
                    found[labels["reason"]] = float(m.group(2))
        return found

    expect = {"missing": 1, "expired": 1, "insufficient_scope": 1, "invalid": 1,
              "unknown_kid": 1}
    assert _wait(lambda: scrape() == expect), scrape()


# ------------------------------------------------------------------------------ reload
def test_reload_keeps_keys_and_applies_consumer_changes(stack):
    fetches = stack.idp.jwks_fetches
    tok = stack.key.sign(claims(sub="user-789"))
    assert get(stack, "/payments/echo", tok).status_code == 403      # nobody's subject yet
    cfg = json.loads(json.dumps(stack.cfg))
    cfg["consumers"].append({"name": "carol", "groups": ["payments"],
                             "jwt_subjects": ["user-789"]})
    stack.gw.write_config(cfg)
    stack.gw.signal(signal.SIGHUP)
    assert _wait(lambda: get(stack, "/payments/echo", tok).status_code == 200)
    r = get(stack, "/payments/echo", tok)
    assert upstream_headers(r)["x-consumer-name"] == ["carol"]
    # The JWT authenticator's settings did not change: its keys were kept, not refetched.
    assert stack.idp.jwks_fetches == fetches
    stack.gw.write_config(stack.cfg)
    stack.gw.signal(signal.SIGHUP)
    assert _wait(lambda: get(stack, "/payments/echo", tok).status_code == 403)


def test_open_route_needs_nothing(stack):
    r = get(stack, "/open/echo", headers={"X-Consumer-Name": "admin"})
    assert r.status_code == 200 and "x-consumer-name" not in upstream_headers(r)


# ------------------------------------------------------------------------------ other key sources
def test_jwks_file_and_env_secret(tmp_path, upstream, gateway_factory):
    """Keys from a file, an HS256 secret from the environment, and worker processes each
    verifying on their own."""
    key = Key(kind="EC", kid="file-key", alg="ES256")
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(jwks(key)))
    secret = "hs-secret-from-the-environment-0123456789"
    cfg = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "logging": {"access_log": "off"},
        "upstreams": {"app": {"targets": [{"url": upstream.url}]}},
        "consumers": [{"name": "alice", "jwt_subjects": ["user-123"]}],
        "auth": {"file": {"type": "jwt", "algorithms": ["ES256"], "jwks_file": str(jwks_path)},
                 "hs": {"type": "jwt", "secret": "${HS_SECRET}", "audiences": ["orders-api"]}},
        "routes": [{"name": "f", "paths": ["/f/*"], "upstream": "app",
                    "auth": {"using": ["file"]}},
                   {"name": "h", "paths": ["/h/*"], "upstream": "app",
                    "auth": {"using": ["hs"]}}],
    }
    gw = gateway_factory(cfg, env={"HS_SECRET": secret}, workers=2)
    hs_tok = hs_token({"alg": "HS256", "typ": "JWT"}, claims(), secret.encode())
    forged = hs_token({"alg": "HS256", "typ": "JWT"}, claims(), b"guessed-secret-0123456789-abcdefgh")
    es_tok = key.sign(claims())
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert _wait(lambda: _reachable(c))
        for _ in range(4):   # fresh connections may land on either worker
            r = c.get("/f/echo", headers={"Authorization": f"Bearer {es_tok}", "Connection": "close"})
            assert r.status_code == 200
            assert ["x-consumer-name", "alice"] in [[k.lower(), v] for k, v in r.json()["headers"]]
            r = c.get("/h/echo", headers={"Authorization": f"Bearer {hs_tok}", "Connection": "close"})
            assert r.status_code == 200
            r = c.get("/h/echo", headers={"Authorization": f"Bearer {forged}", "Connection": "close"})
            assert r.status_code == 401
            # A token of the other route's authenticator is not accepted here.
            r = c.get("/h/echo", headers={"Authorization": f"Bearer {es_tok}", "Connection": "close"})
            assert r.status_code == 401


def _reachable(client) -> bool:
    try:
        client.get("/f/echo")
        return True
    except httpx.TransportError:
        return False
