"""What authenticators hand the auth policy: a ``Verified`` identity or a ``Fail``.

Both are immutable and shared: a ``Verified`` sits in a token cache and is returned to every
request that repeats the token, so everything a request needs from it (scopes as a set, the MFA
verdict, forwarded header bytes) is computed once, when the token is first verified.
"""
from __future__ import annotations

import base64
import binascii
import re
from itertools import islice

import orjson

from fastgate._core.authcore import Verified  # noqa: F401 (re-exported)

# How a Verified names its principal, i.e. which consumer map the policy looks it up in.
BY_SUBJECT = 0   # consumer_claim value of a token or introspection answer -> jwt_subjects
BY_KEY = 1       # "sha256:<hex>" of an API key -> api_keys
BY_NAME = 2      # a client certificate's subject CN / SAN -> consumer name

# RFC 8176 methods that show more than one factor, or a factor beyond something known
# (a password and a PIN together are still one kind of factor): any of them satisfies `mfa`.
MFA_AMR = frozenset((
    "mfa", "mca", "otp", "hwk", "swk", "sms", "tel", "fpt", "face", "iris", "retina", "vbm",
    "sc",
))

MAX_HEADER_VALUE = 8192
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


# Verified (an authenticated principal: cacheable, nothing request-specific in it) is
# compiled with the policy's fast path: fastgate/_core/authcore.pyx.


class Fail:
    """Why a request is not let in. Instances are module constants (the policy memoizes the
    Reject it builds for each), so messages never carry request data."""

    __slots__ = ("status", "reason", "message", "error", "cache")

    def __init__(self, status: int, reason: str, message: str, error: str | None = None,
                 cache: bool = True):
        self.status = status
        self.reason = reason      # metrics label (fastgate_auth_failures_total{reason})
        self.message = message    # JSON error message and error_description
        self.error = error        # RFC 6750 error code for the Bearer challenge, if any
        self.cache = cache        # may be remembered for the token that caused it

    def __repr__(self):
        return f"Fail({self.status}, {self.reason!r})"


F_MISSING = Fail(401, "missing", "credentials required", None, cache=False)
F_UNRECOGNISED = Fail(401, "invalid", "bearer token not accepted here", "invalid_token",
                      cache=False)
# RFC 6750 3.1: a repeated credential is invalid_request, answered 400 (malformed request).
F_MULTIPLE = Fail(400, "invalid", "more than one credential of a kind", "invalid_request",
                  cache=False)
F_MALFORMED = Fail(401, "invalid", "malformed token", "invalid_token")
F_ALG = Fail(401, "invalid", "token signed with an algorithm that is not accepted",
             "invalid_token")
F_CRIT = Fail(401, "invalid", "token uses unsupported critical header extensions",
              "invalid_token")
F_SIGNATURE = Fail(401, "invalid", "invalid token signature", "invalid_token")
F_KEY_ALG = Fail(401, "invalid", "token algorithm does not match its key", "invalid_token")
F_UNKNOWN_KID = Fail(401, "unknown_kid", "token signed with an unknown key", "invalid_token",
                     cache=False)
F_EXPIRED = Fail(401, "expired", "token expired", "invalid_token")
F_NO_EXP = Fail(401, "invalid", "token has no valid exp claim", "invalid_token")
F_NOT_YET = Fail(401, "not_yet_valid", "token not valid yet", "invalid_token")
F_ISSUER = Fail(401, "invalid_issuer", "token issuer not accepted", "invalid_token")
F_AUDIENCE = Fail(401, "invalid_audience", "token audience not accepted", "invalid_token")
F_CLAIMS = Fail(401, "invalid", "token claims malformed", "invalid_token")
F_INACTIVE = Fail(401, "inactive", "token is not active", "invalid_token")
F_UNKNOWN_KEY = Fail(401, "invalid", "invalid API key", None, cache=False)
F_CERT = Fail(401, "invalid", "client certificate does not name a consumer", None,
              cache=False)
F_IDP = Fail(503, "idp_unavailable", "identity provider unavailable", None, cache=False)
F_SCOPE = Fail(403, "insufficient_scope", "token lacks a required scope", "insufficient_scope",
               cache=False)
F_GROUP = Fail(403, "not_in_group", "consumer not allowed on this route", None, cache=False)
F_MFA = Fail(401, "mfa_required", "multi-factor authentication required",
             "insufficient_user_authentication", cache=False)


# ---------------------------------------------------------------------------- encodings
_B64URL = re.compile(rb"[A-Za-z0-9_-]*")


def b64url_decode(seg: bytes) -> bytes:
    """Strict base64url without padding (RFC 7515 2): any other byte is an error."""
    if _B64URL.fullmatch(seg) is None:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def json_object(data: bytes) -> dict:
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def bearer_token(value: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme case-insensitive,
    RFC 9110 11.1), or None for another scheme."""
    if len(value) < 8 or value[6:7] != b" " or value[:6].lower() != b"bearer":
        return None
    token = value[7:].strip(b" ")
    return token or None


# RFC 6750 b64token / token68
_TOKEN68 = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")


def is_token68(token: bytes) -> bool:
    return _TOKEN68.fullmatch(token) is not None


# ---------------------------------------------------------------------------- claims
def scopes_of(claims: dict) -> frozenset:
    """Granted scopes: ``scope`` (space-separated, RFC 8693/9068) or ``scp`` (list or string)."""
    out = set()
    for name in ("scope", "scp"):
        v = claims.get(name)
        if isinstance(v, str):
            out.update(v.split())
        elif isinstance(v, list):
            out.update(s for s in v if isinstance(s, str))
    return frozenset(out)


def mfa_of(claims: dict) -> bool:
    amr = claims.get("amr")
    if isinstance(amr, str):
        amr = [amr]
    if not isinstance(amr, list):
        return False
    return any(isinstance(m, str) and m in MFA_AMR for m in amr)


def subject_of(claims: dict, claim: str):
    v = claims.get(claim)
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def header_value(v) -> bytes | None:
    """A claim as a request header value, or None when it cannot be one safely: control
    characters (a claim is user data the IdP copied, e.g. a display name, and CR/LF in it
    would inject headers) or longer than MAX_HEADER_VALUE."""
    if v is None:
        return None
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
    elif isinstance(v, bool):
        b = b"true" if v else b"false"
    elif isinstance(v, (int, float)):
        b = str(v).encode()
    elif isinstance(v, list) and all(isinstance(x, str) for x in v):
        b = ",".join(v).encode("utf-8", "surrogatepass")
    else:
        try:
            b = orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return None
    b = b.strip(b" \t")
    if not b or len(b) > MAX_HEADER_VALUE or _CTL.search(b) is not None:
        return None
    return b


def forward_headers(claims: dict, forward: tuple) -> tuple:
    """``forward``: ((claim, lower-case header name bytes), ...) from forward_claims."""
    out = []
    for claim, name in forward:
        v = header_value(claims.get(claim))
        if v is not None:
            out.append((name, v))
    return tuple(out)


def compile_forward(forward_claims: dict) -> tuple:
    return tuple((claim, header.lower().encode("latin-1"))
                 for claim, header in forward_claims.items())


# ---------------------------------------------------------------------------- caches
def cache_put(d: dict, key, value, cap: int) -> None:
    """Insert into a bounded dict. When full, the oldest eighth goes (insertion order is
    close to expiry order for tokens of one issuer; an exact LRU costs more per hit)."""
    if len(d) >= cap and key not in d:
        for k in list(islice(d, max(1, cap // 8))):
            del d[k]
    d[key] = value
