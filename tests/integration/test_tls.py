"""TLS listeners end to end: the real `fastgate run`, certificates made at test time
(trustme), real clients (httpx, curl, the ssl module for what they cannot show: SNI answers,
ALPN, protocol versions).

Covered: termination and X-Forwarded-Proto, ALPN http/1.1, SNI (exact, wildcard, names from
the certificate, default pair, no default pair), TLS 1.0/1.1 refused (with a control proving
the client really speaks 1.1), min_version TLSv1.3, client certificates required / optional,
from the right CA / another CA / none, client-certificate consumers, and file errors.
"""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import httpx
import orjson
import pytest
import trustme

from fastgate.config import parse_config
from fastgate.server.tls import TLSConfigError, server_ssl_context, tls_errors
from tests.helpers.gateway import simple_config

CURL = shutil.which("curl")


class Certs:
    """A server CA with leaf certificates, and a client CA with client certificates (plus a
    rogue CA issuing the same client names), all as files in ``dir``."""

    def __init__(self, d):
        self.dir = d
        self.ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.rogue_ca = trustme.CA()
        self.server = self._leaf(self.ca, "server", "localhost", "127.0.0.1")
        self.api = self._leaf(self.ca, "api", "api.example.test")
        self.wild = self._leaf(self.ca, "wild", "*.wild.example.test")
        self.san = self._leaf(self.ca, "san", "san.example.test", "san2.example.test")
        self.alice = self._leaf(self.client_ca, "alice", "alice.clients.test", cn="alice")
        self.mallory = self._leaf(self.rogue_ca, "mallory", "alice.clients.test", cn="alice")
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.client_ca_file = self._write("client-ca.pem", self.client_ca.cert_pem.bytes())

    def _write(self, name, data):
        p = os.path.join(self.dir, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def _leaf(self, ca, name, *hosts, cn=None):
        leaf = ca.issue_cert(*hosts, common_name=cn)
        cert = self._write(f"{name}.crt", b"".join(b.bytes() for b in leaf.cert_chain_pems))
        key = self._write(f"{name}.key", leaf.private_key_pem.bytes())
        return cert, key

    def client_context(self, client=None, **kw) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        for k, v in kw.items():
            setattr(ctx, k, v)
        if client is not None:
            ctx.load_cert_chain(*client)
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


def tls_config(upstream_port, tls: dict, **extra) -> dict:
    cfg = simple_config(upstream_port, **extra)
    cfg["listeners"] = [{"bind": "127.0.0.1:0", "tls": tls}]
    return cfg


def url(gw, host="localhost", path="/echo"):
    return f"https://{host}:{gw.port}{path}"


def handshake(port, ctx, server_hostname, request=True):
    """Connect, handshake, optionally make one request; returns (ssl socket info, response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            info = {"cert": s.getpeercert(), "alpn": s.selected_alpn_protocol(),
                    "version": s.version()}
            data = b""
            if request:
                s.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return info, data


def san_dns(cert: dict) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


# ------------------------------------------------------------------------------ termination
def test_httpx_over_tls(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {"cert_file": certs.server[0],
                                                    "key_file": certs.server[1]}))
    with httpx.Client(verify=certs.client_context(), timeout=10) as c:
        r = c.get(url(gw))
        r2 = c.get(url(gw))
    assert r.status_code == r2.status_code == 200
    assert r.http_version == "HTTP/1.1"
    headers = dict((k.lower(), v) for k, v in orjson.loads(r.content)["headers"])
    assert headers["x-forwarded-proto"] == "https"
    assert upstream.connections >= 1
    # Not a plaintext listener any more.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gw.port}/echo", timeout=5)


def test_tls_with_worker_processes(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {"cert_file": certs.server[0],
                                                    "key_file": certs.server[1]}), workers=2)
    # The supervisor announces the port before its workers listen on it: wait for them.
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "workers never listened"
            time.sleep(0.05)
    time.sleep(0.3)
    for _ in range(6):   # fresh connections: each may land on either worker
        with httpx.Client(verify=certs.client_context(), timeout=10) as c:
            assert c.get(url(gw)).status_code == 200


def test_alpn_and_protocol(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {"cert_file": certs.server[0],
                                                    "key_file": certs.server[1]}))
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    info, data = handshake(gw.port, ctx, "localhost")
    assert info["alpn"] == "http/1.1"
    assert info["version"] in ("TLSv1.2", "TLSv1.3")
    assert data.startswith(b"HTTP/1.1 200")
    ctx12 = certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    info, data = handshake(gw.port, ctx12, "localhost")
    assert info["version"] == "TLSv1.2" and data.startswith(b"HTTP/1.1 200")


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_curl_over_tls(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {"cert_file": certs.server[0],
                                                    "key_file": certs.server[1]}))
    out = subprocess.run(
        [CURL, "-sS", "--cacert", certs.ca_file, "-w", "\n%{http_code} %{http_version}",
         url(gw)], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit(b"\n", 1)
    assert status == b"200 1.1"
    assert ["x-forwarded-proto", "https"] in orjson.loads(body)["headers"]
    # curl's own verification fails against a CA it does not trust: the cert is real TLS.
    bad = subprocess.run([CURL, "-sS", url(gw)], capture_output=True, timeout=20)
    assert bad.returncode == 60


# ------------------------------------------------------------------------------ SNI
def test_sni_picks_the_certificate(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {
        "cert_file": certs.server[0], "key_file": certs.server[1],
        "certificates": [
            {"cert_file": certs.api[0], "key_file": certs.api[1], "hosts": ["api.example.test"]},
            {"cert_file": certs.wild[0], "key_file": certs.wild[1],
             "hosts": ["*.wild.example.test"]},
            {"cert_file": certs.san[0], "key_file": certs.san[1]},      # names from the cert
        ]}))
    ctx = certs.client_context(check_hostname=False)
    expect = {
        "api.example.test": ["api.example.test"],
        "API.Example.Test": ["api.example.test"],
        "a.wild.example.test": ["*.wild.example.test"],
        "san.example.test": ["san.example.test", "san2.example.test"],
        "san2.example.test": ["san.example.test", "san2.example.test"],
        # one label only, and not the bare domain: the default pair
        "a.b.wild.example.test": ["localhost"],
        "wild.example.test": ["localhost"],
        "unknown.test": ["localhost"],
        None: ["localhost"],
    }
    for name, sans in expect.items():
        info, data = handshake(gw.port, ctx, name)
        assert san_dns(info["cert"]) == sans, name
        assert info["alpn"] is None or info["alpn"] == "http/1.1"
        assert data.startswith(b"HTTP/1.1 200"), name
    if CURL is not None:
        for host in ("api.example.test", "x.wild.example.test", "san2.example.test"):
            out = subprocess.run(
                [CURL, "-sS", "--cacert", certs.ca_file, "--resolve",
                 f"{host}:{gw.port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}",
                 f"https://{host}:{gw.port}/echo"], capture_output=True, timeout=20)
            assert out.stdout == b"200", (host, out.stderr)


def test_sni_without_a_default_pair(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {"certificates": [
        {"cert_file": certs.api[0], "key_file": certs.api[1]},
        {"cert_file": certs.server[0], "key_file": certs.server[1], "hosts": ["localhost"]},
    ]}))
    ctx = certs.client_context(check_hostname=False)
    assert san_dns(handshake(gw.port, ctx, "localhost")[0]["cert"]) == ["localhost"]
    assert san_dns(handshake(gw.port, ctx, "other.test")[0]["cert"]) == ["api.example.test"]
    assert san_dns(handshake(gw.port, ctx, None)[0]["cert"]) == ["api.example.test"]


# ------------------------------------------------------------------------------ versions
def _tls11_client_context(certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.ca_file)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")   # OpenSSL 3 keeps TLS 1.0/1.1 behind level 0
    return ctx


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls11_client_is_refused(certs, upstream, gateway_factory):
    # Control: this client does speak TLS 1.1 to a server that allows it, so the refusal
    # below is the gateway's doing.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*certs.server)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    lsock = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        conn, _ = lsock.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                seen.append(s.version())
        except (ssl.SSLError, OSError) as exc:
            seen.append(repr(exc))

    t = threading.Thread(target=serve)
    t.start()
    try:
        info, _ = handshake(lsock.getsockname()[1], _tls11_client_context(certs), "localhost",
                            request=False)
    finally:
        t.join(5)
        lsock.close()
    assert info["version"] == "TLSv1.1" and seen == ["TLSv1.1"]

    gw = gateway_factory(tls_config(upstream.port, {"cert_file": certs.server[0],
                                                    "key_file": certs.server[1]}))
    for _ in range(2):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(gw.port, _tls11_client_context(certs), "localhost", request=False)
    if CURL is not None:
        out = subprocess.run(
            [CURL, "-sS", "--cacert", certs.ca_file, "--tlsv1.1", "--tls-max", "1.1",
             "--ciphers", "DEFAULT@SECLEVEL=0", url(gw)], capture_output=True, timeout=20)
        assert out.returncode == 35, out   # SSL connect error
    assert upstream.requests == []
    # The gateway is still serving modern clients.
    with httpx.Client(verify=certs.client_context(), timeout=10) as c:
        assert c.get(url(gw)).status_code == 200


def test_min_version_tls13(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {
        "cert_file": certs.server[0], "key_file": certs.server[1], "min_version": "TLSv1.3"}))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(gw.port, certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2),
                  "localhost")
    info, data = handshake(gw.port, certs.client_context(), "localhost")
    assert info["version"] == "TLSv1.3" and data.startswith(b"HTTP/1.1 200")


# ------------------------------------------------------------------------------ client certs
def _refused(fn):
    """A TLS 1.3 server checks the client certificate after the client's handshake is done:
    the refusal arrives as an alert on the first read (or a reset)."""
    with pytest.raises((ssl.SSLError, ConnectionError, httpx.HTTPError, OSError)):
        info, data = fn()
        if not data:
            raise ConnectionError("closed without a response")


def test_client_certificate_required(certs, upstream, gateway_factory):
    gw = gateway_factory(tls_config(upstream.port, {
        "cert_file": certs.server[0], "key_file": certs.server[1],
        "client_ca_file": certs.client_ca_file, "require_client_cert": True}))
    _refused(lambda: handshake(gw.port, certs.client_context(), "localhost"))
    _refused(lambda: handshake(gw.port, certs.client_context(certs.mallory), "localhost"))
    _refused(lambda: handshake(
        gw.port, certs.client_context(certs.mallory, maximum_version=ssl.TLSVersion.TLSv1_2),
        "localhost"))
    assert upstream.requests == []
    with httpx.Client(verify=certs.client_context(certs.alice), timeout=10) as c:
        assert c.get(url(gw)).status_code == 200
    with httpx.Client(verify=certs.client_context(), timeout=10) as c:
        with pytest.raises(httpx.HTTPError):
            c.get(url(gw))
    if CURL is not None:
        ok = subprocess.run([CURL, "-sS", "--cacert", certs.ca_file, "--cert", certs.alice[0],
                             "--key", certs.alice[1], "-o", "/dev/null", "-w", "%{http_code}",
                             url(gw)], capture_output=True, timeout=20)
        assert ok.stdout == b"200", ok.stderr
        for extra in ([], ["--cert", certs.mallory[0], "--key", certs.mallory[1]]):
            bad = subprocess.run([CURL, "-sS", "--cacert", certs.ca_file, *extra, url(gw)],
                                 capture_output=True, timeout=20)
            assert bad.returncode != 0 and b"HTTP" not in bad.stdout


def test_client_certificate_optional_and_client_cert_consumers(certs, upstream, gateway_factory):
    cfg = tls_config(upstream.port, {
        "cert_file": certs.server[0], "key_file": certs.server[1],
        "client_ca_file": certs.client_ca_file, "require_client_cert": False},
        consumers=[{"name": "alice", "groups": ["partners", "eu"]}],
        auth={"partners-mtls": {"type": "client_cert", "consumer_from": "subject_cn"}})
    cfg["routes"].insert(0, {"name": "partner", "paths": ["/partner/*"], "upstream": "app",
                             "auth": {"using": ["partners-mtls"], "groups": ["partners"]}})
    gw = gateway_factory(cfg)
    # No certificate: the open route works, the partner route answers 401.
    with httpx.Client(verify=certs.client_context(), timeout=10) as c:
        assert c.get(url(gw)).status_code == 200
        r = c.get(url(gw, path="/partner/echo"))
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'ClientCert realm="fastgate"'
        assert r.json()["error"]["code"] == "unauthorized"
    # A certificate from another CA (same CN): refused at the handshake.
    _refused(lambda: handshake(gw.port, certs.client_context(certs.mallory), "localhost"))
    # The partner's certificate: consumer alice; spoofed identity headers are replaced.
    with httpx.Client(verify=certs.client_context(certs.alice), timeout=10) as c:
        r = c.get(url(gw, path="/partner/echo"),
                  headers={"X-Consumer-Name": "admin", "X-Consumer-Groups": "root"})
    assert r.status_code == 200
    got = [(k.lower(), v) for k, v in r.json()["headers"]]
    assert [v for k, v in got if k == "x-consumer-name"] == ["alice"]
    assert [v for k, v in got if k == "x-consumer-groups"] == ["partners,eu"]


# ------------------------------------------------------------------------------ config
def test_context_errors_name_the_file(certs, tmp_path):
    other_key = os.path.join(str(tmp_path), "other.key")
    with open(other_key, "wb") as f:
        f.write(trustme.CA().issue_cert("x").private_key_pem.bytes())
    garbage = os.path.join(str(tmp_path), "garbage.pem")
    with open(garbage, "w") as f:
        f.write("not a certificate\n")
    cfg = parse_config({"listeners": [
        {"bind": "127.0.0.1:0", "tls": {"cert_file": certs.server[0], "key_file": other_key}},
        {"bind": "127.0.0.1:0", "tls": {"cert_file": garbage, "key_file": garbage}},
        {"bind": "127.0.0.1:0", "tls": {"cert_file": certs.server[0], "key_file": certs.server[1],
                                        "client_ca_file": garbage}},
        {"bind": "127.0.0.1:0", "tls": {"cert_file": certs.server[0],
                                        "key_file": certs.server[1]}},
    ], "routes": []})
    errs = tls_errors(cfg)
    assert len(errs) == 3
    assert errs[0].startswith("listeners[0].tls: cert_file ") and "does not belong" in errs[0]
    assert errs[1].startswith("listeners[1].tls: cert_file " + garbage)
    assert errs[2].startswith("listeners[2].tls: client_ca_file " + garbage)
    with pytest.raises(TLSConfigError):
        server_ssl_context(cfg.listeners[0].tls)


def test_context_settings(certs):
    cfg = parse_config({"listeners": [{"bind": "127.0.0.1:0", "tls": {
        "cert_file": certs.server[0], "key_file": certs.server[1],
        "client_ca_file": certs.client_ca_file,
        "certificates": [{"cert_file": certs.api[0], "key_file": certs.api[1]}]}}],
        "routes": []})
    ctx = server_ssl_context(cfg.listeners[0].tls)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.options & ssl.OP_NO_COMPRESSION
    sni = ctx.fastgate_sni
    (api_ctx,) = set(sni.exact.values())
    # Every SNI context carries the same client-certificate policy as the default one.
    assert api_ctx.verify_mode == ctx.verify_mode and api_ctx.minimum_version == ctx.minimum_version
    assert api_ctx.cert_store_stats() == ctx.cert_store_stats()
    suites = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert suites and all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA" in s)
                          for s in suites)


# ------------------------------------------------------------------------------ bodies
def _read_responses(s, count):
    """Read `count` content-length framed responses from an ssl socket."""
    buf, out = b"", []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1").lower().split("\r\n")
            length = next(int(h.split(":", 1)[1]) for h in head if h.startswith("content-length:"))
            if len(buf) >= end + 4 + length:
                out.append((head[0], buf[end + 4:end + 4 + length]))
                buf = buf[end + 4 + length:]
                continue
        chunk = s.recv(65536)
        assert chunk, "connection closed early"
        buf += chunk
    return out


def test_large_pipelined_bodies_from_concurrent_clients(certs, upstream, gateway_factory):
    """TLS plaintext is decrypted into one buffer the whole process shares (the buffered
    protocol uvloop's SSL layer reads into): bodies larger than it, pipelined, from clients
    sending at the same time, must each reach the upstream byte for byte."""
    import hashlib
    gw = gateway_factory(tls_config(upstream.port, {"cert_file": certs.server[0],
                                                    "key_file": certs.server[1]}))
    results, errors = {}, []

    def client(n):
        try:
            bodies = [os.urandom(150_000 + 7_919 * i + n) for i in range(3)]
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
                with certs.client_context().wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"".join(
                        b"POST /echo/%d/%d HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n"
                        % (n, i, len(b)) + b for i, b in enumerate(bodies)))
                    answers = _read_responses(s, 3)
            results[n] = [(status, orjson.loads(body)) for status, body in answers]
            for i, (status, doc) in enumerate(results[n]):
                assert status.startswith("http/1.1 200"), status
                assert doc["target"] == f"/echo/{n}/{i}"
                assert doc["body_len"] == len(bodies[i])
                assert doc["body_sha256"] == hashlib.sha256(bodies[i]).hexdigest()
        except Exception as exc:  # reported below, with the client's number
            errors.append((n, repr(exc)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(results) == list(range(6))
