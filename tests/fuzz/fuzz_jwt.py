"""JWT verification (fastgate.policies.auth.jwt_auth.JwtAuthenticator.authenticate) on tokens
against a real RS256 key (from a JWKS file) and an HS256 secret.

Input (FuzzedDataProvider): which authenticator; then either raw bytes as the Authorization
value, or a token built from fuzzer-chosen header and claims (alg, kid, crit, iss, aud, exp,
nbf, iat, sub, scope, amr, forwarded claims...), signed with the right key, a wrong key or not
at all, then maybe mutated (a byte flipped, inserted or dropped, a segment replaced, swapped
or padded, the scheme's case changed). The value reaches the authenticator the way a request
does: inside a head the real RequestParser accepted.

Invariants: the answer is None, a Fail or a Verified, never an exception or an awaitable
(the keys come from a file); None exactly when the value is not a bearer token of JWT shape;
Verified exactly when an independent check passes: signature valid for the key over the bytes
received, alg the configured one, no crit, issuer, exp/nbf/iat (with the skew) and audience
right (so never Verified for a token the key did not sign); a Verified carries the received
claims and forwarded header values free of control characters; asking again gives the same
answer (the caches agree with a fresh check).
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import os
import random
import re
import tempfile
import time

import atheris
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fastgate._core.http import HttpError, RequestParser
from fastgate.policies.auth.common import Fail, Verified
from fastgate.policies.auth.config import JwtAuth
from fastgate.policies.auth.jwt_auth import JwtAuthenticator

from ._http import Broken, check

ISSUER = "https://idp.test/"
AUDIENCE = "orders-api"
SECRET = b"0123456789abcdef0123456789abcdef-hs-secret"
SKEW = 30.0
B64 = re.compile(rb"[A-Za-z0-9_-]*")
CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def b64u(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _prime(rnd: random.Random, bits: int) -> int:
    """A deterministic probable prime (Miller-Rabin): the same key on every run, so corpus
    inputs replay exactly, and no private key kept in the repository."""
    small = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    while True:
        n = rnd.getrandbits(bits) | (3 << (bits - 2)) | 1
        if any(n % p == 0 for p in small):
            continue
        d, r = n - 1, 0
        while d % 2 == 0:
            d //= 2
            r += 1
        for _ in range(24):
            x = pow(rnd.randrange(2, n - 2), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                break
        else:
            return n


def _rsa_key(seed: int):
    rnd = random.Random(seed)
    e = 65537
    while True:
        p, q = _prime(rnd, 1024), _prime(rnd, 1024)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)
    pub = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), pub).private_key()


KEY = _rsa_key(12)
OTHER_KEY = _rsa_key(13)
PUBLIC = KEY.public_key()
_n = PUBLIC.public_numbers()
JWKS = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                  "n": b64u(_n.n.to_bytes(256, "big")).decode(),
                  "e": b64u(_n.e.to_bytes(3, "big")).decode()}]}
_fd, JWKS_PATH = tempfile.mkstemp(prefix="fastgate-fuzz-jwks-", suffix=".json")
with os.fdopen(_fd, "w") as _f:
    json.dump(JWKS, _f)
atexit.register(os.unlink, JWKS_PATH)

RS = JwtAuthenticator(JwtAuth(name="rs", issuer=ISSUER, audiences=[AUDIENCE],
                              algorithms=["RS256"], jwks_file=JWKS_PATH, clock_skew_s=SKEW,
                              forward_claims={"sub": "X-User-Id", "name": "X-User-Name"}))
HS = JwtAuthenticator(JwtAuth(name="hs", algorithms=["HS256"], secret=SECRET.decode(),
                              clock_skew_s=SKEW, forward_claims={"scope": "X-Scopes",
                                                                 "grp": "X-Groups"}))
AUTHS = ((RS, "RS256", ISSUER, AUDIENCE), (HS, "HS256", None, None))


class _Heads:
    def __init__(self):
        self.head = None

    def on_request(self, head):
        self.head = head


class Ctx:
    __slots__ = ("head",)


def head_with(value: bytes):
    rec = _Heads()
    try:
        RequestParser(rec).feed(b"GET /orders HTTP/1.1\r\nHost: x\r\nAuthorization: " + value
                                + b"\r\n\r\n")
    except HttpError:
        return None
    return rec.head


# ------------------------------------------------------------------------ the reference
def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expected(value: bytes, alg: str, issuer, audience, now: float) -> str:
    """"none" | "fail" | "ok", decided without fastgate's code."""
    if len(value) < 8 or value[6:7] != b" " or value[:6].lower() != b"bearer":
        return "none"
    token = value[7:].strip(b" ")
    if not token or token.count(b".") != 2:
        return "none"
    if len(token) > 16384:
        return "fail"
    segs = token.split(b".")
    if not all(B64.fullmatch(s) for s in segs) or any(len(s) % 4 == 1 for s in segs):
        return "fail"
    h, p, s = (base64.urlsafe_b64decode(x + b"=" * (-len(x) % 4)) for x in segs)
    try:
        header = orjson.loads(h)
        claims = orjson.loads(p) if isinstance(header, dict) else None
    except orjson.JSONDecodeError:
        return "fail"
    if not isinstance(header, dict) or header.get("alg") != alg or "crit" in header:
        return "fail"
    if not isinstance(claims, dict):
        return "fail"
    if issuer is not None and claims.get("iss") != issuer:
        return "fail"
    signing_input = segs[0] + b"." + segs[1]
    if alg == "HS256":
        if not hmac.compare_digest(hmac.new(SECRET, signing_input, hashlib.sha256).digest(), s):
            return "fail"
    else:
        kid = header.get("kid")
        if kid is not None and kid != "k1":
            return "fail"
        try:
            PUBLIC.verify(s, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "fail"
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not _num(exp) or now >= exp + SKEW:
        return "fail"
    for t in (nbf, iat):
        if t is not None and (not _num(t) or now + SKEW < t):
            return "fail"
    if audience is not None:
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            return "fail"
    return "ok"


# ------------------------------------------------------------------------ token building
ALGS = ["RS256", "HS256", "none", "None", "RS384", "PS256", "ES256", "HS512", "", None, 7]
KIDS = ["k1", None, "k2", "", 1, ["k1"], "k1\x00"]
TIMES = [600, 3600, -29, -31, -100000, 29, 31, 1e12, -1e12, None, "600", True, 2**63]
STRS = ["user-123", "", "a\r\nX-Evil: 1", "\x00", "\u00e9", "x" * 9000, "sp ace ", "\t"]


def _time(fdp, now):
    v = TIMES[fdp.ConsumeIntInRange(0, len(TIMES) - 1)]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or abs(v) >= 1e11:
        return v
    return int(now) + v


def _any(fdp):
    k = fdp.ConsumeIntInRange(0, 6)
    if k == 0:
        return STRS[fdp.ConsumeIntInRange(0, len(STRS) - 1)]
    if k == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16))
    if k == 2:
        return fdp.ConsumeInt(8)
    if k == 3:
        return [_any(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if k == 4:
        return {"k": _any(fdp)}
    if k == 5:
        return fdp.ConsumeFloat()
    return None


def build(fdp, alg, issuer, audience, now) -> bytes:
    header = {}
    if fdp.ConsumeIntInRange(0, 3):
        header["alg"] = alg if fdp.ConsumeIntInRange(0, 3) else \
            ALGS[fdp.ConsumeIntInRange(0, len(ALGS) - 1)]
    if fdp.ConsumeBool():
        header["kid"] = KIDS[fdp.ConsumeIntInRange(0, len(KIDS) - 1)]
    if fdp.ConsumeIntInRange(0, 7) == 0:
        header["crit"] = ["exp"]
    if fdp.ConsumeBool():
        header["typ"] = "JWT"
    claims = {}
    if fdp.ConsumeIntInRange(0, 5):
        claims["iss"] = issuer if fdp.ConsumeIntInRange(0, 3) else _any(fdp)
    if fdp.ConsumeIntInRange(0, 5):
        a = fdp.ConsumeIntInRange(0, 4)
        claims["aud"] = [audience or "x", "other"] if a == 0 else _any(fdp) if a == 1 else \
            audience or "x"
    for name in ("exp", "nbf", "iat"):
        if fdp.ConsumeIntInRange(0, 4):
            claims[name] = _time(fdp, now) if name == "exp" or fdp.ConsumeBool() else \
                int(now) - 5
    for name in ("sub", "name", "scope", "scp", "amr", "acr", "grp"):
        if fdp.ConsumeBool():
            claims[name] = _any(fdp)
    try:
        h64 = b64u(orjson.dumps(header))
        p64 = b64u(orjson.dumps(claims)) if fdp.ConsumeIntInRange(0, 7) else \
            b64u(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
    except TypeError:
        return b"Bearer a.b.c"
    signing_input = h64 + b"." + p64
    how = fdp.ConsumeIntInRange(0, 5)
    if how == 0:
        sig = b""
    elif how == 1:
        sig = hmac.new(b"wrong-secret-wrong-secret-wrong!", signing_input,
                       hashlib.sha256).digest()
    elif how == 2:
        sig = OTHER_KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "HS256":
        sig = hmac.new(SECRET, signing_input, hashlib.sha256).digest()
    else:
        sig = KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return b"Bearer " + signing_input + b"." + b64u(sig)


def mutate(fdp, value: bytes) -> bytes:
    op = fdp.ConsumeIntInRange(0, 9)
    if op >= 6 or not value:
        return value
    pos = fdp.ConsumeIntInRange(0, len(value) - 1)
    if op == 0:
        return value[:pos] + bytes([value[pos] ^ (1 << fdp.ConsumeIntInRange(0, 7))]) + \
            value[pos + 1:]
    if op == 1:
        return value[:pos] + value[pos + 1:]
    if op == 2:
        return value[:pos] + fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 4)) + value[pos:]
    parts = value[7:].split(b".")
    if op == 3 and len(parts) == 3:
        parts[fdp.ConsumeIntInRange(0, 2)] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 30))
    elif op == 4 and len(parts) == 3:
        i, j = fdp.ConsumeIntInRange(0, 2), fdp.ConsumeIntInRange(0, 2)
        parts[i], parts[j] = parts[j], parts[i]
    elif op == 5 and len(parts) == 3:
        parts[fdp.ConsumeIntInRange(0, 2)] += b"=" * fdp.ConsumeIntInRange(1, 2)
    return (b"bEaReR " if fdp.ConsumeIntInRange(0, 5) == 0 else value[:7]) + b".".join(parts)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    auth, alg, issuer, audience = AUTHS[fdp.ConsumeIntInRange(0, 1)]
    now = time.time()
    if fdp.ConsumeIntInRange(0, 3) == 0:
        value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20000))
    else:
        value = mutate(fdp, build(fdp, alg, issuer, audience, now))
    head = head_with(value)
    if head is None:
        return
    ctx = Ctx()
    ctx.head = head
    value = head.get(b"authorization")
    auth.flush()
    r = auth.authenticate(ctx)
    want = expected(value, alg, issuer, audience, time.time())
    got = "none" if r is None else "ok" if isinstance(r, Verified) else \
        "fail" if isinstance(r, Fail) else None
    if got is None:
        if hasattr(r, "close"):
            r.close()
        raise Broken(f"authenticate returned {r!r}")
    check(got == want, f"authenticate said {got}, the reference {want}", value[:300], r)
    if isinstance(r, Verified):
        token = value[7:].strip(b" ")
        p64 = token.split(b".")[1]
        check(r.claims == orjson.loads(base64.urlsafe_b64decode(p64 + b"=" * (-len(p64) % 4))),
              "Verified claims differ from the token's")
        for name, v in r.forward:
            check(type(v) is bytes and v and CTL.search(v) is None and len(v) <= 8192,
                  "forwarded header value unsafe", name, v)
    again = auth.authenticate(ctx)
    check(again is r, "a repeat answered differently", r, again)


SEEDS = [bytes([i]) * 64 for i in range(1, 16)] + [
    b"\x00\x00" + b"Bearer e30.e30.", b"\x01\x00" + b"Bearer a.b.c"]
