"""``type: jwt``: signed bearer tokens (RFC 7519, JWS compact serialization only).

A request carries credentials for this authenticator when it has ``Authorization: Bearer``
with a token of JWT shape (three dot-separated parts); other bearer values are left to the
next authenticator (an opaque API key sent as a bearer token, say).

Verification, in this order, stopping at the first failure:

1. size (<= MAX_TOKEN_BYTES) and strict base64url segments; the header a JSON object;
2. ``alg`` in the configured allow-list (``none`` can never be in it: the loader refuses it,
   and nothing here maps it to a key); a ``crit`` header is refused (we implement no
   extensions, RFC 7515 4.1.11); the payload a JSON object whose ``iss`` is ``issuer`` when
   one is configured (checked before the signature: refusing on an unverified claim is safe,
   and another IdP's tokens then cost neither a signature check nor a JWKS fetch here);
3. the key: with ``secret`` the HMAC secret (only HS* can be configured then); with a JWKS
   the keys of that ``kid`` whose type and curve fit ``alg`` (see jwks.py); an unknown kid
   triggers one rate-limited JWKS refresh;
4. the signature, over the exact bytes received (HMAC compared in constant time);
5. claims: ``exp`` required (a bearer token without expiry would be a permanent credential;
   it is also what bounds the cache), ``nbf`` and ``iat`` not in the future, each with
   ``clock_skew_s``; ``aud`` (string or list) naming one of ``audiences`` when configured.

Verified tokens are cached by the exact ``Authorization`` value until ``exp`` (+ skew), in a
bounded dict: a repeat costs a lookup and a clock read. Failures that cannot change on a
retry (bad signature, expired, wrong audience, ...) are cached for NEGATIVE_TTL_S so a client
replaying a bad token costs no signature check either; unknown kids and IdP trouble are not
cached (the next JWKS fetch may fix them).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

from jwt.algorithms import get_default_algorithms

from fastgate._core.authcore import TokenMemo

from .common import (
    BY_SUBJECT, F_ALG, F_AUDIENCE, F_CLAIMS, F_CRIT, F_EXPIRED, F_IDP, F_ISSUER, F_KEY_ALG,
    F_MALFORMED, F_MULTIPLE, F_NO_EXP, F_NOT_YET, F_SIGNATURE, F_UNKNOWN_KID, Fail, Verified,
    b64url_decode, bearer_token, cache_put, compile_forward, forward_headers, json_object,
    mfa_of, scopes_of, subject_of,
)
from .jwks import JwksFileSource, JwksUrlSource

MAX_TOKEN_BYTES = 16384
CACHE_SIZE = 8192
NEGATIVE_CACHE_SIZE = 4096
NEGATIVE_TTL_S = 10.0
MAX_KEYS_TRIED = 4           # a token without kid is tried against at most this many keys

_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_ALGS = get_default_algorithms()
_INF = float("inf")
_AUTH = b"authorization"


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class JwtAuthenticator:
    kind = "jwt"
    bearer = True

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.algs = frozenset(a for a in cfg.algorithms if a != "none")
        self.skew = float(cfg.clock_skew_s)
        self.issuer = cfg.issuer
        self.audiences = frozenset(cfg.audiences)
        self.consumer_claim = cfg.consumer_claim
        self.forward = compile_forward(cfg.forward_claims)
        self.strip_headers = frozenset(name for _, name in self.forward)
        self.cache: dict[bytes, Verified] = {}
        self.memo = TokenMemo()                    # in front of cache (fastgate/_core/authcore)
        self.negative: dict[bytes, tuple] = {}     # value -> (Fail, until)
        self.secret = cfg.secret.encode() if cfg.secret is not None else None
        self.verifications = 0                     # signature checks done (tests, benchmarks)
        if self.secret is not None:
            self.source = None
        elif cfg.jwks_file:
            self.source = JwksFileSource(cfg.jwks_file, cfg.jwks_refresh_s, self.flush)
        else:
            self.source = JwksUrlSource(cfg.jwks_url, cfg.jwks_refresh_s, self.flush)

    def flush(self):
        self.cache.clear()
        self.memo.clear()
        self.negative.clear()

    def warm(self):
        warm = getattr(self.source, "warm", None)
        return warm() if warm is not None else asyncio.sleep(0)

    def close(self):
        if self.source is not None:
            self.source.close()

    # ---------------------------------------------------------------- request path
    def authenticate(self, ctx):
        """None (no JWT in the request), Verified, Fail, or an awaitable of Verified/Fail."""
        values = ctx.head.get_all(_AUTH)
        if not values:
            return None
        value = values[0]
        hit = self.cache.get(value)
        if hit is not None:
            if len(values) != 1:
                return F_MULTIPLE
            now = time.time()
            if now < hit.expires:
                source = self.source
                if source is not None:
                    source.maybe_refresh(time.monotonic())
                return hit
            del self.cache[value]
        token = bearer_token(value)
        if token is None or token.count(b".") != 2:
            return None                       # not a JWT: another authenticator's business
        if len(values) != 1:
            return F_MULTIPLE
        neg = self.negative.get(value)
        now = time.time()
        if neg is not None:
            if now < neg[1]:
                return neg[0]
            del self.negative[value]
        return self.verify(value, token, now)

    def verify(self, value: bytes, token: bytes, now: float, fetch: bool = True):
        if len(token) > MAX_TOKEN_BYTES:
            return F_MALFORMED
        h64, p64, s64 = token.split(b".")
        try:
            header = json_object(b64url_decode(h64))
            sig = b64url_decode(s64)
        except ValueError:
            return self._remember(value, F_MALFORMED, now)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algs:
            return self._remember(value, F_ALG, now)
        if "crit" in header:
            return self._remember(value, F_CRIT, now)
        try:
            claims = json_object(b64url_decode(p64))
        except ValueError:
            return self._remember(value, F_MALFORMED, now)
        if self.issuer is not None and claims.get("iss") != self.issuer:
            # Refusing on an unverified claim is safe (accepting never is), and it keeps
            # tokens of other issuers from costing a signature check or a JWKS fetch here.
            return self._remember(value, F_ISSUER, now)
        signing_input = h64 + b"." + p64
        if self.secret is not None:
            digest = _HMAC.get(alg)
            if digest is None:      # the loader allows only HS* with a secret
                return self._remember(value, F_KEY_ALG, now)
            self.verifications += 1
            expected = hmac.new(self.secret, signing_input, digest).digest()
            if not hmac.compare_digest(expected, sig):
                return self._remember(value, F_SIGNATURE, now)
            return self._claims(value, claims, now)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return self._remember(value, F_MALFORMED, now)
        source = self.source
        mono = time.monotonic()
        source.maybe_refresh(mono)
        ks = source.keys
        if ks is None:
            aw = source.load_for_request(mono) if fetch else None
            if aw is None:
                return F_IDP
            return self._after_fetch(aw, value, token)
        keys, known = ks.candidates(kid, alg)
        if not known:
            if not fetch:
                return F_IDP if self.source_failed() else F_UNKNOWN_KID
            aw = source.refresh_for_kid(mono)
            if aw is None:
                return F_UNKNOWN_KID
            if aw is True:
                return self.verify(value, token, now, fetch=False)
            return self._after_fetch(aw, value, token)
        if not keys:
            return self._remember(value, F_KEY_ALG, now)
        verifier = _ALGS[alg]
        for k in keys[:MAX_KEYS_TRIED]:
            self.verifications += 1
            if verifier.verify(signing_input, k.key, sig):
                return self._claims(value, claims, now)
        return self._remember(value, F_SIGNATURE, now)

    async def _after_fetch(self, aw, value, token):
        try:
            await aw
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise                      # our own request was cancelled (client left)
        except Exception:
            pass
        # Decide with the keys we have now; never a second fetch for the same request.
        return self.verify(value, token, time.time(), fetch=False)

    def source_failed(self) -> bool:
        return getattr(self.source, "last_error", None) is not None

    def _claims(self, value: bytes, claims: dict, now: float):
        skew = self.skew
        exp = claims.get("exp")
        if not _num(exp):
            return self._remember(value, F_NO_EXP, now)
        if now >= exp + skew:
            return self._remember(value, F_EXPIRED, now)
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _num(nbf):
                return self._remember(value, F_CLAIMS, now)
            if now + skew < nbf:
                return self._remember(value, F_NOT_YET, now, until=nbf - skew)
        iat = claims.get("iat")
        if iat is not None:
            if not _num(iat):
                return self._remember(value, F_CLAIMS, now)
            if now + skew < iat:
                return self._remember(value, F_NOT_YET, now, until=iat - skew)
        if self.audiences:
            aud = claims.get("aud")
            if isinstance(aud, str):
                ok = aud in self.audiences
            elif isinstance(aud, list):
                ok = any(isinstance(a, str) and a in self.audiences for a in aud)
            else:
                ok = False
            if not ok:
                return self._remember(value, F_AUDIENCE, now)
        acr = claims.get("acr")
        v = Verified(
            BY_SUBJECT, subject_of(claims, self.consumer_claim), claims, scopes_of(claims),
            mfa_of(claims), acr if isinstance(acr, str) else None,
            forward_headers(claims, self.forward), exp + skew,
        )
        cache_put(self.cache, value, v, CACHE_SIZE)
        return v

    def _remember(self, value: bytes, fail: Fail, now: float, until: float = _INF) -> Fail:
        if fail.cache:
            cache_put(self.negative, value, (fail, min(now + NEGATIVE_TTL_S, until)),
                      NEGATIVE_CACHE_SIZE)
        return fail
