"""The validated configuration model: frozen dataclasses, one per SPEC section.

Produced only by ``fastgate.config.loader`` (``load_config`` / ``parse_config``); every value
here has already been type-checked, range-checked, cross-referenced and defaulted, so consumers
never re-validate. Field names are the SPEC keys; where a value is parsed into a more useful
form the parsed parts sit beside the original (``bind`` + ``host``/``port``, ``per`` +
``per_s``, ``by`` + ``by_kind``/``by_name``). Durations are float seconds for ``*_s`` keys and
int milliseconds for ``*_ms`` keys. "None" below always means "the key was absent".

This module holds the core of the model. What a policy parses is owned by the policy: its
dataclasses and parser live in ``fastgate/policies/<name>/config.py`` (registered keys, see
fastgate.config.sections), each documented there. ``Config`` and ``Route`` keep those values
in one mapping each (``sections`` / ``policies``) and read them as attributes
(``config.auth``, ``route.cors``; the key's registered default when absent); their
constructors and ``dataclasses.replace`` take them as keyword arguments too. The policies'
dataclasses are also reachable here by name (``schema.Cors``, ``schema.RateLimit``, ...).

Config                          the whole file (top-level keys starting with "x-" are ignored:
                                a place for YAML anchors, as in docker-compose)
  listeners: list[Listener]       at least one
  admin: Admin | None
  drain_timeout_s: float          20
  limits: Limits
  redis: Redis | None
  upstreams: dict[str, Upstream]  keyed by name (also Upstream.name)
  routes: list[Route]             document order (= match priority hint for the router)
  logging: Logging
  ai: AI | None
  teams: dict[str, Team]          Team(name, members: list[str] of admin.users names)
  raw: dict                       the parsed file BEFORE ${VAR} substitution (so secrets that
                                  come from the environment never appear in it); for GET /config.
                                  Literal secrets written in the file are still there: redact
                                  token, secret, client_secret, api_key, redis url passwords.
                                  Not part of equality.
  source: str                     file path or "<config>"
  sections: dict[str, Any]        the policies' top-level sections present, by key; read as
                                  attributes: consumers: list[Consumer], auth: dict[str,
                                  JwtAuth | ApiKeyAuth | IntrospectionAuth | ClientCertAuth]
                                  keyed by name (fastgate.policies.auth.config)

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
Admin(bind: str, host: str, port: int, token: str | None, users: list[AdminUser],
      state_dir: str | None)   a token and/or users; state_dir absolute (None: beside the file)
AdminUser(name: str, token_hash: str "sha256:<hex>", role: viewer | operator | admin)
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
  names (consumer, group, route, upstream, authenticator, provider) are [A-Za-z0-9._@+:/-],
  starting with a letter or digit: safe in headers (X-Consumer-Groups is comma-joined), logs
  and metric labels.
Route(name: str [default "route-<index>"], hosts: list[str], methods: list[str],
      paths: list[str], upstream: str|None, respond: Respond|None, ai: RouteAI|None,
      strip_prefix: str|None, rewrite: str|None, preserve_host=False,
      max_body_bytes: int [default limits.max_body_bytes], timeout_s: float|None,
      owner: str|None (a team when `teams` is set), description: str|None,
      docs_url: str|None (http/https URL), visibility: "public"|"internal",
      policies: dict[str, Any])
  exactly one of upstream / respond / ai. hosts lower-cased ([] = any; "*.x.org" wildcard).
  methods upper-case ([] = any). paths: "/exact", "/a/{param}", "/prefix/*" (trailing only).
  strip_prefix/rewrite/preserve_host only with upstream. rewrite may use {params} that at least
  one path of the route defines.
  policies: the route's policy keys present, by key (registry order), read as attributes:
  route.ip, route.cors, route.lifecycle, route.auth, route.rate_limits, route.transform,
  route.waf, route.budget, route.plugins (see each policy's config module).
Respond(status: int = 200, body: str = "", headers: dict[str, str])
RouteAI(endpoint: "chat"|"embeddings"|None, models: list[str] | None, prompt: Prompt|None)
  exactly one of endpoint / prompt; models None = all configured models.
Prompt(model: str, system: str|None, template: str, variables: list[str],
       max_tokens: int|None, temperature: float|None)
  variables = the {{names}} in template, in first-use order.
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

from dataclasses import FrozenInstanceError, dataclass, field, fields
from typing import Any, Callable

from . import sections as _sections

DEFAULT_REDACT_HEADERS = ("authorization", "cookie", "x-api-key")

_frozen = dataclass(frozen=True, slots=True)


def _keyed(attr: str, registered: Callable[[], dict]):
    """Class decorator for a frozen dataclass whose field ``attr`` holds the values of
    registered keys: ``obj.<key>`` reads ``obj.<attr>[key]`` (the key's default when absent),
    and the constructor (so ``dataclasses.replace`` too) takes ``<key>=value`` keywords.
    Values equal to their key's default are not stored, so ``Route(..., rate_limits=[])`` and
    ``Route(...)`` are equal, as they always were."""
    def wrap(cls):
        generated = cls.__init__
        core = frozenset(f.name for f in fields(cls))

        def __init__(self, *args, **kwargs):
            given = {k: kwargs.pop(k) for k in list(kwargs) if k not in core}
            held = dict(kwargs.pop(attr, None) or {})
            held.update(given)
            keys = registered()
            for k in held:
                if k not in keys:
                    raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {k!r}")
            kwargs[attr] = {k: held[k] for k in keys if k in held and held[k] != keys[k].default}
            generated(self, *args, **kwargs)

        def __getattr__(self, name):
            # Only reached when ordinary lookup failed. Private and dunder names (copy, pickle
            # probe for them) are never keys, nor is anything before the object is built.
            if name[:1] == "_":
                raise AttributeError(name)
            try:
                held = object.__getattribute__(self, attr)
            except AttributeError:
                raise AttributeError(name) from None
            if name in held:
                return held[name]
            key = registered().get(name)
            if key is None:
                raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")
            return key.fresh_default()

        def __setattr__(self, name, value):
            # Frozen for the keys too (the generated one would raise TypeError for them).
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self, name):
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        __init__.__doc__ = generated.__doc__
        cls.__init__ = __init__
        cls.__getattr__ = __getattr__
        cls.__setattr__ = __setattr__
        cls.__delattr__ = __delattr__
        return cls
    return wrap


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
class AdminUser:
    name: str
    token_hash: str      # "sha256:<64 lower-case hex>"
    role: str            # viewer | operator | admin


@_frozen
class Admin:
    bind: str
    host: str
    port: int
    token: str | None = None
    users: list[AdminUser] = field(default_factory=list)
    state_dir: str | None = None    # None: beside the config file


@_frozen
class Team:
    name: str
    members: list[str] = field(default_factory=list)   # admin user names


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


@_keyed("policies", _sections.route_keys)
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
    max_body_bytes: int = 10485760
    timeout_s: float | None = None
    owner: str | None = None           # catalog: the team owning this API
    description: str | None = None
    docs_url: str | None = None
    visibility: str = "public"         # public | internal (not listed in the portal)
    policies: dict[str, Any] = field(default_factory=dict, kw_only=True)


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


@_keyed("sections", _sections.top_keys)
@_frozen
class Config:
    listeners: list[Listener]
    admin: Admin | None = None
    drain_timeout_s: float = 20.0
    limits: Limits = field(default_factory=Limits)
    redis: Redis | None = None
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    logging: Logging = field(default_factory=Logging)
    ai: AI | None = None
    teams: dict[str, Team] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source: str = "<config>"
    sections: dict[str, Any] = field(default_factory=dict, kw_only=True)



def __getattr__(name: str):
    """The policies' config dataclasses by name (``schema.Cors``, ``schema.RateLimit``, ...):
    looked up in the registered policy config modules."""
    if not name.startswith("_"):
        for module in _sections.registered().modules:
            if name in getattr(module, "__all__", ()):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
