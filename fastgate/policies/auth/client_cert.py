"""``type: client_cert``: the consumer is named by the verified TLS client certificate.

``ctx.peer_cert`` is only set by the core for a certificate that verified against the
listener's ``client_ca_file`` (the TLS handshake refuses one that does not), so presence is
proof. ``consumer_from`` picks the name: the subject CN (default), or the first DNS / email /
URI subjectAltName. The name must be a configured consumer's ``name``: a certificate the CA
issued for someone the gateway does not know is refused (401), as an unknown API key is.
"""
from __future__ import annotations

from .common import BY_NAME, F_CERT, Verified

_SAN_TYPE = {"san_dns": "DNS", "san_email": "email", "san_uri": "URI"}


def cert_name(cert: dict, consumer_from: str):
    """The identity ``consumer_from`` selects in an ``SSLSocket.getpeercert()`` dict."""
    if consumer_from == "subject_cn":
        for rdn in cert.get("subject", ()):
            for attr, value in rdn:
                if attr == "commonName":
                    return value
        return None
    want = _SAN_TYPE[consumer_from]
    for typ, value in cert.get("subjectAltName", ()):
        if typ == want:
            return value
    return None


class ClientCertAuthenticator:
    kind = "client_cert"

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.consumer_from = cfg.consumer_from
        self.strip_headers = frozenset()
        self._last = (None, None)   # (cert dict, Verified): a connection's requests repeat it

    def authenticate(self, ctx):
        cert = ctx.peer_cert
        if not cert:
            return None
        last = self._last
        if last[0] is cert:
            return last[1]
        name = cert_name(cert, self.consumer_from)
        if not name:
            return F_CERT
        v = Verified(BY_NAME, name)
        self._last = (cert, v)
        return v

    def close(self):
        pass
