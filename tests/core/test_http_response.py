"""fastgate._core.http.ResponseParser at its Python boundary: framing per status and method,
1xx/101, close-delimited bodies and EOF, unsolicited bytes, errors (always 502)."""
import pytest

from fastgate._core.http import HttpError, ResponseHead, ResponseParser


class Rec:
    def __init__(self):
        self.events = []
        self.heads = []

    def on_informational(self, head):
        self.events.append(("info", head.status, list(head.headers)))

    def on_response(self, head):
        self.heads.append(head)
        self.events.append(("head", head.status, list(head.headers)))

    def on_body(self, data):
        assert type(data) is bytes and data
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_response_complete(self):
        self.events.append(("done",))


def run(data, head_request=False, pieces=None, eof=False, **limits):
    rec = Rec()
    p = ResponseParser(rec, **limits)
    p.start(head_request)
    chunks = [data] if pieces is None else [data[i:i + pieces]
                                            for i in range(0, len(data), pieces)]
    for c in chunks:
        p.feed(c)
    if eof:
        p.feed_eof()
    return rec, p


def error_of(data, head_request=False, pieces=None, eof=False, **limits):
    try:
        run(data, head_request, pieces, eof, **limits)
    except HttpError as e:
        return (e.status, e.code)
    return None


def resp(line=b"HTTP/1.1 200 OK", headers=(), body=b""):
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def body_of(rec):
    return b"".join(e[1] for e in rec.events if e[0] == "body")


# ------------------------------------------------------------------------ status line
@pytest.mark.parametrize("line, status, reason, version", [
    (b"HTTP/1.1 200 OK", 200, b"OK", 11),
    (b"HTTP/1.1 200", 200, b"", 11),
    (b"HTTP/1.1 200 ", 200, b"", 11),
    (b"HTTP/1.0 404 Not Found", 404, b"Not Found", 10),
    (b"HTTP/1.1 599 Whatever  it\tsays \xe9", 599, b"Whatever  it\tsays \xe9", 11),
    (b"HTTP/1.2 201 Created", 201, b"Created", 11),
    (b"HTTP/1.1 999 X", 999, b"X", 11),
])
def test_status_line_valid(line, status, reason, version):
    rec, _ = run(resp(line, [b"Content-Length: 0"]))
    h = rec.heads[0]
    assert (h.status, h.reason, h.version) == (status, reason, version)
    assert isinstance(h, ResponseHead)


@pytest.mark.parametrize("line", [
    b"HTTP/2.0 200 OK", b"HTTP/0.9 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 099 X", b"HTTP/1.1 200OK", b"http/1.1 200 OK", b"HTTP/1.1  200 OK",
    b"HTTP/1.1 2x0 OK", b"HTTP/1.1 200 O\x00K", b"HTTP/1.1 200 O\x7fK", b"HTTP/11 200 OK",
    b"ICY 200 OK", b"", b"HTTP/1.1\t200 OK", b"HTTP/1.1 -200 OK",
])
def test_status_line_invalid(line):
    assert error_of(resp(line, [b"Content-Length: 0"])) == (502, "bad_response")


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n",
    b"HTTP/1.1 200 OK\r\nX: a\rY: b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 0\r\n\r\n",
    b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
])
def test_malformed_heads_are_502(data):
    assert error_of(data) == (502, "bad_response")
    assert error_of(data, pieces=1) == (502, "bad_response")


# --------------------------------------------------------------------------- framing
@pytest.mark.parametrize("headers, body, expected, chunked, length, keep_alive", [
    ([b"Content-Length: 5"], b"hello", b"hello", False, 5, True),
    ([b"Content-Length: 0"], b"", b"", False, 0, True),
    ([b"Content-Length: 5, 5"], b"hello", b"hello", False, 5, True),
    ([b"Content-Length: 5", b"Content-Length: 5"], b"hello", b"hello", False, 5, True),
    ([b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n", b"hello", True, -1, True),
    ([b"Transfer-Encoding: Chunked"], b"5\r\nhello\r\n0\r\n\r\n", b"hello", True, -1, True),
    ([b"Transfer-Encoding: gzip, chunked"], b"3\r\nabc\r\n0\r\nT: x\r\n\r\n", b"abc", True,
     -1, True),
    ([b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n",
     b"abc", True, -1, True),
    ([b"Transfer-Encoding: chunked", b"Connection: close"], b"1\r\na\r\n0\r\n\r\n", b"a",
     True, -1, False),
])
def test_framed_bodies(headers, body, expected, chunked, length, keep_alive):
    for pieces in (None, 1, 3):
        rec, p = run(resp(headers=headers, body=body), pieces=pieces)
        h = rec.heads[0]
        assert (h.chunked, h.content_length, h.keep_alive) == (chunked, length, keep_alive)
        assert body_of(rec) == expected and rec.events[-1] == ("done",)
        assert not p.expecting and p.buffered == 0


@pytest.mark.parametrize("headers", [
    [],
    [b"Transfer-Encoding: gzip"],
    [b"Transfer-Encoding: chunked, gzip"],
    [b"Transfer-Encoding: identity"],
])
def test_close_delimited(headers):
    rec, p = run(resp(headers=headers, body=b"abc"))
    assert rec.heads[0].keep_alive is False
    assert p.expecting and rec.events[-1] == ("body", b"abc")
    p.feed(b"def")
    p.feed_eof()
    assert rec.events[1:] == [("body", b"abcdef"), ("done",)]
    assert not p.expecting
    p.feed_eof()  # nothing expected any more: no-op


@pytest.mark.parametrize("headers", [
    [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
    [b"Transfer-Encoding: gzip", b"Content-Length: 5"],
    [b"Content-Length: 5", b"Content-Length: 6"],
    [b"Content-Length: 5, 6"],
    [b"Content-Length: -1"],
    [b"Content-Length: 0x5"],
    [b"Content-Length: "],
    [b"Content-Length: 1" + b"0" * 18],
    [b"Transfer-Encoding: chunked, chunked"],
    [b"Transfer-Encoding: chunked;x=1"],
    [b"Transfer-Encoding: ,"],
    [b"Transfer-Encoding:"],
])
def test_invalid_framing_is_502(headers):
    assert error_of(resp(headers=headers, body=b"hello")) == (502, "bad_response")


@pytest.mark.parametrize("body", [
    b"5\r\nhelloX\r\n0\r\n\r\n", b"x\r\n", b"5 \r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n", b"8000000000000000\r\n",
])
def test_invalid_chunked_response_is_502(body):
    data = resp(headers=[b"Transfer-Encoding: chunked"], body=body)
    assert error_of(data) == (502, "bad_response")


@pytest.mark.parametrize("version, headers, keep_alive", [
    (b"HTTP/1.1", [b"Content-Length: 0"], True),
    (b"HTTP/1.1", [b"Content-Length: 0", b"Connection: close"], False),
    (b"HTTP/1.0", [b"Content-Length: 0"], False),
    (b"HTTP/1.0", [b"Content-Length: 0", b"Connection: keep-alive"], True),
    (b"HTTP/1.0", [b"Transfer-Encoding: chunked", b"Connection: keep-alive"], False),
])
def test_response_keep_alive(version, headers, keep_alive):
    body = b"0\r\n\r\n" if any(b"chunked" in h for h in headers) else b""
    rec, _ = run(resp(version + b" 200 OK", headers, body))
    assert rec.heads[0].keep_alive is keep_alive
    assert rec.events[-1] == ("done",)


# ------------------------------------------------------------- bodiless responses
@pytest.mark.parametrize("status, head_request", [
    (204, False), (304, False), (200, True), (404, True), (500, True), (204, True),
])
@pytest.mark.parametrize("headers", [
    [b"Content-Length: 100"], [b"Transfer-Encoding: chunked"], [],
])
def test_no_body_responses(status, head_request, headers):
    data = resp(b"HTTP/1.1 %d X" % status, headers)
    rec, p = run(data, head_request=head_request)
    assert rec.events == [("head", status, [tuple(h.lower().split(b": ")) for h in headers]),
                          ("done",)]
    assert not p.expecting and p.buffered == 0
    assert rec.heads[0].keep_alive is True
    # the next response on the same connection parses normally
    p.start(False)
    p.feed(resp(headers=[b"Content-Length: 2"], body=b"ok"))
    assert rec.events[-2:] == [("body", b"ok"), ("done",)]


def test_head_response_fields_still_describe_the_resource():
    rec, _ = run(resp(headers=[b"Content-Length: 1234"]), head_request=True)
    assert rec.heads[0].content_length == 1234


# ------------------------------------------------------------------------------ 1xx
def test_informational_then_final():
    data = (b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            + resp(headers=[b"Content-Length: 2"], body=b"ok"))
    for pieces in (None, 1, 7):
        rec, p = run(data, pieces=pieces)
        assert rec.events == [
            ("info", 100, []),
            ("info", 103, [(b"link", b"</s.css>; rel=preload")]),
            ("head", 200, [(b"content-length", b"2")]),
            ("body", b"ok"),
            ("done",),
        ]
        assert not p.expecting


def test_informational_with_content_length_has_no_body():
    data = b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n" + resp(
        headers=[b"Content-Length: 0"])
    rec, _ = run(data)
    assert [e[0] for e in rec.events] == ["info", "head", "done"]


def test_switching_protocols_and_take_buffered():
    data = resp(b"HTTP/1.1 101 Switching Protocols",
                [b"Upgrade: websocket", b"Connection: Upgrade"]) + b"\x81\x02hi"
    rec, p = run(data)
    assert rec.events == [("head", 101, [(b"upgrade", b"websocket"),
                                         (b"connection", b"Upgrade")])]
    assert not p.expecting and p.buffered == 4
    p.feed(b"more")
    assert p.take_buffered() == b"\x81\x02himore"
    with pytest.raises(RuntimeError):
        p.feed(b"x")
    with pytest.raises(RuntimeError):
        p.start(False)


def test_take_buffered_inside_on_response():
    class R(Rec):
        def on_response(self, head):
            super().on_response(head)
            self.tunnel = parser.take_buffered()

    rec = R()
    parser = ResponseParser(rec)
    parser.start(False)
    parser.feed(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\nTUNNEL")
    assert rec.tunnel == b"TUNNEL"
    assert parser.buffered == 0
    # same when the head arrives byte by byte and the buffer holds the input
    rec = R()
    parser = ResponseParser(rec)
    parser.start(False)
    data = b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\nTUNNEL"
    for i in range(len(data) - 7):
        parser.feed(data[i:i + 1])
    assert parser.buffered == 1  # the CR of the final empty line
    parser.feed(data[-7:])      # its LF plus tunnel bytes: parsed from the parser's buffer
    assert rec.tunnel == b"TUNNEL"
    assert parser.buffered == 0


# ---------------------------------------------------------- unsolicited/extra bytes
def test_bytes_while_not_armed_are_only_buffered():
    rec = Rec()
    p = ResponseParser(rec)
    assert not p.expecting and p.buffered == 0
    p.feed(resp(headers=[b"Content-Length: 0"]))
    assert rec.events == [] and p.buffered > 0 and not p.expecting
    with pytest.raises(HttpError) as ei:
        p.start(False)
    assert ei.value.status == 502


def test_extra_bytes_after_complete_response():
    rec, p = run(resp(headers=[b"Content-Length: 2"], body=b"okEXTRA"))
    assert rec.events[-1] == ("done",) and not p.expecting
    assert p.buffered == 5
    p.feed(b"!")
    assert p.buffered == 6 and rec.events[-1] == ("done",)
    with pytest.raises(HttpError):
        p.start(False)


def test_start_inside_completion_callback_sees_leftover():
    class R(Rec):
        def on_response_complete(self):
            super().on_response_complete()
            try:
                parser.start(False)
            except HttpError as e:
                self.err = e

    rec = R()
    parser = ResponseParser(rec)
    parser.start(False)
    parser.feed(resp(headers=[b"Content-Length: 0"]) + b"X")
    assert rec.err.status == 502
    rec = R()
    rec.err = None
    parser = ResponseParser(rec)
    parser.start(False)
    parser.feed(resp(headers=[b"Content-Length: 0"]))
    assert rec.err is None and parser.expecting  # re-armed cleanly


def test_start_while_expecting_is_a_bug():
    p = ResponseParser(Rec())
    p.start(False)
    with pytest.raises(RuntimeError):
        p.start(False)


def test_keep_alive_sequence_of_responses():
    rec = Rec()
    p = ResponseParser(rec)
    for i in range(3):
        p.start(False)
        p.feed(resp(headers=[b"Transfer-Encoding: chunked"], body=b"1\r\n%d\r\n0\r\n\r\n" % i))
        assert rec.events[-2:] == [("body", b"%d" % i), ("done",)]
        assert p.buffered == 0


# --------------------------------------------------------------------------- EOF
@pytest.mark.parametrize("data", [
    b"",
    b"HTTP/1.1 200",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
])
def test_eof_inside_message_is_truncation(data):
    rec = Rec()
    p = ResponseParser(rec)
    p.start(False)
    p.feed(data)
    with pytest.raises(HttpError) as ei:
        p.feed_eof()
    assert (ei.value.status, ei.value.code) == (502, "upstream_truncated")
    with pytest.raises(HttpError):
        p.feed(b"x")
    assert ("done",) not in rec.events


def test_eof_when_idle_is_a_no_op():
    rec = Rec()
    p = ResponseParser(rec)
    p.feed_eof()
    rec2, p2 = run(resp(headers=[b"Content-Length: 1"], body=b"x"))
    p2.feed_eof()
    assert rec2.events[-1] == ("done",)


def test_callback_exception_propagates():
    class R(Rec):
        def on_body(self, data):
            raise KeyError("x")

    p = ResponseParser(R())
    p.start(False)
    with pytest.raises(KeyError):
        p.feed(resp(headers=[b"Content-Length: 1"], body=b"x"))
    with pytest.raises(KeyError):
        p.feed(b"")


# --------------------------------------------------------------------------- limits
def test_response_head_limits_exact():
    data = resp(headers=[b"Content-Length: 0", b"X: " + b"y" * 40])
    assert error_of(data, max_header_bytes=len(data)) is None
    assert error_of(data, max_header_bytes=len(data) - 1) == (502, "bad_response")
    assert error_of(data, pieces=1, max_header_bytes=len(data) - 1) == (502, "bad_response")
    assert error_of(data, max_headers=2) is None
    assert error_of(data, max_headers=1) == (502, "bad_response")
    p = ResponseParser(Rec(), max_header_bytes=100)
    p.start(False)
    with pytest.raises(HttpError):
        p.feed(b"HTTP/1.1 200 " + b"r" * 200)


def test_response_limits_apply_per_head():
    info = b"HTTP/1.1 103 Hints\r\nLink: " + b"l" * 30 + b"\r\n\r\n"
    final = resp(headers=[b"Content-Length: 0", b"X: " + b"y" * 30])
    limit = max(len(info), len(final))
    assert error_of(info + final, max_header_bytes=limit) is None


def test_large_body_streams_without_buffering():
    rec = Rec()
    p = ResponseParser(rec)
    p.start(False)
    n = 1 << 20
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
    piece = b"z" * 65536
    for _ in range(n // len(piece)):
        p.feed(piece)
        assert p.buffered == 0
    assert rec.events[-1] == ("done",) and len(body_of(rec)) == n
