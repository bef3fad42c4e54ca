"""Loader behaviours the config fuzzer (tests/fuzz/fuzz_config.py) found wrong: every error is
one "key.path: message" line, as `fastgate check` prints them. The inputs themselves replay
from tests/fuzz/corpus/config/ in tests/fuzz/test_fuzz_smoke.py."""
import pytest

from fastgate.config import ConfigError, parse_config

VALID = {"listeners": [{"bind": "127.0.0.1:8080"}],
         "routes": [{"name": "r", "paths": ["/"], "respond": {"status": 200}}]}


def errors_of(doc):
    with pytest.raises(ConfigError) as info:
        parse_config(doc, {})
    for line in info.value.errors:
        assert "\n" not in line and "\r" not in line, line
        path, sep, msg = line.partition(": ")
        assert sep and path.strip() and not path[0].isspace() and msg.strip(), line
    return info.value.errors


def test_yaml_reader_error_is_one_line():
    """PyYAML's ReaderError (a control character in the text) renders over two lines."""
    [line] = errors_of(b"listeners: \x01")
    assert line.startswith("<config>: invalid YAML: unacceptable character #x0001")


@pytest.mark.parametrize("key, shown", [
    ("a\nb", '"a\\nb"'), (" ", '" "'), ("", '""'), ("x: y", '"x: y"'), ("tab\t", '"tab\\t"'),
    ("ok_key", "ok_key"), ("caf\u00e9", "caf\u00e9"),
])
def test_odd_keys_are_quoted_in_error_paths(key, shown):
    """A key with a newline split its error over lines; a blank or ": " one made the line
    ambiguous. Such keys are shown quoted (escaped); ordinary ones as they are."""
    doc = dict(VALID, **{key: 1})
    doc["routes"] = [dict(VALID["routes"][0], **{key: 2})]
    assert errors_of(doc) == [f"routes[0].{shown}: unknown key", f"{shown}: unknown key"]


def test_odd_keys_from_yaml_text():
    errors = errors_of(b'listeners: [{bind: "127.0.0.1:1"}]\n"a\\nb": 1\n" ": 2\n')
    assert '"a\\nb": unknown key' in errors and '" ": unknown key' in errors


def test_size_and_depth_limits_are_key_path_lines():
    """The alias-expansion and nesting cut-offs had no "key.path: " prefix at all."""
    laughs = b"a: &a [1,1,1,1,1,1,1,1,1,1]\n" + b"".join(
        b"%s: &%s [%s]\n" % (n, n, b",".join([b"*" + p] * 10))
        for p, n in ((b"a", b"b"), (b"b", b"c"), (b"c", b"d"), (b"d", b"e"))) + \
        b"f: [*e,*e,*e]\n"
    [line] = errors_of(laughs)
    assert line.startswith("<config>: config too large (more than 200000 values")
    [line] = errors_of(b"listeners: " + b"[" * 70 + b"]" * 70)
    assert line == "listeners" + "[0]" * 64 + ": config nested deeper than 64 levels"


def test_values_quoted_in_messages_cannot_split_the_line():
    """A message that quotes a value from the document (here the bind address) carried its
    newline into the output."""
    doc = dict(VALID, listeners=[{"bind": "a:\nb:80"}])
    assert errors_of(doc) == ["listeners[0].bind: IPv6 addresses need brackets, e.g. [a:\\nb]:80"]


def test_lone_surrogates_are_errors_not_crashes():
    """A JSON "\\ud800" escape, or an environment variable that is not UTF-8 (os.environ
    holds it surrogate-escaped), gave a str that cannot be encoded: the JWT secret's length
    check raised UnicodeEncodeError out of the loader."""
    import json
    auth = {"s": {"type": "jwt", "secret": "\ud800" + "x" * 40}}
    text = json.dumps(dict(VALID, auth=auth))
    assert "\\ud800" in text
    assert errors_of(text) == ["auth.s.secret: not valid Unicode text (a lone surrogate code point)"]
    with pytest.raises(ConfigError) as info:
        parse_config(dict(VALID, auth={"s": {"type": "jwt", "secret": "${S}"}}),
                     {"S": "a" * 40 + "\udcff"})
    assert info.value.errors == [
        "auth.s.secret: not valid Unicode text (a lone surrogate code point)"]
    for line in errors_of(dict(VALID, **{"\udcff": 1})):
        line.encode()   # printable: the key is shown escaped


def test_text_with_a_lone_surrogate_is_an_error_not_a_crash():
    """parse_config(str) handed such text to the YAML reader, which raised
    UnicodeEncodeError."""
    assert errors_of("listeners: [\ud800]") == [
        "<config>: not valid Unicode text (a lone surrogate code point at character 12)"]
