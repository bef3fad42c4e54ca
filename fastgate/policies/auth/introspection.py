"""``type: introspection``: opaque bearer tokens checked with the IdP (RFC 7662).

``POST url`` with ``token=<token>&token_type_hint=access_token``, authenticated with HTTP
Basic (client_id and client_secret form-urlencoded first, RFC 6749 2.3.1). Only
``"active": true`` (the JSON boolean) lets a request in; ``exp`` in the past does not, even
with active true. Answers are cached by the exact ``Authorization`` value: active ones for
``min(cache_ttl_s, exp - now)``, inactive ones for ``min(cache_ttl_s, NEGATIVE_TTL_S)``.
Concurrent requests with the same token share one IdP call (single-flight), and at most
MAX_INFLIGHT distinct tokens are being introspected at once.

Failure is closed: an IdP that is down, slow (``timeout_s``), answers non-200 or non-JSON,
gives 503 ``idp_unavailable`` -- never a pass -- and is not cached, so the next request asks
again. The shared IdP call runs to its own deadline even if the request that started it goes
away, so other waiters still get the answer.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from urllib.parse import quote, quote_plus

import orjson

from .common import (
    BY_SUBJECT, F_IDP, F_INACTIVE, F_MALFORMED, F_MULTIPLE, Fail, Verified, bearer_token,
    cache_put, compile_forward, forward_headers, is_token68, mfa_of, scopes_of, subject_of,
)
from .http_client import HttpClient, HttpClientError

log = logging.getLogger("fastgate.auth")

MAX_TOKEN_BYTES = 4096
CACHE_SIZE = 8192
NEGATIVE_CACHE_SIZE = 4096
NEGATIVE_TTL_S = 10.0
MAX_INFLIGHT = 256
MAX_RESPONSE_BYTES = 256 * 1024
_AUTH = b"authorization"


def _form(s: str) -> str:
    return quote(s, safe="")


class IntrospectionAuthenticator:
    kind = "introspection"
    bearer = True

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.ttl = float(cfg.cache_ttl_s)
        self.timeout = float(cfg.timeout_s)
        self.consumer_claim = cfg.consumer_claim
        self.forward = compile_forward(cfg.forward_claims)
        self.strip_headers = frozenset(name for _, name in self.forward)
        self.client = HttpClient(cfg.url, max_idle=8, max_body=MAX_RESPONSE_BYTES)
        headers = [(b"content-type", b"application/x-www-form-urlencoded"),
                   (b"accept", b"application/json")]
        if cfg.client_id is not None:
            cred = f"{_form(cfg.client_id)}:{_form(cfg.client_secret or '')}".encode()
            headers.append((b"authorization", b"Basic " + base64.b64encode(cred)))
        self.headers = tuple(headers)
        self.cache: dict[bytes, Verified] = {}
        self.negative: dict[bytes, tuple] = {}        # value -> (Fail, until)
        self.inflight: dict[bytes, asyncio.Task] = {}
        self.calls = 0                                # IdP requests made (tests)

    async def warm(self):
        """One connection to the IdP (TCP and TLS handshakes done) before the first token."""
        try:
            await asyncio.wait_for(self.client.open_idle(), self.timeout)
        except (HttpClientError, asyncio.TimeoutError) as exc:
            log.warning("introspection %s: IdP not reachable at start (%s); tokens get 503 "
                        "idp_unavailable until it answers", self.cfg.url, exc or "timeout")

    def close(self):
        for t in self.inflight.values():
            t.cancel()
        self.client.close()

    def authenticate(self, ctx):
        values = ctx.head.get_all(_AUTH)
        if not values:
            return None
        value = values[0]
        token = bearer_token(value)
        if token is None:
            return None
        if len(values) != 1:
            return F_MULTIPLE
        now = time.time()
        hit = self.cache.get(value)
        if hit is not None:
            if now < hit.expires:
                return hit
            del self.cache[value]
        neg = self.negative.get(value)
        if neg is not None:
            if now < neg[1]:
                return neg[0]
            del self.negative[value]
        if len(token) > MAX_TOKEN_BYTES or not is_token68(token):
            return F_MALFORMED
        task = self.inflight.get(value)
        if task is None:
            if len(self.inflight) >= MAX_INFLIGHT:
                return F_IDP
            task = asyncio.ensure_future(self._introspect(value, token))
            self.inflight[value] = task
            task.add_done_callback(lambda _t, v=value: self.inflight.pop(v, None))
        return self._wait(task)

    async def _wait(self, task):
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise
            return F_IDP

    async def _introspect(self, value: bytes, token: bytes):
        self.calls += 1
        body = b"token=" + quote_plus(token).encode() + b"&token_type_hint=access_token"
        try:
            resp = await self.client.request(b"POST", headers=self.headers, body=body,
                                             timeout=self.timeout)
        except HttpClientError as exc:
            log.warning("introspection %s: %s", self.cfg.url, exc)
            return F_IDP
        if resp.status != 200:
            log.warning("introspection %s: HTTP %d%s", self.cfg.url, resp.status,
                        " (check client_id/client_secret)" if resp.status in (401, 403) else "")
            return F_IDP
        try:
            claims = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            claims = None
        if not isinstance(claims, dict):
            log.warning("introspection %s: answer is not a JSON object", self.cfg.url)
            return F_IDP
        now = time.time()
        exp = claims.get("exp")
        has_exp = isinstance(exp, (int, float)) and not isinstance(exp, bool)
        if claims.get("active") is not True or (has_exp and exp <= now):
            return self._remember(value, F_INACTIVE, now + min(self.ttl, NEGATIVE_TTL_S))
        until = now + self.ttl
        if has_exp:
            until = min(until, exp)
        acr = claims.get("acr")
        v = Verified(
            BY_SUBJECT, subject_of(claims, self.consumer_claim), claims, scopes_of(claims),
            mfa_of(claims), acr if isinstance(acr, str) else None,
            forward_headers(claims, self.forward), until,
        )
        if self.ttl > 0:
            cache_put(self.cache, value, v, CACHE_SIZE)
        return v

    def _remember(self, value: bytes, fail: Fail, until: float) -> Fail:
        if self.ttl > 0:
            cache_put(self.negative, value, (fail, until), NEGATIVE_CACHE_SIZE)
        return fail
