"""Results as JSON, a Markdown table per scenario, and a PNG when matplotlib is installed."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess

from benchmarks.scenarios import FEATURES

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    m = {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
         "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        m["memory_gib"] = round(kib / 1048576, 1)
    except (OSError, ValueError, IndexError):
        pass
    for tool, args in (("nginx", ["-v"]), ("haproxy", ["-v"]), ("wrk", ["-v"])):
        path = shutil.which(tool)
        if not path:
            continue
        try:
            r = subprocess.run([path] + args, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (r.stdout + r.stderr).strip().splitlines()
        if text:
            first = text[0].replace("nginx version: ", "").strip()
            if tool == "haproxy":  # "HAProxy version 2.6.12-1 2023/12/01 - https://..."
                first = " ".join(first.split()[:3])
            elif tool == "wrk":    # "wrk debian/4.1.0-3+b2 [epoll] Copyright ..."
                first = first.split(" Copyright")[0]
            m[tool] = first
    try:
        import uvloop
        m["uvloop"] = uvloop.__version__
    except ImportError:
        pass
    return m


# --- formatting ------------------------------------------------------------------------------

def _num(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def _lat(d):
    if not d:
        return "–"
    return " / ".join(_ms(d.get(k)) for k in ("p50_us", "p99_us", "p999_us"))


def _ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def _mib(kib):
    return "–" if kib is None else f"{kib / 1024:,.1f}"


def _cell_na(tr):
    s = tr["status"]
    # a reason may quote log lines: keep it on one line and out of the table's syntax
    reason = " ".join(tr.get("reason", "").split()).replace("|", "\\|")
    if s == "n/a":
        return f"n/a: {reason}" if reason.startswith("needs") else f"n/a ({reason})"
    return f"**error**: {reason[:160]}"


def scenario_table(sc: dict) -> str:
    names = list(sc["targets"])
    ok = [n for n in names if sc["targets"][n]["status"] == "ok"]
    ratio_keys = list(sc.get("ratios", {}))
    lines = [f"### {sc['name']}: {sc['title']}", ""]
    desc = f"`{sc['method']} {sc['path']}`"
    if sc["kind"] == "idle":
        desc += (f" · {sc.get('connections', '?'):,} connections opened, one request each, then "
                 "held idle. Every generated config allows 20,000 connections (fastgate "
                 "`limits.max_connections`, nginx `worker_connections`, HAProxy `maxconn`, the "
                 "last capped by RLIMIT_NOFILE); the harness raises its RLIMIT_NOFILE to the "
                 "hard limit and every process it starts inherits it")
    else:
        pacing = next((((sc["targets"][n].get("rate_rounds") or [{}])[0]).get("pacing")
                       for n in ok if sc["targets"][n].get("rate_rounds")), None)
        desc += (f" · {sc.get('connections', '?')} keep-alive connections · fixed rate "
                 f"{_num(sc.get('rate'))}/s open loop"
                 + (f" paced by {pacing}" if pacing else "")
                 + " (latency from the intended send time)"
                 f" · max = closed loop" + (" via wrk" if sc.get("loadgen") == "wrk" else ""))
    if sc["features"]:
        desc += " · needs: " + ", ".join(sc["features"])
    if sc.get("request_body_bytes"):
        desc += f" · {sc['request_body_bytes']}-byte JSON request body"
    st = sc.get("stream")
    if st:
        desc += (f" · the fake streams {st['chunks']} content chunks "
                 + (f"{st['gap_ms']:g} ms apart" if st.get("gap_ms") else "at once"))
    if any(n == "direct" for n in names):
        desc += (" · `direct` = the fake provider called with no gateway (its own CPU and "
                 "latency: the baseline of the \"added\" rows, not in the ratio columns)")
    lines += [desc, ""]
    for note in sc.get("notes", []):
        lines += [f"> {note}", ""]
    header = "| | " + " | ".join(names) + "".join(f" | {k}" for k in ratio_keys) + " |"
    lines += [header, "|---" * (1 + len(names) + len(ratio_keys)) + "|"]

    def row(label, fn, ratio_fn=None):
        cells = []
        for n in names:
            tr = sc["targets"][n]
            cells.append(fn(tr) if tr["status"] == "ok" else "–")
        rcells = []
        for k in ratio_keys:
            rcells.append(ratio_fn(sc["ratios"][k], k) if ratio_fn else "")
        lines.append(f"| {label} | " + " | ".join(cells) + "".join(f" | {c}" for c in rcells)
                     + " |")

    def plain_ratio(getter):
        def f(_r, key):
            a, b = key.split("/")
            va, vb = getter(sc["targets"][a]), getter(sc["targets"][b])
            return _ratio(va / vb) if va is not None and vb else "–"
        return f

    # status row first, so n/a reasons are visible
    if any(sc["targets"][n]["status"] != "ok" for n in names):
        cells = ["ok" if sc["targets"][n]["status"] == "ok" else _cell_na(sc["targets"][n])
                 for n in names]
        lines.append("| status | " + " | ".join(cells) + " |" + " |" * len(ratio_keys))

    if sc["kind"] == "idle":
        g = lambda tr: tr.get("idle") or {}  # noqa: E731
        row("connections held", lambda tr: _num(g(tr).get("held")))
        row("RSS before (MiB)", lambda tr: _mib(g(tr).get("rss_before_kib")))
        row("**RSS holding them (MiB)**", lambda tr: _mib(g(tr).get("rss_held_kib")),
            plain_ratio(lambda tr: g(tr).get("rss_held_kib")))
        row("KiB per connection", lambda tr: _num(g(tr).get("kib_per_conn"), 2),
            plain_ratio(lambda tr: g(tr).get("kib_per_conn")))
        row("peak RSS, VmHWM (MiB)", lambda tr: _mib(g(tr).get("hwm_kib")))
        row("CPU while idle (% of a core)",
            lambda tr: _num((g(tr).get("idle_cpu_util") or 0) * 100, 1))
        row("errors", lambda tr: _errs(g(tr)))
        return "\n".join(lines) + "\n"

    rate = lambda tr: tr.get("rate") or {}  # noqa: E731
    mx = lambda tr: tr.get("max") or {}  # noqa: E731

    def headline(tr):
        r = rate(tr)
        v = r.get("cpu_us_per_req")
        s = _num(v, 1)
        sp = r.get("cpu_us_per_req_spread_pct")
        if sp is not None:
            s += f" (±{sp / 2:.1f}%)"
        if r.get("saturated"):
            s += " ⚠ below offered rate"
        return f"**{s}**"

    def head_ratio(rv, key):
        v = rv.get("cpu_per_req_rate")
        sp = rv.get("cpu_per_req_rate_spread_pct")
        return "–" if v is None else f"**{v:.2f}×**" + (f" (±{sp / 2:.1f}%)" if sp else "")

    row(f"**CPU µs/req @ {_num(sc.get('rate'))}/s** (median of rounds)", headline, head_ratio)
    if sc.get("unit"):
        row(f"CPU µs/{sc['unit']} @ fixed rate",
            lambda tr: _num(rate(tr).get("cpu_us_per_unit"), 2),
            plain_ratio(lambda tr: rate(tr).get("cpu_us_per_unit")))
    row("achieved req/s @ fixed rate", lambda tr: _num(rate(tr).get("rps")))
    row("gateway CPU use @ fixed rate (% of a core)",
        lambda tr: _num((rate(tr).get("cpu_util") or 0) * 100, 0))
    p99_ratio = plain_ratio(lambda tr: rate(tr).get("p99_us"))
    row("latency p50 / p99 / p99.9 ms @ fixed rate", lambda tr: _lat(rate(tr)),
        lambda rv, k: "p99 " + p99_ratio(rv, k))
    if any((rate(sc["targets"][n]).get("ttfb_p50_us") is not None) for n in ok):
        row("time to response head p50 / p99 ms @ fixed rate",
            lambda tr: " / ".join(_ms(rate(tr).get(k)) for k in ("ttfb_p50_us", "ttfb_p99_us")))
    if any((rate(sc["targets"][n]).get("ttft_p50_us") is not None) for n in ok):
        row("time to first token p50 / p99 ms @ fixed rate",
            lambda tr: " / ".join(_ms(rate(tr).get(k)) for k in ("ttft_p50_us", "ttft_p99_us")))
    if any((rate(sc["targets"][n]).get("pause_p99_us") is not None) for n in ok):
        row("longest pause inside a stream p50 / p99 / max ms @ fixed rate",
            lambda tr: " / ".join(_ms(rate(tr).get(k))
                                  for k in ("pause_p50_us", "pause_p99_us", "pause_max_us")))
    if any(rate(sc["targets"][n]).get("redis_cpu_us_per_req") is not None for n in ok):
        row("Redis: CPU µs/req / calls per s @ fixed rate (its own process, load side)",
            lambda tr: (f"{_num(rate(tr).get('redis_cpu_us_per_req'), 2)} / "
                        f"{_num(rate(tr).get('redis_calls_per_s'), 1)}")
            if rate(tr).get("redis_cpu_us_per_req") is not None else "–")
    if any(rate(sc["targets"][n]).get("access_log_bytes_per_req") is not None for n in ok):
        row("access log bytes/req @ fixed rate",
            lambda tr: _num(rate(tr).get("access_log_bytes_per_req")))
    row("load generator: mean send lag µs / CPU %",
        lambda tr: f"{_num(rate(tr).get('send_lag_mean_us'))} / "
                   f"{_num((rate(tr).get('loadgen_cpu_util') or 0) * 100)}")
    # time the gateway was runnable but another task had its CPU: interference on a shared box
    row("gateway waiting for its CPU (% of the time)",
        lambda tr: _num((rate(tr).get("gateway_wait_frac") or 0) * 100, 1))
    def others(tr):
        """LiteLLM's and Node's threads wait for each other on one core: what counts for them
        is how long their event loop's thread waited (None for the others)."""
        r = rate(tr)
        i = r.get("interference_frac")
        return i if i is not None and i != r.get("gateway_wait_frac") else None
    if any(others(sc["targets"][n]) is not None for n in ok):
        row("... its event loop's thread waiting (multi-threaded targets)",
            lambda tr: "–" if others(tr) is None else _num(others(tr) * 100, 1))
    row("**max req/s** (closed loop)", lambda tr: "**" + _num(mx(tr).get("rps")) + "**",
        lambda rv, k: _ratio(rv.get("max_rps")))
    row("CPU µs/req @ max", lambda tr: _num(mx(tr).get("cpu_us_per_req"), 1),
        plain_ratio(lambda tr: mx(tr).get("cpu_us_per_req")))
    row("gateway CPU use @ max (% of a core)",
        lambda tr: _num((mx(tr).get("cpu_util") or 0) * 100, 0))
    row("latency p50 / p99 / p99.9 ms @ max", lambda tr: _lat(mx(tr)))
    if st and any(mx(sc["targets"][n]).get("pause_p99_us") is not None for n in ok):
        conns = sc.get("connections")
        row(f"{conns} streams in flight (closed loop): longest pause p99 / max ms",
            lambda tr: " / ".join(_ms(mx(tr).get(k)) for k in ("pause_p99_us", "pause_max_us")))
        row("time to first token p50 / p99 ms @ max",
            lambda tr: " / ".join(_ms(mx(tr).get(k)) for k in ("ttft_p50_us", "ttft_p99_us")))
        if st.get("stall_s"):
            row(f"**{conns} concurrent streams without a stall**",
                lambda tr: "**" + stall_verdict(sc, tr)[1] + "**")
    c1 = lambda tr: tr.get("c1") or {}  # noqa: E731
    if any(c1(sc["targets"][n]) for n in ok):
        row("latency p50 / p99 ms @ concurrency 1",
            lambda tr: " / ".join(_ms(c1(tr).get(k)) for k in ("p50_us", "p99_us")))
        direct_ok = "direct" in ok and c1(sc["targets"]["direct"])
        if direct_ok:
            row("**added latency p50 / p99 ms @ concurrency 1** (− direct)",
                lambda tr: _baseline(sc, tr) or "**" + " / ".join(
                    _ms_signed(added(sc, tr, "c1", k)) for k in ("p50_us", "p99_us")) + "**")
        if any(c1(sc["targets"][n]).get("ttft_p50_us") is not None for n in ok):
            row("time to first token p50 / p99 ms @ concurrency 1",
                lambda tr: " / ".join(_ms(c1(tr).get(k)) for k in ("ttft_p50_us",
                                                                    "ttft_p99_us")))
            if direct_ok:
                row("**added time to first token p50 / p99 ms @ concurrency 1** (− direct)",
                    lambda tr: _baseline(sc, tr) or "**" + " / ".join(
                        _ms_signed(added(sc, tr, "c1", k))
                        for k in ("ttft_p50_us", "ttft_p99_us")) + "**")
        row("max req/s @ concurrency 1", lambda tr: _num(c1(tr).get("rps")))
    if any(sc["targets"][n].get("memory_idle") for n in ok):
        row("RSS idle (after start-up) / peak VmHWM (MiB)",
            lambda tr: f"{_mib((tr.get('memory_idle') or {}).get('rss_kib'))} / "
                       f"{_mib((tr.get('memory') or {}).get('hwm_kib'))}")
    row("peak RSS, VmHWM summed (MiB)",
        lambda tr: _mib((tr.get("memory") or {}).get("hwm_kib")),
        plain_ratio(lambda tr: (tr.get("memory") or {}).get("hwm_kib")))
    row("errors (all rounds)", lambda tr: _errs_total(tr))
    # run-queue wait, or for multi-threaded targets the gateway CPUs' time that was not theirs
    waits = {n: (rate(sc["targets"][n]).get("interference_frac")
                 if rate(sc["targets"][n]).get("interference_frac") is not None
                 else rate(sc["targets"][n]).get("gateway_wait_frac")) for n in ok}
    noisy = {n: w for n, w in waits.items() if w and w > 0.05}
    if noisy:
        lines += ["", "> ⚠ another workload shared the gateway's CPU (it waited "
                  + ", ".join(f"{n} {w * 100:.0f}%" for n, w in noisy.items())
                  + " of the time, median of rounds): that batches requests and lowers "
                  "CPU/request, so these rounds are less comparable than usual."]
    retaken = sum(rate(sc["targets"][n]).get("retaken") or 0 for n in ok)
    if retaken:
        lines += ["", f"> {retaken} fixed-rate measurement(s) were retaken because the "
                  "gateway waited for its CPU more than the --max-wait threshold."]
    # the load generator and the upstream share the load-side CPUs
    ncpu = max(1, len(results_load_cpus(sc)))
    side = {n: ((mx(sc["targets"][n]).get("loadgen_cpu_util") or 0)
                + (mx(sc["targets"][n]).get("upstream_cpu_util") or 0)) / ncpu for n in ok}
    bound = [n for n, v in side.items() if v > 0.85 and (mx(sc["targets"][n]).get("cpu_util")
                                                        or 0) < 0.9]
    if bound:
        lines += ["", "> max req/s of " + ", ".join(bound) + " is bounded by the load side "
                  "(load generator + upstream used "
                  + ", ".join(f"{side[n] * 100:.0f}%" for n in bound)
                  + " of their CPU while the gateway had headroom), not by the gateway."]
    return "\n".join(lines) + "\n"


def _ms_signed(us):
    return "–" if us is None else f"{us / 1000:+.2f}"


def _baseline(sc, tr):
    return "baseline" if tr is sc["targets"].get("direct") else None


def added(sc, tr, phase, key):
    """tr's figure minus the direct target's (what the gateway adds), None without one."""
    d = sc["targets"].get("direct") or {}
    if d.get("status") != "ok" or tr.get("status") != "ok" or tr is d:
        return None
    a, b = (tr.get(phase) or {}).get(key), (d.get(phase) or {}).get(key)
    return a - b if a is not None and b is not None else None


def stall_verdict(sc, tr):
    """(True: no stall / False: stalled / None: not measured, text) for the closed-loop
    phase of a stream scenario with a stall threshold: every connection holds a stream."""
    m = tr.get("max") or {}
    limit = (sc.get("stream") or {}).get("stall_s")
    if tr.get("status") != "ok" or not m or limit is None:
        return None, "–"
    worst = m.get("pause_max_us")
    errs = m.get("errors_total") or 0
    if not m.get("rps"):
        return False, "no stream completed"
    if errs:
        return False, f"{errs} failed streams"
    if worst is None:
        return None, "–"
    if worst > limit * 1e6:
        return False, f"stalled: a {worst / 1e6:.2f} s pause (> {limit:g} s)"
    return True, f"yes (longest pause {worst / 1000:.0f} ms)"


def results_load_cpus(sc):
    return sc.get("load_cpus") or [0]


def _errs(d):
    e = d.get("errors") or {}
    if not e:
        return "0"
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items()))


def _errs_total(tr):
    e: dict[str, int] = {}
    for ph in ("max", "rate"):
        for k, v in ((tr.get(ph) or {}).get("errors") or {}).items():
            e[k] = e.get(k, 0) + v
    return _errs({"errors": e})


def summary_table(results) -> str:
    names = results.get("targets", [])
    lines = ["| scenario | headline | " + " | ".join(names) + " | ratio |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for sc in results["scenarios"]:
        cells = []
        if sc["kind"] == "idle":
            label = f"RSS MiB holding {sc.get('connections', 0):,} idle conns"
            for n in names:
                tr = sc["targets"].get(n, {})
                cells.append(_mib((tr.get("idle") or {}).get("rss_held_kib"))
                             if tr.get("status") == "ok" else _short_na(tr))
            ok = [n for n in names if sc["targets"].get(n, {}).get("status") == "ok"]
            ratio = "–"
            if len(ok) >= 2:
                a = (sc["targets"][ok[0]].get("idle") or {}).get("rss_held_kib")
                b = (sc["targets"][ok[1]].get("idle") or {}).get("rss_held_kib")
                ratio = f"{ok[0]}/{ok[1]} {_ratio(a / b)}" if a and b else "–"
        else:
            label = f"CPU µs/req @ {_num(sc.get('rate'))}/s"
            for n in names:
                tr = sc["targets"].get(n, {})
                if tr.get("status") == "ok":
                    cells.append(_num((tr.get("rate") or {}).get("cpu_us_per_req"), 1))
                else:
                    cells.append(_short_na(tr))
            rs = sc.get("ratios", {})
            ratio = "; ".join(f"{k} {_ratio(v.get('cpu_per_req_rate'))}"
                              for k, v in rs.items()) or "–"
        lines.append(f"| {sc['name']} | {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


# The target for cluster-scope limits: at most this much gateway CPU per request
# over the same limit kept locally.
CLUSTER_OVER_LOCAL_TARGET = 1.2


def derived(results) -> list[str]:
    """Figures read across scenarios, as Markdown lines: what the rate-limit scopes, the access
    log and TLS cost over passthrough. Scenarios are measured one after the other, so each is
    a ratio or difference of two medians (not of interleaved rounds)."""
    by = {s["name"]: s for s in results.get("scenarios", [])}

    def fig(scn, target):
        """(median CPU µs/req at the fixed rate, half spread %, offered rate) or None."""
        sc = by.get(scn)
        tr = (sc or {}).get("targets", {}).get(target) or {}
        r = tr.get("rate") or {}
        if tr.get("status") != "ok" or r.get("cpu_us_per_req") is None:
            return None
        sp = r.get("cpu_us_per_req_spread_pct")
        return r["cpu_us_per_req"], None if sp is None else sp / 2, sc.get("rate")

    def ratio(a, b):
        if a is None or b is None:
            return None, "not measured"
        if a[2] != b[2]:
            return None, f"offered rates differ ({a[2]:g}/s vs {b[2]:g}/s)"
        if a[1] is None or b[1] is None:
            return a[0] / b[0], "one round each: no spread"
        return a[0] / b[0], f"±{a[1] + b[1]:.1f}%"

    def fmt_ratio(num, den, target):
        v, why = ratio(fig(num, target), fig(den, target))
        return f"{num} / {den} " + (f"**{v:.2f}×** ({why})" if v is not None else f"– ({why})")

    def fmt_delta(num, target, base="passthrough"):
        a, b = fig(num, target), fig(base, target)
        v, why = ratio(a, b)
        if v is None:
            return None
        return f"{target} **{a[0] - b[0]:+.1f} µs/req** ({(v - 1) * 100:+.0f}%, {why})"

    lines = []
    if "limit_cluster" in by and "limit_local" in by:
        v, _ = ratio(fig("limit_cluster", "fastgate"), fig("limit_local", "fastgate"))
        verdict = "" if v is None else (
            f" — target ≤ {CLUSTER_OVER_LOCAL_TARGET:.1f}×: "
            + ("**met**" if v <= CLUSTER_OVER_LOCAL_TARGET else "**not met**"))
        parts = [fmt_ratio("limit_cluster", "limit_local", "fastgate") + verdict]
        if "passthrough" in by:
            parts += [fmt_ratio("limit_local", "passthrough", "fastgate"),
                      fmt_ratio("limit_cluster", "passthrough", "fastgate")]
        r = ((by["limit_cluster"]["targets"].get("fastgate") or {}).get("rate") or {})
        if r.get("redis_calls_per_s") is not None:
            parts.append(f"Redis: {r['redis_calls_per_s']:,.0f} calls/s "
                         f"({r.get('redis_calls_per_req') or 0:.4f} per request), "
                         f"{_num(r.get('redis_cpu_us_per_req'), 2)} µs of its own CPU per request")
        lines.append("- **rate limit scopes, fastgate** (gateway CPU µs/req): "
                     + " · ".join(parts))
    for scn, label, base in (
            ("access_log", "access log adds (access_log − passthrough)", "passthrough"),
            ("tls", "TLS adds (tls − passthrough)", "passthrough"),
            ("waf", "the WAF adds to benign traffic (waf − api_body)", "api_body")):
        if scn not in by or base not in by:
            continue
        parts = [p for p in (fmt_delta(scn, t, base) for t in results.get("targets", [])) if p]
        if parts:
            lines.append(f"- **{label}**, gateway CPU per request: " + " · ".join(parts))
    if not lines:
        return []
    head = ("Across scenarios (medians at the fixed rate; scenarios are measured one after "
            "the other, so ± adds up the half spreads of both sides' rounds):")
    if results.get("smoke"):
        head += " *smoke run: tiny load, not a measurement*"
    return [head, ""] + lines


def ai_summary(results) -> list[str]:
    """The AI gateway figures of issue 16 in one table, as Markdown lines (none when no ai_*
    scenario ran)."""
    by = {s["name"]: s for s in results.get("scenarios", [])}
    ai_scs = [s for s in results.get("scenarios", []) if "ai" in s.get("features", ())]
    if not ai_scs:
        return []
    names = [n for n in results.get("targets", []) if any(n in s["targets"] for s in ai_scs)]

    def cell(scn, fn):
        sc = by.get(scn)
        out = []
        for n in names:
            tr = (sc or {}).get("targets", {}).get(n)
            if sc is None or tr is None:
                out.append("–")
            elif tr.get("status") != "ok":
                out.append(_short_na(tr))
            else:
                out.append(fn(sc, tr))
        return out

    rate = lambda tr: tr.get("rate") or {}  # noqa: E731
    rows = []
    if "ai_chat" in by:
        r = by["ai_chat"].get("rate")
        rows.append((f"ai_chat: CPU µs/req @ {_num(r)}/s",
                     cell("ai_chat", lambda sc, tr: _num(rate(tr).get("cpu_us_per_req"), 1))))
        rows.append(("ai_chat: max req/s on one core",
                     cell("ai_chat", lambda sc, tr: _num((tr.get("max") or {}).get("rps")))))
        rows.append(("ai_chat: added p99 ms @ concurrency 1 (− direct)",
                     cell("ai_chat", lambda sc, tr: _baseline(sc, tr)
                          or _ms_signed(added(sc, tr, "c1", "p99_us")))))
    if "ai_stream" in by:
        r = by["ai_stream"].get("rate")
        rows.append((f"ai_stream: CPU µs/stream @ {_num(r)}/s",
                     cell("ai_stream", lambda sc, tr: _num(rate(tr).get("cpu_us_per_req"), 1))))
        st = by["ai_stream"].get("stream") or {}
        conns = by["ai_stream"].get("connections")
        ceiling = (f", ceiling {conns / st['ideal_s']:,.0f} = {conns} / "
                   f"{st['ideal_s'] * 1000:g} ms" if st.get("ideal_s") and conns else "")
        rows.append((f"ai_stream: streams/s, closed loop on {conns} connections{ceiling}",
                     cell("ai_stream", lambda sc, tr: _num((tr.get("max") or {}).get("rps")))))
        rows.append(("ai_stream: added TTFT p50 / p99 ms @ concurrency 1 (− direct)",
                     cell("ai_stream", lambda sc, tr: _baseline(sc, tr) or " / ".join(
                         _ms_signed(added(sc, tr, "c1", k))
                         for k in ("ttft_p50_us", "ttft_p99_us")))))
    if "ai_stream_512" in by:
        conns = by["ai_stream_512"].get("connections")
        rows.append((f"ai_stream_512: {conns} concurrent streams without a stall",
                     cell("ai_stream_512", lambda sc, tr: stall_verdict(sc, tr)[1])))
    idle = lambda tr: (tr.get("memory_idle") or {}).get("rss_kib")  # noqa: E731
    peak = lambda tr: (tr.get("memory") or {}).get("hwm_kib")  # noqa: E731
    for s in ai_scs:
        rows.append((f"{s['name']}: RSS idle / peak MiB",
                     cell(s["name"], lambda sc, tr: f"{_mib(idle(tr))} / {_mib(peak(tr))}")))
    lines = ["| AI gateway (issue 16) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    head = ("AI gateway figures (the fake provider on loopback; `direct` = the fake without a "
            "gateway; nginx/haproxy, when present, only proxy the path: a floor):")
    if results.get("smoke"):
        head += " *smoke run: tiny load, not a measurement*"
    peers = results.get("peers") or {}
    notes = []
    for n, rec in peers.items():
        if rec.get("seconds") is not None:
            notes.append(f"{n}: {rec.get('what', '')} in {rec['dir']}, installed in "
                         f"{rec['seconds']:.0f} s, {rec.get('bytes', 0) / 1048576:,.0f} MiB")
    out = [head, ""] + lines
    if notes:
        out += ["", "Peers: " + "; ".join(notes) + "."]
    return out


def _short_na(tr):
    if not tr:
        return "–"
    if tr.get("status") == "n/a":
        r = tr.get("reason", "")
        if r.startswith("needs"):
            return "n/a: " + r.split(" (")[0]
        return "n/a"
    return "error"


def markdown(results) -> str:
    m = results.get("machine") or machine()
    out = ["# FastGate load benchmarks", ""]
    cmd = results.get("command", "python -m benchmarks")
    out.append(f"Run {results.get('started', '?')} · `{cmd}`")
    out.append("")
    out.append(machine_line(m))
    out.append("")
    vers = results.get("versions", {})
    if vers:
        out.append("Targets: " + "; ".join(f"{k}: {v}" for k, v in vers.items()) + ".")
        out.append("")
    out.append(f"{results.get('pinning', '')}. Each target runs "
               + (f"{results['workers']} workers" if results.get("workers") else "1 worker")
               + "; nginx and HAProxy get generated configs (upstream keep-alive, access log "
               "off, X-Forwarded-For/Proto like fastgate). Gateway CPU = CPU time of every "
               "process of the target (nanosecond schedstat of each thread; the tick-based "
               "utime+stime of /proc/PID/stat is kept in the JSON as a cross-check) during "
               "the measurement window. Peak RSS = VmHWM summed over those processes.")
    out.append("")
    s = results.get("settings", {})
    out.append(f"Rounds: {s.get('rounds')} at the fixed rate, {s.get('max_rounds')} at max, "
               f"targets interleaved (order rotated each round); {s.get('warmup')} s warm-up + "
               f"{s.get('duration')} s measured each. Headline = median CPU µs per request at "
               "the fixed offered rate; its ratio is the median of per-round ratios (± = half "
               "the spread of the rounds). At saturation CPU/request moves with throughput "
               "(batching), so the max columns are for throughput, not for cost.")
    out.append("")
    if results.get("smoke"):
        out += ["**Smoke run** (tiny load, seconds): checks the harness, not performance.", ""]
    out += ["## Summary", "", summary_table(results), ""]
    derived_lines = derived(results)
    if derived_lines:
        out += derived_lines + [""]
    ai_lines = ai_summary(results)
    if ai_lines:
        out += ai_lines + [""]
    for sc in results["scenarios"]:
        out += [scenario_table(sc), ""]
    out += ["Features named by scenarios: " + "; ".join(f"`{k}` = {v}" for k, v in FEATURES.items())
            + ". n/a: needs X = the target rejected (fastgate: `fastgate check`) or cannot "
            "express the scenario's config."]
    return "\n".join(out) + "\n"


def machine_line(m) -> str:
    parts = [f"CPU: {m.get('cpu')} ({m.get('usable_cores')} usable of {m.get('cores')} cores)",
             f"kernel {m.get('kernel')}", f"Python {m.get('python')}"]
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']} GiB RAM")
    for k in ("nginx", "haproxy", "wrk", "uvloop"):
        if m.get(k):
            parts.append(f"{k}: {m[k]}")
    return "Machine: " + " · ".join(parts) + "."


def plot(results, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scs = [s for s in results["scenarios"] if s["kind"] != "idle"]
    names = results.get("targets", [])
    if not scs or not names:
        return False
    # small multiples: scenarios differ by 100x in cost, one shared axis would hide them
    fig, axes = plt.subplots(2, len(scs), figsize=(2.6 * len(scs) + 1, 5.5), squeeze=False)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    metrics = (("rate", "cpu_us_per_req", "CPU µs/req @ fixed rate"),
               ("max", "rps", "max req/s"))
    for col, sc in enumerate(scs):
        for row, (phase, key, label) in enumerate(metrics):
            ax = axes[row][col]
            vals = [((sc["targets"].get(n) or {}).get(phase) or {}).get(key) for n in names]
            xs = list(range(len(names)))
            ax.bar(xs, [v or 0 for v in vals], color=colors[:len(names)])
            for x, v in zip(xs, vals):
                ax.text(x, v or 0, "n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}",
                        ha="center", va="bottom", fontsize=7)
            ax.margins(y=0.15)
            ax.set_xticks(xs)
            ax.set_xticklabels(names, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            if row == 0:
                ax.set_title(sc["name"], fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle("gateway CPU per request at a fixed offered rate (lower is better) and "
                 "closed-loop max throughput (higher is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results, outdir) -> dict:
    os.makedirs(outdir, exist_ok=True)
    paths = {"json": os.path.join(outdir, "results.json"),
             "md": os.path.join(outdir, "results.md")}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(paths["md"], "w") as f:
        f.write(markdown(results))
    cfgdir = os.path.join(outdir, "configs")
    for sc in results.get("scenarios", []):
        for name, tr in sc.get("targets", {}).items():
            if tr.get("config"):
                os.makedirs(cfgdir, exist_ok=True)
                ext = {"fastgate": "yaml", "nginx": "conf", "nginx_modsec": "conf",
                       "haproxy": "cfg", "litellm": "yaml", "portkey": "json"}.get(name, "txt")
                with open(os.path.join(cfgdir, f"{sc['name']}-{name}.{ext}"), "w") as f:
                    f.write(tr["config"])
    png = os.path.join(outdir, "results.png")
    if plot(results, png):
        paths["png"] = png
    return paths


def publish(md_path) -> str:
    """Copy a run's table to results/latest.md (the machine description is in it)."""
    dest = os.path.join(RESULTS, "latest.md")
    shutil.copyfile(md_path, dest)
    png = os.path.join(os.path.dirname(md_path), "results.png")
    if os.path.exists(png):
        shutil.copyfile(png, os.path.join(RESULTS, "latest.png"))
    return dest
