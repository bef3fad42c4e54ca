"""Configuration: load a YAML/JSON file into the validated, immutable model of schema.py.

    from fastgate.config import load_config, parse_config, ConfigError, Config

``load_config(path, env=None)`` / ``parse_config(data, env=None, source=...)`` return a
``Config`` or raise ``ConfigError`` whose ``errors`` lists every problem as
"key.path: message" in document order. ``check_file(path)`` returns that list ([] = valid).
Features that validate but are not built yet are listed in ``UNSUPPORTED`` (features.py).
"""
from __future__ import annotations

from .features import UNSUPPORTED, unsupported_errors
from .loader import ConfigError, load_config, parse_config
from .schema import Config


def check_file(path: str, env=None) -> list[str]:
    """Every error in the config file at ``path`` (one "key.path: message" each); [] if valid."""
    try:
        load_config(path, env)
    except ConfigError as exc:
        return exc.errors
    return []


__all__ = ["Config", "ConfigError", "UNSUPPORTED", "check_file", "load_config", "parse_config",
           "unsupported_errors"]
