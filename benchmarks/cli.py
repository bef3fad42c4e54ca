"""Command line of the load harness: ``python -m benchmarks`` (``./dev.sh bench``)."""
from __future__ import annotations

import argparse
import glob
import os
import shlex
import sys
import time

EXAMPLES = """
examples:
  python -m benchmarks                         every scenario, fastgate vs nginx vs haproxy
  python -m benchmarks --smoke                 a few seconds, tiny load (what CI runs)
  python -m benchmarks --targets nginx,haproxy --scenarios passthrough,sse
  python -m benchmarks --scenarios api_body,waf --targets fastgate,nginx_modsec
                                               the WAF against nginx + ModSecurity + CRS
  python -m benchmarks --loadgen wrk           max-throughput phase via wrk (cross-check)
  python -m benchmarks --publish               ...and copy the table to results/latest.md
  python -m benchmarks --scenarios ai_chat,ai_stream,ai_stream_512 \
      --targets fastgate,litellm,portkey,nginx,direct
                                               the AI gateway scenarios (installs LiteLLM
                                               and Portkey under ~/.cache/fastgate-bench once)

Exit status: 0 when the harness ran (n/a scenarios included); 1 when a target failed or
answered errors on a scenario it supports; 2 usage; 3 when the harness itself broke.
"""


DEFAULT_TARGETS = "fastgate,nginx,nginx_modsec,haproxy,floor,litellm,portkey,direct"


def parse_args(argv):
    from benchmarks.scenarios import SCENARIOS
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load benchmarks of fastgate against nginx and HAProxy, on loopback.",
        epilog=EXAMPLES)
    ap.add_argument("--targets", default=None,
                    help="comma list of fastgate, nginx, nginx_modsec (nginx + ModSecurity v3 "
                         "+ OWASP CRS, PL1 blocking: the waf scenario only), haproxy, floor (a "
                         "bare uvloop + httptools relay), fastgate-base (--base-repo), litellm, "
                         "portkey (AI gateways, ai_* scenarios only), direct (the fake AI "
                         "provider called without a gateway: the baseline of added latency); "
                         "the first is the "
                         f"subject of the ratio columns (default: {DEFAULT_TARGETS})")
    ap.add_argument("--install-peers", choices=("auto", "yes", "no"), default="auto",
                    help="install LiteLLM / Portkey when missing (into $FASTGATE_BENCH_PEERS "
                         "or ~/.cache/fastgate-bench): auto = those named in --targets, yes = "
                         "also when only in the default list, no = never (n/a) "
                         "(default: %(default)s)")
    ap.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                    help="comma list (default: all): " + ", ".join(s.name for s in SCENARIOS))
    ap.add_argument("--smoke", action="store_true",
                    help="every scenario for a fraction of a second at tiny load (CI)")
    ap.add_argument("--loadgen", choices=("bundled", "wrk"), default="bundled",
                    help="closed-loop (max) phase generator; the fixed-rate phase is always "
                         "the bundled one (wrk cannot pace)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="fixed-rate rounds per target (default 5)")
    ap.add_argument("--max-rounds", type=int, default=None,
                    help="closed-loop rounds per target (default 3)")
    ap.add_argument("--duration", type=float, default=None,
                    help="measured seconds per round (default 3)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up seconds before each measurement (default 1)")
    ap.add_argument("--rate", type=float, default=None,
                    help="offered requests/s of the fixed-rate phase for every scenario "
                         "(default: the scenario's, lowered below the slowest target's max)")
    ap.add_argument("--connections", type=int, default=None,
                    help="connections for load scenarios (default: the scenario's)")
    ap.add_argument("--idle-connections", type=int, default=None,
                    help="connections of the idle scenario (default 10000; smoke 200)")
    ap.add_argument("--pacing", choices=("precise", "ms"), default="precise",
                    help="open-loop send timing: precise = a timerfd wake-up at each due time "
                         "(default; realistic independent arrivals, costs the load side ~2x "
                         "CPU), ms = the event loop's 1 ms timer (bursts of rate/1000)")
    ap.add_argument("--max-wait", type=float, default=5.0,
                    help="retake a fixed-rate measurement (up to --retries times, keeping the "
                         "least disturbed) when the gateway waited for its CPU more than this "
                         "%% of the time: another workload shared the machine (default 5; 0 "
                         "disables)")
    ap.add_argument("--retries", type=int, default=2, help="see --max-wait (default 2)")
    ap.add_argument("--tls-version", choices=("1.2", "1.3"), default=None,
                    help="highest TLS version the load generator offers in TLS scenarios "
                         "(default: the best both sides speak, TLS 1.3)")
    ap.add_argument("--procs", type=int, default=1,
                    help="load generator processes (split connections and rate; default 1)")
    ap.add_argument("--workers", default=None,
                    help="workers of every target: fastgate run --workers N, nginx "
                         "worker_processes, haproxy nbthread (default 1)")
    ap.add_argument("--base-repo", default=None,
                    help="another fastgate checkout (extensions built in place) for the "
                         "fastgate-base target: a change and its base in one run")
    ap.add_argument("--fastgate-cmd", default=None,
                    help="command that runs fastgate (default: this python -m fastgate)")
    ap.add_argument("--out", default=None,
                    help="output dir (default benchmarks/results/runs/<timestamp>)")
    ap.add_argument("--publish", action="store_true",
                    help="copy this run's table to benchmarks/results/latest.md")
    ap.add_argument("--publish-last", action="store_true",
                    help="do not run: copy the newest run's table to results/latest.md")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    a = ap.parse_args(argv)
    from benchmarks.targets import TARGETS
    a.explicit_targets = a.targets is not None
    a.target_list = [t.strip() for t in (a.targets or DEFAULT_TARGETS).split(",") if t.strip()]
    bad = [t for t in a.target_list if t not in TARGETS]
    if bad or not a.target_list:
        ap.error(f"unknown target(s) {bad}; choose from {', '.join(TARGETS)}")
    from benchmarks.scenarios import BY_NAME
    a.scenario_list = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = [s for s in a.scenario_list if s not in BY_NAME]
    if bad or not a.scenario_list:
        ap.error(f"unknown scenario(s) {bad}; choose from {', '.join(BY_NAME)}")
    if a.loadgen == "wrk":
        from benchmarks import wrk
        if not wrk.available():
            ap.error("--loadgen wrk: wrk is not installed")
    return a


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    from benchmarks import report
    from benchmarks.scenarios import BY_NAME, FEATURES
    if a.list:
        for s in BY_NAME.values():
            feats = f"  needs: {', '.join(s.features)}" if s.features else ""
            print(f"{s.name:12s} {s.title}{feats}")
        print("\nfeatures: " + "; ".join(f"{k}: {v}" for k, v in FEATURES.items()))
        return 0
    runs = os.path.join(report.RESULTS, "runs")
    if a.publish_last:
        found = sorted((p for p in glob.glob(os.path.join(runs, "*", "results.md"))
                        if "-smoke" not in p), key=os.path.getmtime)
        if not found:
            print("no run to publish under " + runs, file=sys.stderr)
            return 3
        print("published " + report.publish(found[-1]))
        return 0

    from benchmarks.runner import HarnessError, Settings, run
    smoke = a.smoke
    settings = Settings(
        rounds=a.rounds or (1 if smoke else 5),
        max_rounds=a.max_rounds or (1 if smoke else 3),
        warmup=a.warmup if a.warmup is not None else (0.2 if smoke else 1.0),
        duration=a.duration or (0.5 if smoke else 3.0),
        procs=max(1, a.procs), rate=a.rate, connections=a.connections,
        idle_connections=a.idle_connections, loadgen=a.loadgen, smoke=smoke,
        pacing=a.pacing, max_wait=0.0 if smoke else a.max_wait / 100.0, retries=a.retries,
        tls_version=a.tls_version, install_peers=a.install_peers,
        explicit_targets=a.target_list if a.explicit_targets else (),
        log=lambda s: print(s, flush=True))
    fastgate_cmd = shlex.split(a.fastgate_cmd) if a.fastgate_cmd else None
    if a.base_repo:
        os.environ["FASTGATE_BASE_REPO"] = os.path.abspath(a.base_repo)
    t0 = time.monotonic()
    try:
        results = run([BY_NAME[n] for n in a.scenario_list], a.target_list, settings,
                      workers=a.workers, fastgate_cmd=fastgate_cmd)
    except KeyboardInterrupt as e:
        how = f" by {e}" if str(e) else ""
        print(f"interrupted{how}; everything started was stopped", file=sys.stderr)
        return 130
    except HarnessError as e:
        print(f"harness error: {e}", file=sys.stderr)
        return 3
    except Exception:  # a bug of the harness, not a gateway failure: keep exit 1 for those
        import traceback
        traceback.print_exc()
        print("harness error (see the traceback); everything started was stopped",
              file=sys.stderr)
        return 3
    results["command"] = " ".join(["python -m benchmarks"] + [shlex.quote(x) for x in argv])
    results["smoke"] = smoke
    results["elapsed_s"] = time.monotonic() - t0
    out = a.out or os.path.join(runs, time.strftime("%Y%m%d-%H%M%S") + ("-smoke" if smoke else ""))
    paths = report.write(results, out)
    print()
    print(report.summary_table(results))
    derived = report.derived(results)
    if derived:
        print("\n".join(derived) + "\n")
    ai_lines = report.ai_summary(results)
    if ai_lines:
        print("\n".join(ai_lines) + "\n")
    print("wrote " + ", ".join(paths.values()))
    if a.publish:
        print("published " + report.publish(paths["md"]))
    failures = gateway_failures(results)
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    return 1 if failures else 0


def gateway_failures(results) -> list[str]:
    """Targets that failed or answered errors on a scenario they support."""
    out = []
    for sc in results["scenarios"]:
        for name, tr in sc["targets"].items():
            if tr["status"] == "error":
                out.append(f"{sc['name']}/{name}: {tr.get('reason', '')}")
                continue
            if tr["status"] != "ok":
                continue
            errs = 0
            for ph in ("max", "rate"):
                errs += (tr.get(ph) or {}).get("errors_total", 0)
            errs += (tr.get("idle") or {}).get("errors_total", 0)
            if errs:
                out.append(f"{sc['name']}/{name}: {errs} request errors")
    return out
