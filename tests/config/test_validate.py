"""validate(): one verdict and one set of error lines for a file, text, bytes and a dict."""
import json

import pytest
import yaml

from fastgate.cli import _load_or_report
from fastgate.config import Config, ConfigError, check_file, load_config, validate

SECRET_40 = "k7#Qv9!zR2@mX4$pL8^wN1&bT6*yH3(eA5%u0?cD"   # enough for HS256, not for HS512


def doc(secret=SECRET_40, algorithms=("HS512",), **extra):
    d = {
        "listeners": [{"bind": "127.0.0.1:8080"}],
        "auth": {"j": {"type": "jwt", "secret": secret, "algorithms": list(algorithms)}},
        "routes": [{"name": "r", "paths": ["/r"], "auth": {"using": ["j"]},
                    "respond": {"status": 200}}],
    }
    d.update(extra)
    return d


WEAK_LINE = ("auth.j.secret: HMAC secret is 40 bytes; HS512 needs at least 64 "
             "(RFC 7518 section 3.2)")


def errors_of(*args, **kw):
    with pytest.raises(ConfigError) as exc:
        validate(*args, **kw)
    return exc.value.errors


def forms(tmp_path, d):
    """The same document as a file path (str and Path), YAML text, JSON bytes and a dict."""
    p = tmp_path / "gw.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return [
        ((str(p),), {}),
        ((p,), {}),
        ((), {"document": yaml.safe_dump(d, sort_keys=False), "base_dir": str(tmp_path)}),
        ((), {"document": json.dumps(d).encode(), "base_dir": str(tmp_path)}),
        ((), {"document": d, "base_dir": str(tmp_path)}),
    ]


def test_valid_in_every_form(tmp_path):
    for args, kw in forms(tmp_path, doc(algorithms=["HS256"])):
        cfg = validate(*args, env={}, **kw)
        assert isinstance(cfg, Config) and cfg.routes[0].name == "r"


def test_a_high_audit_finding_is_an_error_in_every_form(tmp_path):
    assert load_config(_write(tmp_path, doc()), {})     # the loader alone accepts it
    for args, kw in forms(tmp_path, doc()):
        assert errors_of(*args, env={}, **kw) == [WEAK_LINE]


def _write(tmp_path, d) -> str:
    p = tmp_path / "plain.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(p)


def test_check_run_and_check_file_say_the_same(tmp_path):
    path = _write(tmp_path, doc())
    assert _load_or_report(path) == (None, [WEAK_LINE])
    assert check_file(path) == [WEAK_LINE]
    assert errors_of(path) == [WEAK_LINE]


def test_schema_errors_come_alone(tmp_path):
    # As `fastgate check` always did: the audit needs a Config, so it runs only on a valid one.
    bad = doc(bogus=1)
    for args, kw in forms(tmp_path, bad):
        assert errors_of(*args, env={}, **kw) == ["bogus: unknown key"]


def test_every_high_finding_is_listed(tmp_path):
    d = doc()
    d["auth"]["k"] = {"type": "jwt", "secret": SECRET_40, "algorithms": ["HS384"]}
    d["routes"][0]["auth"]["using"].append("k")
    assert errors_of(document=d, env={}) == [
        WEAK_LINE,
        "auth.k.secret: HMAC secret is 40 bytes; HS384 needs at least 48 (RFC 7518 section 3.2)",
    ]


def test_a_secret_from_the_environment_is_judged_too():
    d = doc(secret="${JWT_SECRET}")
    assert errors_of(document=d, env={"JWT_SECRET": SECRET_40}) == [WEAK_LINE]
    assert validate(document=d, env={"JWT_SECRET": SECRET_40 * 2}).auth["j"].secret == SECRET_40 * 2
    assert errors_of(document=d, env={}) == [
        "auth.j.secret: environment variable JWT_SECRET is not set (use ${JWT_SECRET:-default} "
        "for a default)"]


def test_relative_files_resolve_against_base_dir(tmp_path):
    (tmp_path / "keys.json").write_text("not json")
    d = {"listeners": [{"bind": "127.0.0.1:8080"}],
         "auth": {"j": {"type": "jwt", "jwks_file": "keys.json"}},
         "routes": [{"paths": ["/r"], "auth": {"using": ["j"]}, "respond": {"status": 200}}]}
    (line,) = errors_of(document=d, base_dir=str(tmp_path), env={})
    assert line.startswith("auth.j.jwks_file: not a usable JWKS")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert errors_of(document=d, base_dir=str(elsewhere), env={}) == [
        f"auth.j.jwks_file: file not found: {elsewhere / 'keys.json'}"]


def test_unreadable_and_unparsable_documents(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert errors_of(str(missing)) == [f"{missing}: cannot read: No such file or directory"]
    assert errors_of(tmp_path) == [f"{tmp_path}: cannot read: Is a directory"]
    (line,) = errors_of(document="listeners: [", source="PUT /config")
    assert line.startswith("PUT /config: invalid YAML")
    assert errors_of(document=b"") == ["<config>: the config is empty"]
    assert errors_of(document=["a"]) == ["<config>: expected a mapping or text, got list"]


def test_path_or_document_not_both():
    with pytest.raises(TypeError):
        validate()
    with pytest.raises(TypeError):
        validate("gw.yaml", document={})
