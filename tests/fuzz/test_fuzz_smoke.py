"""The short CI pass of the fuzzers: every harness replays its seeds and its regression
corpus (tests/fuzz/corpus/NAME/: each crash, hang or invariant break ever found) in process,
then runs a bounded, seeded atheris pass. atheris is a test dependency: without it these
tests fail, they never skip. Long runs: ./dev.sh fuzz [SECONDS] (tests/fuzz/run.py)."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

from tests.fuzz.__main__ import HARNESSES

try:
    import atheris
except ImportError as exc:   # reported by test_atheris_is_installed, and by every test below
    atheris = None
    _MISSING = exc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
RUNS = {"config": 1500, "jwt": 1500}   # the slower harnesses (Python all the way down)
DEFAULT_RUNS = 4000


def _need_atheris():
    if atheris is None:
        pytest.fail(f"atheris is not installed ({_MISSING}); it is a test dependency: "
                    f"pip install -e '.[test]'", pytrace=False)


def test_atheris_is_installed():
    _need_atheris()


def regression_inputs(name):
    d = os.path.join(CORPUS, name)
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


@pytest.mark.parametrize("name", HARNESSES)
def test_seeds_and_regression_corpus_replay(name):
    _need_atheris()
    mod = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    for seed in mod.SEEDS:
        mod.TestOneInput(seed)
    for path in regression_inputs(name):
        with open(path, "rb") as f:
            data = f.read()
        try:
            mod.TestOneInput(data)
        except Exception as exc:
            raise AssertionError(f"regression input {os.path.relpath(path, ROOT)}: {exc!r}") \
                from exc


@pytest.mark.parametrize("name", HARNESSES)
def test_short_fuzz_pass(name, tmp_path):
    _need_atheris()
    work = tmp_path / "corpus"
    work.mkdir()
    mod = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    for i, seed in enumerate(mod.SEEDS):
        (work / f"seed-{i}").write_bytes(seed)
    runs = RUNS.get(name, DEFAULT_RUNS)
    args = [sys.executable, "-m", "tests.fuzz", name, f"-runs={runs}", "-seed=1",
            "-timeout=10", "-max_total_time=120", "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/", str(work)]
    regression = os.path.join(CORPUS, name)
    if os.path.isdir(regression):
        args.append(regression)
    dict_path = os.path.join(HERE, "dicts", name + ".dict")
    if os.path.exists(dict_path):
        args.append(f"-dict={dict_path}")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("FASTGATE_FUZZ_NATIVE", None)
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=300)
    out = p.stderr.decode("utf-8", "replace") + p.stdout.decode("utf-8", "replace")
    found = [f for f in os.listdir(tmp_path) if f != "corpus"]
    assert p.returncode == 0 and not found, \
        f"{name}: exit {p.returncode}, artifacts {found}\n{out[-4000:]}"
    executed = re.findall(r"stat::number_of_executed_units: (\d+)", out)
    assert executed and int(executed[-1]) >= runs, out[-2000:]


def test_live_fuzz_short_pass():
    """The socket-level fuzzer against the real gateway: a bounded, seeded pass
    (long runs: ./dev.sh fuzz, or python -m tests.fuzz.live --seconds N). Also the regression
    case of what it found: without the lingering close after a closing answer, this seed
    breaks 12 connections (an HTTP/1.0 answer lost to an RST with pipelined input unread)."""
    from tests.fuzz import live
    assert live.main(["--connections", "1500", "--seed", "20261201"]) == 0
