"""Security settings that can be proven weak from the config alone (for ``fastgate check``).

``weak_settings(config)`` returns ``KEY.PATH: message`` lines. It takes a loaded ``Config``
(then also looks at ``config.raw``) or a parsed document (a dict, e.g. one the loader refused),
so the same findings are reported whichever way a tool gets at the file. Nothing here is a
matter of taste: each finding is a setting a standard or the key material itself shows to be
weaker than its own algorithm needs.

* HMAC secrets shorter than the hash output of an algorithm they sign with (RFC 7518 3.2:
  32 bytes for HS256, 48 for HS384, 64 for HS512), or made of fewer than
  MIN_DISTINCT_SECRET_BYTES distinct bytes ("aaaa...", "123123...": far less entropy than
  their length suggests).
* TLS ``min_version`` below TLSv1.2 (RFC 8996 deprecates TLS 1.0 and 1.1).
* API keys written in plaintext instead of ``sha256:<hex>``.
* RSA keys shorter than 2048 bits in a ``jwks_file`` (NIST SP 800-131A), and a ``jwks_file``
  that is not a usable JWKS at all.

Secrets are never echoed. ``findings(config)`` gives the same lines with a severity:
``high`` for what a standard forbids outright or what exposes a key (suggested: a check
error), ``medium`` for what is weak but not forbidden (suggested: a warning).
"""
from __future__ import annotations

from fastgate.config.source import format_path

HS_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_DISTINCT_SECRET_BYTES = 8
WEAK_TLS = {"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"}


def _p(*path) -> str:
    return format_path(path, "<config>")


def _secret_findings(path: tuple, secret, algorithms) -> list[str]:
    if not isinstance(secret, str):
        return []
    n = len(secret.encode())
    out = []
    algs = [a for a in (algorithms or ["HS256"]) if a in HS_MIN_BYTES]
    need = max((HS_MIN_BYTES[a] for a in algs), default=32)
    if n < need:
        worst = max(algs, key=lambda a: HS_MIN_BYTES[a]) if algs else "HS256"
        out.append(f"{_p(*path)}: HMAC secret is {n} bytes; {worst} needs at least {need} "
                   "(RFC 7518 section 3.2)")
    if n and len(set(secret.encode())) < MIN_DISTINCT_SECRET_BYTES:
        out.append(f"{_p(*path)}: HMAC secret uses fewer than {MIN_DISTINCT_SECRET_BYTES} "
                   "distinct characters: far weaker than its length suggests")
    return out


def _jwks_file_findings(path: tuple, jwks_file) -> list[str]:
    import orjson
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from .jwks import MIN_RSA_BITS, parse_jwks
    if not isinstance(jwks_file, str):
        return []
    try:
        with open(jwks_file, "rb") as f:
            data = f.read()
        parse_jwks(data)
        doc = orjson.loads(data)
    except (OSError, ValueError) as exc:
        return [f"{_p(*path)}: not a usable JWKS ({exc})"]
    out = []
    for i, jwk in enumerate(doc.get("keys", [])):
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        try:
            key = RSAAlgorithm.from_jwk({k: jwk[k] for k in ("kty", "n", "e") if k in jwk})
        except Exception:
            continue
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            out.append(f"{_p(*path)}: key {jwk.get('kid', i)!r} is RSA-{key.key_size}; at "
                       f"least {MIN_RSA_BITS} bits needed (such keys are ignored)")
        if "d" in jwk:
            out.append(f"{_p(*path)}: key {jwk.get('kid', i)!r} includes its private part; "
                       "a JWKS for verification must hold public keys only")
    return out


def _from_tree(tree: dict) -> list[str]:
    out = []
    for i, lst in enumerate(tree.get("listeners") or []):
        if not isinstance(lst, dict) or not isinstance(lst.get("tls"), dict):
            continue
        mv = lst["tls"].get("min_version")
        if isinstance(mv, str) and mv in WEAK_TLS:
            out.append(f"{_p('listeners', i, 'tls', 'min_version')}: {mv} is deprecated "
                       "(RFC 8996); use TLSv1.2 or TLSv1.3")
    for i, c in enumerate(tree.get("consumers") or []):
        if not isinstance(c, dict):
            continue
        for j, k in enumerate(c.get("api_keys") or []):
            if isinstance(k, str) and not k.lower().startswith("sha256:"):
                out.append(f"{_p('consumers', i, 'api_keys', j)}: API key in plaintext; "
                           "store its sha256: hash (fastgate hash-key)")
    auth = tree.get("auth")
    if isinstance(auth, dict):
        for name, a in auth.items():
            if not isinstance(a, dict) or a.get("type") != "jwt":
                continue
            algs = a.get("algorithms") if isinstance(a.get("algorithms"), list) else None
            if "secret" in a:
                out += _secret_findings(("auth", name, "secret"), a.get("secret"), algs)
    return out


_MEDIUM = ("distinct characters", "is RSA-")


def findings(config) -> list[tuple[str, str]]:
    """(severity, line) for each of ``weak_settings(config)``; severity high or medium."""
    return [("medium" if any(m in line for m in _MEDIUM) else "high", line)
            for line in weak_settings(config)]


def weak_settings(config) -> list[str]:
    """Findings for a loaded Config (plus its raw document) or for a parsed document."""
    if isinstance(config, dict):
        return _from_tree(config)
    out = []
    seen = set()
    for name, a in config.auth.items():
        if a.type != "jwt":
            continue
        if a.secret is not None:
            out += _secret_findings(("auth", name, "secret"), a.secret, a.algorithms)
        if a.jwks_file:
            out += _jwks_file_findings(("auth", name, "jwks_file"), a.jwks_file)
    for i, lst in enumerate(config.listeners):
        if lst.tls is not None and lst.tls.min_version in WEAK_TLS:
            out.append(f"{_p('listeners', i, 'tls', 'min_version')}: {lst.tls.min_version} "
                       "is deprecated (RFC 8996); use TLSv1.2 or TLSv1.3")
    seen.update(out)
    # The raw document holds what the loader normalised away (and literal ${VAR}s are
    # unresolved there, so env-provided secrets are judged above, from the Config).
    raw = getattr(config, "raw", None)
    if isinstance(raw, dict):
        for line in _from_tree(raw):
            if line not in seen and ".secret:" not in line:
                out.append(line)
    return out
