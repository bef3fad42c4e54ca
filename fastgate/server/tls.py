"""TLS termination for listeners: one ``ssl.SSLContext`` per listener, plus one per SNI pair.

``server_ssl_context(tls_cfg)`` builds what ``loop.create_server(ssl=...)`` takes:

* Protocol floor TLS 1.2 (``min_version: TLSv1.3`` raises it); 1.0/1.1 are never negotiated,
  whatever the config says. TLS 1.2 suites are ECDHE with AEAD only (forward secrecy, no CBC,
  no RSA key exchange): Mozilla's "intermediate" profile without the DHE suites.
* ALPN offers ``http/1.1`` only; a client offering only ``h2`` gets no ALPN answer and may go
  on with HTTP/1.1 or hang up (RFC 7301 lets the server ignore what it does not speak).
* SNI: each ``certificates:`` entry gets a context of its own, chosen in the ``sni_callback``
  by exact name first, then by a one-label wildcard (``*.example.com`` serves
  ``a.example.com``, not ``example.com`` nor ``a.b.example.com``, as RFC 6125 6.4.3 says).
  Unmatched or absent SNI gets the default pair (``cert_file``/``key_file``), or the first
  ``certificates:`` entry when there is no default pair. An entry with ``hosts: []`` serves
  the DNS names of its certificate's subjectAltName (or its CN when it has none).
* Client certificates: with ``client_ca_file`` the server asks for one and verifies it against
  that bundle only (never the system store: a public CA vouches for nobody here);
  ``require_client_cert: true`` refuses the handshake without one, ``false`` lets a client
  without a certificate in, but a client presenting one that does not verify is refused.

Every context is configured identically apart from its certificate: OpenSSL switches the
whole ``SSL_CTX`` in the SNI callback, and the verification store, verify mode and ALPN
callback in effect afterwards are the new context's. A difference there would make the
client-certificate policy depend on the name a client asks for.
"""
from __future__ import annotations

import ssl

__all__ = ("TLSConfigError", "server_ssl_context", "tls_errors", "sni_names")

# TLS 1.2 suites (TLS 1.3 suites are all AEAD with forward secrecy and stay OpenSSL's default).
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TLSConfigError(ValueError):
    """A listener's TLS files cannot be used (unreadable, not PEM, key not matching)."""


def _base_context(tls_cfg) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Anything below 1.2 (or an unknown value) is never accepted, whatever the config says.
    ctx.minimum_version = _VERSIONS.get(tls_cfg.min_version, ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                    | ssl.OP_SINGLE_ECDH_USE | getattr(ssl, "OP_NO_RENEGOTIATION", 0))
    ctx.set_alpn_protocols(["http/1.1"])
    if tls_cfg.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls_cfg.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(
                f"client_ca_file {tls_cfg.client_ca_file}: cannot load CA certificates "
                f"({_why(exc)})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if tls_cfg.require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _why(exc) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def _load_pair(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        reason = _why(exc)
        if "KEY_VALUES_MISMATCH" in str(reason).upper() or "mismatch" in str(exc).lower():
            msg = "the key does not belong to the certificate"
        else:
            msg = f"not a usable PEM certificate and key ({reason})"
        raise TLSConfigError(f"cert_file {cert_file} / key_file {key_file}: {msg}") from None
    except OSError as exc:
        raise TLSConfigError(f"cert_file {cert_file} / key_file {key_file}: cannot read "
                             f"({_why(exc)})") from None


def sni_names(cert_file: str) -> list[str]:
    """DNS names a certificate file's first certificate is for: its subjectAltName DNS
    entries, else its subject CN. Lower-case."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        raise TLSConfigError(f"cert_file {cert_file}: cannot read a PEM certificate "
                             f"({_why(exc)})") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [n.lower().rstrip(".") for n in names if isinstance(n, str) and n]


class _SniTable:
    """Server name -> context, exact names before one-label wildcards."""

    __slots__ = ("exact", "wild")

    def __init__(self):
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wild: dict[str, ssl.SSLContext] = {}   # "example.com" for "*.example.com"

    def add(self, host: str, ctx: ssl.SSLContext) -> None:
        host = host.lower().rstrip(".")
        if host.startswith("*."):
            self.wild.setdefault(host[2:], ctx)   # first entry listing a name wins
        else:
            self.exact.setdefault(host, ctx)

    def lookup(self, name: str | None) -> ssl.SSLContext | None:
        if not name:
            return None
        name = name.lower().rstrip(".")
        ctx = self.exact.get(name)
        if ctx is not None:
            return ctx
        dot = name.find(".")
        if dot > 0:
            return self.wild.get(name[dot + 1:])
        return None


def server_ssl_context(tls_cfg) -> ssl.SSLContext:
    """The context for a listener with ``tls`` (a ``schema.TLSConfig``).

    Raises TLSConfigError naming the file when a certificate, key or CA bundle is unusable."""
    default = _base_context(tls_cfg)
    certs = list(tls_cfg.certificates or ())
    if tls_cfg.cert_file and tls_cfg.key_file:
        _load_pair(default, tls_cfg.cert_file, tls_cfg.key_file)
        have_default = True
    elif certs:
        have_default = False
    else:
        raise TLSConfigError("needs cert_file + key_file, or a list under certificates")
    if not certs:
        return default
    table = _SniTable()
    for i, c in enumerate(certs):
        if i == 0 and not have_default:
            ctx = default                   # the first pair doubles as the default
        else:
            ctx = _base_context(tls_cfg)
        _load_pair(ctx, c.cert_file, c.key_file)
        for host in (c.hosts or sni_names(c.cert_file)):
            table.add(host, ctx)

    def choose(ssl_obj, server_name, _ctx):
        chosen = table.lookup(server_name)
        if chosen is not None and chosen is not ssl_obj.context:
            ssl_obj.context = chosen
        return None   # unmatched: continue with the default pair

    default.sni_callback = choose
    default.fastgate_sni = table   # for tests and diagnostics
    return default


def tls_errors(config) -> list[str]:
    """``listeners[i].tls: message`` for every listener whose TLS files cannot be used
    (for ``fastgate check``: the loader checks the files are readable, this loads them)."""
    out = []
    for i, lst in enumerate(config.listeners):
        if lst.tls is None:
            continue
        try:
            server_ssl_context(lst.tls)
        except TLSConfigError as exc:
            out.append(f"listeners[{i}].tls: {exc}")
    return out
