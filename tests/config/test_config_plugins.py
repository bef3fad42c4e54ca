"""routes[].plugins: entry points in `fastgate.plugins`, their classes' JSON Schemas, and
the errors (key paths into `config`) when a name or a config is wrong."""
import pytest

from fastgate.config import ConfigError, check_file, parse_config
from fastgate.config import schema as S
from fastgate.policies.plugins.config import PluginRef, installed_plugins

from tests.config import plugin_samples as P
from tests.config.config_helpers import errors_of, ok

ENTRY_POINTS = """\
[fastgate.plugins]
add-tenant = tests.config.plugin_samples:AddTenant
no-schema = tests.config.plugin_samples:NoSchema
bad-schema = tests.config.plugin_samples:BadSchema
text-schema = tests.config.plugin_samples:TextSchema
not-a-class = tests.config.plugin_samples:not_a_class
broken = fgtest_broken_plugin:Thing
missing = fgtest_no_such_module:Thing
"""

HEAD = "listeners: [{bind: 127.0.0.1:8080}]\n"


@pytest.fixture
def plugins(tmp_path, monkeypatch, all_supported):
    """A dist on sys.path whose entry points name the sample plugins (found by
    importlib.metadata without installing anything), and a plugin module that raises on
    import. The feature gate is opened: the plugin runtime has not landed."""
    dist = tmp_path / "fgtest_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fgtest-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (tmp_path / "fgtest_broken_plugin.py").write_text("raise RuntimeError('no tenant db')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def route(plugins_yaml: str) -> str:
    return HEAD + f"routes:\n  - {{paths: [/a], respond: {{}}, plugins: {plugins_yaml}}}\n"


def test_entry_points_are_found(plugins):
    assert {"add-tenant", "no-schema", "broken"} <= set(installed_plugins())


def test_valid_plugins_in_order(plugins):
    c = ok(route("[{name: add-tenant, config: {header: X-Tenant, weight: 2}}, {name: no-schema},"
                 " {name: add-tenant, config: {header: '${H}'}}]"), {"H": "X-Other"})
    refs = c.routes[0].plugins
    assert refs == [PluginRef("add-tenant", {"header": "X-Tenant", "weight": 2}),
                    PluginRef("no-schema", {}),
                    PluginRef("add-tenant", {"header": "X-Other"})]
    assert [r.cls for r in refs] == [P.AddTenant, P.NoSchema, P.AddTenant]
    # plain data for the plugin: substituted text is a str, not the loader's marker class
    assert type(refs[2].config["header"]) is str
    assert c.routes[0].policies["plugins"] == refs
    # cls is not part of equality; routes without plugins read []
    assert PluginRef("no-schema", {}, cls=int) == PluginRef("no-schema", {})
    assert ok(route("[]")).routes[0].plugins == []
    assert S.Route(name="r", paths=["/"], plugins=refs).plugins == refs


def test_unknown_plugin_lists_the_installed_ones(plugins):
    names = ", ".join(sorted(installed_plugins()))
    assert errors_of(route("[{name: no-schema}, {name: add-tennant, config: {header: X}}]")) == [
        f"routes[0].plugins[1].name: unknown plugin 'add-tennant' (installed in the "
        f"fastgate.plugins entry point group: {names})"]


def test_schema_violations_have_key_paths_into_config(plugins):
    errs = errors_of(route("[{name: no-schema}, {name: add-tenant, config: {header: 3, "
                           "tags: [a, 7], weight: 0, colour: red}}]"))
    assert errs == [
        "routes[0].plugins[1].config: Additional properties are not allowed ('colour' was "
        "unexpected)",
        'routes[0].plugins[1].config.header: 3 is not of type "string"',
        'routes[0].plugins[1].config.tags[1]: 7 is not of type "string"',
        "routes[0].plugins[1].config.weight: 0 is less than the minimum of 1",
    ]
    assert errors_of(route("[{name: add-tenant}]")) == [
        'routes[0].plugins[0].config: "header" is a required property']


def test_a_secret_from_the_environment_is_not_echoed(plugins):
    errs = errors_of(route("[{name: add-tenant, config: {header: X, token: '${TOKEN}'}}]"),
                     {"TOKEN": "hunter2-secret"})
    assert errs == ["routes[0].plugins[0].config.token: \"<from the environment>\" does not "
                    "match \"^tok-\""]


def test_invalid_schemas_name_the_plugin(plugins):
    errs = errors_of(route("[{name: bad-schema}, {name: text-schema}]"))
    assert len(errs) == 2
    assert errs[0].startswith("routes[0].plugins[0].name: plugin 'bad-schema' has an invalid "
                              "config schema: ")
    assert "\n" not in errs[0]
    assert errs[1] == ("routes[0].plugins[1].name: plugin 'text-schema' has an invalid config "
                       "schema: expected a JSON Schema object, got string")


def test_plugins_that_do_not_load_are_config_errors(plugins):
    errs = errors_of(route("[{name: broken}, {name: missing}, {name: not-a-class}]"))
    assert errs == [
        "routes[0].plugins[0].name: plugin 'broken' failed to load (fgtest_broken_plugin:Thing):"
        " RuntimeError: no tenant db",
        "routes[0].plugins[1].name: plugin 'missing' failed to load (fgtest_no_such_module:"
        "Thing): ModuleNotFoundError: No module named 'fgtest_no_such_module'",
        "routes[0].plugins[2].name: plugin 'not-a-class': "
        "tests.config.plugin_samples:not_a_class is not a class (function)",
    ]


def test_plugin_item_shape(plugins):
    assert errors_of(route("{name: add-tenant}")) == [
        "routes[0].plugins: expected a list, got mapping"]
    assert errors_of(route("[{config: {}}, {name: no-schema, config: [x]}, "
                           "{name: add-tenant, config: 5}, {name: no-schema, conf: {}}, "
                           "{name: ''}]")) == [
        "routes[0].plugins[0].name: required",
        "routes[0].plugins[1].config: expected a mapping, got list",
        "routes[0].plugins[2].config: expected a mapping, got integer",
        "routes[0].plugins[3].conf: unknown key (did you mean 'config'?)",
        "routes[0].plugins[4].name: must not be empty",
    ]


def test_each_route_reports_its_own_uses(plugins):
    errs = errors_of(HEAD + """
routes:
  - {paths: [/a], respond: {}, plugins: [{name: broken}]}
  - {paths: [/b], respond: {}, plugins: [{name: broken}, {name: add-tenant, config: {header: 1}}]}
""")
    assert [e.split(":")[0] for e in errs] == [
        "routes[0].plugins[0].name", "routes[1].plugins[0].name",
        "routes[1].plugins[1].config.header"]


def test_a_valid_plugin_config_passes_check(tmp_path, monkeypatch):
    dist = tmp_path / "fgtest_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fgtest-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    p = tmp_path / "gw.yaml"
    p.write_text(route("[{name: add-tenant, config: {header: X}}]"))
    assert check_file(str(p), {}) == []
    cfg = parse_config(route("[{name: add-tenant, config: {header: X}}]"), {})
    assert [r.name for r in cfg.routes[0].plugins] == ["add-tenant"]