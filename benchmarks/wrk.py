"""wrk as an alternative closed-loop load generator (``--loadgen wrk``), to cross-check ours.

wrk cannot pace requests, so it only replaces the max-throughput phase; the fixed-rate phase
always uses the bundled generator. wrk counts its whole run, so the CPU window here spans the
wrk process (connection set-up included, which is negligible against seconds of load).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

from benchmarks.procs import Proc
from benchmarks.targets import HOST

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def available():
    return shutil.which("wrk") is not None


def _lua(sc, request_head, path):
    """A wrk script that sends exactly our request (method, headers, body)."""
    head_lines = request_head.split("\r\n")[1:]
    hdrs = []
    for line in head_lines:
        if not line or ":" not in line:
            continue
        k, v = line.split(":", 1)
        if k.lower() in ("host", "content-length"):
            continue
        hdrs.append(f'wrk.headers["{k}"] = "{v.strip()}"')
    if sc.body is not None:  # the AI scenarios' JSON, as a Lua long string
        body = "wrk.body = [==[" + sc.body.decode("latin-1") + "]==]"
    else:
        body = f'wrk.body = string.rep("x", {sc.body_size})' if sc.body_size else ""
    with open(path, "w") as f:
        f.write(f'wrk.method = "{sc.method}"\n' + "\n".join(hdrs) + "\n" + body + "\n")


def _us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse(out: str) -> dict:
    res = {"errors": {}}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["elapsed_s"] = _us(m.group(2) + m.group(3)) / 1e6
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    lat = {}
    for q, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        if m:
            lat[key] = _us(m.group(1))
    lat.setdefault("p999_us", None)
    res["latency"] = lat
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for name, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                res["errors"][name] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"]["status_non_2xx"] = int(m.group(1))
    return res


def run(prep, sc, request_head, *, connections, duration, cpus, tmp, meter):
    script = os.path.join(tmp, f"wrk-{sc.name}.lua")
    _lua(sc, request_head, script)
    secs = max(1, int(round(duration)))
    # wrk speaks TLS for https:// URLs (it does not verify the certificate; the probes did)
    url = f"{'https' if prep.tls else 'http'}://{HOST}:{prep.port}{prep.path or sc.path}"
    outp = os.path.join(tmp, f"wrk-{prep.target.name}-{sc.name}.out")
    with open(outp, "wb") as out:
        meter.start()
        p = Proc("wrk", ["wrk", "-t1", f"-c{connections}", f"-d{secs}s", "--latency",
                         f"--timeout={int(sc.timeout)}s", "-s", script, url],
                 cpus=cpus, stdout=out, log_path=outp + ".err")
        try:
            p.popen.wait(secs + sc.timeout + 30)
        except subprocess.TimeoutExpired:
            pass
        cpu_s, wall = meter.stop()
        p.stop()
    with open(outp) as f:
        text = f.read()
    r = parse(text)
    if "requests" not in r:
        from benchmarks.runner import HarnessError
        raise HarnessError(f"could not read wrk output: {text[-300:]!r}")
    count = r["requests"]
    m = {
        "loadgen": "wrk",
        "requests": count,
        "rps": r.get("rps") or count / secs,
        "cpu_s": cpu_s,
        "cpu_wall_s": wall,
        "cpu_util": cpu_s / wall if wall else None,
        "cpu_us_per_req": cpu_s * 1e6 / count if count else None,
        "errors": r["errors"],
        "errors_total": sum(r["errors"].values()),
        "latency": r["latency"],
    }
    if sc.unit and count:
        m["cpu_us_per_unit"] = cpu_s * 1e6 / (count * sc.units_per_request)
    return m
