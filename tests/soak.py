"""The soak: the gateway under steady, varied traffic for a long time, watched for leaks.

    python -m tests.soak [--minutes M | --seconds S] [--rate R] [--no-trace]
    ./dev.sh soak [MINUTES]                  (default 10)

One gateway process (plain and TLS listeners, certificates made here) in front of a loopback
upstream (tests.helpers.fault_upstream). Traffic at a fixed rate, every answer checked against
its own request: keep-alive connections that churn (each closes after a random 1-50
requests), half of them over TLS, every request with an HS256 JWT, through a rate limit and
into a JSON access log. RSS and open fds of the gateway are sampled every few seconds.

Passes when, after the warm-up (the first fifth, at most a minute), RSS grew -- from its
lowest point after the warm-up (the tracemalloc snapshot taken then costs memory for a while)
to the mean of the last three samples -- by less than
``--max-growth-mib`` (5), the fd count stayed flat (the last third of the samples peaks at
most max(4, connections / 2) above the first third's peak: the churning connections make
it move), and
no request failed. On failure (and with tracing on, the default) the top allocation growth
between the end of the warm-up and the end is printed from tracemalloc.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import random
import secrets
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JWT_SECRET = "soak-" + "k7#Qv9!zR2@mX4$pL8^wN1&bT6*yH3(eA5%u0?cD"
# Runs the gateway with tracemalloc and a SIGUSR2 handler that writes a snapshot. Tracing
# starts after the gateway's modules are imported (what importing allocates is not a leak,
# and traced imports made start-up 10 s). A forked child takes and writes each snapshot, so
# the gateway's loop never waits for it (inline, taking, filtering and pickling ~170k traces
# stalled the loop ~10 s, past the load's timeout); the driver filters out tracemalloc's own
# traces when it compares.
_BOOT = """
import os, pickle, signal, sys, tracemalloc
import fastgate.cli, fastgate.server.app
tracemalloc.start(12)
path = os.environ["SOAK_SNAPSHOT"]
def dump(*_):
    n = len([f for f in os.listdir(os.path.dirname(path)) if f.startswith("snap-")])
    out = os.path.join(os.path.dirname(path), f"snap-{n}.pickle")
    if os.fork() == 0:
        signal.alarm(60)    # never outlive the run (the default action ends the child)
        try:
            with open(out + ".part", "wb") as f:
                pickle.dump(tracemalloc.take_snapshot(), f)
            os.rename(out + ".part", out)
        finally:
            os._exit(0)
signal.signal(signal.SIGUSR2, dump)
from fastgate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    def __init__(self, port, tls_port, ctx, token, rate):
        self.port, self.tls_port, self.ctx = port, tls_port, ctx
        self.auth = b"Bearer " + token.encode()
        self.rate = rate
        self.ok = 0
        self.failed: list[str] = []
        self.running = True

    async def connection(self, rnd):
        while self.running:
            tls = rnd.random() < 0.5
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.tls_port if tls else self.port,
                    ssl=self.ctx if tls else None, server_hostname="localhost" if tls else None)
            except OSError as exc:
                self.failed.append(f"connect: {exc}")
                await asyncio.sleep(0.1)
                continue
            try:
                for _ in range(rnd.randint(1, 50)):
                    if not self.running:
                        break
                    rid = secrets.token_hex(8)
                    writer.write(b"GET /ok/%s HTTP/1.1\r\nHost: t\r\nX-Request-ID: %s\r\n"
                                 b"Authorization: %s\r\n\r\n" % (rid.encode(), rid.encode(),
                                                                 self.auth))
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    n = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            n = int(line.split(b":")[1])
                    body = await asyncio.wait_for(reader.readexactly(n), 10)
                    if not head.startswith(b"HTTP/1.1 200") or body != f"{rid} {rid}".encode():
                        self.failed.append(f"{head[:60]!r} {body[:80]!r}")
                    else:
                        self.ok += 1
                    await asyncio.sleep(rnd.expovariate(self.rate / self.conns))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self.failed.append(f"exchange: {exc!r}")
            finally:
                writer.close()

    async def run(self, seconds, conns, sample):
        self.conns = conns
        tasks = [asyncio.create_task(self.connection(random.Random(i))) for i in range(conns)]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
            sample()
        self.running = False
        await asyncio.gather(*tasks, return_exceptions=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--rate", type=float, default=500.0, help="requests/s in all (500)")
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--max-growth-mib", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before RSS is watched (default: a fifth, at most 60)")
    ap.add_argument("--no-trace", action="store_true", help="without tracemalloc")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (args.minutes or 10) * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, seconds / 5)
    sys.path.insert(0, ROOT)
    import jwt
    import trustme
    import yaml

    from tests.helpers.gateway import free_port

    tmp = tempfile.mkdtemp(prefix="fastgate-soak-")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(os.path.join(tmp, "gw.pem"))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    up_port, port, tls_port = free_port(), free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.helpers.fault_upstream",
                                 str(up_port)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert upstream.stdout.readline().strip() == "READY"
    cfg = {
        "listeners": [{"bind": f"127.0.0.1:{port}"},
                      {"bind": f"127.0.0.1:{tls_port}",
                       "tls": {"cert_file": "gw.pem", "key_file": "gw.pem"}}],
        "upstreams": {"up": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}]}},
        "auth": {"hs": {"type": "jwt", "secret": JWT_SECRET, "algorithms": ["HS256"]}},
        "consumers": [{"name": "soak", "jwt_subjects": ["soak-user"]}],
        "routes": [{"name": "ok", "paths": ["/ok/*"], "upstream": "up",
                    "auth": {"using": ["hs"]},
                    "rate_limits": [{"limit": 100000, "per": "second", "by": "consumer"}]}],
        "logging": {"access_log": os.path.join(tmp, "access.log")},
    }
    path = os.path.join(tmp, "gw.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    env = dict(os.environ, FASTGATE_LOG_LEVEL="WARNING",
               SOAK_SNAPSHOT=os.path.join(tmp, "snap"))
    cmd = [sys.executable]
    if not args.no_trace:
        cmd += ["-c", _BOOT]
    else:
        cmd += ["-m", "fastgate"]
    gw = subprocess.Popen(cmd + ["run", "-c", path], cwd=ROOT, env=env,
                          stderr=subprocess.PIPE, text=True)
    seen = 0
    while seen < 2:
        line = gw.stderr.readline()
        if not line:
            print(f"soak: the gateway did not start (exit {gw.wait()})")
            return 1
        seen += line.startswith("listening on")
    token = jwt.encode({"sub": "soak-user", "exp": int(time.time()) + seconds + 600},
                       JWT_SECRET, algorithm="HS256")
    load = Load(port, tls_port, client_ctx, token, args.rate)
    samples = []
    t0 = time.monotonic()
    marked = {"warm": False, "from": None}

    def sample():
        t = time.monotonic() - t0
        samples.append((t, rss_kib(gw.pid), fds(gw.pid), load.ok))
        if not marked["warm"] and t >= warmup:
            marked["warm"] = True
            # growth counts from the next sample: taking the snapshot costs memory once
            marked["from"] = len(samples)
            if not args.no_trace:
                os.kill(gw.pid, 12)     # SIGUSR2: snapshot at the end of the warm-up
    import uvloop
    try:
        uvloop.run(load.run(seconds, args.connections, sample))
        if not args.no_trace:
            os.kill(gw.pid, 12)
            # the forked child writes it while the gateway goes on: wait for both snapshots
            until = time.monotonic() + 60
            while time.monotonic() < until and len(
                    [n for n in os.listdir(tmp) if n.endswith(".pickle")]) < 2:
                time.sleep(0.2)
    finally:
        gw.terminate()
        code = gw.wait(30)
        upstream.kill()
    after = samples[marked["from"]:] if marked["from"] is not None else []
    after = after or samples[-1:]
    # from the lowest point after the warm-up (the snapshot's own memory comes and goes) to
    # where it ended: a leak only ever climbs
    tail = after[-3:]
    growth_mib = (sum(s[1] for s in tail) / len(tail) - min(s[1] for s in after)) / 1024
    # open fds move with the churning connections at each sample (each of the load's
    # connections closes and reopens every 1-50 requests, so at a sample anywhere from a few
    # to all of them are open); a leak climbs without bound: the last third may not rise
    # above the first third's peak by more than half the load's connections (a short CI
    # pass has a handful of samples, and its first third can be one sample taken while
    # connections were reopening: 51 then 56, 56, 56 was seen on a healthy gateway)
    third = max(1, len(after) // 3)
    fd_growth = max(s[2] for s in after[-third:]) - max(s[2] for s in after[:third])
    fd_slack = max(4, args.connections // 2)
    rate = (after[-1][3] - after[0][3]) / max(1e-9, after[-1][0] - after[0][0])
    ok = (growth_mib < args.max_growth_mib and fd_growth <= fd_slack and not load.failed
          and code == 0)
    print(json.dumps({"seconds": round(seconds), "warmup_s": round(warmup),
                      "requests_ok": load.ok, "failed": len(load.failed),
                      "rate": round(rate), "rss_mib_after_warmup": round(min(s[1] for s in after) / 1024, 1),
                      "rss_growth_mib": round(growth_mib, 2), "fd_growth": fd_growth,
                      "fds": [s[2] for s in after][::max(1, len(after) // 20)],
                      "rss_curve_mib": [round(s[1] / 1024, 1) for s in samples][::max(
                          1, len(samples) // 20)],
                      "gateway_exit": code, "pass": ok}))
    for f in load.failed[:10]:
        print("  failed:", f)
    snaps = sorted(n for n in os.listdir(tmp) if n.startswith("snap-") and n.endswith(".pickle"))
    if not ok and len(snaps) >= 2:
        import tracemalloc
        own = [tracemalloc.Filter(False, tracemalloc.__file__)]
        with open(os.path.join(tmp, snaps[0]), "rb") as f:
            first = pickle.load(f).filter_traces(own)
        with open(os.path.join(tmp, snaps[-1]), "rb") as f:
            last = pickle.load(f).filter_traces(own)
        print("top allocation growth since the warm-up:")
        for stat in last.compare_to(first, "traceback")[:12]:
            print(" ", stat)
            for line in stat.traceback.format()[-6:]:
                print("     ", line)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
