"""Client sockets owned by the gateway (fastgate/_core/conn_socket.pxi: epoll, accept4,
recv, send), through the real command: flow control both ways, half-close, resets while
paused, IPv6, running out of descriptors, and the uvloop fallback (FASTGATE_SOCKETS=uvloop)
behaving the same."""
from __future__ import annotations

import hashlib
import os
import resource
import socket
import struct
import time

import httpx
import pytest

from tests.helpers.gateway import free_port, simple_config
from tests.helpers.util import read_until_close, wait_for
from tests.integration.test_observability import scrape, value

TOKEN = "admin-secret-token-123"

MODES = [pytest.param({}, id="owned"), pytest.param({"FASTGATE_SOCKETS": "uvloop"}, id="uvloop")]


def _gateway(gateway_factory, upstream, env, **extra):
    admin_port = free_port()
    cfg = simple_config(upstream.port, admin={"bind": f"127.0.0.1:{admin_port}",
                                              "token": TOKEN}, **extra)
    gw = gateway_factory(cfg, env=env)
    gw.admin_port = admin_port
    return gw


def _active(gw) -> float:
    return value(scrape(gw.admin_port), "fastgate_connections_active")


def _small_window_socket(port):
    # The receive buffer is set before connecting: the window is agreed on at the handshake.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


def _split(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("env", MODES)
def test_a_slow_reader_gets_every_byte_of_pipelined_downloads_in_order(
        upstream, gateway_factory, env):
    # The gateway's write buffer fills while the client does not read: it pauses the
    # upstream (pause_writing), then resumes when the client drains it; nothing is lost or
    # reordered.
    gw = _gateway(gateway_factory, upstream, env)
    sizes = [3 << 20, 17, 1 << 20]
    with _small_window_socket(gw.port) as s:
        s.sendall(b"".join(b"GET /download/%d HTTP/1.1\r\nHost: a\r\n\r\n" % n for n in sizes[:-1])
                  + b"GET /download/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                  % sizes[-1])
        time.sleep(1.0)                         # stalled reader: buffers fill, upstream paused
        data = read_until_close(s)
    for n in sizes:
        head, rest = _split(data)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"content-length: %d" % n in head.lower()
        assert rest[:n] == b"d" * n
        data = rest[n:]
    assert data == b""


@pytest.mark.parametrize("env", MODES)
def test_a_large_upload_from_a_fast_client_is_relayed_whole(upstream, gateway_factory, env):
    gw = _gateway(gateway_factory, upstream, env)
    body = bytes(range(256)) * 40000               # ~10 MiB
    r = httpx.post(gw.url + "/echo", content=body, timeout=30)
    assert r.status_code == 200
    assert r.json()["body_len"] == len(body)
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("env", MODES)
def test_a_half_closed_client_still_gets_its_answer(upstream, gateway_factory, env):
    gw = _gateway(gateway_factory, upstream, env)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /slow/200 HTTP/1.1\r\nHost: a\r\n\r\n")
        s.shutdown(socket.SHUT_WR)              # FIN after a complete request
        data = read_until_close(s)
    head, body = _split(data)
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert b'"method":"GET"' in body
    assert wait_for(lambda: _active(gw) == 0)


@pytest.mark.parametrize("env", MODES)
def test_a_client_that_resets_while_its_reading_is_paused_is_released(
        upstream, gateway_factory, env):
    # The client asks for a large body, never reads it and pipelines more requests than
    # the gateway buffers: the gateway stops reading from it (and, its write buffer full,
    # pauses the upstream), then the client resets. The connection must be released (gauge
    # back to 0) and the gateway keeps serving.
    gw = _gateway(gateway_factory, upstream, env)
    socks = []
    for _ in range(5):
        s = _small_window_socket(gw.port)
        s.setblocking(False)
        s.sendall(b"GET /download/%d HTTP/1.1\r\nHost: a\r\n\r\n" % (8 << 20))
        more = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n" * 3000      # ~100 KB
        sent, blocked_since = 0, None
        while sent < (32 << 20):
            try:
                sent += s.send(more)
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 0.5:
                    break
                time.sleep(0.02)
        assert blocked_since, "the gateway read everything: its reading was never paused"
        socks.append(s)
    assert wait_for(lambda: _active(gw) == 5)
    time.sleep(0.5)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                               # RST
    assert wait_for(lambda: _active(gw) == 0, 10), _active(gw)
    assert httpx.get(gw.url + "/echo").status_code == 200


@pytest.mark.parametrize("env", MODES)
def test_an_ipv6_listener_serves_and_reports_the_client_address(upstream, gateway_factory,
                                                                  env):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    cfg = simple_config(upstream.port, listeners=[{"bind": "[::1]:0"}])
    gw = gateway_factory(cfg, env=env)
    assert gw.addresses[0].startswith("[::1]:")
    r = httpx.get(f"http://[::1]:{gw.port}/echo")
    assert r.status_code == 200
    headers = {k: v for k, v in r.json()["headers"]}
    assert headers["x-forwarded-for"] == "::1"


def test_running_out_of_descriptors_pauses_accepting_and_then_serves_again(
        upstream, gateway_factory):
    # A connection flood past the process's descriptor limit: accept4 fails with EMFILE;
    # the gateway says so, stops accepting for a moment (no busy loop on the ready
    # listener), and serves again once connections close.
    gw = _gateway(gateway_factory, upstream, {})
    pid = gw.proc.pid
    n_open = len(os.listdir(f"/proc/{pid}/fd"))
    limit = n_open + 20
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    flood = []
    try:
        for _ in range(60):
            flood.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        assert wait_for(lambda: "Too many open files" in gw.stderr(), 10), gw.stderr()
        cpu0 = _cpu(pid)
        time.sleep(0.5)
        assert _cpu(pid) - cpu0 < 0.25            # not spinning on the listener
    finally:
        for s in flood:
            s.close()
    assert wait_for(lambda: _get_ok(gw.url + "/echo"), 10)


def _cpu(pid) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def _get_ok(url) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
