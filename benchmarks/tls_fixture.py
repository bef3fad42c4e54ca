"""A test CA and a server certificate made at harness start, and the client side of TLS.

``TlsFixture(directory)`` writes, with ``cryptography`` (a dependency of pyjwt[crypto]):

  ca.pem           the CA certificate the load generator and the probes trust (nothing else)
  server.pem       the server certificate for ``bench.local`` and 127.0.0.1, then the CA
  server.key       its private key (mode 0600)
  server-full.pem  certificate chain and key in one file, as HAProxy's ``crt`` takes it

Keys are ECDSA P-256, the default of current ACME clients. The key type only changes the
handshake, and every benchmark connection is kept alive, so handshakes happen before the
measurement window, never in it.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl

SERVER_NAME = "bench.local"
# TLS 1.2 suites every target is given: fastgate's fixed list (ECDHE + AEAD only), so that
# a TLS 1.2 run compares the same ciphers. TLS 1.3 suites stay OpenSSL's default everywhere.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsFixture:
    def __init__(self, directory: str, *, days: int = 2):
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        except ImportError as e:
            raise RuntimeError(f"TLS scenario needs cryptography: {e}") from None
        now = datetime.datetime.now(datetime.timezone.utc)
        # a little in the past: a clock a few seconds behind must not see "not yet valid"
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastgate bench test CA")])
        ca = (x509.CertificateBuilder()
              .subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(
                  digital_signature=False, content_commitment=False, key_encipherment=False,
                  data_encipherment=False, key_agreement=False, key_cert_sign=True,
                  crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))

        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
                .issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName(SERVER_NAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))

        pem = serialization.Encoding.PEM
        ca_pem = ca.public_bytes(pem)
        chain = cert.public_bytes(pem) + ca_pem
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.ca_path = os.path.join(directory, "ca.pem")
        self.cert_path = os.path.join(directory, "server.pem")
        self.key_path = os.path.join(directory, "server.key")
        self.full_path = os.path.join(directory, "server-full.pem")
        _write(self.ca_path, ca_pem, 0o644)
        _write(self.cert_path, chain, 0o644)
        _write(self.key_path, key_pem, 0o600)
        _write(self.full_path, chain + key_pem, 0o600)
        self.server_name = SERVER_NAME


def _write(path, data, mode):
    # created with its final mode: a key is never readable by others, not even for a moment
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def client_context(ca_file: str, version: str | None = None) -> ssl.SSLContext:
    """What the load generator and the probes connect with: trusts ca_file only, checks the
    name, offers HTTP/1.1 by ALPN like any HTTP/1.1 client. ``version`` "1.2" caps the
    protocol at TLS 1.2; default: the best both sides speak (TLS 1.3 here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if version:
        if version not in VERSIONS:
            raise ValueError(f"TLS version {version!r}: choose from {', '.join(VERSIONS)}")
        ctx.maximum_version = VERSIONS[version]
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
