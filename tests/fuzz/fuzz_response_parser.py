"""ResponseParser on arbitrary upstream bytes, cut at random places, armed per response with
``start(head_request)`` as the upstream connection does, then maybe ``feed_eof()``.

Input: byte 0 picks the limits, the cuts, the buffer kind and whether the upstream closes at
the end; byte 1 seeds the cuts, its bits say which responses answer a HEAD; then the stream.

Invariants:
* the only exception is HttpError 502 (code bad_response or upstream_truncated) with a
  message, raised again by any later call;
* up to the end of the first response, the events (and the error, if it comes first) do not
  depend on the cuts or the buffer kind (later ones may: bytes that arrive before the next
  start() answer no request, a 502 that depends on timing by design);
* heads are well formed (status 100..999, trimmed fields, content_length/chunked as the
  fields say, head_bytes the exact size of the head in the stream); 1xx (but 101) heads are
  informational and followed by the real one;
* framing: no body for HEAD, 204 and 304; otherwise exactly the Content-Length bytes, the
  chunked body decoded by an independent decoder, or (no length, or a final coding other
  than chunked) everything up to the close; after a 101 the rest is the tunnel's, untouched
  (take_buffered);
* while a head or a chunk line is incomplete, no more than its limit is held unconsumed.
"""
from __future__ import annotations

from fastgate._core.http import HttpError, ResponseParser

from ._http import (Broken, Recorder, as_kind, check, check_fields, connection_tokens,
                    content_length_of, cuts, dechunk, values)

LIMITS = ({}, {"max_header_bytes": 64, "max_headers": 4}, {"max_header_bytes": 2, "max_headers": 0},
          {"max_header_bytes": 400, "max_headers": 10})
DEFAULTS = {"max_header_bytes": 65536, "max_headers": 200}
MAX_CHUNK_LINE = 4096


class Rec(Recorder):
    def on_informational(self, head):
        self.heads.append(head)
        self.events.append(("info", snapshot(head)))

    def on_response(self, head):
        self.heads.append(head)
        self.events.append(("head", snapshot(head)))

    def on_body(self, data):
        self.body(data)

    def on_response_complete(self):
        self.events.append(("done",))


def snapshot(h):
    return (h.status, h.reason, h.version, tuple(h.headers), h.content_length, h.chunked,
            h.keep_alive, h.connection_tokens, h.head_bytes)


def drive(pieces, limits, head_bits, kind, eof):
    rec = Rec()
    p = ResponseParser(rec, **limits)
    lim = dict(DEFAULTS, **limits)
    bound = max(lim["max_header_bytes"], MAX_CHUNK_LINE) + 2
    heads_asked = []
    err = None
    tunnel = None

    def arm():
        flag = bool(head_bits >> (len(heads_asked) % 8) & 1)
        heads_asked.append(flag)
        p.start(flag)

    try:
        arm()
        for n, piece in enumerate(pieces):
            p.feed(as_kind(piece, kind))
            if rec.events and rec.events[-1][0] == "head" and rec.events[-1][1][0] == 101:
                rest = b"".join(pieces[n + 1:])
                tunnel = p.take_buffered() + rest
                break
            if p.expecting:
                check(p.buffered <= bound, "unbounded buffering", p.buffered, bound)
            elif n + 1 < len(pieces) or p.buffered:
                arm()
        else:
            if eof:
                p.feed_eof()
    except HttpError as e:
        err = e
    if err is not None:
        check(err.status == 502 and err.code in ("bad_response", "upstream_truncated"),
              "unexpected error", err.status, err.code)
        check(isinstance(err.message, str) and err.message, "no message")
        try:
            p.feed(b"x")
        except HttpError as again:
            check(again is err, "a later feed raised another error", again)
        else:
            raise Broken("a failed parser accepted more input")
    return rec, err, heads_asked, tunnel


def verify(stream, rec, err, heads_asked, tunnel, eof, limits):
    lim = dict(DEFAULTS, **limits)
    events = rec.events
    off = i = 0
    resp = 0
    while i < len(events):
        kind = events[i][0]
        check(kind in ("info", "head"), "body or completion without a head", events[i])
        status, reason, version, headers, cl, chunked, keep_alive, tokens, head_bytes = \
            events[i][1]
        raw = stream[off:off + head_bytes]
        check(raw.startswith(b"HTTP/1.") and raw.endswith(b"\r\n\r\n"), "head_bytes off",
              raw[:80])
        check(raw.count(b"\r\n") == len(headers) + 2, "head lines != headers + 2", raw[:80])
        check(head_bytes <= lim["max_header_bytes"], "head over its limit accepted")
        check(len(headers) <= lim["max_headers"], "too many headers accepted")
        check(100 <= status <= 999 and version in (10, 11), "status/version", status, version)
        check_fields(headers)
        check(cl == content_length_of(headers), "content_length disagrees with fields", cl)
        te = values(headers, b"transfer-encoding")
        last = b",".join(te).split(b",")[-1].strip(b" \t").lower() if te else b""
        # The codings of a 1xx head (informational, or a 101 whose rest is the tunnel's) are
        # never acted upon, nor refused: its flag only has to be possible.
        check(chunked == (last == b"chunked") or (status < 200 and not chunked),
              "chunked flag", te)
        check(tokens == connection_tokens(headers), "connection tokens")
        off += head_bytes
        i += 1
        if kind == "info":
            check(status < 200 and status != 101, "informational status", status)
            continue
        check(status >= 200 or status == 101, "final status", status)
        if status == 101:
            check(tunnel is not None and tunnel == stream[off:], "tunnel bytes lost or changed")
            check(i == len(events), "events after a 101")
            return
        check(not (te and cl >= 0), "both TE and CL accepted")
        body = b""
        if i < len(events) and events[i][0] == "body":
            body = events[i][1]
            i += 1
        done = i < len(events) and events[i][0] == "done"
        if done:
            i += 1
        head_request = heads_asked[resp]
        resp += 1
        if head_request or status in (204, 304):
            check(body == b"" and done, "a response without a body got one", status)
        elif chunked:
            decoded, end = dechunk(stream, off)
            check(decoded.startswith(body), "chunked body differs from the stream's")
            if done:
                check(end is not None and decoded == body, "chunked message ended early")
                off = end
        elif not te and cl >= 0:
            check(stream[off:off + len(body)] == body and len(body) <= cl, "CL body bytes")
            if done:
                check(len(body) == cl, "CL message completed short", len(body), cl)
                off += cl
        else:
            check(not keep_alive, "close-delimited body on a keep-alive response")
            check(stream[off:off + len(body)] == body, "close-delimited body bytes")
            if done:
                check(eof and body == stream[off:], "close-delimited body ended before EOF")
                off = len(stream)
        if not done:
            check(i == len(events), "events after an incomplete response")
            return


def _first(events, err):
    """Events up to and including the first completed response (and the error, if before)."""
    for n, e in enumerate(events):
        if e[0] == "done" or (e[0] == "head" and e[1][0] == 101):
            return events[:n + 1], None
    return events, (None if err is None else (err.status, err.message))


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    opt, seed = data[0], data[1]
    stream = data[2:]
    limits = LIMITS[opt & 3]
    mode = (opt >> 2) & 3
    kind = (opt >> 4) & 3 if (opt >> 4) & 3 != 3 else 0
    eof = bool(opt & 0x40)
    whole, werr, asked, tunnel = drive([stream], limits, seed, 0, eof)
    verify(stream, whole, werr, asked, tunnel, eof, limits)
    split, serr, asked, tunnel = drive(cuts(stream, mode, seed), limits, seed, kind, eof)
    verify(stream, split, serr, asked, tunnel, eof, limits)
    check(_first(whole.events, werr) == _first(split.events, serr),
          "first response depends on the cuts", whole.events[:3], split.events[:3], werr, serr)


def _resp(line, *headers, body=b""):
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


SEEDS = [bytes([o, s]) + r for o, s, r in (
    (0, 0, _resp(b"HTTP/1.1 200 OK", b"Content-Length: 5", body=b"hello")),
    (4, 0, _resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked",
                 body=b"5;a=b\r\nhello\r\n0\r\nx: y\r\n\r\n")),
    (0x48, 0, _resp(b"HTTP/1.0 200", b"Server: s", body=b"until close")),
    (12, 1, _resp(b"HTTP/1.1 200 OK", b"Content-Length: 5")
        + _resp(b"HTTP/1.1 204 No Content")),
    (0, 0, _resp(b"HTTP/1.1 100 Continue") + _resp(b"HTTP/1.1 304 Not Modified",
                                                    b"ETag: \"x\"")),
    (8, 0, _resp(b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
                 b"Connection: Upgrade", body=b"\x81\x05hello")),
    (0x44, 0, _resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked",
                    b"Connection: keep-alive", body=b"3\r\nabc\r\n0\r\n\r\n")),
    (0x40, 0, _resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked, gzip", body=b"zz")),
    (1, 0, _resp(b"HTTP/1.1 404 Not Found", b"Content-Length: 3, 3", body=b"abc")),
)]
