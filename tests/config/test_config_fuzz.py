"""Whatever the document, the loader answers with a Config or a ConfigError -- never a crash --
and every error line names a key path."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgate.config import ConfigError, parse_config
from fastgate.config.loader import route_level_keys, top_level_keys
from fastgate.policies.auth.config import AUTH_KEYS


KEYS = sorted(set(top_level_keys()) | set(route_level_keys()) | {
    k for ks in AUTH_KEYS.values() for k in ks} | {
    "bind", "tls", "token", "url", "targets", "weight", "balance", "hash_on", "limit", "per",
    "burst", "by", "scope", "unit", "status", "body", "headers", "providers", "models", "model",
    "provider", "price", "fallbacks", "endpoint", "prompt", "template", "using", "mode", "rules",
    "origins", "allow", "deny", "state", "sunset", "request", "response", "set_headers",
    "cert_file", "key_file", "cluster_nodes", "access_log", "redact_headers", "usd"})

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["127.0.0.1:8080", "[::1]:0", "http://h:1/p", "/a/{x}", "/s/*", "GET",
                     "consumer", "header:X", "claim:c", "second", "cluster", "tokens", "sha256:" +
                     "a" * 64, "${X}", "${X:-1}", "$${", "off", "2027-06-30T00:00:00Z", "*",
                     "10.0.0.0/8", "chat", "jwt", "api_key", "hash", "orders", "", "\x00"]),
    st.text(max_size=12),
)


def trees():
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner,
                            max_size=5),
        ),
        max_leaves=30,
    )


def _check(doc):
    try:
        parse_config(doc, {"X": "1"})
    except ConfigError as exc:
        assert exc.errors, "a ConfigError always carries at least one line"
        for line in exc.errors:
            assert isinstance(line, str) and ": " in line


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), trees(), max_size=6))
def test_random_documents_never_crash(doc):
    _check(doc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), trees(), max_size=6), max_size=4),
       st.dictionaries(st.sampled_from(KEYS), trees(), max_size=4))
def test_random_routes_and_sections_never_crash(routes, section):
    base = {"listeners": [{"bind": "127.0.0.1:8080"}],
            "upstreams": {"orders": {"targets": ["http://127.0.0.1:9"]}},
            "auth": {"k": {"type": "api_key"}},
            "routes": routes}
    _check(base)
    for key in ("admin", "redis", "limits", "logging", "ai"):
        _check({**base, key: section})


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_crashes(text):
    _check(text)
    _check(json.dumps({"listeners": text}))
