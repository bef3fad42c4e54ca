"""The registration API: a policy owns its keys (fastgate.config.sections), the loader walks
the registered ones, and Route/Config read them as attributes."""
import dataclasses
import pickle

import pytest

import fastgate.policies
from fastgate.config import schema as S
from fastgate.config import sections
from fastgate.config.loader import route_level_keys, top_level_keys
from fastgate.policies.cors.config import Cors
from fastgate.policies.rate_limit.config import RateLimit

from tests.config.config_helpers import errors_of, ok

L = "listeners: [{bind: 127.0.0.1:8080}]\n"


@pytest.fixture
def sample_policy(monkeypatch):
    """tests/config/sample_policy registered with one line, as a new built-in policy is."""
    monkeypatch.setattr(fastgate.policies, "PENDING",
                        fastgate.policies.PENDING + ("tests.config.sample_policy",))
    monkeypatch.setattr(sections, "_registered", None)
    yield
    monkeypatch.setattr(sections, "_registered", None)


def test_registry_order_and_builders_unchanged():
    assert list(sections.route_keys()) == ["ip", "cors", "waf", "lifecycle", "auth",
                                           "subscription", "rate_limits", "budget", "transform",
                                           "validate", "plugins"]
    assert list(sections.top_keys()) == ["overload", "consumers", "auth", "subscriptions"]
    assert "auth" in top_level_keys() and "cors" in route_level_keys()
    assert [b.__module__ for b in fastgate.policies.load_builders()] == [
        "fastgate.policies.overload",
        "fastgate.policies.ip", "fastgate.policies.cors", "fastgate.policies.waf",
        "fastgate.policies.lifecycle",
        "fastgate.policies.auth", "fastgate.policies.subscription",
        "fastgate.policies.rate_limit", "fastgate.policies.budget",
        "fastgate.policies.transform", "fastgate.policies.validate",
        "fastgate.policies.plugins"]


def test_a_new_policy_needs_no_loader_or_schema_edit(sample_policy):
    c = ok(L + """
greetings: {hi: "Hello"}
routes:
  - {paths: [/a], respond: {}, greeting: {use: hi, loud: true}}
  - {paths: [/b], respond: {}}
""")
    Greeting = S.Greeting
    assert c.greetings == {"hi": "Hello"}
    assert c.routes[0].greeting == Greeting("Hello", True)
    assert c.routes[1].greeting is None
    assert errors_of(L + """
greetings: {hi: "Hello"}
routes: [{paths: [/a], respond: {}, greeting: {use: bye}, greting: {}}]
""") == ["routes[0].greeting.use: unknown greeting 'bye'",
         "routes[0].greting: unknown key (did you mean 'greeting'?)"]
    assert errors_of(L + "greetinsg: {}") == ["greetinsg: unknown key (did you mean 'greetings'?)"]


def test_keys_are_registered_once_and_never_shadow_core_fields(monkeypatch):
    import types
    mod = types.ModuleType("fgtest_dup.config")
    mod.SECTIONS = (sections.RouteKey("paths", lambda *a: None),)
    monkeypatch.setitem(__import__("sys").modules, "fgtest_dup", types.ModuleType("fgtest_dup"))
    monkeypatch.setitem(__import__("sys").modules, "fgtest_dup.config", mod)
    monkeypatch.setattr(fastgate.policies, "PENDING", fastgate.policies.PENDING + ("fgtest_dup",))
    monkeypatch.setattr(sections, "_registered", None)
    with pytest.raises(ValueError, match="'paths' is already taken"):
        sections.registered()
    monkeypatch.setattr(sections, "_registered", None)


def test_route_keeps_policies_in_one_mapping():
    limit = RateLimit(limit=1, per="second", per_s=1, burst=1, by="ip", by_kind="ip")
    r = S.Route(name="r", paths=["/"], rate_limits=[limit], cors=None)
    assert r.policies == {"rate_limits": [limit]}
    assert r.rate_limits == [limit] and r.cors is None and r.auth is None
    assert S.Route(name="r", paths=["/"]).rate_limits == []
    # a value equal to the key's default is not stored: equality as before the mapping
    assert S.Route(name="r", paths=["/"], rate_limits=[]) == S.Route(name="r", paths=["/"])
    assert S.Route(name="r", paths=["/"], rate_limits=[limit]) != S.Route(name="r", paths=["/"])
    cors = Cors(origins=["*"])
    r2 = dataclasses.replace(r, cors=cors)
    assert r2.cors == cors and r2.rate_limits == [limit] and r.cors is None
    assert dataclasses.replace(r2, cors=None).policies == {"rate_limits": [limit]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cors = cors
    with pytest.raises(AttributeError):
        r.no_such_key
    with pytest.raises(TypeError, match="unexpected keyword argument 'corz'"):
        S.Route(name="r", paths=["/"], corz=cors)
    assert pickle.loads(pickle.dumps(r2)) == r2


def test_config_keeps_policy_sections_in_one_mapping():
    c = ok(L + "consumers: [{name: alice}]\nauth: {keys: {type: api_key}}\n")
    assert set(c.sections) == {"consumers", "auth"}
    assert c.consumers == [S.Consumer(name="alice")]
    assert c.auth == {"keys": S.ApiKeyAuth(name="keys")}
    bare = S.Config(listeners=[])
    assert bare.auth == {} and bare.consumers == [] and bare.sections == {}
    assert dataclasses.replace(bare, consumers=c.consumers).consumers == c.consumers
