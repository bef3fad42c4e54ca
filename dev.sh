#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh demo [--port P]   set up, then run the gateway on its built-in demo
#   ./dev.sh test [pytest args] set up (venv, Cython build, test deps, servers), run the whole suite
#   ./dev.sh bench [args]      set up, then run the load harness (python -m benchmarks)
#   ./dev.sh soak [MINUTES]    set up, then soak the gateway (tests/soak.py) for MINUTES (10)
#   ./dev.sh fuzz [SECONDS] [HARNESS...]  set up, then run every fuzz harness SECONDS each (60),
#                              the live socket fuzzer (tests/fuzz/live.py) too
set -euo pipefail
cd "$(dirname "$0")"
VENV=${FASTGATE_VENV:-.venv}
PY=${PYTHON:-python3}

need_apt() {  # install Debian packages whose command is missing (we run as root in CI)
  local missing=()
  while [ $# -gt 0 ]; do command -v "$1" >/dev/null 2>&1 || missing+=("$2"); shift 2; done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "dev.sh: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "dev.sh: please install: ${missing[*]}" >&2
  fi
}

setup() {  # $1 = extras to install ("" or "test")
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip setuptools wheel
  fi
  "$VENV/bin/pip" install -q "Cython>=3.0" setuptools wheel
  local spec="."
  [ -n "$1" ] && spec=".[$1]"
  # --no-build-isolation: reuse the venv's Cython; editable so tests see fastgate/ in place.
  "$VENV/bin/pip" install -q --no-build-isolation -e "$spec"
  # Editable installs may place the extensions elsewhere; build them beside the sources too.
  "$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null
}

cmd=${1:-help}; shift || true
case "$cmd" in
  demo)
    setup ""
    exec "$VENV/bin/fastgate" demo "$@" ;;
  test)
    need_apt redis-server redis-server redis-cli redis-tools curl curl promtool prometheus \
      chromium chromium chromedriver chromium-driver nginx nginx haproxy haproxy wrk wrk
    setup test
    # The harness tests run every peer they compare against: nginx, HAProxy and wrk above,
    # and the AI gateways LiteLLM and Portkey, installed once under ~/.cache/fastgate-bench.
    "$VENV/bin/python" -m benchmarks.peers || echo "dev.sh: an AI gateway peer did not install" >&2
    rc=0
    "$VENV/bin/python" -m pytest "$@" || rc=$?
    exit $rc ;;
  soak)
    # the gateway under steady varied traffic for MINUTES (10), watched for leaks
    setup test
    minutes=10
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9.]+$ ]]; then minutes=$1; shift; fi
    exec "$VENV/bin/python" -m tests.soak --minutes "$minutes" "$@" ;;
  bench)
    setup test
    exec "$VENV/bin/python" -m benchmarks "$@" ;;
  fuzz)
    # clang builds a coverage-instrumented copy of fastgate/_core in .fuzz/native, so the
    # fuzzer is guided by the C parsers' branches, not only by the Python around them.
    need_apt clang clang
    setup test
    "$VENV/bin/python" -c "import atheris" 2>/dev/null || "$VENV/bin/pip" install -q atheris
    seconds=60
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
    native=--native
    if ! command -v clang >/dev/null 2>&1; then
      echo "dev.sh: no clang: fastgate/_core is fuzzed without coverage feedback" >&2
      native=
    fi
    rc=0 live=0 harnesses=()
    for h in "$@"; do if [ "$h" = live ]; then live=1; else harnesses+=("$h"); fi; done
    [ $# -eq 0 ] && live=1
    if [ $# -eq 0 ] || [ ${#harnesses[@]} -gt 0 ]; then
      "$VENV/bin/python" -m tests.fuzz.run $native --seconds "$seconds" "${harnesses[@]}" || rc=$?
    fi
    # the live fuzzer: mutated, split, pipelined requests over sockets at the real gateway
    if [ $live = 1 ]; then
      "$VENV/bin/python" -m tests.fuzz.live --seconds "$seconds" || rc=$?
    fi
    exit $rc ;;
  *)
    sed -n '2,6p' "$0"; exit 64 ;;
esac
