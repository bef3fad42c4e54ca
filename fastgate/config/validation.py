"""The one validation every config goes through: `fastgate check`, `fastgate run`, a SIGHUP
reload and `PUT /config` accept exactly the same documents and report the same lines.

    validate(path)                                   # a config file
    validate(document=data, base_dir=directory)      # text (str/bytes, YAML or JSON) or a dict

returns the ``Config`` or raises ``ConfigError`` whose ``errors`` lists every problem as
"key.path: message":

1. a file that cannot be read: "PATH: cannot read: <reason>";
2. the loader's errors (syntax, duplicate keys, ${VAR}, schema, unsupported features), in
   document order;
3. when the loader found nothing (the checks below need a ``Config``): the high findings of
   `fastgate audit` (weak HMAC secrets, TLS below 1.2, plaintext API keys, unusable JWKS
   files, listener TLS files that do not load).

The module is called ``validation`` and not ``validate`` so that ``fastgate.config.validate``
is always the function, never a submodule shadowing it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .loader import ConfigError, load_config, parse_config
from .schema import Config

_NOTHING = object()


def validate(path: str | os.PathLike | None = None, *, document: Any = _NOTHING,
             base_dir: str | None = None, env: Mapping[str, str] | None = None,
             source: str = "<config>") -> Config:
    """Validate the config file at ``path``, or ``document`` (YAML/JSON text as str or bytes,
    or a parsed dict) whose relative file names resolve against ``base_dir`` (default: the
    current directory). ``env`` replaces os.environ for ${VAR}; ``source`` names a document
    in file-level errors ("<source>: invalid YAML ..."). Raises ConfigError."""
    if (path is None) == (document is _NOTHING):
        raise TypeError("validate() takes a path or document=, not both or neither")
    # Imported here: the audit reaches into policies and TLS, which import the config package.
    from fastgate.audit import check_errors
    try:
        if path is not None:
            config = load_config(os.fspath(path), env)
        else:
            config = parse_config(document, env, source=source, base_dir=base_dir)
        errors = check_errors(config)
    except OSError as exc:
        # The loader reports unreadable files itself; this is one that vanished between its
        # check and a later read. Still an error line, never an exception a reload dies of.
        where = exc.filename or (os.fspath(path) if path is not None else source)
        raise ConfigError([f"{where}: cannot read: {exc.strerror or exc}"]) from None
    if errors:
        raise ConfigError(errors)
    return config
