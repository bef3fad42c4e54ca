"""The live fuzzer: mutated, split and pipelined requests over real sockets against the real
gateway (`fastgate run`) in front of a strict recording upstream.

    python -m tests.fuzz.live [--seconds N | --connections N] [--seed S]

Each connection sends 1-4 requests (valid ones, smuggling shapes, and random mutations of
both), cut into random pieces sent with small pauses, then half-closes. Every request path
carries a fresh id; the upstream (h11: an independent, strict HTTP/1.1 implementation)
records the id of every request it receives and answers 200 with that id as the body.
Invariants, checked per run:

1. every connection gets well-framed answers (httptools parses them) and then a close, within
   its deadline: never a hang, never garbage;
2. the upstream never sees a malformed request (h11 raises on any framing error);
3. exactly one well-framed request per answer: each time the upstream received a request whole,
   the client got exactly one 200 carrying its id, and never did an id reach the upstream more
   often than the client sent it -- so nothing the gateway refused (4xx) reached the upstream,
   nothing was sent twice, and no answer went to the wrong request.

Exit status 1 (and the offending connections' bytes in .fuzz/live/) when one breaks.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import sys
import threading
import time

from urllib.parse import unquote_to_bytes

import h11
import httptools

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, ".fuzz", "live")

SHAPES = [
    b"GET /fz/{id} HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /fz/{id}?a=1&b=%20 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-A: b\r\n\r\n",
    # smuggling shapes: every one must be refused or framed exactly one way
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"GET /fz/{id} HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n",
    b"GET /fz/{id} HTTP/1.1\nHost: a\n\n",
    b"GET /fz/{id} HTTP/1.0\r\n\r\n",
    b"GET /fz/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nGET /fz/{id2} HTTP/1.1\r\n\r\n",
    b"POST /fz/{id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;ext=1\r\nabcd\r\n0\r\nTrailer: x\r\n\r\n",
    b"GET /fz/../fz/{id} HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /fz/{id} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
]
NOISE = [b"\r\n", b"\n", b"\x00", b" ", b":", b"\t", b"0", b"chunked", b"Content-Length: 1\r\n",
         b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n", b"%00", b"\xff", b"HTTP/1.1", b"9" * 20]


_ID = re.compile(rb"/([^/ \r\n?]*)(?:\?[^ \r\n]*)? ")


_HEX12 = re.compile(r"[0-9a-f]{12}")


def _norm(rid: bytes) -> str:
    return unquote_to_bytes(rid).lower().decode("latin-1")


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(5)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rnd.randrange(256)
        elif op == 1:
            b[i:i] = rnd.choice(NOISE)
        elif op == 2 and b:
            del b[i:i + rnd.randint(1, 8)]
        elif op == 3:
            j = rnd.randrange(len(b) + 1)
            b[i:i] = b[min(i, j):max(i, j)][:64]
        else:
            b = b.replace(b"\r\n", b"\n", 1) if rnd.random() < 0.5 else b.upper()
    return bytes(b)


# --- the strict upstream ------------------------------------------------------------------

class Upstream:
    def __init__(self):
        self.received: dict[str, int] = {}
        self.broken: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.port = None
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self):
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _conn(self, reader, writer):
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.DONE:
                        break
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    break
                if isinstance(event, h11.Request):
                    target = event.target.decode("latin-1")
                    rid = target.split("?", 1)[0].rsplit("/", 1)[-1]   # the path's last segment
                    body = rid.encode("latin-1")
                elif isinstance(event, h11.EndOfMessage):
                    # a request counts once it is complete: a body the client broke off
                    # midway reaches the upstream truncated and then closed (streamed, never
                    # buffered), and no upstream acts on half a request
                    self.received[rid] = self.received.get(rid, 0) + 1
                    writer.write(conn.send(h11.Response(status_code=200, headers=[
                        ("content-length", str(len(body))), ("x-upstream", "1")])))
                    writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if "without sending complete message body" not in str(exc):
                self.broken.append(f"upstream got a malformed request: {exc}")
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()


# --- the client side ----------------------------------------------------------------------

class Answers:
    """Responses on one connection, parsed by httptools (independent of fastgate)."""

    def __init__(self):
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, bytes, bool]] = []
        self._body = b""
        self._upstream = False
        self.error = None

    def on_header(self, name, value):
        if name.lower() == b"x-upstream":
            self._upstream = True

    def on_body(self, data):
        self._body += data

    def on_message_complete(self):
        self.done.append((self.parser.get_status_code(), self._body, self._upstream))
        self._body, self._upstream = b"", False

    def feed(self, data):
        if self.error is None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self.error = f"unparseable answer: {exc}"


async def one_connection(port, rnd, deadline_s):
    ids, parts = [], []
    for _ in range(rnd.randint(1, 4)):
        rid, rid2 = secrets.token_hex(6), secrets.token_hex(6)
        ids += [rid, rid2]
        req = rnd.choice(SHAPES).replace(b"{id}", rid.encode()).replace(b"{id2}", rid2.encode())
        if rnd.random() < 0.6:
            req = mutate(req, rnd)
        parts.append(req)
    stream = b"".join(parts)
    answers = Answers()
    problem = None
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return ids, stream, [], f"connect failed: {exc}"
    try:       # the gateway may close early (HTTP/1.0, an error answer): stop writing then
        i = 0
        while i < len(stream):
            k = rnd.randint(1, max(1, len(stream) // 2))
            writer.write(stream[i:i + k])
            i += k
            if rnd.random() < 0.3:
                await asyncio.sleep(rnd.random() * 0.005)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass
    try:
        while True:
            left = deadline_s - (time.monotonic() - t0)
            if left <= 0:
                problem = "hang: no close within the deadline"
                break
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except asyncio.TimeoutError:
                problem = "hang: no close within the deadline"
                break
            if not data:
                break
            answers.feed(data)
    except OSError:
        pass            # an RST once the answers were read is a close
    writer.close()
    if answers.error:
        problem = answers.error
    return ids, stream, answers.done, problem


async def run(port, upstream, *, connections=None, seconds=None, seed=0, deadline_s=5.0,
              concurrency=16):
    rnd = random.Random(seed)
    got200: dict[str, int] = {}
    sent: dict[str, tuple] = {}       # id -> (stream, answers) of the connection it was on
    streams: list[bytes] = []
    broken: list[tuple[str, bytes]] = []
    done = 0
    stop = time.monotonic() + seconds if seconds else None

    async def worker(k):
        nonlocal done
        wr = random.Random(rnd.random() + k)
        while (connections is None or done < connections) and \
                (stop is None or time.monotonic() < stop):
            done += 1
            ids, stream, answers, problem = await one_connection(port, wr, deadline_s)
            if problem:
                broken.append((problem, stream))
            streams.append(stream)
            for rid in ids:
                sent[rid] = (stream, answers)
            for status, body, from_upstream in answers:
                if from_upstream:
                    rid = body.decode("latin-1")
                    got200[rid] = got200.get(rid, 0) + 1
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    await asyncio.sleep(0.3)      # the upstream records before it answers: nothing is late
    sent_count: dict[str, int] = {}
    for stream in streams:
        for m in _ID.finditer(stream):
            k = _norm(m.group(1))
            sent_count[k] = sent_count.get(k, 0) + 1
    for rid, n in upstream.received.items():
        # A mutation may copy a request (so an id can legitimately arrive twice): never more
        # often than it was sent (compared as the gateway normalises paths: percent-decoded,
        # case-folded), and each arrival answered exactly once.
        sent_times = sent_count.get(_norm(rid.encode("latin-1")), 0)
        ours = _HEX12.fullmatch(rid) is not None     # a mangled id: only the answer count
        if got200.get(rid, 0) != n or (ours and n > sent_times):
            stream, answers = sent.get(rid, (b"", []))
            broken.append((f"id {rid!r}: upstream received it {n}x, client got "
                           f"{got200.get(rid, 0)} answers, sent {sent_times}x; on its "
                           f"connection: {[a[0] for a in answers]}", stream))
    for rid, n in got200.items():
        if upstream.received.get(rid) != n:
            broken.append((f"id {rid!r}: answered {n}x, upstream saw it "
                           f"{upstream.received.get(rid, 0)}x", b""))
    broken += [(b, b"") for b in upstream.broken]
    return done, len(upstream.received), broken


def gateway_config(upstream_port):
    return {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "limits": {"header_timeout_s": 1, "body_timeout_s": 1, "keepalive_timeout_s": 2},
        "upstreams": {"up": {"targets": [{"url": f"http://127.0.0.1:{upstream_port}"}],
                             "retries": 0}},
        "routes": [{"name": "fz", "paths": ["/fz/*"], "upstream": "up"}],
        "logging": {"access_log": "off"},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--connections", type=int, default=None)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args(argv)
    if args.seconds is None and args.connections is None:
        args.seconds = 60
    sys.path.insert(0, ROOT)
    from tests.helpers.gateway import GatewayProc
    import tempfile
    upstream = Upstream()
    with tempfile.TemporaryDirectory() as tmp:
        gw = GatewayProc(gateway_config(upstream.port), tmp).wait_ready()
        try:
            t0 = time.monotonic()
            n, reached, broken = asyncio.run(run(gw.port, upstream, connections=args.connections,
                                                 seconds=args.seconds, seed=args.seed))
            elapsed = time.monotonic() - t0
        finally:
            code = gw.stop()
    print(f"live fuzz: {n} connections ({n / elapsed:.0f}/s), {reached} requests reached the "
          f"upstream, seed {args.seed}, gateway exit {code}: "
          f"{'OK' if not broken and code == 0 else f'{len(broken)} broken'}")
    if broken:
        os.makedirs(OUT, exist_ok=True)
        for i, (what, stream) in enumerate(broken[:50]):
            print(" ", what, stream[:300])
            if stream:
                with open(os.path.join(OUT, f"broken-{args.seed}-{i}.bin"), "wb") as f:
                    f.write(stream)
    return 1 if broken or code != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
