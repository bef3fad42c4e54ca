"""Helpers shared by the config tests."""
import textwrap

import pytest

from fastgate.config import ConfigError, parse_config


def errors_of(text, env=None, **kw):
    """The error lines parse_config gives for YAML text (dedented); fails if it is valid."""
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env or {}, **kw)
    return info.value.errors


def ok(text, env=None, **kw):
    return parse_config(textwrap.dedent(text), env or {}, **kw)
