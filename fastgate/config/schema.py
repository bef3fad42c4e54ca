"""The validated configuration model: frozen dataclasses, one per SPEC section.

Produced only by ``fastgate.config.loader`` (``load_config`` / ``parse_config``); every value
here has already been type-checked, range-checked, cross-referenced and defaulted, so consumers
never re-validate. Field names are the SPEC keys; where a value is parsed into a more useful
form the parsed parts sit beside the original (``bind`` + ``host``/``port``, ``per`` +
``per_s``, ``by`` + ``by_kind``/``by_name``). Durations are float seconds for ``*_s`` keys and
int milliseconds for ``*_ms`` keys. "None" below always means "the key was absent".

Config                          the whole file (top-level keys starting with "x-" are ignored:
                                a place for YAML anchors, as in docker-compose)
  listeners: list[Listener]       at least one
  admin: Admin | None
  drain_timeout_s: float          20
  limits: Limits
  redis: Redis | None
  upstreams: dict[str, Upstream]  keyed by name (also Upstream.name)
  consumers: list[Consumer]
  auth: dict[str, JwtAuth | ApiKeyAuth | IntrospectionAuth | ClientCertAuth]  keyed by name
  routes: list[Route]             document order (= match priority hint for the router)
  logging: Logging
  ai: AI | None
  raw: dict                       the parsed file BEFORE ${VAR} substitution (so secrets that
                                  come from the environment never appear in it); for GET /config.
                                  Literal secrets written in the file are still there: redact
                                  token, secret, client_secret, api_key, redis url passwords.
                                  Not part of equality.
  source: str                     file path or "<config>"

Listener(bind: str, host: str, port: int, tls: TLSConfig | None)
  host is unbracketed ("::1" for bind "[::1]:8080"); port 0 = pick a free port.
TLSConfig(cert_file: str|None, key_file: str|None, min_version: "TLSv1.2"|"TLSv1.3",
          client_ca_file: str|None, require_client_cert: bool = False,
          certificates: list[Certificate] = [])
  default pair (cert_file/key_file, both or neither) and/or SNI ``certificates``; at least one
  pair in total. File paths are absolute (relative ones resolved against the config file's
  directory) and were readable files at load time.
Certificate(cert_file: str, key_file: str, hosts: list[str])
  hosts: SNI names served with this pair ("*.example.com" allowed); [] = take names from the
  certificate itself.
Admin(bind: str, host: str, port: int, token: str)   token non-empty
Limits(max_request_line_bytes=8192, max_header_bytes=32768, max_headers=100,
       max_body_bytes=10485760, header_timeout_s=10.0, body_timeout_s=30.0,
       keepalive_timeout_s=60.0, max_connections=10000, max_connections_per_ip=0 [0=unlimited])
Redis(url: str|None, cluster_nodes: list[tuple[str, int]] | None, timeout_ms: int = 50,
      on_error: "allow"|"deny" = "allow", connect_timeout_ms: int = 1000)
  exactly one of url / cluster_nodes. timeout_ms bounds each call a request waits for;
  connect_timeout_ms (extension) bounds connection set-up when a snapshot is warmed.
  url scheme: redis:// rediss:// unix://
Upstream(name: str, targets: list[Target], balance: "round_robin"|"least_conn"|"hash",
         hash_on: HashOn | None, connect_timeout_s=3.0, read_timeout_s=30.0, keepalive=64,
         retries=1, health_check: HealthCheck | None, tls_verify=True, ca_file: str|None)
  ca_file (extension): CA bundle to verify https targets with instead of the system store.
  hash_on is set (default HashOn("ip", None)) iff balance == "hash".
Target(url: str, scheme: "http"|"https", host: str, port: int, path: str, weight: int = 1)
  port defaults 80/443; path is the URL path without trailing "/" ("" when none), to prefix
  onto forwarded paths. Property ``tls`` = scheme == "https". host unbracketed.
HashOn(kind: "ip"|"consumer"|"header", name: str|None)   header name lower-cased
HealthCheck(path="/health", interval_s=5.0, timeout_s=2.0, healthy_after=2, unhealthy_after=3)
Consumer(name: str, groups: list[str], api_keys: list[str], jwt_subjects: list[str])
  names (consumer, group, route, upstream, authenticator, provider) are [A-Za-z0-9._@+:/-],
  starting with a letter or digit: safe in headers (X-Consumer-Groups is comma-joined), logs
  and metric labels.
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
Route(name: str [default "route-<index>"], hosts: list[str], methods: list[str],
      paths: list[str], upstream: str|None, respond: Respond|None, ai: RouteAI|None,
      strip_prefix: str|None, rewrite: str|None, preserve_host=False,
      lifecycle: Lifecycle|None, auth: RouteAuth|None, rate_limits: list[RateLimit],
      transform: Transform|None, waf: Waf|None, cors: Cors|None, ip: IPRules|None,
      budget: Budget|None, max_body_bytes: int [default limits.max_body_bytes],
      timeout_s: float|None, owner: str|None, docs: str|None)
  exactly one of upstream / respond / ai. hosts lower-cased ([] = any; "*.x.org" wildcard).
  methods upper-case ([] = any). paths: "/exact", "/a/{param}", "/prefix/*" (trailing only).
  strip_prefix/rewrite/preserve_host only with upstream. rewrite may use {params} that at least
  one path of the route defines.
Respond(status: int = 200, body: str = "", headers: dict[str, str])
RouteAI(endpoint: "chat"|None, models: list[str] | None, prompt: Prompt|None)
  exactly one of endpoint / prompt; models None = all configured models.
Prompt(model: str, system: str|None, template: str, variables: list[str],
       max_tokens: int|None, temperature: float|None)
  variables = the {{names}} in template, in first-use order.
Lifecycle(state: "published"|"deprecated"|"retired", sunset: datetime|None (aware, UTC),
          sunset_raw: str|None, successor: str|None, deprecated_at: datetime|None)
RouteAuth(using: list[str], scopes: list[str], groups: list[str], mfa=False,
          acr_values: list[str])
  using: names in Config.auth, in order. scopes/mfa need a jwt or introspection authenticator;
  acr_values only with mfa.
RateLimit(limit: int > 0, per: str, per_s: int, burst: int >= limit [default limit], by: str,
          by_kind: "consumer"|"ip"|"route"|"header"|"claim", by_name: str|None,
          scope: "local"|"cluster" = "local", unit: "requests"|"tokens" = "requests")
  by defaults to "ip" when the route has no auth, else "consumer" (by: consumer without route
  auth is an error, claim:NAME needs jwt/introspection); header names lower-cased.
  scope cluster needs Config.redis; unit tokens only on ai routes.
Transform(request: RequestTransform, response: ResponseTransform)
RequestTransform(set_headers: dict, add_headers: dict, remove_headers: list, rename_headers:
                 dict, set_query: dict, remove_query: list)   header names lower-cased
  framing/hop-by-hop headers (content-length, transfer-encoding, connection, ...) and
  x-consumer-name/-groups can never be named in a transform.
ResponseTransform(set_headers: dict, remove_headers: list)
Waf(mode: "block"|"monitor" = "block", rules: list[str] = all four:
    sqli, xss, path_traversal, command_injection)
Cors(origins: list[str], methods: list[str]|None [None = the route's methods, or all],
     headers: list[str], expose_headers: list[str], credentials=False, max_age_s=600)
IPRules(allow: list[ip_network], deny: list[ip_network])   deny wins over allow
Budget(usd: float > 0, per: str, per_s: int, by: str, by_kind, by_name)
  only on ai routes, and every model the route allows has a price.
Logging(access_log: "stdout" | "off" | absolute path = "stdout",
        redact_headers: list[str] = ["authorization", "cookie", "x-api-key"])  lower-cased
AI(providers: dict[str, Provider], models: list[Model])
Provider(name, type: "openai"|"anthropic"|"gemini"|"mistral"|"openai_compatible",
         base_url: str (default per type; required for openai_compatible), api_key: str|None
         (required except openai_compatible), connect_timeout_s=5.0, read_timeout_s=300.0,
         tls_verify=True)
Model(name: str, provider: str, model: str, price: Price|None, fallbacks: list[str])
Price(input_per_1k: float, output_per_1k: float)   USD per 1,000 tokens
"""
from __future__ import annotations

import datetime as _dt
import ipaddress as _ip
from dataclasses import dataclass, field
from typing import Any, Union

DEFAULT_REDACT_HEADERS = ("authorization", "cookie", "x-api-key")
WAF_RULES = ("sqli", "xss", "path_traversal", "command_injection")

_frozen = dataclass(frozen=True, slots=True)


@_frozen
class Certificate:
    cert_file: str
    key_file: str
    hosts: list[str] = field(default_factory=list)


@_frozen
class TLSConfig:
    cert_file: str | None = None
    key_file: str | None = None
    min_version: str = "TLSv1.2"
    client_ca_file: str | None = None
    require_client_cert: bool = False
    certificates: list[Certificate] = field(default_factory=list)


@_frozen
class Listener:
    bind: str
    host: str
    port: int
    tls: TLSConfig | None = None


@_frozen
class Admin:
    bind: str
    host: str
    port: int
    token: str


@_frozen
class Limits:
    max_request_line_bytes: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100
    max_body_bytes: int = 10485760
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 60.0
    max_connections: int = 10000
    max_connections_per_ip: int = 0


@_frozen
class Redis:
    url: str | None = None
    cluster_nodes: list[tuple[str, int]] | None = None
    timeout_ms: int = 50
    on_error: str = "allow"
    connect_timeout_ms: int = 1000


@_frozen
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str = ""
    weight: int = 1

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@_frozen
class HashOn:
    kind: str
    name: str | None = None


@_frozen
class HealthCheck:
    path: str = "/health"
    interval_s: float = 5.0
    timeout_s: float = 2.0
    healthy_after: int = 2
    unhealthy_after: int = 3


@_frozen
class Upstream:
    name: str
    targets: list[Target]
    balance: str = "round_robin"
    hash_on: HashOn | None = None
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    keepalive: int = 64
    retries: int = 1
    health_check: HealthCheck | None = None
    tls_verify: bool = True
    ca_file: str | None = None


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
class Respond:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@_frozen
class Prompt:
    model: str
    template: str
    system: str | None = None
    variables: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None


@_frozen
class RouteAI:
    endpoint: str | None = None
    models: list[str] | None = None
    prompt: Prompt | None = None


@_frozen
class Lifecycle:
    state: str = "published"
    sunset: _dt.datetime | None = None
    sunset_raw: str | None = None
    successor: str | None = None
    deprecated_at: _dt.datetime | None = None


@_frozen
class RouteAuth:
    using: list[str]
    scopes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    mfa: bool = False
    acr_values: list[str] = field(default_factory=list)


@_frozen
class RateLimit:
    limit: int
    per: str
    per_s: int
    burst: int
    by: str = "consumer"
    by_kind: str = "consumer"
    by_name: str | None = None
    scope: str = "local"
    unit: str = "requests"


@_frozen
class RequestTransform:
    set_headers: dict[str, str] = field(default_factory=dict)
    add_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    rename_headers: dict[str, str] = field(default_factory=dict)
    set_query: dict[str, str] = field(default_factory=dict)
    remove_query: list[str] = field(default_factory=list)


@_frozen
class ResponseTransform:
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)


@_frozen
class Transform:
    request: RequestTransform = field(default_factory=RequestTransform)
    response: ResponseTransform = field(default_factory=ResponseTransform)


@_frozen
class Waf:
    mode: str = "block"
    rules: list[str] = field(default_factory=lambda: list(WAF_RULES))


@_frozen
class Cors:
    origins: list[str]
    methods: list[str] | None = None
    headers: list[str] = field(default_factory=list)
    expose_headers: list[str] = field(default_factory=list)
    credentials: bool = False
    max_age_s: int = 600


@_frozen
class IPRules:
    allow: list[_ip.IPv4Network | _ip.IPv6Network] = field(default_factory=list)
    deny: list[_ip.IPv4Network | _ip.IPv6Network] = field(default_factory=list)


@_frozen
class Budget:
    usd: float
    per: str
    per_s: int
    by: str = "consumer"
    by_kind: str = "consumer"
    by_name: str | None = None


@_frozen
class Route:
    name: str
    paths: list[str]
    hosts: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    upstream: str | None = None
    respond: Respond | None = None
    ai: RouteAI | None = None
    strip_prefix: str | None = None
    rewrite: str | None = None
    preserve_host: bool = False
    lifecycle: Lifecycle | None = None
    auth: RouteAuth | None = None
    rate_limits: list[RateLimit] = field(default_factory=list)
    transform: Transform | None = None
    waf: Waf | None = None
    cors: Cors | None = None
    ip: IPRules | None = None
    budget: Budget | None = None
    max_body_bytes: int = 10485760
    timeout_s: float | None = None
    owner: str | None = None
    docs: str | None = None


@_frozen
class Logging:
    access_log: str = "stdout"
    redact_headers: list[str] = field(default_factory=lambda: list(DEFAULT_REDACT_HEADERS))


@_frozen
class Price:
    input_per_1k: float
    output_per_1k: float


@_frozen
class Provider:
    name: str
    type: str
    base_url: str
    api_key: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0
    tls_verify: bool = True


@_frozen
class Model:
    name: str
    provider: str
    model: str
    price: Price | None = None
    fallbacks: list[str] = field(default_factory=list)


@_frozen
class AI:
    providers: dict[str, Provider]
    models: list[Model]


@_frozen
class Config:
    listeners: list[Listener]
    admin: Admin | None = None
    drain_timeout_s: float = 20.0
    limits: Limits = field(default_factory=Limits)
    redis: Redis | None = None
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)
    auth: dict[str, AuthConfig] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    logging: Logging = field(default_factory=Logging)
    ai: AI | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source: str = "<config>"
