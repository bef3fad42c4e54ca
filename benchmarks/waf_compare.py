"""Detection, not speed: the OWASP CRS regression requests and the repo's benign corpus,
replayed through fastgate's WAF and through nginx + ModSecurity v3 + OWASP CRS (the
``nginx_modsec`` target), and what each blocked.

    python -m benchmarks.waf_compare                  # the markdown table on stdout
    python -m benchmarks.waf_compare --out benchmarks/results/waf-compare.md
    python -m benchmarks.waf_compare --cases /tmp/cases.json   # every request's status

It starts on loopback the harness's upstream (benchmarks/upstream.py), fastgate (``python -m
fastgate run`` with one route ``/*`` and ``waf: {mode: block}`` with all seven rules: sqli,
xss, path_traversal, command_injection, rfi, php, java) and nginx_modsec (the generator of
benchmarks/targets.py: paranoia level 1, blocking at inbound anomaly score 5, request bodies
inspected; its error log at ``info``, where the connector names each CRS rule that matched,
so that the rules behind its false positives can be listed). Then, one request at a time
on a fresh connection (raw bytes, a 5 s timeout), each to both:

* the paranoia-level-1 ``attack`` cases of ../shared/waf-corpus/crs-requests.json (or
  $FASTGATE_WAF_CORPUS), as tests/integration/test_waf.py sends them (go-ftw's changes
  applied by tests/waf/corpus.py, ``connection: close``);
* the PL1 ``benign`` stages of that corpus (near misses of one CRS rule each: other rules
  may rightly flag them, see the corpus README);
* the benign corpus of tests/waf/benign.py (2,400 realistic API requests, seed 7).

403 counts as blocked. A 400 (the request refused as malformed, by the gateway's HTTP parser
or by ModSecurity's body-parse rule 200002) is counted apart; anything else passed. Nothing
it starts outlives it; it uses one CPU at a time (run it under ``taskset -c 0`` to pin it).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import re
import os
import resource
import shutil
import socket
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import procs, report  # noqa: E402
from benchmarks.scenarios import BY_NAME  # noqa: E402
from benchmarks.targets import (HOST, Fastgate, NginxModsec, NotApplicable,  # noqa: E402
                                crs_rule_files, free_port, wait_port)

FASTGATE_RULES = ("sqli", "xss", "path_traversal", "command_injection", "rfi", "php", "java")
DEFAULT_CLASSES = ("sqli", "xss", "path_traversal", "command_injection")
OTHER_CLASSES = ("rfi", "php", "java", "generic")
TIMEOUT = 5.0
NAMES = {"fastgate": "FastGate", "nginx_modsec": "nginx + ModSecurity + CRS"}


class FastgateAllRules(Fastgate):
    """The harness's fastgate config for the waf scenario, its route on every path and
    with every WAF rule fastgate has."""

    def config(self, scenario, port):
        cfg = super().config(scenario, port)
        route = cfg["routes"][0]
        route["paths"] = ["/*"]
        route["waf"] = {"mode": "block", "rules": list(FASTGATE_RULES)}
        return cfg


class NginxModsecInfo(NginxModsec):
    """The nginx_modsec target with its error log at ``info``, where the ModSecurity
    connector writes each rule that matched (at ``warn`` only the final 403 is logged):
    the rule ids of each request are read back from it (requests are sequential)."""

    def config(self, scenario, port, wd):
        text = super().config(scenario, port, wd)
        old = f"error_log {os.path.join(wd, 'error.log')} warn;"
        assert old in text
        self.error_log = os.path.join(wd, "error.log")
        return text.replace(old, old.replace(" warn;", " info;"))


RULE_RE = re.compile(r'\[id "(\d+)"\].*?\[msg "([^"]*)"\]')
# CRS rules of policy, not attack detection: methods (911100: GET HEAD POST OPTIONS at PL1)
# and request content types (920420)
POLICY_RULES = {"911100", "920420"}
# the CRS's bookkeeping rules (anomaly score evaluation, correlation), not detections
BOOKKEEPING = {"949110", "959100", "980130", "980140"}


class LogTail:
    def __init__(self, path):
        self.path = path
        self.pos = os.path.getsize(path) if os.path.exists(path) else 0

    def rules(self):
        """{rule id: msg} of the lines written since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return {}
        self.pos += len(data)
        out = {}
        for line in data.decode("utf-8", "replace").splitlines():
            for rid, msg in RULE_RE.findall(line):
                if rid not in BOOKKEEPING:
                    out[rid] = msg
        return out


def installed_crs_ids() -> set[str]:
    ids = set()
    for path in crs_rule_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            ids.update(re.findall(r"\bid:'?(\d+)", f.read()))
    return ids


class _Ctx:
    """What the targets read of benchmarks.runner.Context."""

    def __init__(self, tmp, upstream_port):
        self.tmp = tmp
        self.upstream_port = upstream_port
        self.workers = None
        self.fastgate_cmd = None
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raw_request(method, target, headers, body) -> bytes:
    """The bytes on the wire: as tests/integration/test_waf.py replays the CRS corpus (a
    host header if none, every header as given, ``connection: close``), plus a
    content-length when a body has none (the benign corpus leaves it to the client)."""
    lines = [method + b" " + target + b" HTTP/1.1"]
    names = {n for n, _ in headers}
    if b"host" not in names:
        lines.append(b"host: localhost")
    lines += [n + b": " + v for n, v in headers if n != b"connection"]
    if body is not None and b"content-length" not in names \
            and b"transfer-encoding" not in names:
        lines.append(b"content-length: %d" % len(body))
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def send(port, raw) -> str:
    """The answer's status code ("403"), or "none" (no answer within the timeout)."""
    got = b""
    try:
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
            s.settimeout(TIMEOUT)
            s.sendall(raw)
            while b"\r\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError:
        pass
    if got.startswith(b"HTTP/1.") and len(got) >= 12:
        return got[9:12].decode("latin-1")
    return "none"


def outcome(status) -> str:
    return {"403": "blocked", "400": "refused"}.get(status, "passed")


def _pct(n, t):
    return f"{n}/{t} ({100 * n / t:.1f}%)" if t else "-"


def _cell(c, t):
    """'blocked/total (pct)' and the 400s beside it."""
    s = _pct(c["blocked"], t)
    if c["refused"]:
        s += f" +{c['refused']}×400"
    return s


def tables(counts, totals, gateways, n_benign) -> str:
    g = gateways
    out = attack_table(counts, totals, g, "attack",
                       "**Attacks** (CRS regression requests of paranoia-level-1 rules, "
                       "`expect: attack`; blocked = 403, `+N×400` = refused as malformed "
                       "besides):")
    out += [""] + attack_table(
        counts, totals, g, "attack33",
        "**The same, only the cases whose rule id exists in the installed CRS 3.3.4** (the "
        "corpus is CRS 4's: the rest test rules added since, which the peer does not have):")
    out += fp_table(counts, totals, g, n_benign)
    return "\n".join(out)


def attack_table(counts, totals, gateways, kind, title):
    g = gateways
    head = "| class | PL1 attacks | " + " | ".join(f"{NAMES[x]}: blocked" for x in g) + " |"
    sep = "|---|---:|" + "---:|" * len(g)
    out = [title, "", head, sep]

    def rows(classes, label):
        sub_t = 0
        sub = {x: collections.Counter() for x in g}
        for cls in classes:
            t = totals[(kind, cls)]
            if not t:
                continue
            sub_t += t
            for x in g:
                sub[x].update(counts[(x, kind, cls)])
            out.append(f"| {cls} | {t} | "
                       + " | ".join(_cell(counts[(x, kind, cls)], t) for x in g) + " |")
        out.append(f"| **{label}** | **{sub_t}** | "
                   + " | ".join(f"**{_cell(sub[x], sub_t)}**" for x in g) + " |")
        return sub_t, sub

    t1, s1 = rows(DEFAULT_CLASSES, "the four default classes")
    t2, s2 = rows(OTHER_CLASSES, "other classes")
    out.append(f"| **all** | **{t1 + t2}** | "
               + " | ".join(f"**{_cell(s1[x] + s2[x], t1 + t2)}**" for x in g) + " |")
    return out


def fp_table(counts, totals, g, n_benign):
    out = ["", "**False positives** (benign traffic blocked):", "",
            "| corpus | requests | " + " | ".join(f"{NAMES[x]}: blocked" for x in g) + " |",
            "|---|---:|" + "---:|" * len(g)]
    out.append(f"| benign API traffic (tests/waf/benign.py, seed 7) | {n_benign} | "
               + " | ".join(_cell(counts[(x, "benign_corpus", "")], n_benign) for x in g)
               + " |")
    crs_b = sum(totals[("benign", c)] for c in DEFAULT_CLASSES + OTHER_CLASSES)
    for cls in DEFAULT_CLASSES + OTHER_CLASSES:
        t = totals[("benign", cls)]
        if t:
            out.append(f"| CRS PL1 `benign` stages, {cls} | {t} | "
                       + " | ".join(_cell(counts[(x, "benign", cls)], t) for x in g) + " |")
    tot = {x: sum((counts[(x, "benign", c)] for c in DEFAULT_CLASSES + OTHER_CLASSES),
                  collections.Counter()) for x in g}
    out.append(f"| **CRS PL1 `benign` stages, all** | **{crs_b}** | "
               + " | ".join(f"**{_cell(tot[x], crs_b)}**" for x in g) + " |")
    return out


def fp_reasons(fp_rules, msgs, counts, gateways, top=12) -> str:
    """Which CRS rules matched in the benign requests nginx + ModSecurity blocked."""
    out = []
    for g in gateways:
        for kind, label in (("benign_corpus", "benign API traffic"),
                            ("benign", "CRS PL1 `benign` stages")):
            c = fp_rules.get((g, kind))
            if not c:
                continue
            c = collections.Counter(c)
            policy_only = c.pop("policy only", 0)
            n = sum(counts[(g, kind, cls)]["blocked"] for cls in ("",) + DEFAULT_CLASSES
                    + OTHER_CLASSES)
            out.append(f"{NAMES[g]}, the {n} blocked requests of the {label}: the CRS rules "
                       "that matched in them (a request can match several; top "
                       f"{min(top, len(c))} of {len(c)}); {policy_only} of the {n} matched "
                       "only the policy rules " + " and ".join(sorted(POLICY_RULES))
                       + " (allowed methods, allowed content types):")
            out += [""] + ["| rule | requests | message |", "|---|---:|---|"]
            out += [f"| {rid} | {k} | {msgs.get(rid, '')} |" for rid, k in c.most_common(top)]
            out.append("")
    return "\n".join(out).rstrip()


def header(versions, n_requests, seconds) -> str:
    m = report.machine()
    return "\n".join([
        "# WAF detection: FastGate vs nginx + ModSecurity v3 + OWASP CRS",
        "",
        f"* date: {datetime.date.today().isoformat()}",
        f"* machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
        f"Python {m['python']}",
        *[f"* {NAMES[k]}: {v}" for k, v in versions.items()],
        "* FastGate config: one route `/*`, `waf: {mode: block, rules: [" +
        ", ".join(FASTGATE_RULES) + "]}` (body inspection on, 64 KiB)",
        "* nginx + ModSecurity: the `nginx_modsec` target of benchmarks/targets.py "
        "(`SecRuleEngine On`, request bodies inspected, JSON bodies through the JSON "
        "processor, CRS `tx.paranoia_level=1`, inbound anomaly threshold 5)",
        "* corpus: ../shared/waf-corpus/crs-requests.json (OWASP CRS regression tests at "
        "CRS 4.x commit 2cbd1d0: the tests and their paranoia levels are CRS 4's, "
        "the peer runs CRS 3.3.4) and tests/waf/benign.py",
        f"* {n_requests:,} requests per gateway, one at a time on a fresh connection, "
        f"loopback, in {seconds:.0f} s: `python -m benchmarks.waf_compare` under "
        "`taskset -c 0`",
        ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.waf_compare",
                                 description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=None,
                    help="crs-requests.json (default: $FASTGATE_WAF_CORPUS or "
                         "../shared/waf-corpus/crs-requests.json)")
    ap.add_argument("--out", help="also write the markdown (header + tables) to this file")
    ap.add_argument("--cases", help="write every request's status per gateway (JSON)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--limit", type=int, default=None,
                    help="replay only every Nth request (a quick check of the set-up)")
    a = ap.parse_args(argv)

    from tests.waf import benign as benign_corpus
    from tests.waf.corpus import CORPUS, build_request, load_cases
    corpus = a.corpus or CORPUS
    if not os.path.exists(corpus):
        print(f"no corpus at {corpus}", file=sys.stderr)
        return 2

    crs_ids = installed_crs_ids()
    requests = []  # (kind, class, id, in the installed CRS, raw)
    for c in load_cases(corpus):
        if c["pl"] != 1:
            continue
        method, target, hs, body, _ = build_request(c)
        requests.append((c["expect"], c["class"], c["id"], str(c["rule"]) in crs_ids,
                         raw_request(method, target, hs, body)))
    for i, (method, target, hs, body, _) in enumerate(benign_corpus.requests()):
        requests.append(("benign_corpus", "", f"benign-{i}", False,
                         raw_request(method, target, hs, body)))

    if a.limit:
        requests = requests[::a.limit]
    tmp = tempfile.mkdtemp(prefix="waf-compare-")
    started = []
    try:
        up_port = free_port()
        up = procs.Proc("upstream", [sys.executable, "-m", "benchmarks.upstream", "--port",
                                     str(up_port)], log_path=os.path.join(tmp, "upstream.log"),
                        env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
        started.append(up)
        wait_port(up_port, up, 15.0)
        ctx = _Ctx(tmp, up_port)
        sc = BY_NAME["waf"]
        gateways, ports, versions = [], {}, {}
        tails = {}
        for t in (FastgateAllRules(ctx), NginxModsecInfo(ctx)):
            why = t.availability()
            if why:
                print(f"{t.name}: not available: {why}", file=sys.stderr)
                continue
            try:
                prep = t.prepare(sc, 1)
            except NotApplicable as e:
                print(f"{t.name}: n/a: {e}", file=sys.stderr)
                continue
            started.append(t.start(prep, None))
            gateways.append(t.name)
            if hasattr(t, "error_log"):
                tails[t.name] = LogTail(t.error_log)
            ports[t.name] = prep.port
            versions[t.name] = t.version()
            if getattr(t, "excluded", None):
                versions[t.name] += "; rule files left out: " + ", ".join(
                    os.path.basename(p) for p in t.excluded)
        if not gateways:
            return 1

        counts = collections.defaultdict(collections.Counter)
        totals = collections.Counter()
        statuses = collections.defaultdict(collections.Counter)
        fp_rules = collections.defaultdict(collections.Counter)  # (gateway, kind) -> rule ids
        msgs = {}
        cases = []
        t0 = time.monotonic()
        for kind, cls, cid, in_crs, raw in requests:
            totals[(kind, cls)] += 1
            also = kind == "attack" and in_crs
            if also:
                totals[("attack33", cls)] += 1
            row = {"id": cid, "kind": kind, "class": cls}
            for g in gateways:
                st = send(ports[g], raw)
                counts[(g, kind, cls)][outcome(st)] += 1
                if also:
                    counts[(g, "attack33", cls)][outcome(st)] += 1
                statuses[g][st] += 1
                row[g] = st
                if g in tails:
                    hit = tails[g].rules()
                    row[g + "_rules"] = sorted(hit)
                    msgs.update(hit)
                    if kind != "attack" and st == "403":
                        fp_rules[(g, kind)].update(hit.keys())
                        if hit and set(hit) <= POLICY_RULES:
                            fp_rules[(g, kind)]["policy only"] += 1
            cases.append(row)
        seconds = time.monotonic() - t0
    finally:
        for p in reversed(started):
            p.stop()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    text = (header(versions, len(requests), seconds) + "\n"
            + tables(counts, totals, gateways, totals[("benign_corpus", "")]) + "\n\n"
            + fp_reasons(fp_rules, msgs, counts, gateways) + "\n\n"
            + "Statuses seen: " + "; ".join(
                f"{NAMES[g]} " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses[g].items()))
                for g in gateways) + "\n")
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if a.cases:
        with open(a.cases, "w") as f:
            json.dump(cases, f, indent=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
