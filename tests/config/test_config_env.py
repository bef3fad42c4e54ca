"""${VAR} substitution: defaults, missing, escapes, typed fields, and no structure injection."""
import pytest

from fastgate.config import parse_config

from tests.config.config_helpers import errors_of, ok

BASE = "listeners: [{bind: 127.0.0.1:8080}]\n"


def body(text, env):
    c = ok(BASE + f"routes: [{{paths: [/a], respond: {{body: {text}}}}}]\n", env)
    return c.routes[0].respond.body


@pytest.mark.parametrize("text,env,expected", [
    ('"${A}"', {"A": "x"}, "x"),
    ('"pre-${A}-post"', {"A": "x"}, "pre-x-post"),
    ('"${A}${B}"', {"A": "1", "B": "2"}, "12"),
    ('"${A:-dflt}"', {}, "dflt"),
    ('"${A:-dflt}"', {"A": ""}, "dflt"),          # shell ":-": empty takes the default too
    ('"${A:-dflt}"', {"A": "set"}, "set"),
    ('"${A:-}"', {}, ""),
    ('"${A:-a b:c/d}"', {}, "a b:c/d"),
    ('"${A}"', {"A": ""}, ""),                     # set but empty, no default: empty
    ('"$${A}"', {"A": "x"}, "${A}"),               # escape
    ('"$${A} and ${A}"', {"A": "x"}, "${A} and x"),
    ('"cost $5"', {}, "cost $5"),
    ('"$$"', {}, "$$"),
    ('"${A:-$5}"', {}, "$5"),
])
def test_substitution(text, env, expected):
    assert body(text, env) == expected


def test_missing_variable_is_an_error_at_its_key_path():
    errs = errors_of(BASE + """
routes:
  - paths: [/a]
    respond: {body: "${MISSING}", headers: {X-A: "${ALSO_MISSING}"}}
""")
    assert errs == [
        "routes[0].respond.body: environment variable MISSING is not set "
        "(use ${MISSING:-default} for a default)",
        "routes[0].respond.headers.X-A: environment variable ALSO_MISSING is not set "
        "(use ${ALSO_MISSING:-default} for a default)",
    ]


@pytest.mark.parametrize("text", ['"${A"', '"${}"', '"${1A}"', '"${A-x}"', '"${A:-${B}}"',
                                  '"${A B}"'])
def test_malformed_reference(text):
    errs = errors_of(BASE + f"routes: [{{paths: [/a], respond: {{body: {text}}}}}]\n", {"A": "x"})
    assert errs == ["routes[0].respond.body: malformed variable reference: use ${NAME}, "
                    "${NAME:-default}, or $${ for a literal ${"]


@pytest.mark.parametrize("value", [
    "x\nroutes: []",
    "{paths: [/evil], respond: {}}",
    "[1, 2]",
    "\"quoted\": true",
    "*alias",
    "true",
    "123",
])
def test_values_cannot_inject_structure(value):
    c = ok(BASE + 'routes: [{paths: [/a], respond: {body: "${V}"}}]\n', {"V": value})
    assert c.routes[0].respond.body == value
    assert len(c.routes) == 1


def test_substituted_text_feeds_typed_fields():
    c = ok("""
        listeners: [{bind: "${HOST:-127.0.0.1}:${PORT}"}]
        drain_timeout_s: "${DRAIN:-2.5}"
        limits: {max_headers: "${MAXH}"}
        upstreams: {u: {targets: ["${UPSTREAM_URL}"], tls_verify: "${VERIFY:-true}"}}
    """, {"PORT": "9000", "MAXH": "50", "UPSTREAM_URL": "https://h:8443/p", "VERIFY": "false"})
    assert (c.listeners[0].host, c.listeners[0].port) == ("127.0.0.1", 9000)
    assert c.drain_timeout_s == 2.5 and c.limits.max_headers == 50
    t = c.upstreams["u"].targets[0]
    assert (t.scheme, t.host, t.port, t.path) == ("https", "h", 8443, "/p")
    assert c.upstreams["u"].tls_verify is False


def test_plain_strings_do_not_become_numbers():
    """Only text that came from a variable is parsed; a quoted "50" in the file is a string."""
    assert errors_of(BASE + 'limits: {max_headers: "50"}') == [
        "limits.max_headers: expected an integer, got string"]
    assert errors_of(BASE + 'limits: {max_headers: "${N}"}', {"N": "fifty"}) == [
        "limits.max_headers: expected an integer, got string"]


def test_keys_are_not_substituted():
    assert errors_of(BASE + '"${K}": 1', {"K": "drain_timeout_s"}) == ["${K}: unknown key"]


def test_raw_keeps_references_not_secrets():
    c = ok(BASE + 'routes: [{paths: [/a], respond: {body: "${SECRET}"}}]', {"SECRET": "hunter2"})
    assert c.routes[0].respond.body == "hunter2"
    assert c.raw["routes"][0]["respond"]["body"] == "${SECRET}"
    assert "hunter2" not in repr(c.raw)


def test_env_none_means_os_environ(monkeypatch):
    monkeypatch.setenv("FG_TEST_BODY", "from-os")
    c = parse_config(BASE + 'routes: [{paths: [/a], respond: {body: "${FG_TEST_BODY}"}}]')
    assert c.routes[0].respond.body == "from-os"


def test_failed_variable_gives_one_error_not_two():
    """The empty value left by a missing variable is not reported again as 'must not be empty'."""
    assert errors_of(BASE + 'upstreams: {u: {targets: [{url: "${U}"}]}}') == [
        "upstreams.u.targets[0].url: environment variable U is not set "
        "(use ${U:-default} for a default)"]


def test_json_substitution():
    c = parse_config('{"listeners": [{"bind": "127.0.0.1:${P}"}]}', {"P": "81"})
    assert c.listeners[0].port == 81


def test_alias_bomb_is_cut_off():
    doc = BASE + "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        doc += f"a{i}: &a{i} [*a{i - 1 if i > 1 else ''}, *a{i - 1 if i > 1 else ''}, " \
               f"*a{i - 1 if i > 1 else ''}, *a{i - 1 if i > 1 else ''}, " \
               f"*a{i - 1 if i > 1 else ''}, *a{i - 1 if i > 1 else ''}, " \
               f"*a{i - 1 if i > 1 else ''}, *a{i - 1 if i > 1 else ''}, " \
               f"*a{i - 1 if i > 1 else ''}, *a{i - 1 if i > 1 else ''}]\n"
    doc = doc.replace("*a0", "*a")
    errs = errors_of(doc)
    assert len(errs) == 1 and "config too large" in errs[0]


def test_recursive_yaml_is_cut_off():
    errs = errors_of(BASE + "loop: &l [*l]\n")
    assert len(errs) == 1 and "nested deeper than 64 levels" in errs[0]
