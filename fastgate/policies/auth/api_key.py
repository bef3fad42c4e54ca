"""``type: api_key``: a key in a header, a query parameter and/or ``Authorization: Bearer``.

Keys are configured only as ``sha256:<hex>`` (``fastgate hash-key``). A presented key is
hashed and the digest looked up in a dict of the configured digests; the raw key is never
compared with anything, and never stored.

Why the lookup needs no constant-time comparison: the attacker controls the presented key
but not its SHA-256, and what timing could reveal is at most how a *digest* relates to a
stored digest. The dict first compares 64-bit SipHash values keyed with a per-process random
seed (so bucket positions and hash matches are unpredictable from outside) and compares the
strings only when those hashes are equal, which for distinct digests happens with negligible
probability; and even a fully leaked digest does not give the key (SHA-256 preimage
resistance). Keys must carry enough entropy for that to matter, which is why `fastgate audit`
cares about key sources rather than about this comparison.

Sources are looked at in the order header, query, bearer. The same source twice (two
``X-API-Key`` headers, ``?api_key=a&api_key=b``) or two sources carrying different keys is
refused: the upstream might read the other copy than the one we checked.
"""
from __future__ import annotations

import hashlib
from urllib.parse import unquote_to_bytes

from .common import BY_KEY, F_MULTIPLE, Verified, bearer_token

_AUTH = b"authorization"


def query_values(query: bytes, name: bytes) -> list[bytes]:
    """Percent-decoded values of every ``name`` parameter in a raw query string (names are
    compared decoded too, so ``api%5Fkey`` counts as ``api_key``)."""
    out = []
    if not query:
        return out
    for part in query.split(b"&"):
        k, eq, v = part.partition(b"=")
        k = unquote_to_bytes(k.replace(b"+", b" "))
        if k == name:
            out.append(unquote_to_bytes(v.replace(b"+", b" ")))
    return out


class ApiKeyAuthenticator:
    kind = "api_key"

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.header = cfg.header.lower().encode("latin-1") if cfg.header else None
        self.query = cfg.query.encode("utf-8") if cfg.query else None
        self.bearer = bool(cfg.bearer)
        self.strip_headers = frozenset()

    def presented(self, ctx):
        """The key the request carries, None, or F_MULTIPLE."""
        head = ctx.head
        found = None
        if self.header is not None:
            vals = head.get_all(self.header)
            if vals:
                if len(vals) != 1:
                    return F_MULTIPLE
                found = vals[0]
        if self.query is not None and head.query:
            vals = query_values(head.query, self.query)
            if vals:
                if len(vals) != 1 or (found is not None and vals[0] != found):
                    return F_MULTIPLE
                found = vals[0]
        if self.bearer:
            vals = head.get_all(_AUTH)
            if vals:
                token = bearer_token(vals[0])
                if token is not None:
                    if len(vals) != 1 or (found is not None and token != found):
                        return F_MULTIPLE
                    found = token
        return found

    def authenticate(self, ctx):
        key = self.presented(ctx)
        if key is None or key.__class__ is not bytes:
            return key
        if not key:
            return None
        return Verified(BY_KEY, "sha256:" + hashlib.sha256(key).hexdigest())

    def close(self):
        pass
