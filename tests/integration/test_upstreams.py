"""Balancing, upstream TLS, HTTP/1.0 connection semantics and backpressure."""
from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time

import httpx
import pytest

from tests.helpers.util import proc_status_kb, raw_server, read_until_close
from tests.helpers.gateway import simple_config
from tests.helpers.upstream import UpstreamServer


@pytest.fixture
def two_upstreams():
    a, b = UpstreamServer().start(), UpstreamServer().start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_weighted_round_robin(two_upstreams, gateway_factory):
    a, b = two_upstreams
    cfg = simple_config(a.port)
    cfg["upstreams"]["app"]["targets"] = [{"url": a.url, "weight": 1}, {"url": b.url, "weight": 3}]
    gw = gateway_factory(cfg)
    with httpx.Client() as c:
        for _ in range(40):
            assert c.get(gw.url + "/echo").status_code == 200
    assert (len(a.requests), len(b.requests)) == (10, 30)


def test_each_target_keeps_its_own_base_path(two_upstreams, gateway_factory):
    """http://a/v1 and http://b/v2 in one upstream: each forwarded path gets its own target's
    prefix (the first target's used to be applied to all of them)."""
    a, b = two_upstreams
    cfg = simple_config(a.port)
    cfg["upstreams"]["app"]["targets"] = [{"url": a.url + "/v1"}, {"url": b.url + "/v2"}]
    gw = gateway_factory(cfg)
    with httpx.Client() as c:
        for _ in range(4):
            assert c.get(gw.url + "/echo?x=1").status_code == 200
    assert {r.target for r in a.requests} == {b"/v1/echo?x=1"}
    assert {r.target for r in b.requests} == {b"/v2/echo?x=1"}


def test_hash_on_header_is_sticky_and_spreads(two_upstreams, gateway_factory):
    a, b = two_upstreams
    cfg = simple_config(a.port)
    cfg["upstreams"]["app"].update(
        targets=[{"url": a.url}, {"url": b.url}], balance="hash", hash_on="header:X-User")
    gw = gateway_factory(cfg)
    seen = {}
    with httpx.Client() as c:
        for user in range(40):
            for _ in range(3):
                c.get(gw.url + "/echo", headers={"X-User": f"user-{user}"})
    for server in (a, b):
        for rec in server.requests:
            seen.setdefault(rec.header(b"x-user"), set()).add(server.port)
    assert all(len(ports) == 1 for ports in seen.values()), "a key must always land on one target"
    assert 5 < len(a.requests) / 3 < 35, "keys should spread over both targets"


def test_least_conn_prefers_idle_target(two_upstreams, gateway_factory):
    a, b = two_upstreams
    cfg = simple_config(a.port)
    cfg["upstreams"]["app"].update(targets=[{"url": a.url}, {"url": b.url}], balance="least_conn")
    gw = gateway_factory(cfg)
    # Occupy one target with a long request; new requests must go to the other.
    t = threading.Thread(target=lambda: httpx.get(gw.url + "/slow/1500", timeout=10))
    t.start()
    time.sleep(0.3)
    busy = a if a.requests else b
    idle = b if busy is a else a
    for _ in range(6):
        httpx.get(gw.url + "/echo")
    assert len(idle.requests) == 6
    t.join()


def test_http10_client_connection_semantics(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        data = read_until_close(s)  # closed after the response: 1.0 without keep-alive
    assert data.startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"GET /chunked/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = read_until_close(s)
    # A 1.0 client cannot read chunked: the body is sent as-is and ended by close.
    assert b"transfer-encoding" not in data.lower()
    assert data.endswith(b"chunk-0\nchunk-1\nchunk-2\n")


def test_connection_close_from_client_closes_after_response(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data.lower()


def test_slow_client_download_is_backpressured(upstream, gateway_factory):
    gw = gateway_factory(simple_config(upstream.port))
    size = 512 << 20
    before = proc_status_kb(gw.proc.pid, "VmRSS")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /download/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % size)
        time.sleep(1.5)  # not reading: the gateway must stop reading the upstream
        during = proc_status_kb(gw.proc.pid, "VmRSS")
        total = 0
        buf = bytearray(1 << 20)
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            total += n
    assert total > size
    assert (during - before) < 48 * 1024, f"gateway buffered {(during - before) >> 10} MiB for a stalled reader"


def test_slow_upstream_upload_is_backpressured(gateway_factory):
    """An upstream that stops reading: the gateway stops reading the client."""
    stalled = threading.Event()
    received = []

    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        stalled.set()
        await asyncio.sleep(1.5)
        n = 0
        while n < (256 << 20):
            d = await reader.read(1 << 20)
            if not d:
                break
            n += len(d)
        received.append(n)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    try:
        gw = gateway_factory(simple_config(port, limits={"max_body_bytes": 1 << 30}))
        before = proc_status_kb(gw.proc.pid, "VmRSS")
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (256 << 20))
            block = b"b" * (1 << 20)
            sent = 0
            s.settimeout(0.5)
            t_end = time.monotonic() + 1.2
            while time.monotonic() < t_end:
                try:
                    sent += s.send(block)
                except socket.timeout:
                    continue
            during = proc_status_kb(gw.proc.pid, "VmRSS")
            assert sent < (128 << 20), "the client could push far more than socket buffers hold"
            s.settimeout(30)
            while sent < (256 << 20):
                sent += s.send(block[: min(len(block), (256 << 20) - sent)])
            data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 200")
        assert received == [256 << 20]
        assert (during - before) < 48 * 1024
    finally:
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)


@pytest.fixture
def tls_upstream(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))

    async def handler(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b"tls-ok " + head.split(b" ")[1]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx))
    port = server.sockets[0].getsockname()[1]
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    try:
        yield port, str(ca_path)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)


def test_https_upstream_verified_with_custom_ca(tls_upstream, gateway_factory):
    port, ca = tls_upstream
    cfg = simple_config(None)
    cfg["upstreams"] = {
        "good": {"targets": [{"url": f"https://127.0.0.1:{port}"}], "ca_file": ca},
        "unverified": {"targets": [{"url": f"https://127.0.0.1:{port}"}]},
        "noverify": {"targets": [{"url": f"https://127.0.0.1:{port}"}], "tls_verify": False},
    }
    cfg["routes"] = [
        {"name": "good", "paths": ["/good"], "upstream": "good"},
        {"name": "unverified", "paths": ["/unverified"], "upstream": "unverified"},
        {"name": "noverify", "paths": ["/noverify"], "upstream": "noverify"},
    ]
    gw = gateway_factory(cfg)
    with httpx.Client() as c:
        for _ in range(3):  # keep-alive over TLS
            r = c.get(gw.url + "/good")
            assert (r.status_code, r.text) == (200, "tls-ok /good")
    assert httpx.get(gw.url + "/unverified").status_code == 502  # CA not trusted: never sent
    assert httpx.get(gw.url + "/noverify").status_code == 200


def test_upstream_that_drops_new_connections_gets_502_not_a_hang(gateway_factory):
    async def handler(reader, writer):
        writer.transport.abort()

    port, stop = raw_server(handler)
    try:
        gw = gateway_factory(simple_config(port))
        for _ in range(3):
            r = httpx.get(gw.url + "/x", timeout=10)
            assert r.status_code == 502
    finally:
        stop()


def test_stale_pooled_connection_is_retried_for_idempotent_requests(gateway_factory):
    """The upstream closes each keep-alive connection shortly after answering (as servers
    with a short idle timeout do): a GET that lands on such a connection is retried."""
    async def handler(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await asyncio.sleep(0.05)
        finally:
            writer.close()

    port, stop = raw_server(handler)
    try:
        gw = gateway_factory(simple_config(port))
        with httpx.Client() as c:
            for _ in range(5):
                r = c.get(gw.url + "/x")
                assert (r.status_code, r.text) == (200, "ok")
                time.sleep(0.1)  # the pooled connection is closed by now
    finally:
        stop()


def test_the_upstream_head_is_exactly_what_the_client_sent_plus_the_gateway_lines(
        gateway_factory):
    """Byte for byte, what the upstream gets for a GET and a POST: the request line, the
    client's end-to-end headers in their order, X-Forwarded-*, X-Request-ID, traceparent,
    the framing and the target's Host, each line ending in CRLF (a lenient upstream would
    hide a bare CR or LF)."""
    heads = []

    async def handler(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                n = int(re.search(rb"content-length: (\d+)", head).group(1)) \
                    if b"content-length" in head else 0
                await reader.readexactly(n)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port, stop = raw_server(handler)
    try:
        gw = gateway_factory(simple_config(port))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: t/1\r\n"
                      b"X-Request-ID: abc-123\r\nAccept: */*\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            s.sendall(b"POST /p HTTP/1.1\r\nHost: api.example\r\nContent-Length: 3\r\n"
                      b"X-Forwarded-For: 10.0.0.9\r\n\r\nabc")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        stop()
    tp = rb"traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-01\r\n"
    host = b"host: 127.0.0.1:%d\r\n\r\n" % port
    assert re.fullmatch(
        rb"GET /a/b\?x=1&y=2 HTTP/1\.1\r\nuser-agent: t/1\r\naccept: \*/\*\r\n"
        rb"x-forwarded-for: 127\.0\.0\.1\r\nx-forwarded-proto: http\r\n"
        rb"x-forwarded-host: api\.example\r\nx-request-id: abc-123\r\n" + tp
        + re.escape(host), heads[0]), heads[0]
    assert re.fullmatch(
        rb"POST /p HTTP/1\.1\r\nx-forwarded-for: 10\.0\.0\.9, 127\.0\.0\.1\r\n"
        rb"x-forwarded-proto: http\r\nx-forwarded-host: api\.example\r\n"
        rb"x-request-id: [0-9a-f]{32}\r\n" + tp + rb"content-length: 3\r\n"
        + re.escape(host), heads[1]), heads[1]
