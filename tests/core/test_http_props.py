"""Properties of fastgate._core.http: the outcome of a parse never depends on how the bytes
were cut into reads (1-byte feeds included, valid or mangled input), and on valid messages
the parsers agree with h11, an independent implementation."""
import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgate._core.http import HttpError, RequestParser, ResponseParser

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR_OBS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
TARGET_CHARS = bytes(c for c in range(0x21, 0x7F) if c != ord("#"))
SPECIAL = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade",
           b"expect", b"te", b"trailer", b"keep-alive"}


# ------------------------------------------------------------------------- recorders
class ReqRec:
    def __init__(self):
        self.events = []

    def on_request(self, head):
        self.events.append(("head", head.method, head.target, head.path, head.query,
                            head.version, tuple(head.headers), head.host,
                            head.content_length, head.chunked, head.keep_alive,
                            head.head_bytes))

    def on_body(self, data):
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_request_complete(self):
        self.events.append(("done",))


class RespRec(ReqRec):
    def on_informational(self, head):
        self.events.append(("info", head.status, tuple(head.headers)))

    def on_response(self, head):
        self.events.append(("head", head.status, head.reason, head.version,
                            tuple(head.headers), head.content_length, head.chunked,
                            head.keep_alive))

    def on_response_complete(self):
        self.events.append(("done",))


def cut(data, points):
    points = sorted({p for p in points if 0 < p < len(data)})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def request_outcome(chunks, **limits):
    """Events, then the error status (or None) and the bytes left buffered."""
    rec = ReqRec()
    p = RequestParser(rec, **limits)
    try:
        for c in chunks:
            p.feed(c)
            while p.paused and p.buffered:
                before = (len(rec.events), p.buffered)
                p.resume()
                if (len(rec.events), p.buffered) == before:
                    break
            if p.paused:
                p.resume()
    except HttpError as e:
        return rec.events, e.status, None
    return rec.events, None, p.buffered


def response_outcome(chunks, head_request=False, eof=False):
    rec = RespRec()
    p = ResponseParser(rec)
    p.start(head_request)
    try:
        for c in chunks:
            p.feed(c)
        if eof:
            p.feed_eof()
    except HttpError as e:
        return rec.events, (e.status, e.code), None
    return rec.events, None, p.buffered


# ------------------------------------------------------------------------ strategies
def _case(draw, s):
    return bytes(c ^ 0x20 if draw(st.booleans()) and chr(c).isalpha() else c for c in s)


@st.composite
def field_values(draw):
    words = draw(st.lists(st.binary(min_size=1, max_size=12).map(
        lambda b: bytes(VCHAR_OBS[x % len(VCHAR_OBS)] for x in b)), max_size=4))
    seps = [draw(st.sampled_from([b" ", b"\t", b"  ", b" \t "])) for _ in words]
    return b"".join(w + s for w, s in zip(words, seps)).rstrip(b" \t")


@st.composite
def header_fields(draw):
    name = draw(st.binary(min_size=1, max_size=16).map(
        lambda b: bytes(TCHAR[x % len(TCHAR)] for x in b)))
    if name.lower() in SPECIAL:
        name = b"x-" + name
    return name, draw(field_values())


@st.composite
def chunked_body(draw, body):
    sizes = draw(st.lists(st.integers(1, 40), max_size=6))
    parts, pos = [], 0
    for n in sizes:
        if pos >= len(body):
            break
        piece = body[pos:pos + n]
        pos += len(piece)
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b";n=\"q \\\" v\"", b";x;y=1"]))
        size = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(piece)
        parts.append(size.encode() + ext + b"\r\n" + piece + b"\r\n")
    if pos < len(body):
        rest = body[pos:]
        parts.append(b"%x\r\n" % len(rest) + rest + b"\r\n")
    trailers = draw(st.lists(header_fields(), max_size=2))
    last = b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n"
    return b"".join(parts) + last + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) \
        + b"\r\n"


@st.composite
def requests(draw, version=None):
    """(wire bytes, expected method, target, headers, body)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD",
                                   b"OPTIONS", b"X-CUSTOM"]))
    target = b"/" + draw(st.binary(max_size=30).map(
        lambda b: bytes(TARGET_CHARS[x % len(TARGET_CHARS)] for x in b)))
    if version is None:
        version = draw(st.sampled_from([b"1.0", b"1.1"]))
    fields = draw(st.lists(header_fields(), max_size=12))
    if version == b"1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))),
                      (_case(draw, b"host"), draw(st.sampled_from(
                          [b"example.com", b"127.0.0.1:8080", b"[::1]:1", b"a-b.c"]))))
    body = draw(st.binary(max_size=120))
    framing = draw(st.sampled_from(["cl", "chunked", "none"] if version == b"1.1"
                                   else ["cl", "none"]))
    if framing == "none":
        body = b""
        payload = b""
    elif framing == "cl":
        fields.insert(draw(st.integers(0, len(fields))),
                      (_case(draw, b"content-length"), b"%d" % len(body)))
        payload = body
    else:
        fields.insert(draw(st.integers(0, len(fields))),
                      (_case(draw, b"transfer-encoding"), b"chunked"))
        payload = draw(chunked_body(body))
    ows = draw(st.sampled_from([b"", b" ", b"\t", b"  "]))
    wire = (method + b" " + target + b" HTTP/" + version + b"\r\n"
            + b"".join(n + b":" + ows + v + ows + b"\r\n" for n, v in fields)
            + b"\r\n" + payload)
    expected_headers = [(n.lower(), v) for n, v in fields]
    return wire, method, target, expected_headers, body


@st.composite
def responses(draw):
    """(wire, head_request, expected status, headers, body, needs_eof)."""
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500, 503]))
    head_request = draw(st.booleans())
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    fields = draw(st.lists(header_fields(), max_size=10))
    body = draw(st.binary(max_size=120))
    framing = draw(st.sampled_from(["cl", "chunked", "eof"] if version == b"1.1"
                                   else ["cl", "eof"]))
    no_body = head_request or status in (204, 304)
    payload = b""
    if framing == "cl":
        fields.insert(draw(st.integers(0, len(fields))), (b"Content-Length", b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        fields.insert(draw(st.integers(0, len(fields))), (b"Transfer-Encoding", b"chunked"))
        payload = draw(chunked_body(body))
    else:
        payload = body
    if no_body:
        payload = b""
        body = b""
    reason = draw(st.sampled_from([b" OK", b" Some Reason", b"", b" "]))
    wire = (b"HTTP/" + version + b" %d" % status + reason + b"\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + payload)
    needs_eof = framing == "eof" and not no_body
    return wire, head_request, status, [(n.lower(), v) for n, v in fields], body, needs_eof


# ------------------------------------------------------------- split invariance
@SETTINGS
@given(st.lists(requests(version=b"1.1"), min_size=1, max_size=4), st.data())
def test_request_split_invariance(msgs, data):
    wire = b"".join(m[0] for m in msgs)
    whole = request_outcome([wire])
    assert whole[1] is None, whole
    assert [e[0] for e in whole[0]].count("done") == len(msgs)
    points = data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=12))
    assert request_outcome(cut(wire, points)) == whole
    assert request_outcome([wire[i:i + 1] for i in range(len(wire))]) == whole


def mangle(data, draw):
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(out) - 1)))
        b = draw(st.sampled_from([0, 9, 10, 13, 32, 34, 44, 58, 59, 0x7F, 0xFF, 48, 65, 97]))
        if op == "set" and out:
            out[i] = b
        elif op == "insert":
            out.insert(i, b)
        elif out:
            del out[i]
    return bytes(out)


@SETTINGS
@given(requests(), st.data())
def test_request_split_invariance_on_mangled_input(msg, data):
    wire = mangle(msg[0], data.draw)
    whole = request_outcome([wire], max_header_bytes=200, max_request_line_bytes=60)
    points = data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=10))
    assert request_outcome(cut(wire, points), max_header_bytes=200,
                           max_request_line_bytes=60) == whole
    assert request_outcome([wire[i:i + 1] for i in range(len(wire))],
                           max_header_bytes=200, max_request_line_bytes=60) == whole


@SETTINGS
@given(responses(), st.data())
def test_response_split_invariance(resp, data):
    wire, head_request, _, _, _, needs_eof = resp
    whole = response_outcome([wire], head_request, eof=needs_eof)
    assert whole[1] is None, whole
    points = data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=10))
    assert response_outcome(cut(wire, points), head_request, eof=needs_eof) == whole
    assert response_outcome([wire[i:i + 1] for i in range(len(wire))], head_request,
                            eof=needs_eof) == whole


@SETTINGS
@given(responses(), st.data())
def test_response_split_invariance_on_mangled_input(resp, data):
    wire = mangle(resp[0], data.draw)
    whole = response_outcome([wire], resp[1], eof=True)
    points = data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=10))
    assert response_outcome(cut(wire, points), resp[1], eof=True) == whole
    assert response_outcome([wire[i:i + 1] for i in range(len(wire))], resp[1],
                            eof=True) == whole


# -------------------------------------------------------------- differential: h11
def h11_request(wire):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire)
    out = []
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA or ev is h11.PAUSED:
            break
        out.append(ev)
    assert isinstance(out[0], h11.Request) and isinstance(out[-1], h11.EndOfMessage), out
    body = b"".join(bytes(e.data) for e in out if isinstance(e, h11.Data))
    req = out[0]
    return req.method, req.target, [(bytes(n), bytes(v)) for n, v in req.headers], body, \
        req.http_version


@SETTINGS
@given(requests())
def test_requests_agree_with_h11(msg):
    wire, method, target, headers, body = msg
    rec = ReqRec()
    RequestParser(rec).feed(wire)
    head = rec.events[0]
    ours = (head[1], head[2], list(head[6]),
            b"".join(e[1] for e in rec.events if e[0] == "body"))
    theirs = h11_request(wire)
    assert ours == theirs[:4]
    assert ours == (method, target, headers, body)
    assert head[5] == int(theirs[4].replace(b".", b""))
    assert rec.events[-1] == ("done",)


def h11_response(wire, head_request):
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=b"HEAD" if head_request else b"GET", target=b"/",
                          headers=[(b"Host", b"a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(wire)
    conn.receive_data(b"")  # EOF: ends a close-delimited body
    out = []
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA or ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
            break
        out.append(ev)
    resp = out[0]
    body = b"".join(bytes(e.data) for e in out if isinstance(e, h11.Data))
    assert isinstance(out[-1], h11.EndOfMessage)
    return resp.status_code, [(bytes(n), bytes(v)) for n, v in resp.headers], body


@SETTINGS
@given(responses())
def test_responses_agree_with_h11(resp):
    wire, head_request, status, headers, body, needs_eof = resp
    events, err, _ = response_outcome([wire], head_request, eof=True)
    assert err is None
    head = events[0]
    ours = (head[1], list(head[4]), b"".join(e[1] for e in events if e[0] == "body"))
    assert ours == h11_response(wire, head_request)
    assert ours == (status, headers, body)
    assert events[-1] == ("done",)
    if needs_eof:
        assert head[7] is False  # close-delimited: never reused


@SETTINGS
@given(st.lists(requests(version=b"1.1"), min_size=2, max_size=4))
def test_pipelined_requests_agree_with_h11(msgs):
    wire = b"".join(m[0] for m in msgs)
    rec = ReqRec()
    p = RequestParser(rec)
    p.feed(wire)
    while p.buffered:
        p.resume()
    p.resume()
    heads = [e for e in rec.events if e[0] == "head"]
    assert [(h[1], h[2], list(h[6])) for h in heads] == [(m[1], m[2], m[3]) for m in msgs]
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire)
    for m in msgs:
        got = []
        while not got or not isinstance(got[-1], h11.EndOfMessage):
            ev = conn.next_event()
            assert ev is not h11.NEED_DATA and ev is not h11.PAUSED
            got.append(ev)
        assert got[0].target == m[2]
        assert b"".join(bytes(e.data) for e in got if isinstance(e, h11.Data)) == m[4]
        conn.send(h11.Response(status_code=200, headers=[(b"Content-Length", b"0")]))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


# ------------------------------------------------- rejected input is rejected by h11 too
@pytest.mark.parametrize("wire", [
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
])
def test_known_bad_requests_rejected_by_both(wire):
    assert request_outcome([wire])[1] == 400
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire)
    with pytest.raises(h11.RemoteProtocolError):
        while conn.next_event() is not h11.NEED_DATA:
            pass
