"""The real gateway process between real clients (httpx, curl, raw sockets) and a real
upstream on loopback."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from tests.helpers.gateway import simple_config
from tests.helpers.util import read_until_close


def raw_exchange(port, data: bytes, *, timeout=5.0, read_until_close=True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)


def statuses(raw: bytes):
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


# ---------------------------------------------------------------------------- basics
def test_proxies_get_with_forwarded_headers(gateway, upstream):
    r = httpx.get(gateway.url + "/echo/a?x=1&y=2", headers={"X-Custom": "v"})
    assert r.status_code == 200
    body = r.json()
    assert body["method"] == "GET"
    assert body["target"] == "/echo/a?x=1&y=2"
    h = {k: v for k, v in body["headers"]}
    assert h["x-custom"] == "v"
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert h["host"] == f"127.0.0.1:{upstream.port}"
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", h["x-request-id"])
    assert r.headers["x-request-id"] == h["x-request-id"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", h["traceparent"])


def test_request_id_kept_when_sane_and_replaced_when_not(gateway):
    r = httpx.get(gateway.url + "/echo", headers={"X-Request-ID": "abc-123"})
    h = dict(r.json()["headers"])
    assert h["x-request-id"] == "abc-123" and r.headers["x-request-id"] == "abc-123"
    r = httpx.get(gateway.url + "/echo", headers={"X-Request-ID": "bad id with spaces <script>"})
    h = dict(r.json()["headers"])
    assert h["x-request-id"] != "bad id with spaces <script>"
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", h["x-request-id"])


def test_traceparent_propagated_with_same_trace_id(gateway):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    h = dict(httpx.get(gateway.url + "/echo", headers={"traceparent": tp}).json()["headers"])
    assert h["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert h["traceparent"] != tp  # our own span id
    h = dict(httpx.get(gateway.url + "/echo", headers={"traceparent": "garbage"}).json()["headers"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", h["traceparent"])


def test_xff_appended_and_spoofed_identity_removed(gateway):
    r = httpx.get(gateway.url + "/echo", headers={
        "X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil",
        "X-Consumer-Name": "admin", "X-Consumer-Groups": "root"})
    h = r.json()["headers"]
    names = [k for k, _ in h]
    d = dict(h)
    assert d["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert d["x-forwarded-proto"] == "http"
    assert d["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert "x-consumer-name" not in names and "x-consumer-groups" not in names
    assert names.count("x-forwarded-proto") == 1


def test_hop_by_hop_headers_dropped(gateway):
    raw = raw_exchange(gateway.port, (
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret-Hop\r\n"
        b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: x\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n\r\n"))
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    names = [k for k, _ in body["headers"]]
    for hop in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "connection"):
        assert hop not in names
    assert "upgrade-insecure-requests" in names


def test_post_body_content_length_and_chunked(gateway):
    data = b"x" * 100000
    r = httpx.post(gateway.url + "/echo", content=data)
    assert r.json()["body_len"] == 100000
    assert r.json()["body_sha256"] == __import__("hashlib").sha256(data).hexdigest()

    def gen():
        for _ in range(10):
            yield b"y" * 1000
    r = httpx.post(gateway.url + "/echo", content=gen())
    assert r.json()["body_len"] == 10000
    assert ["transfer-encoding", "chunked"] in r.json()["headers"]


def test_chunked_response_relayed(gateway):
    r = httpx.get(gateway.url + "/chunked/5")
    assert r.status_code == 200
    assert r.text == "".join(f"chunk-{i}\n" for i in range(5))


def test_head_204_304(gateway):
    r = httpx.head(gateway.url + "/echo")
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) > 0
    with httpx.Client() as c:  # same connection: HEAD/204/304 must not desync framing
        assert c.get(gateway.url + "/status/204").status_code == 204
        assert c.get(gateway.url + "/status/304").status_code == 304
        assert c.head(gateway.url + "/echo").status_code == 200
        assert c.get(gateway.url + "/echo").json()["method"] == "GET"


def test_close_delimited_upstream_response(gateway):
    r = httpx.get(gateway.url + "/close-delimited")
    assert r.status_code == 200 and r.text == "until-close-body"


def test_keepalive_reuses_client_and_upstream_connections(gateway, upstream):
    with httpx.Client() as c:
        for _ in range(20):
            assert c.get(gateway.url + "/echo").status_code == 200
    assert upstream.connections <= 2


def test_pipelined_requests_answered_in_order(gateway):
    reqs = b"".join(
        b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10)
    ) + b"GET /echo/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(gateway.port, reqs)
    targets = re.findall(rb'"target":"(/echo/[^"]+)"', raw)
    assert targets == [b"/echo/%d" % i for i in range(10)] + [b"/echo/last"]


def test_pipelined_split_in_one_byte_writes(gateway):
    reqs = b"GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in reqs:
            s.send(bytes([b]))
        raw = read_until_close(s)
    assert re.findall(rb'"target":"(/echo/[^"]+)"', raw) == [b"/echo/1", b"/echo/2"]


# ---------------------------------------------------------------------------- routing
def routing_config(upstream_port):
    return {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "logging": {"access_log": "off"},
        "upstreams": {"app": {"targets": [{"url": f"http://127.0.0.1:{upstream_port}"}]}},
        "routes": [
            {"name": "hello", "paths": ["/hello"], "methods": ["GET"],
             "respond": {"status": 200, "body": "hi\n", "headers": {"X-Static": "1"}}},
            {"name": "orders", "paths": ["/orders/{id}"], "methods": ["GET", "POST"],
             "upstream": "app", "rewrite": "/v2/orders/{id}"},
            {"name": "api", "paths": ["/api/*"], "upstream": "app", "strip_prefix": "/api"},
            {"name": "vhost", "hosts": ["*.example.org"], "paths": ["/*"], "upstream": "app",
             "preserve_host": True},
        ],
    }


def test_routing_404_405_respond_rewrite_strip(upstream, gateway_factory):
    gw = gateway_factory(routing_config(upstream.port))
    r = httpx.get(gw.url + "/hello")
    assert (r.status_code, r.text, r.headers["x-static"]) == (200, "hi\n", "1")
    r = httpx.get(gw.url + "/nowhere")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["status"] == 404 and err["code"] == "not_found" and err["request_id"] == r.headers["x-request-id"]
    r = httpx.delete(gw.url + "/hello")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    r = httpx.get(gw.url + "/orders/42?x=1")
    assert r.json()["target"] == "/v2/orders/42?x=1"
    r = httpx.get(gw.url + "/api/users/7")
    assert r.json()["target"] == "/users/7"
    r = httpx.get(gw.url + "/api")
    assert r.json()["target"] == "/"
    r = httpx.get(gw.url + "/x", headers={"Host": "shop.example.org"})
    assert dict(r.json()["headers"])["host"] == "shop.example.org"


def test_path_traversal_normalized_before_routing(upstream, gateway_factory):
    gw = gateway_factory(routing_config(upstream.port))
    raw = raw_exchange(gw.port, b"GET /hello/../api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [200]
    assert b'"target":"/x"' in raw
    raw = raw_exchange(gw.port, b"GET /../../etc/passwd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [400]


# ---------------------------------------------------------------------------- malformed
SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabcde\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\nBad\x01Name: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET /ec\x7fho HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /echo HTTP/1.1\rHost: a\r\n\r\n",
]


@pytest.mark.parametrize("payload", SMUGGLING, ids=range(len(SMUGGLING)))
def test_ambiguous_or_malformed_framing_rejected_and_never_forwarded(gateway, upstream, payload):
    follow = b"GET /echo/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    raw = raw_exchange(gateway.port, payload + follow)
    st = statuses(raw)
    assert st and st[0] == 400, raw[:200]
    assert len(st) == 1, "connection must close after a rejected request"
    assert b"connection: close" in raw.lower()
    assert upstream.requests == [], "nothing of a rejected request reaches the upstream"


def test_limits_414_431_413(upstream, gateway_factory):
    cfg = simple_config(upstream.port, limits={
        "max_request_line_bytes": 200, "max_header_bytes": 1000, "max_headers": 10,
        "max_body_bytes": 1000})
    gw = gateway_factory(cfg)
    assert statuses(raw_exchange(gw.port, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n")) == [414]
    assert statuses(raw_exchange(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 1200 + b"\r\n\r\n")) == [431]
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(12))
    assert statuses(raw_exchange(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")) == [431]
    assert statuses(raw_exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")) == [413]
    body = b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n"
    assert statuses(raw_exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)) == [413]
    assert upstream.requests == [] or all(r.body_len <= 1000 for r in upstream.requests)
    r = httpx.post(gw.url + "/echo", content=b"a" * 1000)
    assert r.status_code == 200


def test_route_max_body_bytes(upstream, gateway_factory):
    cfg = simple_config(None, limits={"max_body_bytes": 100})
    cfg["upstreams"] = {"app": {"targets": [{"url": upstream.url}]}}
    cfg["routes"] = [
        {"name": "small", "paths": ["/small/*"], "upstream": "app", "max_body_bytes": 10},
        {"name": "big", "paths": ["/big/*"], "upstream": "app", "max_body_bytes": 1000},
        {"name": "default", "paths": ["/*"], "upstream": "app"},
    ]
    gw = gateway_factory(cfg)
    assert httpx.post(gw.url + "/small/echo", content=b"a" * 11).status_code == 413
    assert httpx.post(gw.url + "/small/echo", content=b"a" * 10).status_code == 200
    # a route may allow more than the global default, with either framing
    assert httpx.post(gw.url + "/big/echo", content=b"a" * 1000).status_code == 200
    assert httpx.post(gw.url + "/big/echo", content=iter([b"a" * 500] * 2)).status_code == 200
    assert httpx.post(gw.url + "/big/echo", content=b"a" * 1001).status_code == 413
    assert httpx.post(gw.url + "/big/echo", content=iter([b"a" * 501] * 2)).status_code == 413
    assert httpx.post(gw.url + "/echo", content=b"a" * 101).status_code == 413
    assert httpx.post(gw.url + "/echo", content=iter([b"a" * 51] * 2)).status_code == 413
    assert httpx.post(gw.url + "/echo", content=b"a" * 100).status_code == 200


def test_header_timeout_slowloris_gets_408(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.port, limits={"header_timeout_s": 1}))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
        start = time.monotonic()
        for _ in range(8):  # trickle bytes: the deadline is for the whole head
            time.sleep(0.2)
            try:
                s.sendall(b"X: y\r\n")
            except OSError:
                break
        data = read_until_close(s)
        assert statuses(data) == [408]
        assert time.monotonic() - start < 5


def test_expect_100_continue(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        rest = first[25:]
        while b'"body_sha256"' not in rest:
            rest += s.recv(65536)
        assert b'"body_len":5' in rest
        assert b"expect" not in rest.lower().split(b"\r\n\r\n", 1)[1]


# ---------------------------------------------------------------------------- upstream failures
def test_upstream_connection_refused_502(gateway_factory):
    from tests.helpers.gateway import free_port
    gw = gateway_factory(simple_config(free_port()))
    r = httpx.get(gw.url + "/x")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "bad_gateway"


def test_upstream_read_timeout_504(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["upstreams"]["app"]["read_timeout_s"] = 0.5
    gw = gateway_factory(cfg)
    r = httpx.get(gw.url + "/slow/3000", timeout=10)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "gateway_timeout"


def test_route_timeout_overrides(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["routes"][0]["timeout_s"] = 0.5
    gw = gateway_factory(cfg)
    assert httpx.get(gw.url + "/slow/3000", timeout=10).status_code == 504


def test_upstream_killed_mid_response_aborts_client(gateway):
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(gateway.url + "/close-mid")
    assert httpx.get(gateway.url + "/echo").status_code == 200


def test_garbage_response_502(gateway):
    r = httpx.get(gateway.url + "/garbage")
    assert r.status_code == 502


def test_overlong_upstream_response_never_leaks(upstream, gateway_factory):
    cfg = simple_config(upstream.port)
    cfg["upstreams"]["app"]["keepalive"] = 1
    gw = gateway_factory(cfg)
    with httpx.Client() as c:
        r = c.get(gw.url + "/extra-bytes")
        assert r.text == "hello"
        for _ in range(5):
            r = c.get(gw.url + "/echo")
            assert r.status_code == 200 and b"SECRET" not in r.content


def test_retry_idempotent_on_other_target(upstream, gateway_factory):
    from tests.helpers.gateway import free_port
    cfg = simple_config(upstream.port)
    cfg["upstreams"]["app"]["targets"] = [{"url": f"http://127.0.0.1:{free_port()}"}, {"url": upstream.url}]
    cfg["upstreams"]["app"]["retries"] = 1
    gw = gateway_factory(cfg)
    for _ in range(4):
        assert httpx.get(gw.url + "/echo").status_code == 200


def test_round_robin_spreads_across_targets(gateway_factory):
    from tests.helpers.upstream import UpstreamServer
    a, b = UpstreamServer().start(), UpstreamServer().start()
    try:
        cfg = simple_config(a.port)
        cfg["upstreams"]["app"]["targets"] = [{"url": a.url}, {"url": b.url}]
        gw = gateway_factory(cfg)
        for _ in range(10):
            assert httpx.get(gw.url + "/echo").status_code == 200
        assert len(a.requests) == 5 and len(b.requests) == 5
    finally:
        a.stop()
        b.stop()


# ---------------------------------------------------------------------------- streaming
def test_sse_streams_events_as_they_come(gateway):
    with httpx.stream("GET", gateway.url + "/sse") as r:
        assert r.headers["content-type"] == "text/event-stream"
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    assert events == [f"data: event-{i}" for i in range(5)]


def test_websocket_tunnel_echo(gateway):
    from websockets.sync.client import connect
    with connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_curl_client(gateway):
    out = subprocess.run(["curl", "-s", "-i", gateway.url + "/echo/curl"], capture_output=True, timeout=10)
    assert out.returncode == 0
    assert out.stdout.startswith(b"HTTP/1.1 200")
    assert b'"target":"/echo/curl"' in out.stdout


def test_h2c_upgrade_is_not_forwarded(gateway, upstream):
    """h2c smuggling: an Upgrade other than websocket must never reach the upstream, or a
    101 from it would open an HTTP/2 channel past the gateway's routing and auth."""
    raw = raw_exchange(gateway.port, (
        b"GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
        b"Connection: Upgrade, HTTP2-Settings, close\r\n\r\n"))
    assert statuses(raw) == [200]
    rec = upstream.requests[-1]
    names = [k for k, _ in rec.headers]
    assert b"upgrade" not in names and b"http2-settings" not in names
    assert rec.header(b"connection") in (None, b"keep-alive")


@pytest.mark.parametrize("payload", [p for p in SMUGGLING if b"chunked\r\n\r\n" in p and b"HTTP/1.1" in p])
def test_rejected_body_in_the_same_read_never_reaches_a_warm_upstream(gateway, upstream, payload):
    """With a pooled upstream connection ready, the head is dispatched synchronously; bytes
    for the upstream still wait until the whole read parsed cleanly."""
    with httpx.Client() as c:
        assert c.get(gateway.url + "/echo").status_code == 200  # warm the pool
    before = len(upstream.requests)
    raw = raw_exchange(gateway.port, payload)
    assert statuses(raw)[0] == 400
    assert len(upstream.requests) == before, upstream.requests[before:]


def test_bad_upstream_body_in_the_first_read_gets_a_clean_502(gateway_factory):
    """A response whose chunked framing breaks inside the first read from the upstream:
    nothing was sent to the client yet, so it gets a 502 rather than a truncated 200."""
    import asyncio
    from tests.helpers.util import raw_server

    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    port, stop = raw_server(handler)
    try:
        gw = gateway_factory(simple_config(port))
        r = httpx.get(gw.url + "/x")
        assert r.status_code == 502 and r.json()["error"]["code"] == "bad_gateway"
    finally:
        stop()
