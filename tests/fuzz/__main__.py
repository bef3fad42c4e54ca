"""python -m tests.fuzz HARNESS [libFuzzer arguments...]

Runs ``tests/fuzz/fuzz_HARNESS.py`` under atheris. Python code (fastgate and the harness) is
instrumented by atheris at import. With FASTGATE_FUZZ_NATIVE=<dir> the compiled modules
(fastgate._core.http, .router) are loaded from <dir> instead: a build with clang's
``-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp`` (tests/fuzz/run.py --native
makes it), so libFuzzer sees the C code's edges and comparisons too; without it a parser
harness is guided only by the Python around the parser.
"""
from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import os
import sys

HARNESSES = ("request_parser", "response_parser", "normalize_path", "config", "jwt",
             "ai_stream", "waf")
NATIVE_MODULES = ("http", "router")
INSTRUMENT = {
    "config": ["fastgate.config", "fastgate.policies", "fastgate.plugin"],
    "jwt": ["fastgate.policies.auth"],
    "ai_stream": ["fastgate.ai"],
    "waf": ["fastgate.waf"],
}


def load_native(lib_dir: str) -> None:
    import atheris
    # The instrumented modules call libFuzzer's __sanitizer_cov_* hooks: the copy of libFuzzer
    # inside atheris must be loaded with its symbols global before they are (atheris itself
    # would load it only in Fuzz(), privately).
    core = glob.glob(os.path.join(os.path.dirname(atheris.__file__), "core_with_libfuzzer*.so"))
    if not core:
        raise SystemExit("atheris has no core_with_libfuzzer module: cannot fuzz native code")
    ctypes.CDLL(core[0], mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    import fastgate._core as pkg
    for name in NATIVE_MODULES:
        found = glob.glob(os.path.join(lib_dir, "fastgate", "_core", name + ".*.so"))
        if not found:
            raise SystemExit(f"no instrumented fastgate._core.{name} in {lib_dir}")
        spec = importlib.util.spec_from_file_location("fastgate._core." + name, found[0])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        setattr(pkg, name, mod)


def launcher(name: str) -> str:
    """An executable that runs this harness again: libFuzzer re-executes argv[0] for
    -minimize_crash, -merge, -fork and -jobs."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, ".fuzz", "bin", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = (f"#!/bin/sh\ncd '{root}' && PYTHONPATH='{root}' "
            f"exec '{sys.executable}' -m tests.fuzz {name} \"$@\"\n")
    try:
        with open(path) as f:
            same = f.read() == text
    except OSError:
        same = False
    if not same:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
    return path


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in HARNESSES:
        raise SystemExit(f"usage: python -m tests.fuzz {{{'|'.join(HARNESSES)}}} [libFuzzer args]")
    name = sys.argv[1]
    native = os.environ.get("FASTGATE_FUZZ_NATIVE")
    if native:
        load_native(native)
    import atheris
    # What each harness exercises in Python (its INSTRUMENT), instrumented as it is imported;
    # the rest runs at full speed.
    include = INSTRUMENT.get(name, ["fastgate", "tests.fuzz"])
    with atheris.instrument_imports(include=include):
        mod = importlib.import_module("tests.fuzz.fuzz_" + name)
    atheris.Setup([launcher(name)] + sys.argv[2:], mod.TestOneInput, internal_libfuzzer=True)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
