"""Config of `consumers`, `auth` (named authenticators) and `routes[].auth` (handler:
fastgate.policies.auth).

Consumer(name: str, groups: list[str], api_keys: list[str], jwt_subjects: list[str])
  api_keys normalised to "sha256:<64 lower-case hex>"; unique across all consumers, as are
  jwt_subjects.
JwtAuth(name, type="jwt", issuer: str|None, audiences: list[str], algorithms: list[str],
        jwks_url: str|None, jwks_file: str|None, secret: str|None, jwks_refresh_s=300.0,
        clock_skew_s=30.0, consumer_claim="sub", forward_claims: dict[claim, header-name])
  exactly one of jwks_url / jwks_file / secret; HS* algorithms only with secret and never
  mixed with asymmetric ones (key-confusion); "none" is rejected. algorithms default: ["HS256"]
  with a secret, ["RS256", "ES256"] with a JWKS. secret >= 32 bytes (RFC 7518 3.2). jwks_url
  (like IntrospectionAuth.url) is https, or http only to a loopback host.
ApiKeyAuth(name, type="api_key", header: str|None, query: str|None, bearer: bool)
  at least one source; none given -> header "X-API-Key".
IntrospectionAuth(name, type="introspection", url: str, client_id: str|None,
                  client_secret: str|None, cache_ttl_s=60.0, timeout_s=5.0,
                  consumer_claim="sub", forward_claims: dict[claim, header-name])
ClientCertAuth(name, type="client_cert", consumer_from: "subject_cn"|"san_dns"|"san_email"|
               "san_uri" = "subject_cn")
RouteAuth(using: list[str], scopes: list[str], groups: list[str], mfa=False,
          acr_values: list[str])
  using: names in Config.auth, in order. scopes/mfa need a jwt or introspection authenticator;
  acr_values only with mfa.

For the parsers after it, the `auth` section leaves ``ctx.authenticators`` (valid ones by
name) and ``ctx.authenticator_names`` (every name, valid entry or not); ``routes[].auth``
leaves ``ctx.route.auth_types`` (see fastgate.config.sections.RouteScope).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from fastgate.config.check import (Obj, c_bool, c_header_name, c_list, c_map, c_num, c_str,
                                   tname)
from fastgate.config.sections import RouteKey, TopKey
from fastgate.config.source import format_path
from fastgate.config.values import (MANAGED_HEADERS, QUERY_NAME, c_duration, c_name,
                                    c_secure_url)

__all__ = ("Consumer", "JwtAuth", "ApiKeyAuth", "IntrospectionAuth", "ClientCertAuth",
           "AuthConfig", "RouteAuth", "AUTH_KEYS", "JWT_ALGS", "parse_consumers",
           "parse_authenticators", "parse_route_auth", "c_api_key_hash", "c_jwt_alg")

_frozen = dataclass(frozen=True, slots=True)


@_frozen
class Consumer:
    name: str
    groups: list[str] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)
    jwt_subjects: list[str] = field(default_factory=list)


@_frozen
class JwtAuth:
    name: str
    type: str = "jwt"
    issuer: str | None = None
    audiences: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)
    jwks_url: str | None = None
    jwks_file: str | None = None
    secret: str | None = None
    jwks_refresh_s: float = 300.0
    clock_skew_s: float = 30.0
    consumer_claim: str = "sub"
    forward_claims: dict[str, str] = field(default_factory=dict)


@_frozen
class ApiKeyAuth:
    name: str
    type: str = "api_key"
    header: str | None = "X-API-Key"
    query: str | None = None
    bearer: bool = False


@_frozen
class IntrospectionAuth:
    name: str
    url: str
    type: str = "introspection"
    client_id: str | None = None
    client_secret: str | None = None
    cache_ttl_s: float = 60.0
    timeout_s: float = 5.0
    consumer_claim: str = "sub"
    forward_claims: dict[str, str] = field(default_factory=dict)


@_frozen
class ClientCertAuth:
    name: str
    type: str = "client_cert"
    consumer_from: str = "subject_cn"


AuthConfig = Union[JwtAuth, ApiKeyAuth, IntrospectionAuth, ClientCertAuth]


@_frozen
class RouteAuth:
    using: list[str]
    scopes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    mfa: bool = False
    acr_values: list[str] = field(default_factory=list)


JWT_ALGS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "ES512", "ES256K", "EdDSA")
AUTH_KEYS = {
    "jwt": ("type", "issuer", "audiences", "algorithms", "jwks_url", "jwks_file", "secret",
            "jwks_refresh_s", "clock_skew_s", "consumer_claim", "forward_claims"),
    "api_key": ("type", "header", "query", "bearer"),
    "introspection": ("type", "url", "client_id", "client_secret", "cache_ttl_s",
                      "timeout_s", "consumer_claim", "forward_claims"),
    "client_cert": ("type", "consumer_from"),
}


# --- values ---------------------------------------------------------------------------------

def c_api_key_hash(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected sha256:<64 hex digits>, got {tname(v)}")
        return None
    if not v.lower().startswith("sha256:"):
        # Never echo the value: it is most likely a plaintext key.
        e.add(path, "api keys are stored hashed: run `fastgate hash-key`, give it the key on "
                    "stdin, and put the sha256:<hex> it prints here")
        return None
    digest = v[7:].lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        e.add(path, "expected sha256: followed by 64 hex digits (output of `fastgate hash-key`)")
        return None
    return "sha256:" + digest


def c_jwt_alg(e, path, v):
    if isinstance(v, str) and v.lower() == "none":
        e.add(path, "'none' is never accepted: unsigned tokens would pass")
        return None
    if v not in JWT_ALGS:
        e.add(path, f"unsupported algorithm {v!r} (one of {', '.join(JWT_ALGS)})")
        return None
    return v


def _c_forward_header(e, path, v):
    name = c_header_name(lower=False)(e, path, v)
    if name is not None and name.lower() in MANAGED_HEADERS | {"host"}:
        e.add(path, f"{name} is managed by the gateway and cannot carry a claim")
        return None
    return name


c_forward_claims = c_map(c_str(max_len=256), _c_forward_header)  # claim -> header


# --- consumers ------------------------------------------------------------------------------

def parse_consumers(ctx, e, path, v):
    if not isinstance(v, list):
        e.add(path, f"expected a list, got {tname(v)}")
        return None
    out = []
    names: dict[str, int] = {}
    keys: dict[str, tuple] = {}
    subjects: dict[str, tuple] = {}
    for i, item in enumerate(v):
        p = path + (i,)
        o = Obj(e, p, item, ("name", "groups", "api_keys", "jwt_subjects"))
        name = o.get("name", c_name("a consumer name"))
        if name is not None:
            if name in names:
                e.add(o.p("name"), f"duplicate consumer name {name!r} "
                                   f"(also consumers[{names[name]}])")
            else:
                names[name] = i
        groups = o.get("groups", c_list(c_name("a group name"), unique=True), [])
        api_keys = o.get("api_keys", c_list(c_api_key_hash, unique=True), [])
        subs = o.get("jwt_subjects", c_list(c_str(max_len=1024), unique=True), [])
        for j, k in enumerate(api_keys or []):
            if k in keys:
                e.add(o.p("api_keys") + (j,), "the same key is already given to "
                                              f"{format_path(keys[k], '')}")
            keys.setdefault(k, o.p("api_keys") + (j,))
        for j, sub in enumerate(subs or []):
            if sub in subjects:
                e.add(o.p("jwt_subjects") + (j,), f"subject {sub!r} already belongs to "
                                                  f"{format_path(subjects[sub], '')}")
            subjects.setdefault(sub, o.p("jwt_subjects") + (j,))
        if o.ok:
            out.append(Consumer(name=name, groups=groups or [], api_keys=api_keys or [],
                                jwt_subjects=subs or []))
    return out


# --- auth: named authenticators -------------------------------------------------------------

def parse_authenticators(ctx, e, path, v):
    if not isinstance(v, dict):
        e.add(path, f"expected a mapping of authenticator names, got {tname(v)}")
        return None
    out = {}
    ctx.authenticator_names = {n for n in v if isinstance(n, str)}
    for name, item in v.items():
        if not isinstance(name, str):
            e.add(path, f"authenticator names must be strings, got {name!r}")
            continue
        p = path + (name,)
        if c_name("an authenticator name")(e, p, name) is None:
            continue
        if not isinstance(item, dict):
            e.add(p, f"expected a mapping, got {tname(item)}")
            continue
        typ = Obj(e, p, {"type": item.get("type")}, ("type",)).get(
            "type", c_str(tuple(AUTH_KEYS)))
        if typ is None:
            continue
        o = Obj(e, p, item, AUTH_KEYS[typ])
        a = _KINDS[typ](ctx, e, o, name)
        if a is not None:
            out[name] = a
    ctx.authenticators = out
    return out


def _jwt(ctx, e, o: Obj, name):
    sources = [k for k in o.d if k in ("jwks_url", "jwks_file", "secret") and o.has(k)]
    if not sources:
        e.add(o.path, "needs one of jwks_url, jwks_file, secret")
    elif len(sources) > 1:
        e.add(o.p(sources[1]), f"give only one of jwks_url, jwks_file, secret "
                               f"(also has {sources[0]})")
    secret = o.get("secret", c_str(max_len=4096), None)
    if secret is not None and len(secret.encode()) < 32:
        e.add(o.p("secret"), "HS secrets must be at least 32 bytes (RFC 7518 section 3.2)")
    symmetric = bool(sources) and sources[0] == "secret"
    default_algs = ["HS256"] if symmetric else ["RS256", "ES256"]
    algs = o.get("algorithms", c_list(c_jwt_alg, nonempty=True, unique=True), default_algs)
    if algs and sources and isinstance(o.d.get("algorithms"), list):
        for i, alg in enumerate(o.d["algorithms"]):  # document indices for the paths
            if alg not in algs:
                continue
            if alg.startswith("HS") != symmetric:
                e.add(o.p("algorithms") + (i,),
                      f"{alg} needs {'a secret' if alg.startswith('HS') else 'a JWKS'}; "
                      f"this authenticator has {sources[0]} (mixing HMAC and public-key "
                      "algorithms allows key-confusion attacks)")
    return JwtAuth(
        name=name,
        issuer=o.get("issuer", c_str(max_len=2048), None),
        audiences=o.get("audiences", c_list(c_str(max_len=2048), unique=True), []),
        algorithms=algs or [],
        jwks_url=o.get("jwks_url", c_secure_url, None),
        jwks_file=o.get("jwks_file", ctx.c_file, None),
        secret=secret,
        jwks_refresh_s=o.get("jwks_refresh_s", c_duration(), 300.0),
        clock_skew_s=o.get("clock_skew_s", c_num(lo=0.0, hi=3600.0), 30.0),
        consumer_claim=o.get("consumer_claim", c_str(max_len=256), "sub"),
        forward_claims=o.get("forward_claims", c_forward_claims, {}),
    )


def _api_key(ctx, e, o: Obj, name):
    any_source = o.has("header") or o.has("query") or o.has("bearer")
    header = o.get("header", c_header_name(lower=False), None)
    query = o.get("query", c_str(pattern=QUERY_NAME, what="a query parameter name",
                                 max_len=256), None)
    bearer = o.get("bearer", c_bool, False)
    if any_source and not o.has("header") and not o.has("query") and bearer is False:
        e.add(o.path, "needs header, query or bearer: true")
    if not any_source:
        header = "X-API-Key"
    return ApiKeyAuth(name=name, header=header, query=query, bearer=bool(bearer))


def _introspection(ctx, e, o: Obj, name):
    if o.has("client_id") != o.has("client_secret"):
        e.add(o.p("client_secret" if o.has("client_id") else "client_id"),
              "client_id and client_secret go together")
    return IntrospectionAuth(
        name=name,
        url=o.get("url", c_secure_url),
        client_id=o.get("client_id", c_str(max_len=1024), None),
        client_secret=o.get("client_secret", c_str(max_len=4096), None),
        cache_ttl_s=o.get("cache_ttl_s", c_num(lo=0.0), 60.0),
        timeout_s=o.get("timeout_s", c_duration(), 5.0),
        consumer_claim=o.get("consumer_claim", c_str(max_len=256), "sub"),
        forward_claims=o.get("forward_claims", c_forward_claims, {}),
    )


def _client_cert(ctx, e, o: Obj, name):
    if not any(l.tls is not None and l.tls.client_ca_file for l in ctx.listeners):
        e.add(o.path, "client certificates are only verified on a listener with "
                      "tls.client_ca_file; none has one")
    return ClientCertAuth(name=name, consumer_from=o.get(
        "consumer_from", c_str(("subject_cn", "san_dns", "san_email", "san_uri")),
        "subject_cn"))


_KINDS = {"jwt": _jwt, "api_key": _api_key, "introspection": _introspection,
          "client_cert": _client_cert}


# --- routes[].auth --------------------------------------------------------------------------

def _auth_types(ctx, route_auth) -> set[str] | None:
    """Types of the authenticators a route uses; None when unknown (errors elsewhere)."""
    known = ctx.authenticators
    if not known or any(n not in known for n in route_auth.using):
        return None
    return {known[n].type for n in route_auth.using}


def parse_route_auth(ctx, e, path, v):
    known = ctx.authenticators
    o = Obj(e, path, v, ("using", "scopes", "groups", "mfa", "acr_values"))
    using = o.get("using", c_list(c_str(), nonempty=True, unique=True))
    if using:
        for i, n in enumerate(using):
            if n not in ctx.authenticator_names:
                names = ", ".join(sorted(ctx.authenticator_names)) or "none defined"
                e.add(o.p("using") + (i,), f"unknown authenticator {n!r} (auth: {names})")
    # Only judge when every authenticator is known and valid; otherwise errors elsewhere.
    resolved = bool(using) and bool(known) and all(n in known for n in using)
    types = {known[n].type for n in using} if resolved else set()
    scopes = o.get("scopes", c_list(c_str(max_len=256), unique=True), [])
    groups = o.get("groups", c_list(c_name("a group name"), unique=True), [])
    mfa = o.get("mfa", c_bool, False)
    acr = o.get("acr_values", c_list(c_str(max_len=1024), unique=True), [])
    if resolved and not types & {"jwt", "introspection"}:
        for k in ("scopes", "mfa"):
            if o.d.get(k):
                e.add(o.p(k), "needs a jwt or introspection authenticator in using "
                              "(api keys and client certificates carry no " +
                              ("scopes)" if k == "scopes" else "authentication method)"))
    if acr and not mfa:
        e.add(o.p("acr_values"), "only used with mfa: true")
    route_auth = RouteAuth(using=using or [], scopes=scopes or [], groups=groups or [],
                           mfa=bool(mfa), acr_values=acr or [])
    ctx.route.auth_types = _auth_types(ctx, route_auth)
    return route_auth


SECTIONS = (
    TopKey("consumers", parse_consumers, default=[]),
    TopKey("auth", parse_authenticators, default={}),
    RouteKey("auth", parse_route_auth),
)
