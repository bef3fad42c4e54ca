"""The admin listener, served for real on a loopback port and spoken to over real sockets."""
import asyncio
import socket
import threading

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastgate.admin.server import MAX_HEAD_BYTES, AdminServer, redact_config
from fastgate.config import features, parse_config
from fastgate.observe.metrics import Metrics
from tests.helpers.util import read_until_close

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Running:
    """An AdminServer on its own event loop in a background thread."""

    def __init__(self, **overrides):
        self.metrics = Metrics()
        self.metrics.request_done("orders", "GET", 200, 0.004, 10, 20, "orders", 0.003)
        self.ready = True
        self.config = {"listeners": [{"bind": "127.0.0.1:8080"}]}
        kw = dict(host="127.0.0.1", port=0, token=TOKEN, metrics_source=self.metrics.snapshot,
                  config_getter=lambda: self.config, ready_getter=lambda: self.ready)
        kw.update(overrides)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AdminServer(**kw)
        self.call(self.server.start())
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def admin():
    srv = Running()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(admin):
    with httpx.Client(base_url=admin.url, timeout=10) as c:
        yield c


def raw(port, data: bytes, *, shut=True, timeout=15) -> bytes:
    """Send bytes, then read until the server closes; returns the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def error_body(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert err["status"] == status and err["message"] and err["code"]
    assert err["request_id"] == resp.headers["x-request-id"]
    return err


# -- open endpoints -----------------------------------------------------------------------------
def test_health_and_readiness_are_open(admin, client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["connection"] == "close" and r.headers["cache-control"] == "no-store"
    assert client.get("/readyz").json() == {"status": "ready"}
    admin.ready = False
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "draining"}
    assert client.get("/healthz").status_code == 200     # alive while draining
    h = client.head("/healthz")
    assert h.status_code == 200 and h.content == b"" and h.headers["content-length"] == "15"


def test_a_failing_ready_getter_means_not_ready():
    srv = Running(ready_getter=lambda: 1 / 0)
    try:
        assert httpx.get(srv.url + "/readyz", timeout=10).status_code == 503
    finally:
        srv.stop()


def test_health_does_not_take_other_methods(client):
    r = client.post("/healthz")
    error_body(r, 405)
    assert r.headers["allow"] == "GET, HEAD"


# -- authentication -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics", "/config", "/audit", "/catalog", "/usage", "/nope",
                                  "/healthz/../metrics"])
@pytest.mark.parametrize("headers, invalid", [
    ({}, False),
    ({"Authorization": "Bearer wrong-token"}, True),
    ({"Authorization": f"Bearer {TOKEN}x"}, True),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, True),
    ({"Authorization": f"Basic {TOKEN}"}, True),
    ({"Authorization": TOKEN}, True),
    ({"Authorization": "Bearer"}, True),
])
def test_everything_else_needs_the_token(client, path, headers, invalid):
    r = client.get(path, headers=headers)
    err = error_body(r, 401)
    assert err["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert ('error="invalid_token"' in r.headers["www-authenticate"]) == invalid
    assert TOKEN not in r.text


def test_scheme_is_case_insensitive(client):
    assert client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"BEARER  {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("token", ["", None])
def test_no_configured_token_locks_everything_but_health(token):
    srv = Running(token=token)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/healthz").status_code == 200
            for hdr in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
                assert c.get("/metrics", headers=hdr).status_code == 401
        for value in (b"Bearer ", b"Bearer  ", b""):   # httpx refuses to send these
            resp = raw(srv.port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: "
                       + value + b"\r\n\r\n")
            assert status_of(resp) == 401
    finally:
        srv.stop()


def test_unauthenticated_bodies_are_not_read(admin):
    # announces 1 GB; gets its 401 at once instead of the server waiting for the body
    resp = raw(admin.port, b"PUT /config HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000\r\n\r\n",
               shut=False)
    assert status_of(resp) == 401


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_with_token(admin, client):
    admin.metrics.request_done("orders", "GET", 200, 0.004, 10, 20, "orders", 0.003)
    admin.metrics.request_done("_none", "GET", 404, 0.0001, 10, 20, None, None)
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    reqs = {(s.labels["route"], s.labels["code"]): s.value for s in fams["fastgate_requests"].samples}
    assert reqs == {("orders", "200"): 2, ("_none", "404"): 1}
    assert "fastgate_request_duration_seconds" in fams and "fastgate_connections_active" in fams
    h = client.head("/metrics", headers=AUTH)
    assert h.status_code == 200 and h.content == b"" and int(h.headers["content-length"]) > 100


def test_metrics_source_may_be_async_and_merged():
    a, b = Metrics(), Metrics()
    a.request_done("r", "GET", 200, 0.1, 1, 1, None, None)
    b.request_done("r", "GET", 200, 0.1, 1, 1, None, None)

    async def gather():
        await asyncio.sleep(0.01)      # as if asking the workers over their pipes
        from fastgate.observe.metrics import merge_snapshots
        return merge_snapshots([a.snapshot(), b.snapshot()])

    srv = Running(metrics_source=gather)
    try:
        text = httpx.get(srv.url + "/metrics", headers=AUTH, timeout=10).text
        assert 'fastgate_requests_total{code="200",method="GET",route="r"} 2.0' in text
    finally:
        srv.stop()


def test_a_failing_metrics_source_is_a_500_and_the_server_lives_on():
    def broken():
        raise RuntimeError("worker pipe closed")

    srv = Running(metrics_source=broken)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            err = error_body(c.get("/metrics", headers=AUTH), 500)
            assert "pipe" not in err["message"]      # internals are not leaked
            assert c.get("/healthz").status_code == 200
    finally:
        srv.stop()


def test_metrics_rejects_other_methods(client):
    r = client.post("/metrics", headers=AUTH)
    error_body(r, 405)
    assert r.headers["allow"] == "GET, HEAD"


# -- config -------------------------------------------------------------------------------------
SECRET_DOC = {
    "admin": {"bind": "127.0.0.1:9901", "token": "ADMIN-SECRET"},
    "redis": {"url": "redis://user:REDIS-PASSWORD@127.0.0.1:6379/0"},
    "upstreams": {"o": {"targets": [{"url": "http://127.0.0.1:9001", "weight": 1}]}},
    "consumers": [{"name": "alice", "groups": ["payments"], "api_keys": ["sha256:HASH1", "sha256:HASH2"]}],
    "auth": {
        "sso": {"type": "jwt", "secret": "JWT-SECRET", "issuer": "https://idp/"},
        "opaque": {"type": "introspection", "client_id": "gw", "client_secret": "INTRO-SECRET"},
        "keys": {"type": "api_key", "header": "X-API-Key"},
    },
    "routes": [{"name": "r", "paths": ["/"], "upstream": "o", "transform": {"request": {
        "set_headers": {"Authorization": "Bearer UPSTREAM-CRED", "X-Env": "prod"},
        "add_headers": {"X-Api-Key": "UPSTREAM-KEY"}}}}],
    "ai": {"providers": {"oa": {"type": "openai", "api_key": "OPENAI-KEY", "base_url": "https://api"}}},
    "misc": {"password": "PW", "db_password": "PW2", "github_token": "GH", "token": None,
             "flags": {"token": True}},
    "logging": {"access_log": "stdout", "redact_headers": ["authorization", "cookie", "x-api-key"]},
}


def test_config_is_redacted(admin, client):
    admin.config = SECRET_DOC
    r = client.get("/config", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    for secret in ("SECRET", "PASSWORD", "HASH", "UPSTREAM-", "OPENAI-KEY", '"PW', "GH"):
        assert secret not in r.text, secret
    doc = r.json()
    assert doc["admin"] == {"bind": "127.0.0.1:9901", "token": "***"}
    assert doc["redis"]["url"] == "redis://***@127.0.0.1:6379/0"
    assert doc["consumers"][0] == {"name": "alice", "groups": ["payments"], "api_keys": ["***", "***"]}
    assert doc["auth"]["sso"] == {"type": "jwt", "secret": "***", "issuer": "https://idp/"}
    assert doc["auth"]["opaque"]["client_secret"] == "***" and doc["auth"]["opaque"]["client_id"] == "gw"
    assert doc["auth"]["keys"] == {"type": "api_key", "header": "X-API-Key"}   # a header *name*
    sh = doc["routes"][0]["transform"]["request"]
    assert sh["set_headers"] == {"Authorization": "***", "X-Env": "prod"}
    assert sh["add_headers"] == {"X-Api-Key": "***"}
    assert doc["ai"]["providers"]["oa"]["api_key"] == "***"
    assert doc["misc"] == {"password": "***", "db_password": "***", "github_token": "***",
                           "token": None, "flags": {"token": True}}
    assert doc["logging"] == SECRET_DOC["logging"]       # header names in lists are not secrets
    assert doc["upstreams"] == SECRET_DOC["upstreams"]


def test_redaction_leaves_the_original_alone():
    before = orjson.dumps(SECRET_DOC)
    redact_config(SECRET_DOC)
    assert orjson.dumps(SECRET_DOC) == before


@pytest.fixture
def admin_key_allowed():
    """Let the loader accept `admin:` while it is still listed as not supported (the admin
    feature is what this module provides); restored afterwards."""
    was = "admin" in features.UNSUPPORTED
    features.UNSUPPORTED.discard("admin")
    try:
        yield
    finally:
        if was:
            features.UNSUPPORTED.add("admin")


def test_config_from_a_loaded_config_shows_its_raw_document(admin, client, admin_key_allowed):
    admin.config = parse_config({
        "listeners": [{"bind": "127.0.0.1:0"}],
        "admin": {"bind": "127.0.0.1:0", "token": "LITERAL-ADMIN-SECRET"},
        "routes": [{"name": "r", "paths": ["/"], "respond": {"status": 200}}],
    }, {})
    r = client.get("/config", headers=AUTH)
    assert r.status_code == 200 and "LITERAL-ADMIN-SECRET" not in r.text
    doc = r.json()
    assert doc["admin"]["token"] == "***" and doc["routes"][0]["name"] == "r"


def test_not_yet_implemented_endpoints_say_so(client):
    # a bare AdminServer (no control plane) has no changes or audit to offer
    for method, path in (("PUT", "/config"), ("GET", "/audit"), ("GET", "/catalog"),
                         ("GET", "/usage")):
        err = error_body(client.request(method, path, headers=AUTH, content=b"{}"), 501)
        assert err["code"] == "not_implemented" and "not implemented" in err["message"]


def test_unknown_path_with_token_is_404(client):
    error_body(client.get("/v1/secrets", headers=AUTH), 404)


# -- HTTP strictness ----------------------------------------------------------------------------
HOST = b"Host: a\r\n"


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 200),
    (b"GET /healthz HTTP/1.0\r\n\r\n", 200),                                # Host optional in 1.0
    (b"GET /healthz?x=1 HTTP/1.1\r\n" + HOST + b"\r\n", 200),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),                                # 1.1 without Host
    (b"GET  /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /healthz  HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET http://a/healthz HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /he\x7fz HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /h\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"G(T /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    (b"GET /healthz HTTP/1.1x\r\n" + HOST + b"\r\n", 400),
    (b"GET /healthz http/1.1\r\n" + HOST + b"\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b" folded\r\n\r\n", 400),        # obs-fold
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Bad Name: v\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Name : v\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"NoColon\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X: a\x7fb\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),               # bare LF
    (b"GET /healthz HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),               # bare CR
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Host: b\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 1, 1\r\n\r\nx", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: +1\r\n\r\nx", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 99999999999999999999\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nab", 400),   # short body
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nab", 200),
    (b"GET /healthz HTTP/1.1\r\n" + HOST, 400),                             # head cut short
    (b"GET /healthz HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
])
def test_malformed_requests(admin, request_bytes, status):
    resp = raw(admin.port, request_bytes)
    assert status_of(resp) == status, resp[:300]
    head, _, body = resp.partition(b"\r\n\r\n")
    assert b"connection: close" in head.split(b"\r\n")[1:]
    if status >= 400:
        assert orjson.loads(body)["error"]["status"] == status


def test_body_too_large_for_an_authorized_client(admin):
    resp = raw(admin.port, b"PUT /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
               + TOKEN.encode() + b"\r\nContent-Length: 999999999\r\n\r\n", shut=False)
    assert status_of(resp) == 413


def test_one_request_per_connection(admin):
    # a pipelined second request is not answered: the connection closes after the first
    two = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n" * 2
    resp = raw(admin.port, two)
    assert resp.count(b"HTTP/1.1 200") == 1


def test_silent_and_half_open_connections_do_not_block_close():
    srv = Running()
    socks = []
    try:
        for data in (b"", b"GET /healthz HTTP/1.1\r\n"):     # nothing / half a head
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(data)
            socks.append(s)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10):
            pass                                               # connects and leaves
        assert httpx.get(srv.url + "/healthz", timeout=10).status_code == 200
    finally:
        srv.stop()     # must not wait for the idle peers (pytest-timeout would catch a hang)
        for s in socks:
            s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


# -- framing by the compiled parser, codes from the one error table ------------------------------
@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GET /healthz HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431,
     "header_too_large"),
    (b"GET /healthz HTTP/2.0\r\n" + HOST + b"\r\n", 505, "version_not_supported"),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, "uri_too_long"),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501,
     "not_implemented"),
    (b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    (b"CONNECT a:443 HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Authorization: Bearer a\r\nAuthorization: Bearer b"
     b"\r\n\r\n", 400, "bad_request"),
])
def test_refusals_carry_the_shared_codes(admin, request_bytes, status, code):
    from fastgate.errors import ERROR_CODES
    resp = raw(admin.port, request_bytes)
    assert status_of(resp) == status, resp[:300]
    err = orjson.loads(resp.partition(b"\r\n\r\n")[2])["error"]
    assert (err["status"], err["code"]) == (status, code) and ERROR_CODES[status] == code


def test_a_head_split_byte_by_byte_parses_like_a_whole_one(admin):
    req = b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", admin.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
        resp = read_until_close(s)
    assert status_of(resp) == 200 and b"fastgate_requests_total" in resp


def test_head_and_body_deadlines(monkeypatch):
    from fastgate.admin import server as admin_server
    monkeypatch.setattr(admin_server, "HEAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(admin_server, "BODY_TIMEOUT_S", 0.3)
    srv = Running()
    try:
        for data, message in (
                (b"GET /healthz HTTP/1.1\r\n", "request head not received in time"),
                (b"PUT /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + TOKEN.encode()
                 + b"\r\nContent-Length: 10\r\n\r\nab", "request body not received in time")):
            resp = raw(srv.port, data, shut=False)
            assert status_of(resp) == 408
            err = orjson.loads(resp.partition(b"\r\n\r\n")[2])["error"]
            assert (err["code"], err["message"]) == ("request_timeout", message)
    finally:
        srv.stop()
