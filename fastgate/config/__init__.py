"""Configuration: load a YAML/JSON file into the validated, immutable model of schema.py.

    from fastgate.config import validate, load_config, parse_config, ConfigError, Config

``validate(path)`` / ``validate(document=..., base_dir=...)`` is what `check`, `run`, a reload
and `PUT /config` use: the loader's errors plus the high audit findings (validation.py).
``load_config(path, env=None)`` / ``parse_config(data, env=None, source=...)`` are the loader
alone. Each returns a ``Config`` or raises ``ConfigError`` whose ``errors`` lists every problem
as "key.path: message". ``check_file(path)`` returns validate's list ([] = valid).
Features that validate but are not built yet are listed in ``UNSUPPORTED`` (features.py).
"""
from __future__ import annotations

from .features import UNSUPPORTED, unsupported_errors
from .loader import ConfigError, load_config, parse_config
from .schema import Config
from .validation import validate


def check_file(path: str, env=None) -> list[str]:
    """Every error in the config file at ``path`` (one "key.path: message" each), exactly as
    `fastgate check` prints them; [] if valid."""
    try:
        validate(path, env=env)
    except ConfigError as exc:
        return exc.errors
    return []


__all__ = ["Config", "ConfigError", "UNSUPPORTED", "check_file", "load_config", "parse_config",
           "unsupported_errors", "validate"]
