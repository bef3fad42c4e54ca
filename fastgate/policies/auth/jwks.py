"""JSON Web Key Sets: parsing (RFC 7517), and the two places keys come from (a URL, a file).

A key is only ever used with the algorithm family of its type: RSA keys for RS*/PS*, EC keys
for the ES* algorithm of their own curve, OKP keys for EdDSA. Symmetric (``oct``) keys in a
JWKS are ignored: HMAC secrets come only from ``secret:`` (the loader never mixes HS* with a
JWKS), so a public key can never be fed to HMAC as a secret, which is the RS256->HS256
key-confusion attack. A JWK's own ``alg``/``use``/``key_ops`` narrow it further.

Refreshing (``JwksUrlSource``): fetched once before the snapshot serves (``warm``), then every
``jwks_refresh_s`` (checked lazily by requests, fetched
in the background while the old keys keep serving), and at once when a token names a ``kid``
the set does not have (key rotation) -- but such fetches are single-flight and at most one per
``KID_REFRESH_INTERVAL_S``, so tokens with made-up kids cannot make the gateway hammer the
IdP. A failed fetch keeps the previous keys. When a fetch drops keys, the owner's token cache
is flushed (``on_change``): a key the IdP withdrew must not keep accepting cached tokens.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

import orjson
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from .http_client import HttpClient, HttpClientError

log = logging.getLogger("fastgate.auth")

MAX_JWKS_BYTES = 512 * 1024
MAX_KEYS = 64
MIN_RSA_BITS = 2048
JWKS_TIMEOUT_S = 5.0
KID_REFRESH_INTERVAL_S = 5.0      # unknown kid: at most one fetch this often
FAILED_RETRY_S = 10.0             # after a failed scheduled fetch, try again this soon
FILE_KID_RECHECK_S = 1.0

# alg -> (kty, curve or None)
ALG_KEY = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "secp256r1"), "ES384": ("EC", "secp384r1"), "ES512": ("EC", "secp521r1"),
    "ES256K": ("EC", "secp256k1"),
    "EdDSA": ("OKP", None),
}


class JwkKey:
    __slots__ = ("kid", "kty", "curve", "alg", "key", "thumb")

    def __init__(self, kid, kty, curve, alg, key, thumb):
        self.kid = kid
        self.kty = kty
        self.curve = curve
        self.alg = alg      # the JWK's own "alg", or None
        self.key = key      # cryptography public key object
        self.thumb = thumb  # canonical bytes identifying the key material (for change checks)

    def usable_for(self, alg: str) -> bool:
        want = ALG_KEY.get(alg)
        if want is None or want[0] != self.kty:
            return False
        if want[1] is not None and want[1] != self.curve:
            return False
        return self.alg is None or self.alg == alg


class KeySet:
    __slots__ = ("by_kid", "no_kid", "keys")

    def __init__(self, keys: list[JwkKey]):
        self.keys = keys
        self.by_kid: dict[str, list[JwkKey]] = {}
        self.no_kid: list[JwkKey] = []
        for k in keys:
            if k.kid is None:
                self.no_kid.append(k)
            else:
                self.by_kid.setdefault(k.kid, []).append(k)

    def candidates(self, kid, alg: str) -> tuple[list[JwkKey], bool]:
        """Keys to try for a token's (kid, alg), and whether its kid is known at all.
        A token without kid may be checked against every key of its algorithm."""
        if kid is not None:
            ks = self.by_kid.get(kid)
            if ks is not None:
                return [k for k in ks if k.usable_for(alg)], True
            return [k for k in self.no_kid if k.usable_for(alg)], bool(self.no_kid)
        return [k for k in self.keys if k.usable_for(alg)], True

    def thumbs(self) -> set:
        return {k.thumb for k in self.keys}


def _one_key(jwk: dict) -> JwkKey | None:
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    alg = jwk.get("alg")
    if alg is not None and alg not in ALG_KEY:
        return None  # e.g. an HS* or RSA-OAEP key: never for our signatures
    kty = jwk.get("kty")
    # Only the public members: a JWK that (wrongly) publishes a private key is used as public.
    curve = None
    if kty == "RSA":
        pub = {k: jwk[k] for k in ("kty", "n", "e") if k in jwk}
        key = RSAAlgorithm.from_jwk(pub)
        if key.key_size < MIN_RSA_BITS:
            log.warning("JWKS key %r ignored: RSA key of %d bits (at least %d needed)",
                        kid, key.key_size, MIN_RSA_BITS)
            return None
    elif kty == "EC":
        pub = {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}
        key = ECAlgorithm.from_jwk(pub)
        curve = key.curve.name
    elif kty == "OKP":
        pub = {k: jwk[k] for k in ("kty", "crv", "x") if k in jwk}
        key = OKPAlgorithm.from_jwk(pub)
    else:
        return None
    thumb = orjson.dumps(pub, option=orjson.OPT_SORT_KEYS) + b"|" + str(kid).encode()
    return JwkKey(kid, kty, curve, alg, key, thumb)


def parse_jwks(data: bytes) -> KeySet:
    """Raises ValueError when the document is not a JWKS. Individual keys that cannot be
    used (unknown type, encryption keys, weak RSA, malformed) are skipped."""
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError("JWKS is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("JWKS has no 'keys' list")
    keys = []
    for jwk in doc["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict):
            continue
        try:
            k = _one_key(jwk)
        except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            log.warning("JWKS key %r ignored: %s", jwk.get("kid"), exc)
            continue
        if k is not None:
            keys.append(k)
    return KeySet(keys)


class _Source:
    """Common shape of key sources. ``keys`` is None until the first successful load.
    ``maybe_refresh(mono)`` does nothing before the monotonic time ``refresh_due`` (the
    compiled auth path, fastgate/_core/authcore.pyx, reads it to skip the call)."""

    keys: KeySet | None = None
    fetches = 0          # attempts so far (tests assert the IdP is not hammered)
    refresh_due = float("inf")

    def __init__(self, on_change=None):
        self.on_change = on_change

    def _install(self, ks: KeySet):
        old = self.keys
        self.keys = ks
        if old is not None and self.on_change is not None and not old.thumbs() <= ks.thumbs():
            self.on_change()

    def maybe_refresh(self, mono: float) -> None:
        pass

    def refresh_for_kid(self, mono: float):
        """Try to learn new keys now. Returns None (not allowed yet), True (reloaded
        synchronously: look again), or an awaitable that completes after a fetch."""
        return None

    def load_for_request(self, mono: float):
        """No keys at all yet: like refresh_for_kid, for the first requests."""
        return None

    def close(self):
        pass


class JwksFileSource(_Source):
    def __init__(self, path: str, refresh_s: float, on_change=None):
        super().__init__(on_change)
        self.path = path
        self.refresh_s = refresh_s
        self.stamp = None
        self.refresh_due = 0.0
        self.last_kid_check = -1e18
        self._load(time.monotonic(), initial=True)

    def _load(self, mono: float, initial=False) -> bool:
        """Re-read when the file changed. True when new keys were installed."""
        self.refresh_due = mono + self.refresh_s
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self.stamp:
                return False
            with open(self.path, "rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
            self.fetches += 1
            ks = parse_jwks(data)
        except (OSError, ValueError) as exc:
            if initial:
                raise ValueError(f"jwks_file {self.path}: {exc}") from None
            log.warning("jwks_file %s: cannot reload (%s); keeping the previous keys",
                        self.path, exc)
            return False
        self.stamp = stamp
        self._install(ks)
        return True

    def maybe_refresh(self, mono: float) -> None:
        if mono >= self.refresh_due:
            self._load(mono)

    def refresh_for_kid(self, mono: float):
        if mono - self.last_kid_check < FILE_KID_RECHECK_S:
            return None
        self.last_kid_check = mono
        return True if self._load(mono) else None


class JwksUrlSource(_Source):
    def __init__(self, url: str, refresh_s: float, on_change=None,
                 timeout_s: float = JWKS_TIMEOUT_S):
        super().__init__(on_change)
        self.url = url
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.client = HttpClient(url, max_idle=1, max_body=MAX_JWKS_BYTES)
        self.task: asyncio.Task | None = None
        self.refresh_due = 0.0
        self.last_kid_fetch = -1e18
        self.last_attempt = -1e18
        self.last_error: str | None = None

    def warm(self):
        """Have keys before the first token arrives: the fetch starts now (when called, so
        every warm-up runs at once), bounded by the fetch timeout. An IdP down now is not
        fatal: tokens get 503 idp_unavailable until a later fetch succeeds."""
        if self.keys is not None:
            return asyncio.sleep(0)
        return asyncio.wait_for(asyncio.shield(self._start(time.monotonic())),
                                self.timeout_s + 1.0)

    def _start(self, mono: float) -> asyncio.Task:
        if self.task is None:
            self.last_attempt = mono
            self.task = asyncio.ensure_future(self._fetch())
        return self.task

    async def _fetch(self) -> bool:
        self.fetches += 1
        try:
            resp = await self.client.request(
                b"GET", headers=((b"accept", b"application/json"),), timeout=self.timeout_s)
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            ks = parse_jwks(resp.body)
        except (HttpClientError, ValueError) as exc:
            self.last_error = str(exc)
            log.warning("JWKS %s: fetch failed (%s); keeping the previous keys", self.url, exc)
            self.refresh_due = time.monotonic() + min(self.refresh_s, FAILED_RETRY_S)
            return False
        finally:
            self.task = None
        self.last_error = None
        self.refresh_due = time.monotonic() + self.refresh_s
        self._install(ks)
        return True

    def maybe_refresh(self, mono: float) -> None:
        if mono >= self.refresh_due and self.task is None:
            self.refresh_due = mono + self.refresh_s   # one background fetch per period
            self._start(mono)

    def refresh_for_kid(self, mono: float):
        if self.task is not None:
            return asyncio.shield(self.task)
        if mono - self.last_kid_fetch < KID_REFRESH_INTERVAL_S:
            return None
        self.last_kid_fetch = mono
        return asyncio.shield(self._start(mono))

    def load_for_request(self, mono: float):
        if self.task is not None:
            return asyncio.shield(self.task)
        if mono - self.last_attempt < KID_REFRESH_INTERVAL_S:
            return None   # the IdP just failed us: answer 503 without asking again
        return asyncio.shield(self._start(mono))

    def close(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.client.close()
