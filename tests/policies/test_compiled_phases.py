"""Compiled policy phases (fastgate/_core/authcore.pyx, limitcore.pyx) answer exactly as the
Python methods they stand for: the same result, the same effects on the request, the same
counts. Each case is decided both ways, on the same warm policy, from fresh contexts.

Also: a route runs the compiled phase; a key removed from the JWKS stops a cached (and
memoized) token at once; the token memo never answers for another value of its slot.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from fastgate._core.authcore import JwtAccess, Verified
from fastgate._core.limitcore import LocalLimitAccess
from fastgate._core.state import PhaseFn
from fastgate.config.compile import phase_callable
from fastgate.policies.base import Reject
from tests.policies.test_auth_servers import (
    Harness, Key, bearer, claims, ctx_for, gateway_config, jwks,
)

CONSUMERS = [
    {"name": "alice", "groups": ["payments", "ops"], "jwt_subjects": ["user-123"]},
    {"name": "bob", "groups": [], "jwt_subjects": ["user-456"]},
]


def _effects(r, ctx):
    """What a decision did: its answer and everything it set on the request."""
    if isinstance(r, Reject):
        r = ("reject", r.status, r.code, tuple(r.headers))
    return (r, ctx.consumer, ctx.consumer_groups, ctx.claims, list(ctx.upstream_headers),
            list(ctx.response_headers))


def _both(policy, headers, metrics=None):
    """(python, compiled) effects of one request, decided once each way."""
    fast = phase_callable(policy, "access")
    assert isinstance(fast, PhaseFn)
    out = []
    for fn in (policy.access, fast):
        before = dict(metrics._auth_failures) if metrics is not None else None
        ctx = ctx_for(headers)
        r = fn(ctx)
        counted = None
        if metrics is not None:
            after = dict(metrics._auth_failures)
            counted = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        out.append((_effects(r, ctx), counted))
    return out


def _harness(tmp_path, route_auth, **auth_kw):
    p = tmp_path / "jwks.json"
    key = auth_kw.pop("key")
    p.write_text(json.dumps(jwks(key)))
    a = {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders-api"],
         "algorithms": ["RS256"], "jwks_file": str(p)}
    a.update(auth_kw)
    return Harness(gateway_config({"sso": a}, dict({"using": ["sso"]}, **route_auth),
                                  consumers=CONSUMERS))


@pytest.fixture(scope="module")
def key():
    return Key()


ROUTES = [
    {},
    {"groups": ["payments"]},
    {"groups": ["nobody"]},
    {"scopes": ["orders:read"]},
    {"scopes": ["orders:read", "orders:write"]},
    {"mfa": True},
    {"mfa": True, "acr_values": ["urn:loa:2"]},
]


def _tokens(key):
    now = int(time.time())
    return {
        "alice": key.sign(claims(scope="orders:read")),
        "bob": key.sign(claims(sub="user-456", scope="orders:read orders:write")),
        "nobody's": key.sign(claims(sub="user-999")),
        "mfa": key.sign(claims(amr=["pwd", "otp"])),
        "acr": key.sign(claims(acr="urn:loa:2")),
        "forward": key.sign(claims(email="a@example.com")),
        "expiring": key.sign(claims(exp=now + 1)),
    }


@pytest.mark.parametrize("route_auth", ROUTES, ids=[json.dumps(r) for r in ROUTES])
def test_jwt_access_answers_as_the_policy(tmp_path, key, route_auth):
    h = _harness(tmp_path, route_auth, key=key, forward_claims={"email": "X-User-Email"})
    policy, metrics = h.policy, h.services.metrics
    assert isinstance(policy.compiled["access"], JwtAccess)
    toks = _tokens(key)
    cases = [[bearer(t)] for t in toks.values()]
    cases += [[], [bearer(toks["alice"]), bearer(toks["bob"])],
              [(b"authorization", b"Basic dXNlcjpwYXNz")], [(b"authorization", b"Bearer x")]]
    for headers in cases:
        for _ in range(2):            # first: verified (or refused); second: from the caches
            py, fast = _both(policy, headers, metrics)
            assert py == fast, headers


def test_expired_cache_entry_goes_back_to_the_policy(tmp_path, key):
    h = _harness(tmp_path, {}, key=key, clock_skew_s=0)
    a = h.authn("sso")
    tok = key.sign(claims(exp=int(time.time()) + 600))
    fast = phase_callable(h.policy, "access")
    assert fast(ctx_for([bearer(tok)])) is None
    assert fast(ctx_for([bearer(tok)])) is None          # memoized now
    assert a.verifications == 1
    a.cache[b"Bearer " + tok.encode()].expires = time.time() - 1
    fast(ctx_for([bearer(tok)]))
    assert a.verifications == 2                          # checked again, not served


def test_key_removed_from_the_jwks_stops_cached_tokens(tmp_path, key):
    other = Key(kid="k2")
    h = _harness(tmp_path, {}, key=key, jwks_refresh_s=0.05)
    fast = phase_callable(h.policy, "access")
    tok = key.sign(claims())
    for _ in range(3):
        assert fast(ctx_for([bearer(tok)])) is None
    path = h.authn("sso").cfg.jwks_file
    with open(path + ".new", "w") as f:
        json.dump(jwks(other), f)
    os.replace(path + ".new", path)                      # the key is rotated out
    time.sleep(0.1)
    fast(ctx_for([bearer(tok)]))                         # this request notices the change
    r = fast(ctx_for([bearer(tok)]))
    assert isinstance(r, Reject) and r.status == 401


def test_token_memo_compares_whole_values(tmp_path, key):
    h = _harness(tmp_path, {"groups": ["payments"]}, key=key)
    fast = phase_callable(h.policy, "access")
    alice = key.sign(claims())
    assert fast(ctx_for([bearer(alice)])) is None
    # Same length and the same last eight bytes (the memo's slot): a different token.
    forged = ("A" if alice[0] != "A" else "B") + alice[1:]
    assert len(forged) == len(alice) and forged[-8:] == alice[-8:]
    r = fast(ctx_for([bearer(forged)]))
    assert isinstance(r, Reject) and r.status == 401
    assert fast(ctx_for([bearer(alice)])) is None


def test_verified_keeps_its_python_shape():
    v = Verified(0, "user-1", {"sub": "user-1"}, frozenset({"a"}), True, "x", (), 5.0)
    assert (v.kind, v.subject, v.claims, v.scopes, v.mfa, v.acr, v.forward, v.expires) == \
        (0, "user-1", {"sub": "user-1"}, frozenset({"a"}), True, "x", (), 5.0)
    v.expires = 1.0
    assert v.expires == 1.0 and repr(v) == "Verified(0, 'user-1')"
    assert Verified(1, None).expires == float("inf")


def test_two_authenticators_keep_the_python_phase(tmp_path, key):
    p = tmp_path / "jwks.json"
    p.write_text(json.dumps(jwks(key)))
    cfg = gateway_config(
        {"sso": {"type": "jwt", "issuer": "https://idp.test/", "jwks_file": str(p)},
         "keys": {"type": "api_key", "header": "X-Api-Key"}},
        {"using": ["sso", "keys"]}, consumers=CONSUMERS)
    policy = Harness(cfg).policy
    assert policy.compiled is None
    assert not isinstance(phase_callable(policy, "access"), PhaseFn)


# ------------------------------------------------------------------------------ rate limit
def _limit_policy(by, limit=3):
    from fastgate.config import schema as S
    from fastgate.observe.metrics import Metrics
    from fastgate.policies import rate_limit
    from fastgate.server.services import Services, SharedState
    kind, _, name = by.partition(":")
    rl = S.RateLimit(limit=limit, per="minute", per_s=60, burst=limit, by=by, by_kind=kind,
                     by_name=(name.lower() if kind == "header" else name) or None)
    route = S.Route(name="orders", paths=["/orders"], rate_limits=[rl])
    config = S.Config(listeners=[], routes=[route])
    services = Services(SharedState(config), config)
    services.metrics = Metrics()
    return rate_limit.build(route, services)


def _ctx(consumer=None, ip="10.0.0.1", headers=(), claims_=None):
    ctx = ctx_for(list(headers))
    ctx.consumer = consumer
    ctx.client_ip = ip
    ctx.claims = claims_
    return ctx


@pytest.mark.parametrize("by", ["ip", "consumer", "route", "header:X-Tenant", "claim:tid"])
def test_local_limit_access_answers_as_the_policy(by):
    """Two policies with separate tables, one decided in Python, one compiled, fed the same
    requests: the same answers and headers, request by request, past the limit."""
    py, fast = _limit_policy(by), _limit_policy(by)
    assert isinstance(fast.compiled["access"], LocalLimitAccess)
    shapes = [dict(consumer="alice"), dict(consumer=None), dict(consumer="zoë"),
              dict(ip="2001:db8::1"), dict(headers=[(b"x-tenant", b"t1")]),
              dict(claims_={"tid": "t9"}), dict(claims_={"tid": 7})]
    for _ in range(5):
        for kw in shapes:
            a, b = _ctx(**kw), _ctx(**kw)
            ra, rb = py.access(a), phase_callable(fast, "access")(b)
            assert _effects(ra, a) == _effects(rb, b), (by, kw)
    for lim_py, lim_fast in zip(py.limits, fast.limits):
        for kw in shapes:
            assert lim_py.key(_ctx(**kw)) == lim_fast.key(_ctx(**kw))


def test_key_by_non_ascii_and_missing_values():
    p = _limit_policy("consumer")
    lim = p.limits[0]
    assert lim.key(_ctx(consumer="zoë")) == lim.prefix + "zoë".encode()
    assert lim.key(_ctx(consumer="\udc80")) == lim.prefix + b"\xed\xb2\x80"   # surrogatepass
    assert lim.key(_ctx(consumer=None, ip="10.0.0.9")) == lim.fallback + b"10.0.0.9"
    assert lim.key(_ctx(consumer=None, ip=None)) == lim.fallback


def test_large_figures_are_written_exactly():
    p = _limit_policy("ip", limit=10_000_000)
    ctx = _ctx()
    assert phase_callable(p, "access")(ctx) is None
    h = dict(ctx.response_headers)
    assert h[b"ratelimit-limit"] == b"10000000"
    assert h[b"ratelimit-remaining"] == b"9999999"
