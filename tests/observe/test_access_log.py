"""Access log: real files, real pipes, real parsed request heads."""
import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import orjson
import pytest

from fastgate._core.http import RequestParser
from fastgate.config import parse_config
from fastgate.config import schema as S
from fastgate.observe.access_log import (DEFAULT_SECRET_QUERY_PARAMS, AccessLog, make_entry,
                                         mask_query, secret_query_params)
from fastgate.server.context import RequestContext

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIELDS = {"time", "request_id", "client_ip", "method", "path", "query", "status", "bytes_in",
          "bytes_out", "duration_ms", "upstream_duration_ms", "route", "consumer", "upstream",
          "user_agent"}


class _Capture:
    def on_request(self, head):
        self.head = head


def parse_head(raw: bytes):
    cap = _Capture()
    RequestParser(cap).feed(raw)
    return cap.head


def finished_ctx(raw=b"GET /orders/42?page=2 HTTP/1.1\r\nHost: api\r\nUser-Agent: curl/8.5\r\n"
                     b"Authorization: Bearer SECRET-TOKEN\r\nCookie: sid=SECRET-COOKIE\r\n"
                     b"X-API-Key: SECRET-KEY\r\n\r\n", **fields):
    ctx = RequestContext()
    ctx.head = parse_head(raw)
    ctx.start = time.monotonic() - 0.0125
    ctx.start_wall = 1767225600.042   # 2026-01-01T00:00:00.042Z
    ctx.request_id = "rid-1"
    ctx.client_ip = "203.0.113.9"
    ctx.client_port = 50000
    ctx.route_name = "orders"
    ctx.status = 200
    ctx.bytes_in = 180
    ctx.bytes_out = 2048
    ctx.consumer = "alice"
    ctx.upstream_name = "orders"
    ctx.upstream_target = "127.0.0.1:9001"
    ctx.upstream_duration = 0.0101234
    for k, v in fields.items():
        setattr(ctx, k, v)
    return ctx


def read_lines(path):
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f.read().splitlines()]


def test_entry_fields():
    ctx = finished_ctx()
    e = make_entry(ctx, now=ctx.start + 0.0125)
    assert set(e) == FIELDS
    assert e["time"] == "2026-01-01T00:00:00.042Z"
    assert datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp() == pytest.approx(1767225600.042)
    assert e["request_id"] == "rid-1" and e["client_ip"] == "203.0.113.9"
    assert e["method"] == "GET" and e["path"] == "/orders/42" and e["query"] == "page=2"
    assert e["status"] == 200 and e["bytes_in"] == 180 and e["bytes_out"] == 2048
    assert e["duration_ms"] == pytest.approx(12.5, abs=0.002)
    assert e["upstream_duration_ms"] == 10.123
    assert e["route"] == "orders" and e["consumer"] == "alice"
    assert e["upstream"] == "127.0.0.1:9001" and e["user_agent"] == "curl/8.5"


def test_entry_for_a_request_that_never_got_a_head():
    ctx = RequestContext()      # only the constructor's defaults: a malformed request
    ctx.status = 400
    e = make_entry(ctx)
    assert set(e) == FIELDS
    assert e["method"] == "" and e["path"] == "" and e["status"] == 400 and e["route"] == "_none"
    assert e["duration_ms"] is None and e["request_id"] is None
    orjson.dumps(e)


def test_non_utf8_agent_and_control_bytes_still_make_valid_json():
    # the parser admits obs-text (0x80-0xff) in header values; the log must stay valid JSON
    ctx = finished_ctx(b"GET /caf%C3%A9?q=%FF HTTP/1.1\r\nHost: a\r\nUser-Agent: b\xffot \xc3\xa9\r\n\r\n")
    e = orjson.loads(orjson.dumps(make_entry(ctx)))
    assert e["path"] == "/caf%C3%A9" and e["query"] == "q=%FF"
    assert e["user_agent"] == "b\\xffot \u00e9"


@pytest.mark.parametrize("query, want", [
    ("page=2", "page=2"),
    ("api_key=abc", "api_key=***"),
    ("a=1&apikey=abc&b=2", "a=1&apikey=***&b=2"),
    ("key=k&token=t&access_token=a&id_token=i&password=p&secret=s&signature=g&sig=x"
     "&client_secret=c", "key=***&token=***&access_token=***&id_token=***&password=***"
     "&secret=***&signature=***&sig=***&client_secret=***"),
    ("API_KEY=abc", "API_KEY=***"),                     # names are case-insensitive
    ("api%5Fkey=abc&x=%20", "api%5Fkey=***&x=%20"),     # and percent-decoded
    ("api_key=a=b=c", "api_key=***"),
    ("token=", "token=***"),
    ("token", "token"),                                  # no value, nothing to hide
    ("tokens=1&my_token=2&keys=3", "tokens=1&my_token=2&keys=3"),   # only exact names
    ("a=1&&token=2&", "a=1&&token=***&"),
    ("", ""),
])
def test_query_masking(query, want):
    assert mask_query(query.encode()) == want


def test_configured_api_key_query_names_are_masked():
    # built from the schema dataclasses: the loader does not accept `auth:` in this build yet
    cfg = S.Config(listeners=[S.Listener("127.0.0.1:0", "127.0.0.1", 0)],
                   auth={"partner-keys": S.ApiKeyAuth("partner-keys", header=None,
                                                      query="X-Partner-Cred"),
                         "sso": S.JwtAuth("sso", secret="s" * 32)},
                   logging=S.Logging("off", ["authorization"]))
    names = secret_query_params(cfg)
    assert "x-partner-cred" in names and DEFAULT_SECRET_QUERY_PARAMS <= names
    log = AccessLog.from_config(cfg)
    assert not log.enabled
    ctx = finished_ctx(b"GET /r?x-partner-cred=SECRET&q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert log.entry(ctx)["query"] == "x-partner-cred=***&q=1"


def test_file_log_writes_json_lines_without_redacted_headers(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), ["authorization", "cookie", "x-api-key", "user-agent"])
    for i in range(3):
        log.log(log.entry(finished_ctx(request_id=f"r{i}")))
    log.close()
    raw = path.read_bytes()
    for secret in (b"SECRET-TOKEN", b"SECRET-COOKIE", b"SECRET-KEY", b"curl"):
        assert secret not in raw
    lines = read_lines(path)
    assert [e["request_id"] for e in lines] == ["r0", "r1", "r2"]
    assert all(set(e) == FIELDS and e["user_agent"] is None for e in lines)
    assert log.lines_written == 3 and log.lines_dropped == 0
    assert oct(path.stat().st_mode & 0o777) == oct(0o640 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(b'{"old":1}\n')
    log = AccessLog(str(path), [])
    log.log({"new": 2})
    log.close()
    assert read_lines(path) == [{"old": 1}, {"new": 2}]


def test_reopen_after_rename_is_rotation(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), [])
    log.log({"n": 1})
    log.flush(wait=True)
    os.rename(path, tmp_path / "access.log.1")
    log.log({"n": 2})          # logged before the signal: still belongs to the old file
    log.reopen()
    log.log({"n": 3})
    log.close()
    assert read_lines(tmp_path / "access.log.1") == [{"n": 1}, {"n": 2}]
    assert read_lines(path) == [{"n": 3}]


def test_unwritable_path_fails_at_start(tmp_path):
    with pytest.raises(OSError):
        AccessLog(str(tmp_path / "missing-dir" / "access.log"), [])


def test_write_failures_are_counted_and_never_raise(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full not available")
    log = AccessLog("/dev/full", [])     # every write fails with ENOSPC
    for i in range(5):
        log.log({"n": i})
    log.flush(wait=True)
    log.log({"n": 5})
    log.close()
    assert log.write_errors >= 1 and log.lines_dropped == 6 and log.lines_written == 0


def test_unserializable_entries_are_dropped_alone(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), [])
    log.log({"ok": 1})
    log.log({"bad": object()})
    log.log({1: "non-str key"})
    log.log({"ok": 2})
    log.close()
    assert read_lines(path) == [{"ok": 1}, {"ok": 2}]
    assert log.lines_dropped == 2


def test_reopen_failure_keeps_the_old_file(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    path = d / "access.log"
    log = AccessLog(str(path), [])
    log.log({"n": 1})
    log.flush(wait=True)
    os.rename(d, tmp_path / "moved")     # the directory is gone: reopen cannot create the file
    log.reopen()
    log.log({"n": 2})
    log.close()
    assert log.write_errors == 1
    assert read_lines(tmp_path / "moved" / "access.log") == [{"n": 1}, {"n": 2}]


def test_off_writes_nothing(tmp_path):
    log = AccessLog("off", ["authorization"])
    assert not log.enabled
    log.log({"n": 1})
    log.reopen()
    log.close()
    assert log.lines_written == 0


def test_logging_after_close_is_harmless(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), [])
    log.close()
    log.log({"n": 1})
    log.flush()
    log.close()
    assert path.read_bytes() == b""


def test_timer_flushes_inside_a_running_loop(tmp_path):
    path = tmp_path / "access.log"

    async def main():
        log = AccessLog(str(path), [])
        try:
            log.log({"n": 1})
            log.log({"n": 2})
            for _ in range(100):            # written without any explicit flush
                await asyncio.sleep(0.05)
                if path.stat().st_size:
                    break
            return read_lines(path)
        finally:
            log.close()

    assert asyncio.run(main()) == [{"n": 1}, {"n": 2}]


def test_a_full_batch_is_handed_over_on_the_next_loop_pass(tmp_path):
    path = tmp_path / "access.log"

    async def main():
        log = AccessLog(str(path), [])
        try:
            for i in range(256):
                log.log({"n": i})
            await asyncio.sleep(0)
            pending = len(log._buf)
            log.flush(wait=True)
            return pending, log.lines_written
        finally:
            log.close()

    assert asyncio.run(main()) == (0, 256)


STDOUT_CHILD = r"""
import sys, time
sys.path.insert(0, {repo!r})
from fastgate.observe.access_log import AccessLog
from tests.observe.test_access_log import finished_ctx
log = AccessLog("stdout", ["authorization", "cookie", "x-api-key"])
for i in range({n}):
    log.log(log.entry(finished_ctx(request_id="r%d" % i)))
log.close()
"""


@pytest.mark.parametrize("n", [1, 3000])
def test_stdout_mode(n):
    # 3000 lines (~1 MB) through a pipe: exercises the PIPE_BUF-sized, line-aligned writes
    proc = subprocess.run([sys.executable, "-c", STDOUT_CHILD.format(repo=REPO, n=n)],
                          capture_output=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert b"SECRET" not in proc.stdout
    lines = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert [e["request_id"] for e in lines] == [f"r{i}" for i in range(n)]
    assert lines[0]["user_agent"] == "curl/8.5" and set(lines[0]) == FIELDS


def test_from_a_loaded_config(tmp_path):
    path = tmp_path / "access.log"
    cfg = parse_config({"listeners": [{"bind": "127.0.0.1:0"}],
                        "routes": [{"name": "r", "paths": ["/"], "respond": {"status": 200}}],
                        "logging": {"access_log": str(path), "redact_headers": ["User-Agent"]}}, {})
    log = AccessLog.from_config(cfg)
    log.log(log.entry(finished_ctx()))
    log.close()
    [e] = read_lines(path)
    assert e["user_agent"] is None and e["request_id"] == "rid-1"


def test_without_a_loop_full_batches_go_out_and_a_dead_loop_is_not_used(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), [])

    async def one():
        log.log({"n": -1})          # arms a timer on a loop that is about to close

    asyncio.run(one())
    for i in range(300):
        log.log({"n": i})
    assert len(log._buf) < 256      # a full batch was handed over without any loop
    log.close()
    assert [e["n"] for e in read_lines(path)] == list(range(-1, 300))
