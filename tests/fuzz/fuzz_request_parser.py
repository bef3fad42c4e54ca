"""RequestParser on arbitrary client bytes, pipelined, cut at random places.

Input: byte 0 picks the limits, how the stream is cut and what kind of buffer is fed; byte 1
seeds the cuts (and a body limit); the rest is the stream.

Invariants:
* the only exception is HttpError with a request status (400/413/414/431/501/505), the code
  of fastgate.errors for it and a message; once raised it is raised again by any later call;
* cut anywhere, fed as any buffer type, the events and the error are exactly those of the
  stream fed whole;
* every head is well formed (token method, target octets, version 1.0/1.1, lower-case token
  names, trimmed field values, Content-Length/chunked/keep-alive/Host as the fields say, path
  and query cut from the target, head_bytes the exact size of the head in the stream);
* framing: each body is exactly the bytes the stream declares (Content-Length bytes, or the
  chunked body decoded by an independent decoder), and the next message starts right after;
* outside a pause, no more than a line's limit is held unconsumed (no unbounded buffering);
* with byte 0's top bit, take_buffered() in on_request of a CONNECT or Upgrade request (as
  the connection does for a tunnel) returns exactly the bytes after that head.
"""
from __future__ import annotations

from fastgate._core.http import HttpError, RequestParser
from fastgate.errors import ERROR_CODES

from ._http import (Broken, Recorder, as_kind, check, check_fields, connection_tokens,
                    content_length_of, cuts, dechunk, values)

STATUSES = frozenset((400, 413, 414, 431, 501, 505))
LIMITS = (
    {},
    {"max_request_line_bytes": 40, "max_header_bytes": 80, "max_headers": 4,
     "max_body_bytes": 64},
    {"max_request_line_bytes": 1, "max_header_bytes": 2, "max_headers": 0,
     "max_body_bytes": 0},
    {"max_request_line_bytes": 300, "max_header_bytes": 600, "max_headers": 12,
     "max_body_bytes": 4000},
)
DEFAULTS = {"max_request_line_bytes": 8192, "max_header_bytes": 32768, "max_headers": 100,
            "max_body_bytes": 10485760}
MAX_CHUNK_LINE = 4096


class Rec(Recorder):
    def __init__(self, body_limit, take):
        super().__init__()
        self.body_limit = body_limit
        self.take = take
        self.tunnel = None
        self.parser = None

    def on_request(self, head):
        h = head
        self.heads.append(head)
        self.events.append(("head", snapshot(head)))
        if self.take and (h.method == b"CONNECT" or h.upgrade is not None):
            # as the connection does for a tunnel: the rest belongs to the other side
            self.tunnel = self.parser.take_buffered()
            self.events.append(("tunnel",))
        elif self.body_limit is not None:
            self.parser.set_body_limit(self.body_limit)

    def on_body(self, data):
        self.body(data)

    def on_request_complete(self):
        self.events.append(("done",))


def snapshot(h):
    return (h.method, h.target, h.path, h.query, h.version, tuple(h.headers), h.host,
            h.content_length, h.chunked, h.keep_alive, h.expect_continue, h.upgrade,
            h.connection_tokens, h.head_bytes)


def drive(pieces, limits, body_limit, kind, take):
    rec = Rec(body_limit, take)
    p = RequestParser(rec, **limits)
    rec.parser = p
    lim = dict(DEFAULTS, **limits)
    bound = max(lim["max_request_line_bytes"], lim["max_header_bytes"], MAX_CHUNK_LINE) + 2
    err = None
    try:
        for n, piece in enumerate(pieces):
            p.feed(as_kind(piece, kind))
            if rec.tunnel is not None:
                rec.tunnel += b"".join(pieces[n + 1:])
                break
            while p.paused:
                before = p.buffered
                p.resume()
                if p.paused and p.buffered == before:
                    break
            check(p.paused or p.buffered <= bound, "unbounded buffering", p.buffered, bound)
    except HttpError as e:
        err = e
    if err is not None:
        check(err.status in STATUSES, "unexpected status", err.status, err.message)
        check(err.code == ERROR_CODES[err.status], "code does not match status", err.code)
        check(isinstance(err.message, str) and err.message, "no message")
        try:
            p.feed(b"x")
        except HttpError as again:
            check(again is err, "a later feed raised another error", again)
        else:
            raise Broken("a failed parser accepted more input")
    return rec, err


def verify(stream, rec, err, limits, body_limit):
    off = 0
    lim = dict(DEFAULTS, **limits)
    events = rec.events
    i = 0
    while i < len(events):
        kind, *rest = events[i]
        check(kind == "head", "body or completion without a head", events[i])
        h = rec.heads.pop(0)
        (method, target, path, query, version, headers, host, cl, chunked, keep_alive,
         _expect, _upgrade, tokens, head_bytes) = rest[0]
        while stream.startswith(b"\r\n", off):
            off += 2
        raw = stream[off:off + head_bytes]
        line = method + b" " + target + b" HTTP/1."
        check(raw.startswith(line) and raw.endswith(b"\r\n\r\n"), "head_bytes off", raw[:80])
        check(raw.count(b"\r\n") == len(headers) + 2, "head lines != headers + 2", raw[:80])
        check(len(raw.split(b"\r\n", 1)[0]) <= lim["max_request_line_bytes"],
              "request line over its limit accepted")
        check(head_bytes - len(raw.split(b"\r\n", 1)[0]) - 2 <= lim["max_header_bytes"],
              "header section over its limit accepted")
        check(len(headers) <= lim["max_headers"], "too many headers accepted")
        check(len(method) > 0 and all(c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                                      b"ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in method),
              "method not a token", method)
        check(len(target) > 0 and all(33 <= c <= 126 and c != 35 for c in target),
              "target octets", target)
        check(version in (10, 11), "version", version)
        check_fields(headers)
        check(h.get(b"host") == (values(headers, b"host") or [None])[0], "get() disagrees")
        check(cl == content_length_of(headers), "content_length disagrees with fields", cl)
        te = values(headers, b"transfer-encoding")
        check(chunked == bool(te), "chunked without TE or TE accepted without chunked", te)
        if chunked:
            check(cl == -1 and version == 11 and len(te) == 1
                  and te[0].lower() == b"chunked", "TE accepted", te)
        check(version == 10 or len(values(headers, b"host")) == 1, "Host count", headers)
        check(tokens == connection_tokens(headers), "connection tokens", tokens)
        if version == 11:
            check(keep_alive == (b"close" not in tokens), "keep_alive 1.1", tokens)
        else:
            check(keep_alive == (b"keep-alive" in tokens and b"close" not in tokens),
                  "keep_alive 1.0", tokens)
        if target.startswith(b"/"):
            check(path + (b"?" + query if b"?" in target else b"") == target,
                  "path/query not cut from the target", target, path, query)
        elif method == b"CONNECT":
            check(path == target, "CONNECT path", target, path)
        elif target == b"*":
            check(method == b"OPTIONS" and path == b"*", "asterisk form", method)
        else:
            check(target[:7].lower() == b"http://" or target[:8].lower() == b"https://",
                  "absolute form", target)
            check(path.startswith(b"/"), "absolute-form path", path)
        check(cl <= lim["max_body_bytes"], "Content-Length over max_body_bytes accepted", cl)
        off += head_bytes
        i += 1
        if i < len(events) and events[i][0] == "tunnel":
            check(rec.tunnel == stream[off:], "tunnel bytes lost or changed", rec.tunnel[:40])
            check(method == b"CONNECT" or _upgrade is not None, "tunnel without CONNECT/Upgrade")
            check(i + 1 == len(events), "events after take_buffered()")
            return
        body = b""
        if i < len(events) and events[i][0] == "body":
            body = events[i][1]
            i += 1
        done = i < len(events) and events[i][0] == "done"
        if done:
            i += 1
        limit = lim["max_body_bytes"] if body_limit is None else min(body_limit,
                                                                      lim["max_body_bytes"])
        check(len(body) <= limit, "body over its limit delivered", len(body), limit)
        if chunked:
            decoded, end = dechunk(stream, off)
            check(decoded.startswith(body), "chunked body differs from the stream's")
            if done:
                check(end is not None and decoded == body, "chunked message ended early")
                off = end
        elif cl > 0:
            check(stream[off:off + len(body)] == body and len(body) <= cl, "CL body bytes")
            if done:
                check(len(body) == cl, "CL message completed short", len(body), cl)
                off += cl
        else:
            check(body == b"" and (done or err is not None or i == len(events)),
                  "bodiless message got a body or no completion")
        if not done:
            check(i == len(events), "events after an incomplete message")
            return


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    opt, seed = data[0], data[1]
    stream = data[2:]
    limits = LIMITS[opt & 3]
    mode = (opt >> 2) & 3
    kind = (opt >> 4) & 3 if (opt >> 4) & 3 != 3 else 0
    body_limit = seed % 50 if opt & 0x40 else None
    take = bool(opt & 0x80)
    whole, werr = drive([stream], limits, body_limit, 0, take)
    verify(stream, whole, werr, limits, body_limit)
    split, serr = drive(cuts(stream, mode, seed), limits, body_limit, kind, take)
    verify(stream, split, serr, limits, body_limit)
    check(split.events == whole.events, "events depend on the cuts",
          whole.events[-3:], split.events[-3:])
    check((werr is None) == (serr is None) and (werr is None or (
        werr.status, werr.message) == (serr.status, serr.message)),
          "error depends on the cuts", werr, serr)


def _req(line, *headers, body=b""):
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


SEEDS = [bytes([o, 7]) + s for o, s in (
    (0, _req(b"GET / HTTP/1.1", b"Host: a")),
    (4, _req(b"POST /p?q=1 HTTP/1.1", b"Host: a", b"Content-Length: 5", body=b"hello")
        + _req(b"GET /b HTTP/1.1", b"Host: b:80", b"Connection: close")),
    (8, _req(b"PUT /u HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked",
             body=b"5;ext=\"v\"\r\nhello\r\n0\r\nx-t: 1\r\n\r\n")),
    (12, b"\r\n" + _req(b"GET http://ex.com:8080/a?b HTTP/1.0", b"Connection: keep-alive")),
    (1, _req(b"OPTIONS * HTTP/1.1", b"Host: [::1]:8", b"Expect: 100-continue",
             b"Upgrade: websocket", b"Connection: Upgrade")),
    (3, _req(b"CONNECT h.example:443 HTTP/1.1", b"Host: h.example:443")),
    (0x84, _req(b"CONNECT h.example:443 HTTP/1.1", b"Host: h.example:443") + b"\x16\x03\x01"),
    (0x88, _req(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket")
        + b"\x81\x05hello"),
    (0x44, _req(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 3, 3", body=b"abc")),
    (0x14, _req(b"GET /x HTTP/1.1", b"Host: a", b"Cookie: a=b", b"X-Long: " + b"v" * 60)),
    (0x24, _req(b"DELETE /r HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked",
                body=b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n")
        + _req(b"GET / HTTP/1.1", b"Host: a")),
)]
