"""The bundled load generator: keep-alive HTTP/1.1 connections on a raw uvloop protocol.

Run by the harness as ``python -m benchmarks.loadgen``, one process per load-side CPU share.
Protocol on stdin/stdout (one JSON object or word per line):

    harness -> spec (JSON)           load generator connects its connections
    loadgen -> READY <n connected>
    harness -> GO <t_start>          absolute time.monotonic() (CLOCK_MONOTONIC is system-wide)
    loadgen -> result (JSON)         after t_start + warmup + duration (+ in-flight grace)
  idle mode instead: after GO every connection does one request, then
    loadgen -> HELD <n>              connections are open and idle
    harness -> RELEASE
    loadgen -> result (JSON)

Modes
  closed  each connection sends its next request as soon as the previous answer ends
          (maximum throughput; latency suffers from coordinated omission by construction).
  open    requests are due at a fixed rate, at t_start + i/rate. A due request goes out on an
          idle connection, or waits in a backlog when all are busy; its latency is measured
          from the time it was due, so a stalled server is charged for every request it
          delayed (coordinated omission corrected, as in wrk2 / HdrHistogram).
  idle    one request per connection, then hold them all open (memory per connection).

Optional per-response checks (AI scenarios): ``markers`` (byte strings every response body
must contain; the body is then kept, chunked framing removed), ``ttft_marker`` (time to first
token: until those bytes arrive), ``pauses`` (the longest gap between two body packets of
each response: a stalled stream shows there). The request body is ``body`` (a latin-1
string) when given, else ``body_size`` bytes of "x".

Only responses that complete inside [t_start + warmup, t_start + warmup + duration] are
counted. Cost per request is kept low: the request is one precomputed bytes object, responses
are framed by Content-Length/chunked only (never parsed further), latencies go into an
``array('d')`` and are bucketed once at the end.
"""
from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from array import array
from collections import deque

from benchmarks.framing import MAX_HEAD, ChunkedSkipper, FramingError, is_chunked, \
    parse_content_length
from benchmarks.stats import bucketize

mono = time.monotonic

S_IDLE, S_HEAD, S_BODY, S_CHUNKED, S_UNTIL_CLOSE = range(5)
INF = float("inf")


class Conn(asyncio.Protocol):
    __slots__ = ("gen", "transport", "state", "buf", "remaining", "chunk", "status",
                 "body_len", "intended", "sent", "dead", "parts", "t_last", "pause",
                 "want_token", "tail", "body_ok")

    def __init__(self, gen):
        self.gen = gen
        self.transport = None
        self.state = S_IDLE
        self.buf = b""
        self.remaining = 0
        self.chunk = None
        self.status = 0
        self.body_len = 0
        self.intended = 0.0
        self.sent = 0.0
        self.dead = False
        self.parts = None       # body parts (markers)
        self.t_last = 0.0       # last body packet (pauses)
        self.pause = 0.0
        self.want_token = False
        self.tail = b""
        self.body_ok = True

    def connection_made(self, transport):
        self.transport = transport

    def send(self, intended, now):
        self.intended = intended
        self.sent = now
        self.state = S_HEAD
        self.transport.write(self.gen.req)

    def data_received(self, data):
        st = self.state
        if self.gen.track and (st == S_BODY or st == S_CHUNKED):
            self._track(data)
        if st == S_BODY:
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                if self.parts is not None:
                    self.parts.append(data)
                return
            if self.parts is not None:
                self.parts.append(data[:self.remaining])
            self._done()
            return
        try:
            if st == S_HEAD:
                self._head(data)
            elif st == S_CHUNKED:
                if self.chunk.feed(data, 0) >= 0:
                    self.body_len = self.chunk.body_bytes
                    self._done()
            elif st == S_UNTIL_CLOSE:
                self.body_len += len(data)
            else:  # bytes while no request is outstanding
                raise FramingError("unsolicited data")
        except (FramingError, ValueError) as e:
            self._fail("framing", e)

    def _head(self, data):
        if self.buf:
            data = self.buf + data
            self.buf = b""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEAD:
                raise FramingError("response head too long")
            self.buf = data
            return
        status = int(data[9:12])
        if status < 200:  # interim response (100 Continue): the real one follows
            rest = data[end + 4:]
            if rest:
                self._head(rest)
            return
        self.status = status
        gen = self.gen
        if gen.ttfb is not None:
            now = mono()
            if gen.t_meas <= now <= gen.t_end:
                gen.ttfb.append(now - self.intended)
        lower = data[:end].lower()
        start = end + 4
        if gen.track:
            now = mono()
            self.t_last = now
            self.pause = 0.0
            self.want_token = gen.token is not None
            self.tail = b""
            if len(data) > start:
                self._track(data[start:], now)
        if is_chunked(lower):
            self.chunk = sk = ChunkedSkipper(keep=gen.markers is not None)
            self.state = S_CHUNKED
            if sk.feed(data, start) >= 0:
                self.body_len = sk.body_bytes
                self._done()
            return
        cl = parse_content_length(lower)
        if cl is None:
            if status == 204 or status == 304 or self.gen.head_only:
                cl = 0
            else:
                self.state = S_UNTIL_CLOSE
                self.body_len = len(data) - start
                return
        self.body_len = cl
        left = cl - (len(data) - start)
        if gen.markers is not None:
            self.parts = [data[start:start + cl]]
        if left <= 0:
            self._done()
        else:
            self.remaining = left
            self.state = S_BODY

    def _track(self, data, now=None):
        """Body bytes arrived: the pause since the last ones, the first token."""
        gen = self.gen
        if now is None:
            now = mono()
        if gen.pauses is not None:
            p = now - self.t_last
            if p > self.pause:
                self.pause = p
            self.t_last = now
        if self.want_token:
            hay = self.tail + data if self.tail else data
            if gen.token in hay:
                self.want_token = False
                self.tail = b""
                if gen.t_meas <= now <= gen.t_end:
                    gen.ttft.append(now - self.intended)
            else:
                self.tail = bytes(hay[-gen.token_tail:])

    def _done(self):
        gen = self.gen
        if gen.markers is not None:
            parts = self.chunk.parts if self.chunk is not None else self.parts
            body = b"".join(parts or ())
            self.parts = None
            self.body_ok = all(m in body for m in gen.markers)
        if gen.pauses is not None:
            now = mono()
            if gen.t_meas <= now <= gen.t_end:
                gen.pauses.append(self.pause)
        self.state = S_IDLE
        self.chunk = None
        gen.complete(self)

    def _fail(self, kind, exc=None):
        if self.dead:
            return
        self.dead = True
        self.gen.error(kind)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc):
        was = self.state
        self.transport = None
        counted = self.dead
        self.dead = True
        if was == S_UNTIL_CLOSE and not counted:
            self.state = S_IDLE
            self.gen.complete(self)
            self.gen.lost(self, False, True)
            return
        self.gen.lost(self, was != S_IDLE, counted)


class Gen:
    def __init__(self, spec, loop):
        self.loop = loop
        self.spec = spec
        head = spec["request_head"].encode("latin-1")
        body = spec.get("body")
        self.req = head + (body.encode("latin-1") if body is not None
                           else b"x" * int(spec.get("body_size", 0)))
        self.head_only = head.startswith(b"HEAD ")
        self.host = spec["host"]
        self.port = int(spec["port"])
        self.mode = spec["mode"]
        self.nconn = int(spec["connections"])
        self.expect_body = spec.get("expect_body")
        self.timeout = float(spec.get("timeout", 10.0))
        # TLS: {"ca_file", "server_name", "version"}; connections are kept alive, so every
        # handshake happens while connecting, before the measurement starts
        tls = spec.get("tls")
        self.ssl = self.server_name = None
        if tls:
            from benchmarks.tls_fixture import client_context
            self.ssl = client_context(tls["ca_file"], tls.get("version"))
            self.server_name = tls.get("server_name")
        self.conns: list[Conn] = []
        self.idle: deque[Conn] = deque()
        self.backlog: deque[float] = deque()
        self.max_backlog = 0
        self.lat = array("d")
        # time to the response head: shows whether a proxy relays a stream or buffers it
        self.ttfb = array("d") if spec.get("ttfb") else None
        markers = spec.get("markers")
        self.markers = [m.encode("latin-1") for m in markers] if markers else None
        token = spec.get("ttft_marker")
        self.token = token.encode("latin-1") if token else None
        self.token_tail = max(1, len(self.token) - 1) if self.token else 0
        self.ttft = array("d") if self.token else None
        self.pauses = array("d") if spec.get("pauses") else None
        self.track = bool(self.token or self.pauses is not None)
        self.count = 0
        self.bytes_body = 0
        self.errors: dict[str, int] = {}
        self.errors_outside = 0
        self.reconnects = 0
        self.inflight = 0
        self.t_meas = INF
        self.t_end = INF
        self.finished = None
        self.lag_sum = 0.0
        self.lag_n = 0
        # open loop pacing
        self.rate = float(spec.get("rate") or 0)
        self.interval = 1.0 / self.rate if self.rate > 0 else 0.0
        self.t0 = 0.0
        self.i = 0
        self.next_t = INF
        # idle mode
        self.todo: deque[Conn] = deque()
        self.done_first = 0

    # --- connections ----------------------------------------------------------------
    async def connect_all(self):
        batch = 256
        made = []
        for k in range(0, self.nconn, batch):
            n = min(batch, self.nconn - k)
            res = await asyncio.gather(*(self._connect() for _ in range(n)),
                                       return_exceptions=True)
            for r in res:
                if isinstance(r, BaseException):
                    self.error("connect")
                else:
                    made.append(r)
        self.conns = made
        return len(made)

    async def _connect(self):
        kw = {"ssl": self.ssl, "server_hostname": self.server_name} if self.ssl else {}
        _, proto = await asyncio.wait_for(
            self.loop.create_connection(lambda: Conn(self), self.host, self.port, **kw), 10.0)
        return proto

    def tls_negotiated(self) -> str | None:
        """Protocol and cipher of a connection, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"."""
        for c in self.conns:
            t = c.transport
            obj = t.get_extra_info("ssl_object") if t is not None else None
            if obj is not None:
                return f"{obj.version()} {obj.cipher()[0]}"
        return None

    async def _reconnect(self):
        while mono() < self.t_end:
            try:
                c = await self._connect()
            except (OSError, asyncio.TimeoutError):
                self.error("connect")
                await asyncio.sleep(0.1)
                continue
            self.reconnects += 1
            self.conns.append(c)
            self._ready(c, mono())
            return
        self._check_finished()

    def lost(self, conn, busy, counted):
        try:
            self.conns.remove(conn)
        except ValueError:
            pass
        if not busy:
            try:  # the server closed an idle keep-alive connection
                self.idle.remove(conn)
            except ValueError:
                pass
        if busy:
            self.inflight -= 1
            if not counted:
                self.error("conn_lost")
        if self.mode == "idle":
            self._idle_check()
        elif mono() < self.t_end:
            self.loop.create_task(self._reconnect())
        else:
            self._check_finished()

    # --- accounting ------------------------------------------------------------------
    def error(self, kind, now=None):
        if now is None:
            now = mono()
        if self.t_meas <= now <= self.t_end or self.mode == "idle":
            self.errors[kind] = self.errors.get(kind, 0) + 1
        else:
            self.errors_outside += 1

    def complete(self, conn):
        now = mono()
        self.inflight -= 1
        if self.t_meas <= now <= self.t_end:
            self.count += 1
            self.lat.append(now - conn.intended)
            self.bytes_body += conn.body_len
            # the same `now` as the count: an answer at the window's edge is either counted
            # with its error or not at all
            if not 200 <= conn.status < 400:
                self.error("status_%d" % conn.status, now)
            elif self.expect_body is not None and conn.body_len != self.expect_body:
                self.error("body_length", now)
            elif not conn.body_ok:
                self.error("body_content", now)
        elif not 200 <= conn.status < 400:
            self.errors_outside += 1
        if conn.dead:
            return
        self._ready(conn, now)

    def _ready(self, conn, now):
        """conn may take the next request."""
        mode = self.mode
        if mode == "closed":
            if now < self.t_end:
                self.inflight += 1
                conn.send(now, now)
                return
        elif mode == "open":
            if self.next_t <= now:
                self.pump()
            if self.backlog and now < self.t_end:
                self.inflight += 1
                t = self.backlog.popleft()
                self.lag_sum += now - t
                self.lag_n += 1
                conn.send(t, now)
                return
            self.idle.append(conn)
        else:  # idle mode: one request per connection
            self.done_first += 1
            self._idle_check()
            return
        self._check_finished()

    def _idle_check(self):
        todo = self.todo
        while todo:
            c = todo.popleft()
            if not c.dead and c.transport is not None:
                self.inflight += 1
                now = mono()
                c.send(now, now)
                return
        if self.inflight <= 0 and self.finished and not self.finished.done():
            self.finished.set_result(None)

    def _check_finished(self):
        if self.inflight <= 0 and mono() >= self.t_end and self.finished \
                and not self.finished.done():
            self.finished.set_result(None)

    # --- open loop ---------------------------------------------------------------------
    def pump(self):
        now = mono()
        nt = self.next_t
        if nt > now:
            return
        idle = self.idle
        end = self.t_end
        iv = self.interval
        i = self.i
        while nt <= now and nt < end:
            if idle:
                c = idle.popleft()
                self.inflight += 1
                self.lag_sum += now - nt
                self.lag_n += 1
                c.send(nt, now)
            else:
                self.backlog.append(nt)
            i += 1
            nt = self.t0 + i * iv
        self.i = i
        self.next_t = nt
        if len(self.backlog) > self.max_backlog:
            self.max_backlog = len(self.backlog)

    def _on_timer(self):
        tfd = self.tfd
        tfd.drain()
        if mono() >= self.t_end:
            self.loop.remove_reader(tfd.fd)
            tfd.close()
            self._finish_open()
            return
        self.pump()
        tfd.arm_at(min(self.next_t, self.t_end))

    def _finish_open(self):
        # whatever is still waiting was never sent: the server fell behind the rate
        self.unsent = len(self.backlog)
        self.backlog.clear()
        self._check_finished()

    def _tick(self):
        now = mono()
        if now >= self.t_end:
            self._finish_open()
            return
        self.pump()
        self.loop.call_later(0.001, self._tick)

    def _watchdog(self):
        now = mono()
        for c in list(self.conns):
            if c.state != S_IDLE and not c.dead and now - c.sent > self.timeout:
                c._fail("timeout")
        if self.finished and not self.finished.done():
            self.loop.call_later(0.5, self._watchdog)

    # --- runs --------------------------------------------------------------------------
    async def run(self, t_start, warmup, duration):
        self.finished = self.loop.create_future()
        self.unsent = 0
        self.t_meas = t_start + warmup
        self.t_end = self.t_meas + duration
        delay = t_start - mono()
        if delay > 0:
            await asyncio.sleep(delay)
        self.loop.call_later(0.5, self._watchdog)
        if self.mode == "closed":
            now = mono()
            for c in list(self.conns):
                self.inflight += 1
                c.send(now, now)
        else:
            k = int(self.spec.get("proc_index", 0))
            procs = int(self.spec.get("procs", 1))
            # processes interleave their schedules instead of sending in lockstep
            self.t0 = t_start + self.interval * k / procs
            self.i = 0
            self.next_t = self.t0
            self.idle.extend(self.conns)
            self.tfd = None
            if not self.spec.get("ms_timer"):
                try:
                    self.tfd = TimerFD()
                except (OSError, AttributeError):
                    self.tfd = None
            if self.tfd is not None:
                self.loop.add_reader(self.tfd.fd, self._on_timer)
                self.tfd.arm_at(self.next_t)
            else:
                self._tick()
        ru0 = _cpu_self()
        await asyncio.sleep(max(0.0, self.t_meas - mono()))
        ru1 = _cpu_self()
        await asyncio.sleep(max(0.0, self.t_end - mono()))
        ru2 = _cpu_self()
        self._check_finished()
        grace = float(self.spec.get("grace", 2.0))
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), grace)
        except asyncio.TimeoutError:
            pass
        unfinished = self.inflight
        tls = self.tls_negotiated() if self.ssl else None
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()
        wall = max(1e-9, duration)
        return {
            "mode": self.mode,
            "count": self.count,
            "wall": wall,
            "bytes_body": self.bytes_body,
            "errors": self.errors,
            "errors_outside_window": self.errors_outside,
            "reconnects": self.reconnects,
            "unfinished": unfinished,
            "unsent": self.unsent,
            "max_backlog": self.max_backlog,
            "send_lag_mean": (self.lag_sum / self.lag_n) if self.lag_n else 0.0,
            "pacing": ("timerfd" if getattr(self, "tfd", None) else "1ms") if self.mode == "open"
            else None,
            "loadgen_cpu": ru2 - ru1,
            "loadgen_cpu_warmup": ru1 - ru0,
            "hist": bucketize(self.lat),
            "ttfb_hist": bucketize(self.ttfb) if self.ttfb is not None else None,
            "ttft_hist": bucketize(self.ttft) if self.ttft is not None else None,
            "pause_hist": bucketize(self.pauses) if self.pauses is not None else None,
            "tls": tls,
        }

    async def run_idle(self, t_start):
        """One request per connection (256 in flight at a time), then hold."""
        self.finished = self.loop.create_future()
        self.t_meas = t_start
        self.t_end = INF
        delay = t_start - mono()
        if delay > 0:
            await asyncio.sleep(delay)
        self.todo.extend(self.conns)
        for _ in range(min(256, len(self.todo))):
            self._idle_check()
        self.loop.call_later(0.5, self._watchdog)
        if self.conns:
            await asyncio.wait_for(self.finished, self.timeout + 30.0)
        return len([c for c in self.conns if c.transport is not None and not c.dead])


class TimerFD:
    """A CLOCK_MONOTONIC timerfd armed at absolute times, watched by the event loop.

    The loop's own timers (libuv, uvloop) work in whole milliseconds: at 9,000 requests/s
    that sends bursts of 9 every millisecond, ~0.5 ms late on average, and the replies come
    back in the same rhythm. A timerfd wakes the loop within microseconds of each due time.
    """

    CLOCK_MONOTONIC = 1
    TFD_TIMER_ABSTIME = 1
    TFD_NONBLOCK = 0o4000
    TFD_CLOEXEC = 0o2000000
    PR_SET_TIMERSLACK = 29

    def __init__(self):
        import ctypes

        class timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", timespec), ("it_value", timespec)]

        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        # default slack lets the kernel defer a wake-up by 50 us: too coarse at 9k/s
        libc.prctl(self.PR_SET_TIMERSLACK, 1, 0, 0, 0)
        self.fd = fd
        self._spec = itimerspec()
        self._ref = ctypes.byref(self._spec)
        self._settime = libc.timerfd_settime

    def arm_at(self, t: float):
        sec = int(t)
        v = self._spec.it_value
        v.tv_sec = sec
        v.tv_nsec = max(1, int((t - sec) * 1e9))  # all zero would disarm
        self._settime(self.fd, self.TFD_TIMER_ABSTIME, self._ref, None)

    def drain(self):
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self):
        os.close(self.fd)


def _cpu_self():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _readline(loop):
    return (await loop.run_in_executor(None, sys.stdin.readline)).strip()


async def main_async(spec):
    loop = asyncio.get_running_loop()
    gen = Gen(spec, loop)
    n = await gen.connect_all()
    _say(f"READY {n}")
    line = await _readline(loop)
    if not line.startswith("GO "):
        raise SystemExit(f"loadgen: expected GO, got {line!r}")
    t_start = float(line.split()[1])
    if gen.mode == "idle":
        held = await gen.run_idle(t_start)
        _say(f"HELD {held}")
        line = await _readline(loop)
        result = {"mode": "idle", "held": held, "count": gen.done_first,
                  "errors": gen.errors, "hist": bucketize(gen.lat)}
        # RST instead of FIN: 10k sockets in TIME_WAIT would eat the ephemeral port range
        for c in gen.conns:
            if c.transport is not None:
                c.dead = True
                c.transport.abort()
        _say(_json(result))
        return
    result = await gen.run(t_start, float(spec["warmup"]), float(spec["duration"]))
    _say(_json(result))


def _json(obj):
    import json
    return json.dumps(obj, separators=(",", ":"))


def _say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    import json
    spec = json.loads(sys.stdin.readline())
    cpus = spec.get("cpus")
    if cpus:
        os.sched_setaffinity(0, cpus)
    from benchmarks.procs import raise_nofile
    raise_nofile(int(spec["connections"]) + 1024)
    from benchmarks.upstream import run_loop
    run_loop(main_async(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
