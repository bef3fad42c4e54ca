"""Authentication and authorization: ``auth`` (named authenticators), ``consumers`` and
``routes[].auth``.

Per route, ``auth.using`` lists authenticators in order; the first one whose credentials the
request carries decides (a later one is not tried when it refuses). For two jwt authenticators
on one route (two IdPs), a token "is carried for" the one whose ``issuer`` its ``iss`` names:
a token of another issuer passes on to the next jwt authenticator instead of being refused. Kinds: jwt_auth.py,
api_key.py, introspection.py, client_cert.py. An authenticator yields a ``Verified``
principal, which names a consumer:

* jwt / introspection: the ``consumer_claim`` value, matched against ``jwt_subjects``. A valid
  token whose subject is no consumer's is still authenticated (consumer None): tokens are
  commonly used without a consumer registry; ``groups:`` then refuses it, and rate limits
  ``by: consumer`` fall back to the client IP (use ``by: claim:sub`` for per-user limits).
* api_key: the key's digest must be a consumer's (else 401).
* client_cert: the certificate name must be a consumer's ``name`` (else 401).

Then authorization, in this order: ``groups`` (the consumer must be in one; 403),
``scopes`` (all required, from ``scope``/``scp``; 403 with ``error="insufficient_scope"``),
``mfa`` (``amr`` shows a second factor, or ``acr`` is in ``acr_values``; else 401 with
``error="insufficient_user_authentication"`` and ``acr_values``, RFC 9470).

Answers: every 401 carries a ``WWW-Authenticate`` challenge per usable scheme (RFC 6750
``Bearer`` for jwt/introspection and bearer API keys, ``ApiKey`` naming the header/query for
other API keys, ``ClientCert`` for certificates); JSON error codes ``unauthorized``,
``forbidden``, ``insufficient_user_authentication``, ``idp_unavailable`` (503, the IdP
could not be asked: closed, never open), and ``bad_request`` (400) for a credential given
twice (two Authorization headers, a key in the header and another in the query: the upstream
might read the copy we did not check). Every refusal counts in
``fastgate_auth_failures_total{route,reason}``.

On success: ``ctx.consumer``, ``ctx.consumer_groups``, ``ctx.claims`` (verified claims,
shared between requests: read-only) are set, and the upstream gets ``X-Consumer-Name``,
``X-Consumer-Groups`` (comma-separated) and the configured ``forward_claims`` headers.
Client-sent copies of X-Consumer-* are dropped by the core; copies of forward_claims headers
are dropped per route (``strip_request_headers``, see AuthPolicy).

State that must outlive a reload (JWKS keys, token caches, IdP connections) lives in
authenticator objects kept in the process state (``services.keep``, server/state.py) and
reused by the next config when their settings are unchanged; they are warmed (JWKS fetched,
an IdP connection opened) before the snapshot that needs them serves.
"""
from __future__ import annotations

import re

from fastgate._core.authcore import (
    LACKS_SCOPE, NEEDS_MFA, NOT_IN_GROUP, ConsumerInfo, JwtAccess, grant_to, refusal,
)
from fastgate.policies.base import Reject
from fastgate.policies.subscription import approved

from .api_key import ApiKeyAuthenticator
from .client_cert import ClientCertAuthenticator
from .common import (
    BY_KEY, BY_NAME, F_CERT, F_GROUP, F_IDP, F_ISSUER, F_MFA, F_MISSING, F_SCOPE, F_UNKNOWN_KEY,
    F_UNRECOGNISED, Fail, Verified, bearer_token,
)
from .introspection import IntrospectionAuthenticator

__all__ = ("AuthPolicy", "authenticator", "build", "consumer_lookups")

REALM = "fastgate"
_REFUSALS = {NOT_IN_GROUP: F_GROUP, LACKS_SCOPE: F_SCOPE, NEEDS_MFA: F_MFA}
def _jwt(cfg):
    # imported when a config has a jwt entry: PyJWT and cryptography (~9 MiB resident)
    # stay out of a gateway that verifies no tokens
    from .jwt_auth import JwtAuthenticator
    return JwtAuthenticator(cfg)


_KINDS = {
    "jwt": _jwt,
    "api_key": ApiKeyAuthenticator,
    "introspection": IntrospectionAuthenticator,
    "client_cert": ClientCertAuthenticator,
}
# Kept across reloads when their settings are equal (they hold keys, caches, connections).
_STATEFUL = ("jwt", "introspection")
KIND = "auth"     # their kind in the process state (fastgate.server.state)


def consumer_lookups(config) -> tuple:
    """(by JWT subject, by API key digest, by name) -> ConsumerInfo, indexed by
    ``Verified.kind``."""
    by_subject, by_key, by_name = {}, {}, {}
    for c in config.consumers:
        info = ConsumerInfo(c)
        by_name[c.name] = info
        for k in c.api_keys:
            by_key[k] = info
        for s in c.jwt_subjects:
            by_subject[s] = info
    return (by_subject, by_key, by_name)


def authenticator(services, cfg):
    """The authenticator for one ``auth`` entry. Stateful kinds (JWKS keys, token caches,
    IdP connections) live in the process state: a reload with the same settings keeps
    them, a replaced one is closed once no snapshot uses it."""
    def make():
        return _KINDS[cfg.type](cfg)
    if cfg.type in _STATEFUL:
        return services.keep(KIND, cfg.name, cfg, make)
    return services.memo((KIND, cfg.name), make)


# ------------------------------------------------------------------------ challenges
_UNSAFE = re.compile(r'[\x00-\x1f\x7f]')


def _quoted(s: str) -> str:
    s = _UNSAFE.sub("", s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scheme(a) -> str:
    if a.kind in ("jwt", "introspection") or (a.kind == "api_key" and a.bearer):
        return "Bearer"
    if a.kind == "api_key":
        return "ApiKey"
    return "ClientCert"


def _challenges(authenticators, fail: Fail, route_auth) -> list:
    out = []
    seen = set()
    for a in authenticators:
        scheme = _scheme(a)
        if scheme in seen:
            continue
        seen.add(scheme)
        params = [f"realm={_quoted(REALM)}"]
        if scheme == "Bearer":
            if fail.error is not None:
                params.append(f"error={_quoted(fail.error)}")
                params.append(f"error_description={_quoted(fail.message)}")
            if fail is F_SCOPE:
                params.append(f"scope={_quoted(' '.join(route_auth.scopes))}")
            if fail is F_MFA and route_auth.acr_values:
                params.append(f"acr_values={_quoted(' '.join(route_auth.acr_values))}")
        elif scheme == "ApiKey":
            if a.cfg.header:
                params.append(f"header={_quoted(a.cfg.header)}")
            if a.cfg.query:
                params.append(f"query={_quoted(a.cfg.query)}")
        out.append((b"www-authenticate", (scheme + " " + ", ".join(params)).encode("latin-1",
                                                                                   "replace")))
    if fail.status == 403:
        # RFC 6750 3.1: insufficient_scope may come with a 403 challenge; other 403s need none.
        out = [h for h in out if h[1].startswith(b"Bearer ")] if fail is F_SCOPE else []
    return out


def _code(fail: Fail) -> str:
    if fail is F_MFA:
        return "insufficient_user_authentication"
    if fail.status == 403:
        return "forbidden"
    if fail.status == 503:
        return "idp_unavailable"
    if fail.status == 400:
        return "bad_request"
    return "unauthorized"


# ------------------------------------------------------------------------ the policy
class AuthPolicy:
    """One route's auth: authenticate (first carried credential decides), then authorize.

    ``strip_request_headers``: lower-case names of the headers this route's authenticators
    set from claims (``forward_claims``). Client-sent copies must not reach the upstream,
    whichever authenticator decides: compile folds them into the route's
    ``drop_request_headers``, applied when the upstream head is written (after the
    credentials were read, so forward_claims may name any header).
    """

    name = "auth"
    __slots__ = ("route_name", "authenticators", "chain", "lookups", "scopes", "groups", "mfa",
                 "acr_values", "metrics", "rejects", "strip_request_headers", "cfg",
                 "_missing", "route_keys", "compiled")

    def __init__(self, route_cfg, authenticators, lookups, metrics, route_keys=None):
        ra = route_cfg.auth
        self.cfg = ra
        self.route_name = route_cfg.name
        self.authenticators = tuple(authenticators)
        kinds = [a.kind for a in self.authenticators]
        self.chain = tuple(
            (a, a.kind == "jwt" and a.issuer is not None and "jwt" in kinds[i + 1:])
            for i, a in enumerate(self.authenticators))
        self.lookups = lookups
        # keys of this route's approved subscriptions: valid here only, for their consumer
        self.route_keys = route_keys or {}
        self.scopes = frozenset(ra.scopes)
        self.groups = frozenset(ra.groups)
        self.mfa = bool(ra.mfa)
        self.acr_values = frozenset(ra.acr_values)
        self.metrics = metrics
        self.rejects: dict[Fail, Reject] = {}
        strip = set()
        for a in self.authenticators:
            strip |= a.strip_headers
        self.strip_request_headers = frozenset(strip)
        self._missing = self._reject(F_MISSING)
        # One jwt authenticator (the usual route): a repeated token is granted in C.
        self.compiled = None
        if len(self.authenticators) == 1 and self.authenticators[0].kind == "jwt":
            self.compiled = {"access": JwtAccess(self, self.authenticators[0])}

    def _reject(self, fail: Fail) -> Reject:
        r = self.rejects.get(fail)
        if r is None:
            r = self.rejects[fail] = Reject(
                fail.status, _code(fail), fail.message,
                tuple(_challenges(self.authenticators, fail, self.cfg)))
        return r

    def _deny(self, ctx, fail: Fail) -> Reject:
        m = self.metrics
        if m is not None:
            m.auth_failure(self.route_name, fail.reason)
        return self._reject(fail)

    def access(self, ctx):
        for a, foreign_passes in self.chain:
            r = a.authenticate(ctx)
            if r is None:
                continue
            cls = r.__class__
            if cls is Verified:
                return self.grant(ctx, r)
            if cls is Fail:
                if r is F_ISSUER and foreign_passes:
                    continue     # another issuer's token: the next jwt authenticator's
                return self._deny(ctx, r)
            return self._wait(ctx, r)
        value = ctx.head.get(b"authorization")
        if value is not None and bearer_token(value) is not None:
            # A bearer token none of the authenticators takes (not JWT-shaped for a jwt-only
            # route): an invalid token, not a missing one (RFC 6750 3.1).
            return self._deny(ctx, F_UNRECOGNISED)
        m = self.metrics
        if m is not None:
            m.auth_failure(self.route_name, "missing")
        return self._missing

    async def _wait(self, ctx, awaitable):
        r = await awaitable
        if r.__class__ is Verified:
            return self.grant(ctx, r)
        return self._deny(ctx, r if r.__class__ is Fail else F_IDP)

    def grant(self, ctx, v: Verified):
        info = self.lookups[v.kind].get(v.subject)
        if info is None and v.kind == BY_KEY:
            info = self.route_keys.get(v.subject)
        if info is None:
            if v.kind == BY_KEY:
                return self._deny(ctx, F_UNKNOWN_KEY)
            if v.kind == BY_NAME:
                return self._deny(ctx, F_CERT)
        why = refusal(self.groups, self.scopes, self.mfa, self.acr_values, v, info)
        if why:
            return self._deny(ctx, _REFUSALS[why])
        grant_to(ctx, v, info)
        return None


def build(route_cfg, services):
    """The route's AuthPolicy, or None when the route has no ``auth``."""
    if route_cfg.auth is None:
        return None
    config = services.config
    lookups = services.memo("auth.consumers", lambda: consumer_lookups(config))
    authenticators = [authenticator(services, config.auth[n]) for n in route_cfg.auth.using]
    by_name = lookups[2]
    route_keys = {s.key_hash: by_name[s.consumer] for s in approved(config, route_cfg.name)
                  if s.key_hash and s.consumer in by_name}
    return AuthPolicy(route_cfg, authenticators, lookups, getattr(services, "metrics", None),
                      route_keys)
