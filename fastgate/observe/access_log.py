"""The access log: one JSON object per line, written off the request path.

``AccessLog.log()`` only appends a dict to a list. A loop timer (or a full batch) turns the
list into JSON lines, and a writer thread does the ``write()``: a slow disk or a stalled
stdout pipe then delays the log, never a request. When the writer falls too far behind,
whole batches are dropped and counted; write errors are counted and reported on stderr at
most once a minute. Nothing here raises into request handling.

Rotation works like nginx's: rename the file, then send SIGUSR1; the handler calls
``reopen()``, and lines already handed over before that still go to the renamed file.

Every worker opens the file with O_APPEND, so lines from several processes never overwrite
each other; on a pipe (stdout under a supervisor) batches are cut at line boundaries into
writes of at most PIPE_BUF bytes, which the kernel keeps whole.
"""
from __future__ import annotations

import asyncio
import os
import queue
import re
import select
import stat
import threading
import time
from urllib.parse import unquote_plus

import orjson

__all__ = ["AccessLog", "make_entry", "mask_query", "secret_query_params",
           "DEFAULT_SECRET_QUERY_PARAMS"]

# Query parameters that commonly carry credentials; their values never reach the log.
DEFAULT_SECRET_QUERY_PARAMS = frozenset((
    "api_key", "apikey", "key", "token", "access_token", "id_token", "password", "secret",
    "signature", "sig", "client_secret",
))
MASK = "***"

FLUSH_INTERVAL_S = 0.2
BATCH_LINES = 256
# The writer may lag this much before batches are dropped: bounded memory under a stuck sink.
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
# writes of at most this many bytes to a pipe are never interleaved with other writers'
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_ERROR_REPORT_INTERVAL_S = 60.0


def secret_query_params(config) -> frozenset:
    """The default credential parameters plus every ``query:`` an api_key authenticator reads."""
    names = set(DEFAULT_SECRET_QUERY_PARAMS)
    for auth in (getattr(config, "auth", None) or {}).values():
        q = getattr(auth, "query", None)
        if getattr(auth, "type", None) == "api_key" and q:
            names.add(q.lower())
    return frozenset(names)


def _text(b) -> str:
    if b is None:
        return ""
    if type(b) is str:
        return b
    # backslashreplace keeps undecodable bytes visible without producing invalid UTF-8
    return b.decode("utf-8", "backslashreplace")


def _secret_regex(secret_params: frozenset):
    rx = _regex_cache.get(secret_params)
    if rx is None:
        alt = "|".join(re.escape(n) for n in sorted(secret_params, key=len, reverse=True))
        rx = re.compile(r"(?:^|&)(?:" + alt + r")(?:=|&|$)", re.IGNORECASE | re.ASCII)
        if len(_regex_cache) > 64:
            _regex_cache.clear()
        _regex_cache[secret_params] = rx
    return rx


_regex_cache: dict = {}


def mask_query(query, secret_params=DEFAULT_SECRET_QUERY_PARAMS) -> str:
    """The query string with the value of every credential-bearing parameter replaced by ***.

    Names are compared after percent-decoding and lower-casing, so ``API%5FKey=`` is masked
    too. Everything else is kept byte for byte (decoded for JSON).
    """
    if not query:
        return ""
    q = _text(query)
    # Fast exit for the common query that names no secret: one regex scan. Encoded names
    # ('%', '+') cannot be judged by it and take the full walk.
    if "%" not in q and "+" not in q and _secret_regex(secret_params).search(q) is None:
        return q
    parts = q.split("&")
    changed = False
    for i, part in enumerate(parts):
        eq = part.find("=")
        if eq < 0:
            continue   # a bare name carries no value to hide
        name = part[:eq]
        if "%" in name or "+" in name:
            name = unquote_plus(name, errors="replace")
        if name.lower() in secret_params:
            parts[i] = part[:eq + 1] + MASK
            changed = True
    return "&".join(parts) if changed else q


# Whole-second part of the timestamp, formatted once per second instead of once per line.
_ts_sec = -1
_ts_prefix = ""
_MS_SUFFIX = tuple(f".{i:03d}Z" for i in range(1000))


def _rfc3339_ms(wall: float) -> str:
    global _ts_sec, _ts_prefix
    sec = int(wall)
    if sec != _ts_sec:
        _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_sec = sec
    return _ts_prefix + _MS_SUFFIX[int((wall - sec) * 1000.0)]


def make_entry(ctx, *, redact_headers=frozenset(), secret_params=DEFAULT_SECRET_QUERY_PARAMS,
               now: float | None = None) -> dict:
    """The access-log record of a finished request (a RequestContext).

    ``now`` is the ``time.monotonic()`` of the last byte (taken now when omitted), so the
    logged duration can equal the one given to the metrics. ``redact_headers`` (lower-case
    names) are never logged; the only header logged is User-Agent. Times are in ms with
    microsecond resolution.
    """
    if now is None:
        now = time.monotonic()
    try:
        head = ctx.head
        start = ctx.start
        wall = ctx.start_wall
        request_id = ctx.request_id
        client_ip = ctx.client_ip
    except AttributeError:   # a request that failed before all of these were set
        head = getattr(ctx, "head", None)
        start = getattr(ctx, "start", None)
        wall = getattr(ctx, "start_wall", None)
        request_id = getattr(ctx, "request_id", None)
        client_ip = getattr(ctx, "client_ip", None)
    if head is not None:
        method = head.method.decode("latin-1")
        # backslashreplace keeps undecodable bytes visible and the JSON valid
        path = head.path.decode("utf-8", "backslashreplace")
        query = mask_query(head.query, secret_params) if head.query else ""
        ua = None
        if "user-agent" not in redact_headers:
            ua = head.get(b"user-agent")
            if ua is not None:
                ua = ua.decode("utf-8", "backslashreplace")
    else:
        method = path = query = ""
        ua = None
    up = ctx.upstream_duration
    entry = {
        "time": _rfc3339_ms(wall if wall is not None else time.time()),
        "request_id": request_id,
        "client_ip": client_ip,
        "method": method,
        "path": path,
        "query": query,
        "status": ctx.status,
        "bytes_in": ctx.bytes_in,
        "bytes_out": ctx.bytes_out,
        # int()/1000 instead of round(x, 3), which costs ~0.4 us
        "duration_ms": int((now - start) * 1e6) / 1000.0 if start is not None else None,
        "upstream_duration_ms": int(up * 1e6) / 1000.0 if up is not None else None,
        "route": ctx.route_name,
        "consumer": ctx.consumer,
        "upstream": ctx.upstream_target,
        "user_agent": ua,
    }
    extra = getattr(ctx, "log_fields", None)
    if extra:
        for k, v in extra.items():      # never overriding the core fields
            entry.setdefault(k, v)
    return entry


_APPEND_NL = orjson.OPT_APPEND_NEWLINE
_STOP = object()
_REOPEN = object()


class AccessLog:
    """Access log for one process. ``target``: "stdout", "off" or a file path.

    Must be created in the process that uses it (after any fork): it owns a writer thread.
    """

    def __init__(self, target: str, redact_headers, *, secret_params=None):
        self.target = target
        self.redact_headers = frozenset(h.lower() for h in (redact_headers or ()))
        self.secret_params = frozenset(secret_params) if secret_params is not None \
            else DEFAULT_SECRET_QUERY_PARAMS
        self.enabled = target != "off"
        # statistics (each written by a single thread)
        self.lines_written = 0
        self.write_errors = 0
        self._dropped_loop = 0     # loop thread: unserializable entries, backlog overflow
        self._dropped_writer = 0   # writer thread: failed writes
        self._enqueued_bytes = 0   # loop thread
        self._done_bytes = 0       # writer thread
        self._last_report = 0.0

        self._buf: list = []
        self._loop = None
        self._timer = None
        self._soon = False
        self._closed = False
        self._fd = -1
        self._own_fd = False
        self._chunked = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = None
        if not self.enabled:
            self.log = self._log_off
            return
        self._open()   # an unwritable path is a start-up error, raised to the caller
        self._thread = threading.Thread(target=self._writer, name="fastgate-access-log",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config) -> "AccessLog":
        lg = config.logging
        return cls(lg.access_log, lg.redact_headers, secret_params=secret_query_params(config))

    @property
    def lines_dropped(self) -> int:
        return self._dropped_loop + self._dropped_writer

    # -- request side -----------------------------------------------------------------------
    def entry(self, ctx, now: float | None = None) -> dict:
        """:func:`make_entry` with this log's redaction and masking settings."""
        return make_entry(ctx, redact_headers=self.redact_headers,
                          secret_params=self.secret_params, now=now)

    def log(self, entry: dict) -> None:
        buf = self._buf
        buf.append(entry)
        n = len(buf)
        if n == 1:
            self._schedule()
        elif n >= BATCH_LINES and not self._soon:
            self._flush_soon()

    def _log_off(self, entry: dict) -> None:
        pass

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return   # no loop: batches go out when full, and on flush()/close()
        self._timer = loop.call_later(FLUSH_INTERVAL_S, self._on_timer)

    def _flush_soon(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.flush()
            return
        self._soon = True
        loop.call_soon(self._on_timer)

    def _on_timer(self) -> None:
        self._soon = False
        try:
            self.flush()
        except Exception as exc:  # never let a log problem surface in the loop
            self._report(f"access log flush failed: {exc!r}")

    # -- hand-over to the writer --------------------------------------------------------------
    def flush(self, wait: bool = False, timeout: float = 5.0) -> None:
        """Serialize pending entries and hand them to the writer; ``wait`` until written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        buf = self._buf
        if not buf:
            pass
        elif not self.enabled or self._closed:
            buf.clear()   # logged after close(): nowhere to go, and must not pile up
        else:
            self._buf = []
            lines = []
            dumps = orjson.dumps
            for e in buf:
                try:
                    lines.append(dumps(e, option=_APPEND_NL))
                except (TypeError, orjson.JSONEncodeError):
                    self._dropped_loop += 1
            if lines:
                size = sum(map(len, lines))
                if self._enqueued_bytes - self._done_bytes + size > MAX_BACKLOG_BYTES:
                    self._dropped_loop += len(lines)
                else:
                    self._enqueued_bytes += size
                    self._queue.put((lines, size))
        if wait and self._thread is not None and self._thread.is_alive():
            done = threading.Event()
            self._queue.put(done)
            done.wait(timeout)

    def reopen(self) -> None:
        """Reopen the file (after it was renamed for rotation); a no-op for stdout and off."""
        if not self.enabled or self._closed:
            return
        self.flush()
        self._queue.put(_REOPEN)

    def close(self) -> None:
        """Write everything pending and stop the writer. Idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(10.0)
            self._thread = None
        if self._own_fd and self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = -1

    # -- writer thread ------------------------------------------------------------------------
    def _open(self) -> None:
        if self.target == "stdout":
            fd, own = 1, False
        else:
            fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o640)
            own = True
        try:
            mode = os.fstat(fd).st_mode
            chunked = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        except OSError:
            chunked = False
        old, old_own = self._fd, self._own_fd
        self._fd, self._own_fd, self._chunked = fd, own, chunked
        if old_own and old >= 0 and old != fd:
            os.close(old)

    def _writer(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            if item is _REOPEN:
                try:
                    self._open()
                except OSError as exc:
                    self.write_errors += 1
                    self._report(f"access log reopen of {self.target} failed: {exc}")
                continue
            if isinstance(item, threading.Event):
                item.set()
                continue
            lines, size = item
            try:
                self._write_lines(lines)
                self.lines_written += len(lines)
            except OSError as exc:
                self.write_errors += 1
                self._dropped_writer += len(lines)
                self._report(f"access log write to {self.target} failed: {exc}")
            finally:
                self._done_bytes += size

    def _write_lines(self, lines: list) -> None:
        fd = self._fd
        if not self._chunked:
            _write_all(fd, b"".join(lines))
            return
        chunk = []
        n = 0
        for line in lines:
            if n and n + len(line) > _PIPE_BUF:
                _write_all(fd, b"".join(chunk))
                chunk = []
                n = 0
            chunk.append(line)
            n += len(line)
        if chunk:
            _write_all(fd, b"".join(chunk))

    def _report(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._last_report < _ERROR_REPORT_INTERVAL_S and self._last_report:
            return
        self._last_report = now
        try:
            os.write(2, f"fastgate: {msg} ({self.lines_dropped} lines dropped so far)\n"
                     .encode("utf-8", "replace"))
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
