"""The whole SPEC example, every section's checks, cross references, and the UNSUPPORTED gate."""
import datetime as dt
import ipaddress
import os
import shutil
from pathlib import Path

import pytest

from fastgate.config import (UNSUPPORTED, ConfigError, check_file, load_config, parse_config,
                             unsupported_errors)
from fastgate.config import schema as S

from tests.config.config_helpers import errors_of, ok

HERE = Path(__file__).parent
ENV = {"FASTGATE_ADMIN_TOKEN": "admin-token-123", "INTROSPECTION_SECRET": "intro-secret",
       "OPENAI_API_KEY": "sk-oa", "ANTHROPIC_API_KEY": "sk-ant", "GEMINI_API_KEY": "g-key"}
KEY_HASH = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.fixture
def spec_file(tmp_path):
    shutil.copy(HERE / "spec_example.yaml", tmp_path / "gw.yaml")
    for name in ("gw.pem", "gw.key", "ca.pem"):
        (tmp_path / name).write_text("placeholder")
    return tmp_path / "gw.yaml"


def test_spec_example_parses_in_full(spec_file, all_supported):
    c = load_config(str(spec_file), ENV)
    d = str(spec_file.parent)
    # listeners, admin, drain, limits, redis
    assert [(l.host, l.port) for l in c.listeners] == [("127.0.0.1", 8080), ("0.0.0.0", 8443)]
    assert c.listeners[0].tls is None
    assert c.listeners[1].tls == S.TLSConfig(
        cert_file=os.path.join(d, "gw.pem"), key_file=os.path.join(d, "gw.key"),
        min_version="TLSv1.2", client_ca_file=os.path.join(d, "ca.pem"),
        require_client_cert=False, certificates=[])
    assert c.admin == S.Admin(bind="127.0.0.1:9901", host="127.0.0.1", port=9901,
                              token="admin-token-123")
    assert c.drain_timeout_s == 20 and c.limits == S.Limits()
    assert c.redis == S.Redis(url="redis://127.0.0.1:6379/0", cluster_nodes=None, timeout_ms=50,
                              on_error="allow")
    # upstreams
    u = c.upstreams["orders"]
    assert u.health_check == S.HealthCheck(path="/health", interval_s=5, timeout_s=2,
                                           healthy_after=2, unhealthy_after=3)
    assert (u.balance, u.keepalive, u.retries, u.tls_verify) == ("round_robin", 64, 1, True)
    # consumers and auth
    assert c.consumers == [S.Consumer(name="alice", groups=["payments"], api_keys=[KEY_HASH],
                                      jwt_subjects=["user-123"])]
    assert list(c.auth) == ["corp-sso", "partner-keys", "idp-opaque", "partners-mtls"]
    jwt = c.auth["corp-sso"]
    assert isinstance(jwt, S.JwtAuth)
    assert (jwt.issuer, jwt.audiences, jwt.algorithms, jwt.jwks_url, jwt.jwks_refresh_s,
            jwt.clock_skew_s, jwt.consumer_claim, jwt.forward_claims) == (
        "https://idp.example.com/", ["orders-api"], ["RS256", "ES256"],
        "https://idp.example.com/.well-known/jwks.json", 300, 30, "sub",
        {"sub": "X-User-Id", "scope": "X-User-Scopes"})
    assert c.auth["partner-keys"] == S.ApiKeyAuth(name="partner-keys", header="X-API-Key",
                                                  query=None, bearer=False)
    intro = c.auth["idp-opaque"]
    assert (intro.type, intro.url, intro.client_id, intro.client_secret, intro.cache_ttl_s) == (
        "introspection", "https://idp.example.com/oauth2/introspect", "gateway",
        "intro-secret", 60)
    assert c.auth["partners-mtls"] == S.ClientCertAuth(name="partners-mtls",
                                                       consumer_from="subject_cn")
    # the orders route, every policy section
    r = c.routes[0]
    assert (r.name, r.hosts, r.methods, r.paths, r.upstream, r.strip_prefix, r.rewrite) == (
        "orders", ["api.example.com", "*.example.org"], ["GET", "POST"],
        ["/orders", "/orders/{id}", "/static/*"], "orders", "/api", "/v2/orders/{id}")
    assert r.lifecycle == S.Lifecycle(
        state="published", sunset=dt.datetime(2027, 6, 30, tzinfo=dt.timezone.utc),
        sunset_raw="2027-06-30T00:00:00Z", successor="/v2/orders", deprecated_at=None)
    assert r.auth == S.RouteAuth(using=["corp-sso", "partner-keys"], scopes=["orders:read"],
                                 groups=["payments"], mfa=True, acr_values=["urn:example:mfa"])
    assert r.rate_limits == [S.RateLimit(limit=100, per="second", per_s=1, burst=200,
                                         by="consumer", by_kind="consumer", by_name=None,
                                         scope="local", unit="requests")]
    assert r.transform == S.Transform()
    assert r.waf == S.Waf(mode="block", rules=["sqli", "xss", "path_traversal",
                                               "command_injection"])
    assert r.cors == S.Cors(origins=["https://app.example.com"], methods=["GET"],
                            headers=["Authorization"], credentials=False, max_age_s=600)
    assert r.ip == S.IPRules(allow=[ipaddress.ip_network("10.0.0.0/8")], deny=[])
    assert (r.max_body_bytes, r.timeout_s) == (1048576, 10)
    # AI routes
    llm = c.routes[1]
    assert llm.ai == S.RouteAI(endpoint="chat", models=["fast", "fast-backup"], prompt=None)
    assert llm.rate_limits[0] == S.RateLimit(limit=200000, per="minute", per_s=60,
                                             burst=200000, by="consumer", by_kind="consumer",
                                             by_name=None, scope="local", unit="tokens")
    assert llm.budget == S.Budget(usd=25, per="day", per_s=86400, by="consumer",
                                  by_kind="consumer", by_name=None)
    sent = c.routes[2]
    assert sent.methods == ["POST"]
    assert sent.ai.prompt == S.Prompt(model="fast", template="Label the sentiment of: {{text}}",
                                      system="You label sentiment. Answer with one word.",
                                      variables=["text"])
    # logging and ai
    assert c.logging == S.Logging()
    assert list(c.ai.providers) == ["oa", "ant", "gem", "local"]
    assert c.ai.providers["ant"] == S.Provider(name="ant", type="anthropic",
                                               base_url="https://api.anthropic.com",
                                               api_key="sk-ant")
    assert c.ai.providers["local"].api_key is None
    assert c.ai.models == [
        S.Model(name="fast", provider="ant", model="claude-haiku-4-5",
                price=S.Price(0.001, 0.005), fallbacks=["fast-backup"]),
        S.Model(name="fast-backup", provider="oa", model="gpt-4o-mini",
                price=S.Price(0.00015, 0.0006), fallbacks=[]),
    ]
    assert unsupported_errors(c) == []


def test_spec_example_reports_every_unsupported_feature(spec_file, pinned_gate):
    errs = check_file(str(spec_file), ENV)
    assert errs == [
        "listeners[1].tls: not supported by this build yet",
        "admin: not supported by this build yet",
        "redis: not supported by this build yet",
        "upstreams.orders.health_check: not supported by this build yet",
        "consumers: not supported by this build yet",
        "auth: not supported by this build yet",
        "routes[0].lifecycle: not supported by this build yet",
        "routes[0].auth: not supported by this build yet",
        "routes[0].rate_limits: not supported by this build yet",
        "routes[0].transform: not supported by this build yet",
        "routes[0].waf: not supported by this build yet",
        "routes[0].cors: not supported by this build yet",
        "routes[0].ip: not supported by this build yet",
        "routes[1].ai: not supported by this build yet",
        "routes[1].auth: not supported by this build yet",
        "routes[1].rate_limits: not supported by this build yet",
        "routes[1].budget: not supported by this build yet",
        "routes[2].ai: not supported by this build yet",
        "ai: not supported by this build yet",
    ]


def test_unsupported_gate_follows_the_set(spec_file, all_supported):
    UNSUPPORTED.add("routes[].waf")
    UNSUPPORTED.add("upstreams.*.health_check")
    assert check_file(str(spec_file), ENV) == [
        "upstreams.orders.health_check: not supported by this build yet",
        "routes[0].waf: not supported by this build yet"]
    UNSUPPORTED.add("routes[].timeout_s")  # any key path works, not just the initial ones
    assert "routes[0].timeout_s: not supported by this build yet" in check_file(str(spec_file), ENV)


def test_unsupported_empty_values_are_not_uses():
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080, tls: null}]
        consumers: []
        auth: {}
        routes: [{paths: [/a], respond: {}, rate_limits: []}]
    """)
    assert unsupported_errors(c) == []


def test_spec_example_as_json(spec_file, all_supported):
    import json
    import yaml
    doc = yaml.safe_load(spec_file.read_text())
    j = spec_file.with_suffix(".json")
    j.write_text(json.dumps(doc))
    from dataclasses import replace
    assert replace(load_config(str(j), ENV), source="") == \
        replace(load_config(str(spec_file), ENV), source="")


def test_five_mistakes_five_lines(tmp_path, pinned_gate):
    p = tmp_path / "gw.yaml"
    p.write_text("""
listeners:
  - bind: localhost
upstreams:
  orders:
    targets: [{url: "ftp://127.0.0.1:9001"}]
routes:
  - name: orders
    paths: [/orders]
    upstream: order
    rate_limits: [{limit: 0, per: second, by: ip}]
  - name: other
    path: [/x]
    respond: {}
""")
    assert check_file(str(p), {}) == [
        "listeners[0].bind: expected host:port (IPv6 as [::1]:8080), got 'localhost'",
        "upstreams.orders.targets[0].url: scheme must be http:// or https://, got "
        "'ftp://127.0.0.1:9001'",
        "routes[0].upstream: unknown upstream 'order' (upstreams: orders)",
        "routes[0].rate_limits: not supported by this build yet",
        "routes[0].rate_limits[0].limit: must be > 0",
        "routes[1].path: unknown key (did you mean 'paths'?)",
        "routes[1].paths: required",
    ]


# --- section by section -----------------------------------------------------------------------

L = "listeners: [{bind: 127.0.0.1:8080}]\n"


def test_tls_and_admin(tmp_path, all_supported):
    for n in ("a.pem", "a.key", "b.pem", "b.key", "ca.pem"):
        (tmp_path / n).write_text("x")
    c = ok("""
        listeners:
          - bind: 127.0.0.1:8443
            tls:
              min_version: TLSv1.3
              certificates:
                - {cert_file: a.pem, key_file: a.key, hosts: [a.example.com, "*.a.example.com"]}
                - {cert_file: b.pem, key_file: b.key}
        admin: {bind: "[::1]:9901", token: t}
    """, base_dir=str(tmp_path))
    tls = c.listeners[0].tls
    assert tls.cert_file is None and tls.min_version == "TLSv1.3"
    assert tls.certificates[0] == S.Certificate(str(tmp_path / "a.pem"), str(tmp_path / "a.key"),
                                                ["a.example.com", "*.a.example.com"])
    assert c.admin.host == "::1" and c.admin.port == 9901
    errs = errors_of("""
        listeners:
          - bind: 127.0.0.1:8443
            tls: {cert_file: nope.pem, min_version: TLSv1.1, require_client_cert: true}
          - bind: 127.0.0.1:8444
            tls: {}
        admin: {bind: 0.0.0.0:8443}
    """, base_dir=str(tmp_path))
    assert errs == [
        f"listeners[0].tls.cert_file: file not found: {tmp_path / 'nope.pem'}",
        "listeners[0].tls.min_version: must be one of TLSv1.2 | TLSv1.3, got 'TLSv1.1'",
        "listeners[0].tls.require_client_cert: needs client_ca_file to verify client certificates",
        "listeners[0].tls.key_file: cert_file and key_file go together",
        "listeners[1].tls: needs cert_file + key_file, or a list under certificates",
        "admin.bind: 0.0.0.0:8443 clashes with listeners[0].bind: the admin API never shares a "
        "port with traffic",
        "admin.token: required (or admin.users: name, token_hash, role)",
    ]


def test_admin_same_bind_as_listener(all_supported):
    assert errors_of(L + "admin: {bind: 127.0.0.1:8080, token: t}") == [
        "admin.bind: 127.0.0.1:8080 clashes with listeners[0].bind: the admin API never shares "
        "a port with traffic"]
    assert ok(L + "admin: {bind: 127.0.0.1:8081, token: t}").admin.port == 8081


def test_redis(all_supported):
    c = ok(L + "redis: {cluster_nodes: [10.0.0.1:7000, \"[::1]:7001\"], on_error: deny}")
    assert c.redis == S.Redis(url=None, cluster_nodes=[("10.0.0.1", 7000), ("::1", 7001)],
                              timeout_ms=50, on_error="deny")
    assert ok(L + "redis: {url: rediss://:pw@redis.internal:6380/2}").redis.url.startswith("rediss")
    assert errors_of(L + "redis: {url: http://x, cluster_nodes: [a:1], timeout_ms: 0, on_error: x}") == [
        "redis: needs exactly one of url, cluster_nodes",
        "redis.url: scheme must be redis://, rediss:// or unix://",
        "redis.timeout_ms: must be > 0",
        "redis.on_error: must be one of allow | deny, got 'x'",
    ]
    assert errors_of(L + "redis: {url: redis://h/x}") == [
        "redis.url: database must be a number, got 'x'"]


def test_consumers(all_supported):
    c = ok(L + f"""
consumers:
  - {{name: alice, groups: [payments, admins], api_keys: ["{KEY_HASH.upper().replace('SHA256', 'sha256')}"]}}
  - {{name: bob@example.com}}
""")
    assert c.consumers[0].api_keys == [KEY_HASH]
    assert c.consumers[1] == S.Consumer(name="bob@example.com")
    errs = errors_of(L + f"""
consumers:
  - {{name: alice, api_keys: [my-plaintext-key], jwt_subjects: [u1]}}
  - {{name: alice, api_keys: ["sha256:abc", "{KEY_HASH}"], jwt_subjects: [u1], groups: ["a,b"]}}
  - {{name: carol, api_keys: ["{KEY_HASH}"]}}
  - {{groups: []}}
""")
    assert errs == [
        "consumers[0].api_keys[0]: api keys are stored hashed: run `fastgate hash-key`, give it "
        "the key on stdin, and put the sha256:<hex> it prints here",
        "consumers[1].name: duplicate consumer name 'alice' (also consumers[0])",
        "consumers[1].api_keys[0]: expected sha256: followed by 64 hex digits (output of "
        "`fastgate hash-key`)",
        "consumers[1].jwt_subjects[0]: subject 'u1' already belongs to consumers[0].jwt_subjects[0]",
        "consumers[1].groups[0]: expected a group name (letters, digits, . _ - @ + : / ; no "
        "spaces), got 'a,b'",
        "consumers[2].api_keys[0]: the same key is already given to consumers[1].api_keys[0]",
        "consumers[3].name: required",
    ]
    assert "my-plaintext-key" not in "\n".join(errs)


def test_auth_variants(tmp_path, all_supported):
    (tmp_path / "jwks.json").write_text("{}")
    c = ok(L + """
auth:
  hs: {type: jwt, secret: "0123456789abcdef0123456789abcdef"}
  file: {type: jwt, jwks_file: jwks.json, algorithms: [EdDSA]}
  local: {type: jwt, jwks_url: "http://127.0.0.1:8000/jwks"}
  keys: {type: api_key}
  keys2: {type: api_key, query: api_key, bearer: true}
  intro: {type: introspection, url: "http://localhost:9/introspect"}
""", base_dir=str(tmp_path))
    assert c.auth["hs"].algorithms == ["HS256"] and c.auth["local"].algorithms == ["RS256", "ES256"]
    assert c.auth["file"].jwks_file == str(tmp_path / "jwks.json")
    assert c.auth["keys"] == S.ApiKeyAuth(name="keys", header="X-API-Key")
    assert c.auth["keys2"] == S.ApiKeyAuth(name="keys2", header=None, query="api_key", bearer=True)
    assert c.auth["intro"].client_id is None and c.auth["intro"].timeout_s == 5
    errs = errors_of(L + """
auth:
  a: {type: jwt, algorithms: [none, RS256, HS256], jwks_url: "http://idp.example.com/jwks"}
  b: {type: jwt, secret: short, jwks_url: "https://x/j"}
  c: {type: jwt}
  d: {type: saml}
  e: {type: api_key, bearer: false, header: "bad header"}
  f: {type: introspection, url: "https://idp/x", client_id: gw, cache_ttl_s: -1}
  g: {type: client_cert, consumer_from: serial}
  h: {type: jwt, secret: "0123456789abcdef0123456789abcdef", issuer: x, forward_claims: {sub: Content-Length}}
  i: {type: api_key, bearer: false}
""")
    assert errs == [
        "auth.a.algorithms[0]: 'none' is never accepted: unsigned tokens would pass",
        "auth.a.algorithms[2]: HS256 needs a secret; this authenticator has jwks_url (mixing "
        "HMAC and public-key algorithms allows key-confusion attacks)",
        "auth.a.jwks_url: must be https:// (plain http is only allowed to a loopback address)",
        "auth.b.secret: HS secrets must be at least 32 bytes (RFC 7518 section 3.2)",
        "auth.b.jwks_url: give only one of jwks_url, jwks_file, secret (also has secret)",
        "auth.c: needs one of jwks_url, jwks_file, secret",
        "auth.d.type: must be one of jwt | api_key | introspection | client_cert, got 'saml'",
        "auth.e.header: invalid header name 'bad header'",
        "auth.f.cache_ttl_s: must be >= 0",
        "auth.f.client_secret: client_id and client_secret go together",
        "auth.g: client certificates are only verified on a listener with tls.client_ca_file; "
        "none has one",
        "auth.g.consumer_from: must be one of subject_cn | san_dns | san_email | san_uri, got "
        "'serial'",
        "auth.h.forward_claims.sub: Content-Length is managed by the gateway and cannot carry a "
        "claim",
        "auth.i: needs header, query or bearer: true",
    ]


AUTH = L + """
auth:
  sso: {type: jwt, jwks_url: "https://idp/jwks"}
  keys: {type: api_key}
redis: {url: "redis://127.0.0.1:6379"}
"""


def test_route_auth_and_rate_limits(all_supported):
    c = ok(AUTH + """
routes:
  - paths: [/a]
    respond: {}
    auth: {using: [sso], scopes: [read]}
    rate_limits:
      - {limit: 5, per: minute}
      - {limit: 5, per: hour, by: "header:X-Tenant", scope: cluster, burst: 10}
      - {limit: 1, per: day, by: "claim:tenant"}
      - {limit: 1, per: second, by: route}
  - paths: [/b]
    respond: {}
    rate_limits: [{limit: 2, per: second}]
""")
    a, b = c.routes
    assert [(r.by_kind, r.by_name, r.per_s, r.burst, r.scope) for r in a.rate_limits] == [
        ("consumer", None, 60, 5, "local"), ("header", "x-tenant", 3600, 10, "cluster"),
        ("claim", "tenant", 86400, 1, "local"), ("route", None, 1, 1, "local")]
    assert b.rate_limits[0].by == "ip" and b.rate_limits[0].by_kind == "ip"
    errs = errors_of(AUTH + """
routes:
  - paths: [/a]
    respond: {}
    auth: {using: [sso, ghost], acr_values: [x]}
    rate_limits:
      - {limit: 5, per: week}
      - {limit: 5, per: second, burst: 2, by: "header:"}
      - {limit: 5, per: second, by: user, unit: tokens}
  - paths: [/b]
    respond: {}
    auth: {using: [keys], scopes: [read], mfa: true}
    rate_limits: [{limit: 1, per: second, by: "claim:sub"}]
  - paths: [/c]
    respond: {}
    rate_limits: [{limit: 1, per: second, by: consumer}]
""")
    assert errs == [
        "routes[0].auth.using[1]: unknown authenticator 'ghost' (auth: keys, sso)",
        "routes[0].auth.acr_values: only used with mfa: true",
        "routes[0].rate_limits[0].per: must be one of second | minute | hour | day, got 'week'",
        "routes[0].rate_limits[1].burst: must be >= limit (5): burst is the bucket size",
        "routes[0].rate_limits[1].by: invalid header name ''",
        "routes[0].rate_limits[2].by: expected consumer | ip | route | header:NAME | "
        "claim:NAME, got 'user'",
        "routes[0].rate_limits[2].unit: unit: tokens only applies to ai routes",
        "routes[1].auth.scopes: needs a jwt or introspection authenticator in using (api keys "
        "and client certificates carry no scopes)",
        "routes[1].auth.mfa: needs a jwt or introspection authenticator in using (api keys and "
        "client certificates carry no authentication method)",
        "routes[1].rate_limits[0].by: by: claim:NAME needs a jwt or introspection "
        "authenticator on this route",
        "routes[2].rate_limits[0].by: by: consumer needs auth on this route (without it there "
        "is no consumer; use by: ip)",
    ]


def test_cluster_scope_needs_redis(all_supported):
    assert errors_of(L + """
routes: [{paths: [/a], respond: {}, rate_limits: [{limit: 1, per: second, by: ip, scope: cluster}]}]
""") == ["routes[0].rate_limits[0].scope: scope: cluster needs the top-level redis section"]


def test_transform_waf_cors_ip_lifecycle(all_supported):
    c = ok(L + """
routes:
  - paths: [/a]
    respond: {}
    transform:
      request: {set_headers: {X-A: "1"}, rename_headers: {X-Old: X-New}, set_query: {v: 2},
                remove_query: [debug]}
      response: {remove_headers: [Server]}
    waf: {mode: monitor, rules: [sqli]}
    cors: {origins: ["*"], max_age_s: 0}
    ip: {deny: [192.168.1.7, "2001:db8::/32"]}
    lifecycle: {state: deprecated, sunset: "2027-06-30T02:00:00+02:00",
                successor: "https://api.example.com/v2", deprecated_at: "2026-01-01T00:00:00Z"}
    owner: team-orders
    docs_url: https://docs.example.com/orders
""")
    r = c.routes[0]
    assert r.transform.request.set_headers == {"x-a": "1"}
    assert r.transform.request.rename_headers == {"x-old": "x-new"}
    assert r.transform.request.set_query == {"v": "2"}
    assert r.transform.response == S.ResponseTransform(remove_headers=["server"])
    assert r.waf == S.Waf(mode="monitor", rules=["sqli"])
    assert r.cors == S.Cors(origins=["*"], methods=None, max_age_s=0)
    assert r.ip.deny == [ipaddress.ip_network("192.168.1.7/32"), ipaddress.ip_network("2001:db8::/32")]
    assert r.lifecycle.sunset == dt.datetime(2027, 6, 30, tzinfo=dt.timezone.utc)
    assert r.lifecycle.state == "deprecated" and r.owner == "team-orders"
    errs = errors_of(L + """
routes:
  - paths: [/a]
    respond: {}
    transform:
      request: {set_headers: {Content-Length: "1", X-Consumer-Name: root}, remove_query: [""]}
      response: {add_headers: {}}
    waf: {mode: log, rules: [sqli, ssrf]}
    cors: {origins: ["*", "https://a.example.com/path"], credentials: true}
    ip: {allow: [10.0.0.1/8, nonsense]}
    lifecycle: {state: sunset, sunset: "2027-06-30", successor: "orders-v2"}
  - paths: [/b]
    respond: {}
    ip: {}
    lifecycle: {sunset: "2027-06-30T00:00:00"}
""")
    assert errs == [
        "routes[0].transform.request.set_headers.Content-Length: content-length is managed by "
        "the gateway and cannot be transformed",
        "routes[0].transform.request.set_headers.X-Consumer-Name: x-consumer-name is managed by "
        "the gateway and cannot be transformed",
        "routes[0].transform.request.remove_query[0]: must not be empty",
        "routes[0].transform.response.add_headers: unknown key (did you mean 'set_headers'?)",
        "routes[0].waf.mode: must be one of block | monitor, got 'log'",
        "routes[0].waf.rules[1]: must be one of sqli | xss | path_traversal | command_injection "
        "| rfi | php | java, got 'ssrf'",
        "routes[0].cors.origins[1]: expected an origin (scheme://host[:port], no path) or '*', "
        "got 'https://a.example.com/path'",
        "routes[0].cors.credentials: browsers refuse credentials with origin '*'; list the origins",
        "routes[0].ip.allow[0]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
        "routes[0].ip.allow[1]: expected an IP address or CIDR like 10.0.0.0/8, got 'nonsense'",
        "routes[0].lifecycle.state: must be one of published | deprecated | retired, got 'sunset'",
        "routes[0].lifecycle.sunset: expected an RFC 3339 date-time like "
        "\"2027-06-30T00:00:00Z\", got '2027-06-30'",
        "routes[0].lifecycle.successor: expected a path starting with '/' or an http(s) URL, "
        "got 'orders-v2'",
        "routes[1].ip: needs allow and/or deny",
        "routes[1].lifecycle.sunset: needs a time zone (Z or +hh:mm): '2027-06-30T00:00:00'",
    ]


AI = L + """
ai:
  providers:
    oa: {type: openai, api_key: k}
    loc: {type: openai_compatible, base_url: "http://127.0.0.1:11434/v1/"}
  models:
    - {name: a, provider: oa, model: gpt-4o-mini, price: {input_per_1k: 0.1, output_per_1k: 0.2}}
    - {name: b, provider: loc, model: llama3, fallbacks: [a]}
"""


def test_ai_section(all_supported):
    c = ok(AI + "routes: [{paths: [/v1/chat/completions], ai: {endpoint: chat}}]")
    assert c.ai.providers["oa"].base_url == "https://api.openai.com/v1"
    assert c.ai.providers["loc"].base_url == "http://127.0.0.1:11434/v1"
    assert c.routes[0].ai == S.RouteAI(endpoint="chat", models=None, prompt=None)
    errs = errors_of(L + """
ai:
  providers:
    oa: {type: openai}
    x: {type: cohere, api_key: k}
    loc: {type: openai_compatible}
  models:
    - {name: a, provider: oa, model: m, fallbacks: [a, zz]}
    - {name: a, provider: ghost, model: m, price: {input_per_1k: -1}}
""")
    assert errs == [
        "ai.providers.oa.api_key: required",
        "ai.providers.x.type: must be one of openai | anthropic | gemini | mistral | "
        "openai_compatible, got 'cohere'",
        "ai.providers.loc.base_url: required for type openai_compatible",
        "ai.models[0].fallbacks[0]: a model cannot be its own fallback",
        "ai.models[0].fallbacks[1]: unknown model 'zz'",
        "ai.models[1].name: duplicate model name 'a' (also ai.models[0])",
        "ai.models[1].provider: unknown provider 'ghost' (ai.providers: loc, oa, x)",
        "ai.models[1].price.input_per_1k: must be >= 0",
        "ai.models[1].price.output_per_1k: required",
    ]


def test_ai_routes(all_supported):
    errs = errors_of(AI + """
auth: {keys: {type: api_key}}
routes:
  - paths: [/v1/chat/completions]
    ai: {endpoint: chat, models: [a, c]}
    auth: {using: [keys]}
    budget: {usd: 5, per: day}
  - paths: [/p]
    ai: {prompt: {model: z, template: "Hi {{ name }} {{bad var}} {{name}}", temperature: 3}}
  - paths: [/q]
    ai: {endpoint: completions, prompt: {model: a, template: x}, models: [a]}
  - paths: [/r]
    upstream: nope
    budget: {usd: 0, per: day}
""")
    assert errs == [
        "routes[0].ai.models[1]: unknown model 'c' (ai.models: a, b)",
        "routes[0].budget: model 'c' has no price, so its cost cannot count against a budget",
        "routes[1].ai.prompt.model: unknown model 'z' (ai.models: a, b)",
        "routes[1].ai.prompt.template: malformed placeholder '{{bad var}}': use {{name}} "
        "(letters, digits, _)",
        "routes[1].ai.prompt.temperature: must be <= 2",
        "routes[2].ai: needs exactly one of endpoint, prompt",
        "routes[2].ai.endpoint: must be one of chat | embeddings, got 'completions'",
        "routes[2].ai.models: only used with endpoint (a prompt names its model)",
        "routes[3].upstream: unknown upstream 'nope' (upstreams: none defined)",
        "routes[3].budget: only applies to ai routes",
        "routes[3].budget.usd: must be > 0",
    ]
    c = ok(AI + """
routes:
  - paths: [/p]
    ai: {prompt: {model: a, system: s, template: "{{ x }} and {{y}} and {{x}}", max_tokens: 50}}
""")
    assert c.routes[0].ai.prompt.variables == ["x", "y"]
    assert errors_of(L + "routes: [{paths: [/x], ai: {endpoint: chat}}]") == [
        "routes[0].ai: ai routes need the top-level ai section (providers and models)"]


def test_route_conflicts():
    errs = errors_of(L + """
routes:
  - {name: a, paths: ["/orders/{id}", /x, "/s/*"], respond: {}}
  - {name: b, paths: ["/orders/{oid}"], respond: {}}
  - {name: c, paths: [/x], respond: {}, methods: [GET]}
  - {name: d, paths: [/x], respond: {}, methods: [POST, GET]}
  - {name: e, paths: [/x], respond: {}, hosts: [a.example.com]}
  - {name: f, paths: [/%7Eu, /~u], respond: {}}
  - {name: g, paths: ["/s/*"], respond: {}, hosts: [A.example.com.]}
  - {name: h, paths: ["/s/*"], respond: {}, hosts: [a.example.com]}
""")
    assert errs == [
        "routes[1].paths[0]: '/orders/{oid}' conflicts with routes[0].paths[0] ('/orders/{id}'): "
        "both claim any method on any host",
        "routes[3].paths[0]: '/x' conflicts with routes[2].paths[0] ('/x'): both claim GET on "
        "any host",
        "routes[5].paths[1]: '/~u' conflicts with routes[5].paths[0] ('/%7Eu'): both claim any "
        "method on any host",
        "routes[7].paths[0]: '/s/*' conflicts with routes[6].paths[0] ('/s/*'): both claim any "
        "method on host 'a.example.com'",
    ]


CONFLICT_CASES = [
    ([("a", ["/orders/{id}"], [], []), ("b", ["/orders/{oid}"], [], [])], True),
    ([("c", ["/x"], [], ["GET"]), ("d", ["/x"], [], ["POST", "GET"])], True),
    ([("f", ["/%7Eu", "/~u"], [], [])], True),
    ([("g", ["/s/*"], ["A.example.com."], []), ("h", ["/s/*"], ["a.example.com"], [])], True),
    ([("i", ["/x"], [], []), ("j", ["/x"], [], ["GET"])], False),
    ([("k", ["/x"], ["a.example.com"], []), ("l", ["/x"], [], [])], False),
    ([("m", ["/s/*"], [], []), ("n", ["/s"], [], [])], False),
    ([("o", ["/a/{x}/b"], [], []), ("p", ["/a/c/{y}"], [], [])], False),
    ([("q", ["/x", "/x/"], [], []), ("r", ["/y/*"], ["*.example.com"], []),
      ("s", ["/y/*"], ["example.com"], [])], False),
]


@pytest.mark.parametrize("routes,conflict", CONFLICT_CASES)
def test_route_conflicts_agree_with_router(routes, conflict):
    """The loader reports exactly the conflicts the compiled router would raise on."""
    router = pytest.importorskip("fastgate._core.router")
    doc = {"listeners": [{"bind": "127.0.0.1:8080"}],
           "routes": [{"name": n, "paths": p, "hosts": h, "methods": m, "respond": {}}
                      for n, p, h, m in routes]}
    table = [(None, n, h or None, m or None, p) for n, p, h, m in routes]
    if conflict:
        with pytest.raises(ConfigError):
            parse_config(doc, {})
        with pytest.raises(router.RouteConflict):
            router.Router(table)
    else:
        parse_config(doc, {})
        router.Router(table)


def test_invalid_authenticator_is_still_a_known_name(all_supported):
    """A broken auth entry is reported once, not again as 'unknown' wherever a route uses it."""
    assert errors_of(L + """
auth: {a: {type: [jwt]}}
routes: [{paths: [/a], respond: {}, auth: {using: [a]}, rate_limits: [{limit: 1, per: second}]}]
""") == ["auth.a.type: expected a string, got list"]


def test_unsupported_errors_on_a_document(pinned_gate):
    doc = {"listeners": [{"bind": "127.0.0.1:8080", "tls": {"cert_file": "x"}}],
           "routes": [{"paths": ["/a"], "respond": {}, "waf": {}, "cors": {"origins": ["*"]}}],
           "redis": {"url": "redis://h"}}
    assert unsupported_errors(doc) == [
        "listeners[0].tls: not supported by this build yet",
        "routes[0].cors: not supported by this build yet",
        "redis: not supported by this build yet",
    ]


def test_respond_framing_and_health_check_path(all_supported):
    assert errors_of(L + """
upstreams: {u: {targets: ["http://h"], health_check: {path: "health check", interval_s: 1,
                                                      timeout_s: 2}}}
routes:
  - paths: [/a]
    respond: {status: 204, body: "x", headers: {Content-Length: "5", Transfer-Encoding: chunked}}
""") == [
        "upstreams.u.health_check.path: expected a path like /health (printable, no spaces), "
        "got 'health check'",
        "upstreams.u.health_check.timeout_s: must not exceed interval_s",
        "routes[0].respond.body: a 204 response has no body",
        "routes[0].respond.headers.Content-Length: Content-Length is set by the gateway "
        "(framing) and cannot be configured",
        "routes[0].respond.headers.Transfer-Encoding: Transfer-Encoding is set by the gateway "
        "(framing) and cannot be configured",
    ]
    c = ok(L + 'upstreams: {u: {targets: ["http://h"], health_check: {path: "/ready?full=1"}}}')
    assert c.upstreams["u"].health_check.path == "/ready?full=1"


def test_ai_model_with_an_invalid_name_is_an_error_not_a_crash():
    """Found by the config fuzzer: a model whose name failed to parse (None) broke the
    sorted() of known model names when a route named models."""
    doc = {"listeners": [{"bind": "127.0.0.1:0"}],
           "ai": {"providers": {"p": {"type": "openai", "api_key": "k"}},
                  "models": [{"name": 7, "provider": "p", "model": "m"},
                             {"name": "ok", "provider": "p", "model": "m"}]},
           "routes": [{"name": "r", "paths": ["/v1/chat/completions"],
                       "ai": {"endpoint": "chat", "models": ["nope"]}}]}
    with pytest.raises(ConfigError) as ei:
        parse_config(doc)
    errors = ei.value.errors
    assert any(x.startswith("ai.models[0].name:") for x in errors)
    assert any("routes[0].ai.models[0]: unknown model 'nope' (ai.models: ok)" in x
               for x in errors)
