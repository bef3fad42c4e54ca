"""Core keys: listeners, limits, upstreams, routes (upstream/respond), logging, defaults."""
import json

import pytest

from fastgate.config import Config, ConfigError, check_file, load_config, parse_config
from fastgate.config import schema as S

from tests.config.config_helpers import errors_of, ok

MINIMAL = """
listeners: [{bind: 127.0.0.1:8080}]
upstreams:
  orders: {targets: [{url: "http://127.0.0.1:9001"}]}
routes:
  - {name: orders, paths: [/orders], upstream: orders}
"""


def test_minimal_defaults():
    c = ok(MINIMAL)
    assert isinstance(c, Config)
    assert c.listeners == [S.Listener(bind="127.0.0.1:8080", host="127.0.0.1", port=8080, tls=None)]
    assert c.drain_timeout_s == 20
    assert c.limits == S.Limits(
        max_request_line_bytes=8192, max_header_bytes=32768, max_headers=100,
        max_body_bytes=10485760, header_timeout_s=10, body_timeout_s=30,
        keepalive_timeout_s=60, max_connections=10000, max_connections_per_ip=0)
    u = c.upstreams["orders"]
    assert (u.name, u.balance, u.hash_on, u.connect_timeout_s, u.read_timeout_s, u.keepalive,
            u.retries, u.tls_verify, u.health_check) == (
        "orders", "round_robin", None, 3, 30, 64, 1, True, None)
    assert u.targets == [S.Target(url="http://127.0.0.1:9001", scheme="http", host="127.0.0.1",
                                  port=9001, path="", weight=1)]
    r = c.routes[0]
    assert (r.name, r.paths, r.hosts, r.methods, r.upstream, r.respond, r.preserve_host,
            r.strip_prefix, r.rewrite, r.rate_limits, r.max_body_bytes, r.timeout_s) == (
        "orders", ["/orders"], [], [], "orders", None, False, None, None, [], 10485760, None)
    assert c.logging == S.Logging(access_log="stdout",
                                  redact_headers=["authorization", "cookie", "x-api-key"])
    assert c.admin is None and c.redis is None and c.ai is None
    assert c.consumers == [] and c.auth == {}
    assert c.raw["routes"][0]["name"] == "orders"


def test_frozen():
    c = ok(MINIMAL)
    with pytest.raises(AttributeError):
        c.drain_timeout_s = 1
    with pytest.raises(AttributeError):
        c.routes[0].name = "x"


@pytest.mark.parametrize("bind,host,port", [
    ("127.0.0.1:8080", "127.0.0.1", 8080),
    ("0.0.0.0:0", "0.0.0.0", 0),
    ("[::1]:8080", "::1", 8080),
    ("[::]:443", "::", 443),
    ("localhost:65535", "localhost", 65535),
])
def test_bind_parsing(bind, host, port):
    c = ok(f'listeners: [{{bind: "{bind}"}}]')
    assert (c.listeners[0].host, c.listeners[0].port, c.listeners[0].bind) == (host, port, bind)


@pytest.mark.parametrize("bind,msg", [
    ("8080", "expected host:port, got a bare port 8080"),
    ('"8080"', "expected host:port (IPv6 as [::1]:8080), got '8080'"),
    ('"::1:8080"', "IPv6 addresses need brackets, e.g. [::1]:8080"),
    ('"[::1]8080"', "expected host:port"),
    ('"[1.2.3.4]:80"', "is not an IPv6 address"),
    ('"127.0.0.1:65536"', "invalid port '65536'"),
    ('"127.0.0.1:"', "invalid port ''"),
    ('"127.0.0.1:8o"', "invalid port"),
    ('"bad_host!:80"', "invalid host 'bad_host!'"),
    ('":80"', "expected host:port"),
])
def test_bind_errors(bind, msg):
    errs = errors_of(f"listeners: [{{bind: {bind}}}]")
    assert len(errs) == 1 and errs[0].startswith("listeners[0].bind: ") and msg in errs[0], errs


def test_listeners_required_and_nonempty():
    assert errors_of("routes: []") == ["listeners: required"]
    assert errors_of("listeners: []") == ["listeners: at least one listener is required"]


def test_listener_bind_duplicates():
    errs = errors_of("""
        listeners:
          - bind: 127.0.0.1:8080
          - bind: 127.0.0.1:9090
          - bind: 127.0.0.1:8080
          - bind: 0.0.0.0:9090
          - bind: 127.0.0.1:0
          - bind: 127.0.0.1:0
    """)
    assert errs == [
        "listeners[2].bind: 127.0.0.1:8080 clashes with listeners[0].bind",
        "listeners[3].bind: 0.0.0.0:9090 clashes with listeners[1].bind",
    ]


@pytest.mark.parametrize("url,scheme,host,port,path", [
    ("http://127.0.0.1:9001", "http", "127.0.0.1", 9001, ""),
    ("http://example.com", "http", "example.com", 80, ""),
    ("https://example.com", "https", "example.com", 443, ""),
    ("HTTPS://Example.com:8443/base/", "https", "example.com", 8443, "/base"),
    ("http://[::1]:9000/v1", "http", "::1", 9000, "/v1"),
])
def test_target_url(url, scheme, host, port, path):
    c = ok(f"""
        listeners: [{{bind: 127.0.0.1:8080}}]
        upstreams: {{u: {{targets: [{{url: "{url}", weight: 3}}]}}}}
    """)
    t = c.upstreams["u"].targets[0]
    assert (t.url, t.scheme, t.host, t.port, t.path, t.weight) == (url, scheme, host, port, path, 3)
    assert t.tls == (scheme == "https")


@pytest.mark.parametrize("url,msg", [
    ("ftp://h", "scheme must be http:// or https://"),
    ("h:80", "scheme must be"),
    ("http://user:pw@h", "credentials in the URL are not allowed"),
    ("http://h/x?a=1", "must not have a query or fragment"),
    ("http://h:70000", "Port out of range"),
    ("http://h:", "empty port"),
    ("http://", "invalid host"),
    ("http://bad host", "spaces or control characters"),
])
def test_target_url_errors(url, msg):
    errs = errors_of(f"""
        listeners: [{{bind: 127.0.0.1:8080}}]
        upstreams: {{orders: {{targets: [{{url: "http://ok"}}, {{url: "{url}"}}]}}}}
    """)
    assert len(errs) == 1 and errs[0].startswith("upstreams.orders.targets[1].url: "), errs
    assert msg in errs[0], errs


def test_upstream_options_and_hash():
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080}]
        upstreams:
          a: {targets: ["http://h1", "http://h2:81"], balance: hash}
          b: {targets: [{url: "http://h"}], balance: hash, hash_on: "header:X-User"}
          c: {targets: [{url: "http://h"}], balance: least_conn, connect_timeout_s: 0.5,
              read_timeout_s: 2, keepalive: 0, retries: 0, tls_verify: false}
    """)
    a, b, cc = c.upstreams["a"], c.upstreams["b"], c.upstreams["c"]
    assert [t.port for t in a.targets] == [80, 81]
    assert a.hash_on == S.HashOn("ip", None) and b.hash_on == S.HashOn("header", "x-user")
    assert (cc.balance, cc.connect_timeout_s, cc.read_timeout_s, cc.keepalive, cc.retries,
            cc.tls_verify, cc.hash_on) == ("least_conn", 0.5, 2.0, 0, 0, False, None)


def test_upstream_errors():
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080}]
        upstreams:
          a: {targets: []}
          b: {targets: [{url: "http://h"}], balance: random, hash_on: ip, keepalive: -1,
              retries: 1.5, connect_timeout_s: 0, tls_verify: "yes", colour: red}
          c: {targets: ["http://h", "http://h:80"]}
          d: {}
    """)
    assert errs == [
        "upstreams.a.targets: must not be empty",
        "upstreams.b.balance: must be one of round_robin | least_conn | hash, got 'random'",
        "upstreams.b.hash_on: only used with balance: hash",
        "upstreams.b.keepalive: must be >= 0",
        "upstreams.b.retries: expected an integer, got number",
        "upstreams.b.connect_timeout_s: must be > 0",
        "upstreams.b.tls_verify: expected true or false, got string",
        "upstreams.b.colour: unknown key",
        "upstreams.c.targets[1]: duplicate of upstreams.c.targets[0]",
        "upstreams.d.targets: required",
    ]


def test_routes_core():
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080}]
        upstreams: {orders: {targets: ["http://h"]}}
        routes:
          - name: orders
            hosts: [API.example.com, "*.example.org", 10.0.0.1, "[::1]"]
            methods: [GET, POST]
            paths: [/orders, "/orders/{id}", "/static/*", /]
            upstream: orders
            strip_prefix: /api/
            rewrite: "/v2/orders/{id}"
            preserve_host: true
            max_body_bytes: 1048576
            timeout_s: 10
          - paths: [/hello]
            respond: {status: 201, body: "hi", headers: {X-Thing: "a b"}}
          - paths: [/empty]
            respond: {}
    """)
    r0, r1, r2 = c.routes
    assert r0.hosts == ["api.example.com", "*.example.org", "10.0.0.1", "[::1]"]
    assert r0.paths == ["/orders", "/orders/{id}", "/static/*", "/"]
    assert (r0.strip_prefix, r0.rewrite, r0.preserve_host, r0.max_body_bytes, r0.timeout_s) == (
        "/api", "/v2/orders/{id}", True, 1048576, 10.0)
    assert r1.name == "route-1" and r1.upstream is None
    assert r1.respond == S.Respond(status=201, body="hi", headers={"X-Thing": "a b"})
    assert r2.respond == S.Respond(status=200, body="", headers={})


@pytest.mark.parametrize("path,msg", [
    ("orders", "must start with '/'"),
    ("/a//b", "empty segment"),
    ("/a/../b", "dot segment"),
    ("/a/*/b", "only allowed as the whole last segment"),
    ("/a/b*", "only allowed as the whole last segment"),
    ("/a/{x}/{x}", "parameter {x} used twice"),
    ("/a/{x}.json", "must be a whole segment"),
    ("/a/{1x}", "must be a whole segment"),
    ("/a?b=1", "must not contain a query"),
    ("/a b", "invalid character"),
])
def test_route_path_errors(path, msg):
    errs = errors_of(f"""
        listeners: [{{bind: 127.0.0.1:8080}}]
        routes: [{{paths: [/ok, "{path}"], respond: {{}}}}]
    """)
    assert len(errs) == 1 and errs[0].startswith("routes[0].paths[1]: ") and msg in errs[0], errs


def test_route_errors():
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080}]
        upstreams: {orders: {targets: ["http://h"]}}
        routes:
          - name: a
            paths: [/x]
          - name: a
            paths: [/y]
            upstream: ghost
            methods: [get, "GE T", GET, GET]
            hosts: ["bad host", "*.", "a.*.com"]
          - name: "has space"
            paths: [/z]
            upstream: orders
            respond: {status: 200}
          - paths: [/r]
            respond: {status: 600, headers: {"X-A": "a\\r\\nX-Injected: 1", "bad name": x}}
            strip_prefix: /p
            rewrite: "/q/{id}"
          - paths: ["/s/{a}"]
            upstream: orders
            rewrite: "/t/{b}"
            strip_prefix: "/s/{a}"
          - "not a mapping"
          - {paths: [], upstream: orders}
          - {upstream: orders}
    """)
    assert errs == [
        "routes[0]: needs one of upstream, respond, ai",
        "routes[1].name: duplicate route name 'a' (also routes[0])",
        "routes[1].upstream: unknown upstream 'ghost' (upstreams: orders)",
        "routes[1].methods[0]: methods are upper-case: 'GET', not 'get'",
        "routes[1].methods[1]: expected an HTTP method, got 'GE T'",
        "routes[1].methods[3]: duplicate of routes[1].methods[2]",
        "routes[1].hosts[0]: invalid host 'bad host' (a name, an IP, or '*.' followed by a name)",
        "routes[1].hosts[1]: invalid host '*.' (a name, an IP, or '*.' followed by a name)",
        "routes[1].hosts[2]: invalid host 'a.*.com' (a name, an IP, or '*.' followed by a name)",
        "routes[2].name: expected a route name (letters, digits, . _ - @ + : / ; no spaces), "
        "got 'has space'",
        "routes[2].respond: a route has exactly one of upstream, respond, ai (also has upstream)",
        "routes[3].respond.status: must be <= 599",
        "routes[3].respond.headers.X-A: header values must not contain control characters "
        "(CR, LF, NUL, ...)",
        "routes[3].respond.headers.bad name: invalid header name 'bad name'",
        "routes[3].strip_prefix: only applies to routes with an upstream (this one has respond)",
        "routes[3].rewrite: only applies to routes with an upstream (this one has respond)",
        "routes[3].rewrite: {id} is not a parameter of any path of this route",
        "routes[4].rewrite: {b} is not a parameter of any path of this route",
        "routes[4].strip_prefix: must be a plain path prefix starting with '/', got '/s/{a}'",
        "routes[5]: expected a mapping, got string",
        "routes[6].paths: must not be empty",
        "routes[7].paths: required",
    ]


def test_limits_and_drain():
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080}]
        drain_timeout_s: 0
        limits: {max_body_bytes: 0, max_connections_per_ip: 5, header_timeout_s: 0.25}
        routes: [{paths: [/a], respond: {}, max_body_bytes: 5}, {paths: [/b], respond: {}}]
    """)
    assert c.drain_timeout_s == 0
    assert (c.limits.max_body_bytes, c.limits.max_connections_per_ip, c.limits.header_timeout_s,
            c.limits.max_headers) == (0, 5, 0.25, 100)
    assert [r.max_body_bytes for r in c.routes] == [5, 0]
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080}]
        drain_timeout_s: -1
        limits: {max_headers: 0, max_connections: true, body_timeout_s: .inf, max_body_bytes: x}
    """)
    assert errs == [
        "drain_timeout_s: must be >= 0",
        "limits.max_headers: must be > 0",
        "limits.max_connections: expected an integer, got boolean",
        "limits.body_timeout_s: must be a finite number",
        "limits.max_body_bytes: expected an integer, got string",
    ]


def test_logging(tmp_path):
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080}]
        logging: {access_log: off, redact_headers: [Authorization, X-Secret]}
    """)
    assert c.logging == S.Logging(access_log="off", redact_headers=["authorization", "x-secret"])
    c = ok(f"""
        listeners: [{{bind: 127.0.0.1:8080}}]
        logging: {{access_log: logs/access.log}}
    """, base_dir=str(tmp_path)) if (tmp_path / "logs").mkdir() is None else None
    assert c.logging.access_log == str(tmp_path / "logs" / "access.log")
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080}]
        logging: {access_log: /nonexistent-dir/a.log, redact_headers: authorization}
    """)
    assert errs == ["logging.access_log: directory does not exist: /nonexistent-dir",
                    "logging.redact_headers: expected a list, got string"]


def test_json_input_by_extension_and_sniff(tmp_path):
    doc = {"listeners": [{"bind": "127.0.0.1:8080"}],
           "routes": [{"paths": ["/a"], "respond": {"status": 204}}]}
    p = tmp_path / "gw.json"
    p.write_text(json.dumps(doc))
    assert load_config(str(p), {}).routes[0].respond.status == 204
    assert parse_config(json.dumps(doc), {}).routes[0].respond.status == 204
    assert parse_config(json.dumps(doc).encode(), {}).routes[0].respond.status == 204
    assert parse_config(doc, {}).routes[0].respond.status == 204
    p2 = tmp_path / "gw.conf"  # unknown extension: sniffed
    p2.write_text(json.dumps(doc))
    assert load_config(str(p2), {}).routes[0].respond.status == 204
    bad = tmp_path / "bad.json"
    bad.write_text('{"listeners": [{"bind": "127.0.0.1:8080"}], "drain_timeout_s": 1, "drain_timeout_s": 2}')
    assert check_file(str(bad)) == ["drain_timeout_s: duplicate key"]
    bad.write_text('{"listeners": [{"bind": 1}')
    (err,) = check_file(str(bad))
    assert err.startswith(f"{bad}: invalid JSON at line 1")
    bad.write_text('{"listeners": [{"bind": "127.0.0.1:8080"}], "drain_timeout_s": NaN}')
    (err,) = check_file(str(bad))
    assert "NaN is not a valid JSON number" in err


def test_yaml_file_and_check_file(tmp_path):
    p = tmp_path / "gw.yaml"
    p.write_text(MINIMAL)
    assert check_file(str(p)) == []
    assert load_config(str(p), {}).source == str(p)
    assert check_file(str(tmp_path / "missing.yaml")) == [
        f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]
    p.write_text("listeners: [\n")
    (err,) = check_file(str(p))
    assert err.startswith(f"{p}: invalid YAML at line")
    p.write_text("")
    assert check_file(str(p)) == [f"{p}: the config is empty"]
    p.write_text("- a\n- b\n")
    assert check_file(str(p)) == [f"{p}: the top level must be a mapping, got list"]
    p.write_bytes(b"listeners: \xff\n")
    assert check_file(str(p)) == [f"{p}: not valid UTF-8 (byte 11)"]


def test_yaml_12_scalars():
    """`off`/`no`/`on` stay strings, base-60 and dates are not reinterpreted."""
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080}]
        logging: {access_log: off}
        routes: [{paths: [/a], respond: {body: 2027-06-30, headers: {X-A: "1"}}}]
    """)
    assert c.logging.access_log == "off"
    assert c.routes[0].respond.body == "2027-06-30"
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080}]
        upstreams: {u: {targets: ["http://h"], tls_verify: no}}
    """)
    assert errs == ["upstreams.u.tls_verify: expected true or false, got string"]


def test_yaml_duplicate_keys():
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080}]
        routes:
          - paths: [/a]
            respond: {}
            paths: [/b]
    """)
    assert errs == ["routes[0].paths: duplicate key (line 6; first at line 4)"]


def test_unknown_keys_with_hint():
    errs = errors_of("""
        listeners: [{bind: 127.0.0.1:8080, tsl: {}}]
        routs: []
    """)
    assert errs == ["listeners[0].tsl: unknown key (did you mean 'tls'?)",
                    "routs: unknown key (did you mean 'routes'?)"]


def test_config_error_is_exception_with_lines():
    with pytest.raises(ConfigError) as info:
        parse_config("listeners: []\nfoo: 1\n", {})
    assert str(info.value) == "listeners: at least one listener is required\nfoo: unknown key"


def test_yaml_anchors_merge_keys_and_x_keys():
    c = ok("""
        listeners: [{bind: 127.0.0.1:8080}]
        x-timeouts: &t {connect_timeout_s: 1, read_timeout_s: 2}
        upstreams:
          a: {<<: *t, targets: ["http://h"], read_timeout_s: 5}
          b: &b {targets: ["http://h2"]}
          c: *b
    """)
    a = c.upstreams["a"]
    assert (a.connect_timeout_s, a.read_timeout_s) == (1, 5)
    assert c.upstreams["c"].targets == c.upstreams["b"].targets
    assert "x-timeouts" in c.raw
    assert errors_of("listeners: [{bind: 127.0.0.1:8080, x-note: 1}]") == [
        "listeners[0].x-note: unknown key"]
