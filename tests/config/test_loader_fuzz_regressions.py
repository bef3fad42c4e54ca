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
