"""Runs every fuzz harness (or those named) for a while and reports what was executed.

    python -m tests.fuzz.run [--seconds N | --runs N] [--native] [--jobs] [HARNESS...]

Each harness runs in its own process (``python -m tests.fuzz NAME``) on a working corpus in
.fuzz/corpus/NAME (seeded from the harness's SEEDS, kept between runs, not committed) plus
the committed regression inputs in tests/fuzz/corpus/NAME; what libFuzzer finds (crash-*,
timeout-*, oom-*) lands in .fuzz/artifacts/NAME/. To keep a finding: minimise it
(``python -m tests.fuzz NAME -minimize_crash=1 -runs=10000 FILE``) and copy the result to
tests/fuzz/corpus/NAME/ under a name that says what it is.

--native first builds fastgate._core with clang's coverage instrumentation into
.fuzz/native (needs clang), so the parser and normalize_path harnesses are guided by the C
code's coverage; without it they see only the Python around the compiled code.
Exit status: 1 if any harness crashed, hung or broke an invariant.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

from . import __main__ as engine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(ROOT, ".fuzz")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
DICTS = os.path.join(ROOT, "tests", "fuzz", "dicts")
NATIVE = os.path.join(WORK, "native")
COVERAGE_FLAGS = "-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp"


def build_native() -> str:
    """fastgate._core compiled with coverage instrumentation into .fuzz/native/lib."""
    clang = shutil.which("clang")
    if clang is None:
        raise SystemExit("--native needs clang (apt-get install clang)")
    lib = os.path.join(NATIVE, "lib")
    env = dict(os.environ, CC=clang, LDSHARED=f"{clang} -shared", CFLAGS=COVERAGE_FLAGS)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", lib,
                    "--build-temp", os.path.join(NATIVE, "tmp")],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return lib


def seed_corpus(name: str) -> str:
    work = os.path.join(WORK, "corpus", name)
    os.makedirs(work, exist_ok=True)
    if not os.listdir(work):
        env = dict(os.environ, PYTHONPATH=ROOT)
        code = ("import sys, hashlib, importlib; m = importlib.import_module("
                f"'tests.fuzz.fuzz_{name}')\n"
                "for s in m.SEEDS:\n"
                f"    open(sys.argv[1] + '/seed-' + hashlib.sha1(s).hexdigest(), 'wb').write(s)")
        subprocess.run([sys.executable, "-c", code, work], cwd=ROOT, env=env, check=True)
    return work


def run_one(name: str, *, seconds: int | None, runs: int | None, native: str | None,
            log_dir: str) -> dict:
    artifacts = os.path.join(WORK, "artifacts", name)
    os.makedirs(artifacts, exist_ok=True)
    before = set(os.listdir(artifacts))
    regression = os.path.join(CORPUS, name)
    os.makedirs(regression, exist_ok=True)
    args = [sys.executable, "-m", "tests.fuzz", name, "-timeout=10", "-rss_limit_mb=2048",
            "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    if seconds is not None:
        args.append(f"-max_total_time={seconds}")
    if runs is not None:
        args.append(f"-runs={runs}")
    d = os.path.join(DICTS, name + ".dict")
    if os.path.exists(d):
        args.append(f"-dict={d}")
    args += [seed_corpus(name), regression]
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("FASTGATE_FUZZ_NATIVE", None)
    if native and name in ("request_parser", "response_parser", "normalize_path"):
        env["FASTGATE_FUZZ_NATIVE"] = native
    log = os.path.join(log_dir, name + ".log")
    t0 = time.monotonic()
    with open(log, "wb") as f:
        rc = subprocess.run(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - t0
    text = open(log, "rb").read().decode("utf-8", "replace")
    execs = re.findall(r"stat::number_of_executed_units: (\d+)", text)
    cov = re.findall(r"\bcov: (\d+) ft: (\d+)", text)
    new = sorted(set(os.listdir(artifacts)) - before)
    return {"name": name, "rc": rc, "execs": int(execs[-1]) if execs else 0,
            "seconds": elapsed, "cov": cov[-1] if cov else ("?", "?"), "found": new,
            "log": log, "native": "FASTGATE_FUZZ_NATIVE" in env}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    ap.add_argument("--seconds", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--native", action="store_true", help="build and fuzz instrumented C code")
    ap.add_argument("harness", nargs="*", help=", ".join(engine.HARNESSES))
    a = ap.parse_args(argv)
    if a.seconds is None and a.runs is None:
        a.seconds = 60
    names = a.harness or list(engine.HARNESSES)
    unknown = [n for n in names if n not in engine.HARNESSES]
    if unknown:
        ap.error(f"unknown harness {', '.join(unknown)}; known: {', '.join(engine.HARNESSES)}")
    native = build_native() if a.native else None
    log_dir = os.path.join(WORK, "logs")
    os.makedirs(log_dir, exist_ok=True)
    failed = False
    print(f"{'harness':<16} {'inputs':>11} {'seconds':>8} {'inputs/s':>9} {'cov':>6} "
          f"{'ft':>6}  native  result", flush=True)
    for name in names:
        r = run_one(name, seconds=a.seconds, runs=a.runs, native=native, log_dir=log_dir)
        ok = r["rc"] == 0 and not r["found"]
        failed |= not ok
        rate = r["execs"] / r["seconds"] if r["seconds"] else 0
        res = "ok" if ok else f"FAILED (exit {r['rc']}; see {r['log']}; " \
                              f"found: {', '.join(r['found']) or '-'})"
        print(f"{name:<16} {r['execs']:>11,} {r['seconds']:>8.0f} {rate:>9,.0f} "
              f"{r['cov'][0]:>6} {r['cov'][1]:>6}  {'yes' if r['native'] else 'no':<6}  {res}",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
