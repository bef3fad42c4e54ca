"""A local identity provider on loopback for auth tests (JWKS + RFC 7662 introspection), keys
and tokens made at test time, and tests of the gateway's small HTTP client against it.

The IdP is built on h11 (an implementation independent of the gateway's parser) and runs its
own asyncio loop in a thread; it counts every request so tests can bound IdP traffic.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from urllib.parse import parse_qs

import h11
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fastgate.policies.auth.http_client import HttpClient, HttpClientError
from tests.helpers.heads import HeadRecorder as _Heads


# ------------------------------------------------------------------------------ keys, tokens
def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """A signing key pair with its public JWK."""

    def __init__(self, kind: str = "RSA", kid: str | None = "k1", alg: str | None = None,
                 bits: int = 2048, curve=None):
        self.kind = kind
        self.kid = kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            self.alg = alg or "RS256"
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "EC":
            curve = curve or {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(),
                              "ES512": ec.SECP521R1()}[alg or "ES256"]
            self.private = ec.generate_private_key(curve)
            self.alg = alg or "ES256"
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "OKP":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.alg = "EdDSA"
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key()))
        else:
            raise ValueError(kind)
        if kid is not None:
            jwk["kid"] = kid
        jwk["use"] = "sig"
        self.jwk = jwk

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: dict, alg: str | None = None, kid="__own__", headers=None) -> str:
        h = dict(headers or {})
        k = self.kid if kid == "__own__" else kid
        if k is not None:
            h["kid"] = k
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=h or None)


def jwks(*keys: Key) -> dict:
    return {"keys": [k.jwk for k in keys]}


def claims(**kw) -> dict:
    now = int(time.time())
    base = {"iss": "https://idp.test/", "aud": "orders-api", "sub": "user-123",
            "iat": now, "nbf": now - 5, "exp": now + 600}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def raw_token(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join((b64u(orjson.dumps(header)), b64u(orjson.dumps(payload)), b64u(signature)))


def hs_token(header: dict, payload: dict, secret: bytes) -> str:
    """An HMAC-signed token with any secret (pyjwt refuses PEM keys as HMAC secrets, which
    is exactly the forgery these tests need to make)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
              "HS512": hashlib.sha512}[header["alg"]]
    signing_input = b64u(orjson.dumps(header)) + "." + b64u(orjson.dumps(payload))
    sig = hmac.new(secret, signing_input.encode(), digest).digest()
    return signing_input + "." + b64u(sig)


# ------------------------------------------------------------------------------ the IdP
class LocalIdP:
    """GET /jwks (``self.jwks``), POST /introspect (``self.tokens``: token -> answer dict;
    unknown tokens are inactive). ``delay_s`` slows every answer, ``fail_status`` makes every
    answer that status, ``down`` closes connections without answering."""

    def __init__(self, *, tls_cert=None, client_id="gateway", client_secret="s3cret-intro"):
        self.jwks = {"keys": []}
        self.tokens: dict[str, dict] = {}
        self.client_id = client_id
        self.client_secret = client_secret
        self.jwks_fetches = 0
        self.introspections = 0
        self.bad_client_auth = 0
        self.delay_s = 0.0
        self.fail_status = None
        self.down = False
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self.port = None
        self._ssl = None
        if tls_cert is not None:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_cert.configure_cert(self._ssl)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._server = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        assert self._started.wait(10)
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def boot():
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0,
                                                      ssl=self._ssl)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    def stop(self):
        async def shutdown():
            self._server.close()
            for t in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                t.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def base(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.base + "/jwks"

    @property
    def introspect_url(self) -> str:
        return self.base + "/introspect"

    async def _handle(self, reader, writer):
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                ev = await self._next(conn, reader)
                if not isinstance(ev, h11.Request):
                    break
                body = b""
                while True:
                    e2 = await self._next(conn, reader)
                    if isinstance(e2, h11.Data):
                        body += e2.data
                    elif isinstance(e2, h11.EndOfMessage):
                        break
                    else:
                        return
                path = ev.target.decode().split("?")[0]
                self.requests.append((ev.method.decode(), path))
                if path == "/jwks":
                    self.jwks_fetches += 1
                elif path == "/introspect":
                    self.introspections += 1
                if self.down:
                    return
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                status, payload = self._answer(ev, path, body)
                data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                for part in (h11.Response(status_code=status, headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(data)))]),
                        h11.Data(data=data), h11.EndOfMessage()):
                    writer.write(conn.send(part))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass   # stop(): end quietly (a cancelled handler task is logged by asyncio)
        finally:
            writer.close()

    async def _next(self, conn, reader):
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            return ev

    @staticmethod
    def _client_of(value):
        """(client_id, client_secret) of HTTP Basic credentials, each form-urldecoded
        (RFC 6749 2.3.1)."""
        from urllib.parse import unquote_plus
        if not value or not value.startswith(b"Basic "):
            return None
        try:
            pair = base64.b64decode(value[6:], validate=True).decode()
        except ValueError:
            return None
        cid, sep, secret = pair.partition(":")
        return (unquote_plus(cid), unquote_plus(secret)) if sep else None

    def _answer(self, req, path, body):
        if self.fail_status is not None:
            return self.fail_status, {"error": "server_error"}
        if path == "/jwks" and req.method == b"GET":
            return 200, self.jwks
        if path == "/introspect" and req.method == b"POST":
            headers = {k.lower(): v for k, v in req.headers}
            if self._client_of(headers.get(b"authorization")) != (self.client_id,
                                                                  self.client_secret):
                self.bad_client_auth += 1
                return 401, {"error": "invalid_client"}
            if headers.get(b"content-type") != b"application/x-www-form-urlencoded":
                return 400, {"error": "invalid_request"}
            form = parse_qs(body.decode())
            token = form.get("token", [""])[0]
            return 200, self.tokens.get(token, {"active": False})
        return 404, {"error": "not_found"}


@pytest.fixture
def idp():
    server = LocalIdP().start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------ client tests
def run(coro):
    return asyncio.run(coro)


def test_client_get_and_keepalive(idp):
    idp.jwks = {"keys": [{"kty": "oct", "k": "x"}]}

    async def go():
        c = HttpClient(idp.jwks_url)
        r1 = await c.request(b"GET", timeout=5)
        r2 = await c.request(b"GET", timeout=5)
        c.close()
        return r1, r2, c.connections

    r1, r2, conns = run(go())
    assert r1.status == r2.status == 200
    assert orjson.loads(r1.body) == idp.jwks
    assert r1.header(b"content-type") == b"application/json"
    assert conns == 1, "the second request reuses the kept-alive connection"


def test_client_post_form(idp):
    idp.tokens["abc"] = {"active": True, "sub": "u1"}

    async def go():
        c = HttpClient(idp.introspect_url)
        auth = b"Basic " + base64.b64encode(b"gateway:s3cret-intro")
        r = await c.request(b"POST", headers=[
            (b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", auth)],
            body=b"token=abc", timeout=5)
        c.close()
        return r

    r = run(go())
    assert r.status == 200 and orjson.loads(r.body) == {"active": True, "sub": "u1"}


def test_client_deadline(idp):
    idp.delay_s = 2.0

    async def go():
        c = HttpClient(idp.jwks_url)
        t0 = time.monotonic()
        with pytest.raises(HttpClientError):
            await c.request(b"GET", timeout=0.3)
        c.close()
        return time.monotonic() - t0

    assert run(go()) < 1.9


def test_client_connection_refused():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        with pytest.raises(HttpClientError):
            await HttpClient(f"http://127.0.0.1:{port}/x").request(b"GET", timeout=2)

    run(go())


def test_client_server_closes_without_answer(idp):
    idp.down = True

    async def go():
        with pytest.raises(HttpClientError):
            await HttpClient(idp.jwks_url).request(b"GET", timeout=2)

    run(go())


def test_client_body_cap(idp):
    idp.jwks = {"keys": [{"x": "y" * 5000}]}

    async def go():
        with pytest.raises(HttpClientError):
            await HttpClient(idp.jwks_url, max_body=1000).request(b"GET", timeout=2)

    run(go())


def test_client_retries_a_kept_alive_connection_the_server_closed():
    """A server that closes an idle connection just as the next request crosses it: the
    request got no answer at all, so it is sent again on a fresh connection."""
    served = []

    async def handle(reader, writer):
        n = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            n += 1
            if n > 1:          # the "idle timeout" closes it under the second request
                writer.close()
                return
            served.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def go():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = HttpClient(f"http://127.0.0.1:{port}/x")
        try:
            r1 = await c.request(b"GET", timeout=5)
            r2 = await c.request(b"GET", timeout=5)
        finally:
            c.close()
            server.close()
        return r1, r2, c.connections

    r1, r2, conns = run(go())
    assert (r1.status, r1.body, r2.status, r2.body) == (200, b"ok", 200, b"ok")
    assert conns == 2 and len(served) == 2


def test_client_https_with_custom_trust(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = LocalIdP(tls_cert=cert).start()
    try:
        server.jwks = {"keys": []}

        async def go(ctx):
            return await HttpClient(server.jwks_url, ssl_context=ctx).request(b"GET", timeout=5)

        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        assert run(go(trusted)).status == 200
        with pytest.raises(HttpClientError):
            run(go(ssl.create_default_context()))   # system store: our test CA is unknown
    finally:
        server.stop()


# ------------------------------------------------------------------------------ policy harness


def request_head(headers=(), target=b"/orders"):
    """A RequestHead from the real parser."""
    from fastgate._core.http import RequestParser
    rec = _Heads()
    raw = b"GET " + target + b" HTTP/1.1\r\nhost: x\r\n" + b"".join(
        k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    RequestParser(rec).feed(raw)
    return rec.heads[0]


def ctx_for(headers=(), target=b"/orders", peer_cert=None):
    from fastgate.server.context import RequestContext
    ctx = RequestContext()
    ctx.head = request_head(headers, target)
    ctx.route_name = "orders"
    ctx.client_ip = "10.0.0.1"
    ctx.peer_cert = peer_cert
    ctx.tls = peer_cert is not None
    return ctx


def bearer(token: str) -> tuple:
    return (b"authorization", b"Bearer " + token.encode())


def gateway_config(auth: dict, route_auth: dict, consumers=None, routes=None, **top):
    from fastgate.config import parse_config
    doc = {"listeners": [{"bind": "127.0.0.1:0"}], "auth": auth,
           "routes": routes or [{"name": "orders", "paths": ["/orders"],
                                 "respond": {"status": 200}, "auth": route_auth}]}
    if consumers is not None:
        doc["consumers"] = consumers
    doc.update(top)
    return parse_config(doc)


class Harness:
    """Real Services + the auth policy of each route of a config (built inside a running
    loop, as the gateway does, so JWKS URLs are fetched at once)."""

    def __init__(self, config):
        from fastgate.observe.metrics import Metrics
        from fastgate.policies import auth
        from fastgate.server.services import Services, SharedState
        self.config = config
        self.services = Services(SharedState(config), config)
        self.services.metrics = Metrics()
        self.policies = {r.name: auth.build(r, self.services) for r in config.routes}
        self.policy = self.policies[config.routes[0].name]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # As the gateway does before it serves: JWKS fetched (at once, in the background).
        for _, obj in self.services.state.live.values():
            if obj.kind == "jwt":
                loop.create_task(obj.warm())

    def authn(self, name):
        return self.services.live("auth", name)

    async def decide(self, headers=(), route=None, **kw):
        """(result, ctx): None (let in) or a Reject, after awaiting when the policy waits."""
        from fastgate.policies.base import Reject
        from fastgate.config.compile import phase_callable
        ctx = ctx_for(headers, **kw)
        # what a route runs: the compiled phase when the policy offers one
        r = phase_callable(self.policies[route] if route else self.policy, "access")(ctx)
        if r is not None and not isinstance(r, Reject):
            r = await r
        return r, ctx

    def failures(self) -> dict:
        return dict(self.services.metrics._auth_failures)

    def close(self):
        for _, obj in self.services.state.live.values():
            obj.close()


def challenge(reject) -> list[str]:
    return [v.decode() for k, v in reject.headers if k == b"www-authenticate"]
