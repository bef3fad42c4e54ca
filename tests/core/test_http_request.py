"""fastgate._core.http.RequestParser at its Python boundary: one table per RFC 9112 rule
(valid cases parse, invalid ones fail with the status the client must get), limits at their
exact boundary, pipelining with pause/resume, callbacks, take_buffered."""
import pytest

from fastgate._core.http import HttpError, RequestHead, RequestParser

CODES = {400: "bad_request", 413: "payload_too_large", 414: "uri_too_long",
         431: "header_too_large", 505: "version_not_supported"}


class Rec:
    """Records parser events; consecutive body pieces are merged (splits are not events)."""

    def __init__(self):
        self.events = []
        self.heads = []

    def on_request(self, head):
        self.heads.append(head)
        self.events.append(("head", head.method, head.target, list(head.headers)))

    def on_body(self, data):
        assert type(data) is bytes and data
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_request_complete(self):
        self.events.append(("done",))


def parse(data, pieces=None, **limits):
    """Feed ``data`` (whole, or cut in ``pieces`` sizes), resuming after every message."""
    rec = Rec()
    p = RequestParser(rec, **limits)
    chunks = [data] if pieces is None else _cut(data, pieces)
    for c in chunks:
        p.feed(c)
        while p.paused:
            before = p.buffered
            p.resume()
            if p.paused and p.buffered == before:
                break
    return rec, p


def _cut(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def head_of(data, **limits):
    rec, _ = parse(data, **limits)
    assert rec.heads, "no head parsed"
    return rec.heads[0]


def status_of(data, pieces=None, **limits):
    try:
        parse(data, pieces, **limits)
    except HttpError as e:
        assert e.code == CODES[e.status]
        assert isinstance(e.message, str) and e.message
        return e.status
    return None


def req(line=b"GET / HTTP/1.1", headers=(b"Host: a",), body=b""):
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


# ------------------------------------------------------------------------ request line
@pytest.mark.parametrize("line, method, target, path, query, version", [
    (b"GET / HTTP/1.1", b"GET", b"/", b"/", b"", 11),
    (b"GET /a/b?x=1&y HTTP/1.1", b"GET", b"/a/b?x=1&y", b"/a/b", b"x=1&y", 11),
    (b"GET /? HTTP/1.1", b"GET", b"/?", b"/", b"", 11),
    (b"GET /a?b?c HTTP/1.1", b"GET", b"/a?b?c", b"/a", b"b?c", 11),
    (b"GET /%7Euser/x%20y HTTP/1.1", b"GET", b"/%7Euser/x%20y", b"/%7Euser/x%20y", b"", 11),
    (b"GET /\"<>\\^`{|} HTTP/1.1", b"GET", b"/\"<>\\^`{|}", b"/\"<>\\^`{|}", b"", 11),
    (b"POST /p HTTP/1.0", b"POST", b"/p", b"/p", b"", 10),
    (b"GET / HTTP/1.2", b"GET", b"/", b"/", b"", 11),
    (b"GET / HTTP/1.9", b"GET", b"/", b"/", b"", 11),
    (b"OPTIONS * HTTP/1.1", b"OPTIONS", b"*", b"*", b"", 11),
    (b"M-SEARCH /x HTTP/1.1", b"M-SEARCH", b"/x", b"/x", b"", 11),
    (b"X!#$%&'*+-.^_`|~9 / HTTP/1.1", b"X!#$%&'*+-.^_`|~9", b"/", b"/", b"", 11),
    (b"get / HTTP/1.1", b"get", b"/", b"/", b"", 11),  # methods are case-sensitive tokens
    (b"GET http://example.com/p?q=1 HTTP/1.1", b"GET", b"http://example.com/p?q=1", b"/p",
     b"q=1", 11),
    (b"GET http://example.com HTTP/1.1", b"GET", b"http://example.com", b"/", b"", 11),
    (b"GET HTTPS://Example.com:8443?x HTTP/1.1", b"GET", b"HTTPS://Example.com:8443?x", b"/",
     b"x", 11),
    (b"CONNECT example.com:443 HTTP/1.1", b"CONNECT", b"example.com:443", b"example.com:443",
     b"", 11),
    (b"CONNECT [::1]:8443 HTTP/1.1", b"CONNECT", b"[::1]:8443", b"[::1]:8443", b"", 11),
])
def test_request_line_valid(line, method, target, path, query, version):
    h = head_of(req(line))
    assert (h.method, h.target, h.path, h.query, h.version) == (
        method, target, path, query, version)


@pytest.mark.parametrize("line, status", [
    (b"GET  / HTTP/1.1", 400),
    (b"GET /  HTTP/1.1", 400),
    (b"GET / HTTP/1.1 ", 400),
    (b" GET / HTTP/1.1", 400),
    (b"GET\t/ HTTP/1.1", 400),
    (b"GET /\tHTTP/1.1", 400),
    (b"GET /", 400),                      # HTTP/0.9 simple request
    (b"GET / HTTP/1.1 extra", 400),
    (b"GET", 400),
    (b"G(T / HTTP/1.1", 400),
    (b"G\xc3\x89T / HTTP/1.1", 400),
    (b"/ HTTP/1.1", 400),
    (b"GET /a b HTTP/1.1", 400),
    (b"GET /\x7f HTTP/1.1", 400),
    (b"GET /\x00 HTTP/1.1", 400),
    (b"GET /\x01 HTTP/1.1", 400),
    (b"GET /caf\xc3\xa9 HTTP/1.1", 400),
    (b"GET /a#frag HTTP/1.1", 400),
    (b"GET a/b HTTP/1.1", 400),
    (b"GET * HTTP/1.1", 400),
    (b"OPTIONS *x HTTP/1.1", 400),
    (b"GET ftp://x/ HTTP/1.1", 400),
    (b"GET http:///p HTTP/1.1", 400),
    (b"GET http://user@h/ HTTP/1.1", 400),
    (b"GET http://h:x/ HTTP/1.1", 400),
    (b"GET http:/h/ HTTP/1.1", 400),
    (b"CONNECT / HTTP/1.1", 400),
    (b"CONNECT example.com HTTP/1.1", 400),
    (b"CONNECT example.com: HTTP/1.1", 400),
    (b"CONNECT http://example.com:443 HTTP/1.1", 400),
    (b"GET / HTTP/1", 400),
    (b"GET / http/1.1", 400),
    (b"GET / HTTP/11", 400),
    (b"GET / HTTP/1.10", 400),
    (b"GET / HTTP/1.1x", 400),
    (b"GET / HTTPS/1.1", 400),
    (b"GET / HTTP/a.b", 400),
    (b"GET / HTTP/1,1", 400),
    (b"GET / HTTP/2", 400),
    (b"GET / HTTP/2.0", 505),
    (b"GET / HTTP/0.9", 505),
    (b"GET / HTTP/3.0", 505),
    (b"GET / HTTP/9.9", 505),
])
def test_request_line_invalid(line, status):
    assert status_of(req(line)) == status


def test_leading_empty_lines_are_skipped():
    rec, _ = parse(b"\r\n\r\n\r\n" + req())
    assert rec.events[0][:3] == ("head", b"GET", b"/")
    assert rec.heads[0].head_bytes == len(req())


@pytest.mark.parametrize("prefix", [b"\n", b"\r\r\n", b"\rGET", b"\r \n"])
def test_leading_junk_lines_rejected(prefix):
    assert status_of(prefix + req()) == 400


# ---------------------------------------------------------------------- line endings
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
    b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n\r\n",
])
def test_bare_cr_or_lf_rejected(data):
    assert status_of(data) == 400
    assert status_of(data, 1) == 400


# --------------------------------------------------------------------------- headers
def test_headers_lowercased_trimmed_in_order():
    h = head_of(req(headers=[
        b"Host: a", b"X-Thing:  \t v a l \t ", b"x-thing: second", b"Empty:", b"EMPTY2:   ",
        b"Obs: caf\xc3\xa9 \xff", b"Tab: a\tb", b"Weird: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    ]))
    assert h.headers == [
        (b"host", b"a"), (b"x-thing", b"v a l"), (b"x-thing", b"second"), (b"empty", b""),
        (b"empty2", b""), (b"obs", b"caf\xc3\xa9 \xff"), (b"tab", b"a\tb"),
        (b"weird", b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    ]
    assert h.get(b"x-thing") == b"v a l"
    assert h.get(b"missing") is None
    assert h.get(b"missing", b"d") == b"d"
    assert h.get_all(b"x-thing") == [b"v a l", b"second"]
    assert h.get_all(b"missing") == []
    assert h.get("x-thing") == b"v a l"


def test_long_and_unusual_header_names_lowercased():
    name = b"X-" + b"AbC" * 40
    h = head_of(req(headers=[b"Host: a", name + b": 1", b"X!#$%&'*+-.^_`|~Z: 2"]))
    assert h.headers[1] == (name.lower(), b"1")
    assert h.headers[2] == (b"x!#$%&'*+-.^_`|~z", b"2")


@pytest.mark.parametrize("line", [
    b"Host : a", b"Host\t: a", b"Ho st: a", b": a", b"X", b"X a", b"[x]: a", b"X\x00: a",
    b"H\xc3\xb6: a", b"X(: a", b"X/y: a", b"X@: a", b"X=: a", b"X\x7f: a",
])
def test_invalid_header_names(line):
    assert status_of(req(headers=[b"Host: a", line])) == 400


@pytest.mark.parametrize("value", [
    b"a\x00b", b"a\x7fb", b"\x1b", b"a\x0bb", b"a\x0cb", b"a\x1fb", b"a\rb", b"\x08",
])
def test_invalid_header_values(value):
    assert status_of(req(headers=[b"Host: a", b"X: " + value])) == 400


# Values are checked eight octets at a time: every octet, at every offset of a long value
# (a bearer token, a cookie), must get the same verdict as on its own.
FIELD_OK = {9} | set(range(32, 127)) | set(range(128, 256))


@pytest.mark.parametrize("octet", [c for c in range(256) if c not in (10, 13)])
def test_header_value_octet_at_every_offset(octet):
    for at in range(0, 26):
        value = bytearray(b"A" * 26)
        value[at] = octet
        value = bytes(value)
        ok = octet in FIELD_OK
        if ok:
            h = head_of(req(headers=[b"Host: a", b"X: " + value]))
            assert h.headers[1] == (b"x", value.strip(b" \t"))
        else:
            assert status_of(req(headers=[b"Host: a", b"X: " + value])) == 400, (octet, at)


@pytest.mark.parametrize("headers", [
    [b"Host: a", b"X: a", b" b"],
    [b"Host: a", b"X: a", b"\tb"],
    [b" Host: a"],
    [b"\tHost: a"],
    [b"Host: a", b" "],
])
def test_obs_fold_rejected(headers):
    assert status_of(req(headers=headers)) == 400


# ------------------------------------------------------------------------------ Host
@pytest.mark.parametrize("value", [
    b"example.com", b"example.com:8080", b"[::1]", b"[::1]:80", b"[2001:db8::a]:443",
    b"127.0.0.1", b"127.0.0.1:1", b"a%20b", b"exa_mple.com", b"x-y.z~", b"a!$&'()*+,;=b",
    b"EXAMPLE.COM", b"h:65535", b"",
])
def test_host_valid(value):
    h = head_of(req(headers=[b"Host: " + value]))
    assert h.host == value


@pytest.mark.parametrize("value", [
    b"a b", b"a/b", b"a@b", b"[::1", b"[]", b"[::g]", b"a:b", b"a:123456", b"a:", b":80",
    b"a%zz", b"a%2", b"a?b", b"a#b", b"a\\b", b"caf\xc3\xa9", b"a:80:80", b"[::1]x",
])
def test_host_invalid(value):
    assert status_of(req(headers=[b"Host: " + value])) == 400


def test_host_rules():
    assert status_of(req(headers=[])) == 400
    assert status_of(req(headers=[b"X: y"])) == 400
    assert status_of(req(b"GET / HTTP/1.2", headers=[])) == 400  # other 1.x is 1.1
    assert status_of(req(headers=[b"Host: a", b"Host: a"])) == 400
    assert status_of(req(headers=[b"Host: a", b"host: b"])) == 400
    h = head_of(req(b"GET / HTTP/1.0", headers=[]))
    assert h.host == b"" and h.version == 10
    # absolute-form: the authority of the target wins over the Host field
    h = head_of(req(b"GET http://t.example:81/x HTTP/1.1", headers=[b"Host: other"]))
    assert h.host == b"t.example:81"
    assert h.get(b"host") == b"other"
    assert status_of(req(b"GET http://t.example/x HTTP/1.1", headers=[])) == 400
    h = head_of(req(b"CONNECT up.example:443 HTTP/1.1", headers=[b"Host: up.example:443"]))
    assert h.host == b"up.example:443"


# -------------------------------------------------------------------- Content-Length
@pytest.mark.parametrize("headers, length", [
    ([b"Content-Length: 5"], 5),
    ([b"Content-Length: 0"], 0),
    ([b"Content-Length: 005"], 5),
    ([b"Content-Length:   5  "], 5),
    ([b"Content-Length: 5,5"], 5),
    ([b"Content-Length: 5, 5 ,\t5"], 5),
    ([b"Content-Length: 5", b"Content-Length: 5"], 5),
    ([b"Content-Length: 5", b"content-length: 05"], 5),
    ([], -1),
])
def test_content_length_valid(headers, length):
    body = b"x" * max(length, 0)
    rec, _ = parse(req(b"POST / HTTP/1.1", [b"Host: a"] + headers, body))
    h = rec.heads[0]
    assert h.content_length == length and not h.chunked
    expected = [("body", body)] if length > 0 else []
    assert rec.events[1:] == expected + [("done",)]


@pytest.mark.parametrize("value, status", [
    (b"", 400), (b"+5", 400), (b"-5", 400), (b"5 5", 400), (b"0x5", 400), (b"5a", 400),
    (b"a", 400), (b"5,6", 400), (b"5,,5", 400), (b"5,", 400), (b",5", 400), (b"1e3", 400),
    (b"5.0", 400), (b"\xd9\xa5", 400), (b"1" * 19, 400), (b"9" * 19, 400),
    (b"99999999999999999999999", 400), (b"1" * 18, 413), (b"5;x", 400), (b"\"5\"", 400),
])
def test_content_length_invalid(value, status):
    assert status_of(req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: " + value])) \
        == status


def test_content_length_differing_headers():
    assert status_of(req(b"POST / HTTP/1.1",
                         [b"Host: a", b"Content-Length: 5", b"Content-Length: 6"])) == 400
    assert status_of(req(b"POST / HTTP/1.1",
                         [b"Host: a", b"Content-Length: 5", b"Content-Length: 5, 6"])) == 400


# ----------------------------------------------------------------- Transfer-Encoding
CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b" chunked\t"])
def test_transfer_encoding_valid(value):
    rec, _ = parse(req(b"POST / HTTP/1.1", [b"Host: a", b"Transfer-Encoding: " + value],
                       CHUNKED_BODY))
    assert rec.heads[0].chunked and rec.heads[0].content_length == -1
    assert rec.events[1:] == [("body", b"hello"), ("done",)]


@pytest.mark.parametrize("headers", [
    [b"Transfer-Encoding: gzip"],
    [b"Transfer-Encoding: identity"],
    [b"Transfer-Encoding: chunked, chunked"],
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: gzip, chunked"],
    [b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: chunked, gzip"],
    [b"Transfer-Encoding:"],
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding:"],
    [b"Transfer-Encoding: chunked,"],
    [b"Transfer-Encoding: ,chunked"],
    [b"Transfer-Encoding: chunked;x"],
    [b"Transfer-Encoding: chunked;q=1"],
    [b"Transfer-Encoding: xchunked"],
    [b"Transfer-Encoding: chunk"],
    [b"Transfer-Encoding: chunked x"],
    [b"Transfer-Encoding: \"chunked\""],
    [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
    [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
    [b"Content-Length: 0", b"Transfer-Encoding: chunked"],
])
def test_transfer_encoding_invalid(headers):
    assert status_of(req(b"POST / HTTP/1.1", [b"Host: a"] + headers, CHUNKED_BODY)) == 400


def test_transfer_encoding_in_http10_rejected():
    assert status_of(req(b"POST / HTTP/1.0", [b"Transfer-Encoding: chunked"],
                         CHUNKED_BODY)) == 400


def test_cl_and_te_error_message():
    with pytest.raises(HttpError) as ei:
        parse(req(b"POST / HTTP/1.1",
                  [b"Host: a", b"Content-Length: 5", b"Transfer-Encoding: chunked"]))
    assert ei.value.status == 400 and "Content-Length" in ei.value.message


# --------------------------------------------------------------------------- chunked
def chunked(*parts):
    return req(b"POST / HTTP/1.1", [b"Host: a", b"Transfer-Encoding: chunked"],
               b"".join(parts))


@pytest.mark.parametrize("body, decoded", [
    (b"0\r\n\r\n", b""),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", b"0123456789" * 2),
    (b"000005\r\nhello\r\n000\r\n\r\n", b"hello"),
    (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),  # 16 digits
    (b"5;a\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;a=b\r\nhello\r\n0;z\r\n\r\n", b"hello"),
    (b"5;a=b;c;d=e\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;a=\"q u;o=t\\\"e\"\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;a=\"\"\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;!#$%&'*+-.^_`|~=x\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nX-Trailer: v\r\nOther: \xff w\r\n\r\n", b"hello"),
    (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
])
def test_chunked_valid(body, decoded):
    rec, _ = parse(chunked(body))
    assert b"".join(e[1] for e in rec.events if e[0] == "body") == decoded
    assert rec.events[-1] == ("done",)
    # trailers are validated and dropped; the head never changes
    assert rec.heads[0].headers == [(b"host", b"a"), (b"transfer-encoding", b"chunked")]


@pytest.mark.parametrize("body, status", [
    (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    (b"-5\r\nhello\r\n0\r\n\r\n", 400),
    (b"+5\r\nhello\r\n0\r\n\r\n", 400),
    (b"5_0\r\nhello\r\n0\r\n\r\n", 400),
    (b" 5\r\nhello\r\n0\r\n\r\n", 400),
    (b"5 \r\nhello\r\n0\r\n\r\n", 400),
    (b"5\t\r\nhello\r\n0\r\n\r\n", 400),
    (b"5 ;a\r\nhello\r\n0\r\n\r\n", 400),
    (b"5; a\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a =b\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a= b\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a=b c\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;=x\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a=\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a=\"x\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a=\"x\x01\"\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a=\"x\\\"\r\nhello\r\n0\r\n\r\n", 400),
    (b"5;a(=b\r\nhello\r\n0\r\n\r\n", 400),
    (b"g\r\nhello\r\n0\r\n\r\n", 400),
    (b"\r\nhello\r\n0\r\n\r\n", 400),
    (b"5\nhello\r\n0\r\n\r\n", 400),
    (b"5\r\nhelloX\r\n0\r\n\r\n", 400),
    (b"5\r\nhello\n0\r\n\r\n", 400),
    (b"5\r\nhello\rX0\r\n\r\n", 400),
    (b"5\r\nhel\r\n0\r\n\r\n", 400),  # 'hel\r\n' is the data; '0\r' then fails
    (b"00000000000000005\r\nhello\r\n0\r\n\r\n", 400),  # 17 digits
    (b"10000000000000000\r\n", 400),
    (b"8000000000000000\r\n", 400),   # 2**63
    (b"ffffffffffffffff\r\n", 400),
    (b"7fffffffffffffff\r\n", 413),   # valid size, over the body limit
    (b"5\r\nhello\r\n0\r\nX : y\r\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\nX: y\r\n z\r\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\nX: \x00\r\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\nX: y\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\n\n", 400),
    (b"5\r\nhello\r\n0\n\r\n", 400),
])
def test_chunked_invalid(body, status):
    assert status_of(chunked(body)) == status
    assert status_of(chunked(body), 1) == status


def test_chunk_extension_line_is_bounded():
    ok = b"5;" + b"a" * (4096 - 2) + b"\r\nhello\r\n0\r\n\r\n"
    assert status_of(chunked(ok)) is None
    too_long = b"5;" + b"a" * (4096 - 1) + b"\r\nhello\r\n0\r\n\r\n"
    assert status_of(chunked(too_long)) == 400
    # detected before the line ends
    rec = Rec()
    p = RequestParser(rec)
    p.feed(chunked(b""))
    with pytest.raises(HttpError) as ei:
        p.feed(b"5;" + b"a" * 5000)
    assert ei.value.status == 400


def test_trailer_section_bounded_by_header_limits():
    limit = 64
    base = [b"Host: a", b"Transfer-Encoding: chunked"]
    head_size = sum(len(h) + 2 for h in base) + 2
    assert head_size <= limit
    trailer = b"T: " + b"x" * (limit - 2 - 5)  # line + CRLF + final CRLF == limit
    ok = req(b"POST / HTTP/1.1", base, b"0\r\n" + trailer + b"\r\n\r\n")
    assert status_of(ok, max_header_bytes=limit) is None
    over = req(b"POST / HTTP/1.1", base, b"0\r\n" + trailer + b"x\r\n\r\n")
    assert status_of(over, max_header_bytes=limit) == 431
    many = req(b"POST / HTTP/1.1", base, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert status_of(many, max_headers=3) is None
    assert status_of(many, max_headers=2) == 431


# ------------------------------------------------------------ keep-alive, Connection
@pytest.mark.parametrize("version, headers, keep_alive, tokens", [
    (b"HTTP/1.1", [], True, ()),
    (b"HTTP/1.1", [b"Connection: close"], False, (b"close",)),
    (b"HTTP/1.1", [b"Connection: Close"], False, (b"close",)),
    (b"HTTP/1.1", [b"Connection: keep-alive"], True, (b"keep-alive",)),
    (b"HTTP/1.1", [b"Connection: foo, , CLOSE ,bar"], False, (b"foo", b"close", b"bar")),
    (b"HTTP/1.1", [b"Connection: X-A", b"Connection: x-b"], True, (b"x-a", b"x-b")),
    (b"HTTP/1.1", [b"Connection:"], True, ()),
    (b"HTTP/1.2", [], True, ()),
    (b"HTTP/1.0", [], False, ()),
    (b"HTTP/1.0", [b"Connection: keep-alive"], True, (b"keep-alive",)),
    (b"HTTP/1.0", [b"Connection: Keep-Alive"], True, (b"keep-alive",)),
    (b"HTTP/1.0", [b"Connection: keep-alive, close"], False, (b"keep-alive", b"close")),
])
def test_keep_alive(version, headers, keep_alive, tokens):
    h = head_of(req(b"GET / " + version, [b"Host: a"] + headers))
    assert h.keep_alive is keep_alive
    assert h.connection_tokens == tokens


@pytest.mark.parametrize("version, headers, upgrade", [
    (b"HTTP/1.1", [b"Connection: Upgrade", b"Upgrade: websocket"], b"websocket"),
    (b"HTTP/1.1", [b"Connection: keep-alive, upgrade", b"Upgrade: h2c, foo/2"], b"h2c, foo/2"),
    (b"HTTP/1.1", [b"Connection: upgrade", b"Upgrade: a", b"Upgrade: b"], b"a, b"),
    (b"HTTP/1.1", [b"Upgrade: websocket"], None),
    (b"HTTP/1.1", [b"Connection: upgrade"], None),
    (b"HTTP/1.0", [b"Connection: upgrade", b"Upgrade: websocket"], None),
])
def test_upgrade(version, headers, upgrade):
    assert head_of(req(b"GET / " + version, [b"Host: a"] + headers)).upgrade == upgrade


@pytest.mark.parametrize("version, headers, expect", [
    (b"HTTP/1.1", [b"Expect: 100-continue"], True),
    (b"HTTP/1.1", [b"Expect: 100-Continue"], True),
    (b"HTTP/1.1", [b"Expect: foo, 100-continue"], True),
    (b"HTTP/1.1", [b"Expect: 100-continuex"], False),
    (b"HTTP/1.1", [b"Expect: 200-ok"], False),
    (b"HTTP/1.1", [], False),
    (b"HTTP/1.0", [b"Expect: 100-continue"], False),  # RFC 9110 10.1.1: ignored for 1.0
])
def test_expect_continue(version, headers, expect):
    assert head_of(req(b"POST / " + version, [b"Host: a"] + headers)).expect_continue is expect


def test_head_attributes_and_types():
    data = req(b"PUT /x?y HTTP/1.1", [b"Host: h", b"Content-Length: 3"], b"abc")
    h = head_of(data)
    assert isinstance(h, RequestHead)
    assert h.head_bytes == len(data) - 3
    assert type(h.method) is bytes and type(h.path) is bytes and type(h.query) is bytes
    assert h.content_length == 3 and h.chunked is False and h.upgrade is None
    with pytest.raises(AttributeError):
        h.method = b"POST"
    assert "PUT" in repr(h)


# --------------------------------------------------------------- limits, boundaries
def test_request_line_limit_exact():
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1"
    n = len(line)
    assert status_of(req(line), max_request_line_bytes=n) is None
    assert status_of(req(line), max_request_line_bytes=n - 1) == 414
    assert status_of(req(line), 1, max_request_line_bytes=n) is None
    assert status_of(req(line), 1, max_request_line_bytes=n - 1) == 414


def test_request_line_limit_detected_before_crlf():
    p = RequestParser(Rec(), max_request_line_bytes=100)
    p.feed(b"GET /" + b"a" * 95)  # exactly 100 bytes: may still end here
    p.feed(b"\r")                 # a CR does not count
    assert p.in_head and p.buffered == 101
    with pytest.raises(HttpError) as ei:
        p.feed(b"x")
    assert ei.value.status == 414
    p2 = RequestParser(Rec(), max_request_line_bytes=100)
    with pytest.raises(HttpError) as ei:
        p2.feed(b"GET /" + b"a" * 200_000)
    assert ei.value.status == 414


def test_header_bytes_limit_exact():
    headers = [b"Host: a", b"X-Pad: " + b"p" * 50]
    data = req(headers=headers)
    section = len(data) - len(b"GET / HTTP/1.1\r\n")
    assert status_of(data, max_header_bytes=section) is None
    assert status_of(data, max_header_bytes=section - 1) == 431
    assert status_of(data, 1, max_header_bytes=section) is None
    assert status_of(data, 1, max_header_bytes=section - 1) == 431
    assert status_of(data, 7, max_header_bytes=section - 1) == 431


def test_header_bytes_limit_detected_before_line_end():
    p = RequestParser(Rec(), max_header_bytes=1000)
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    with pytest.raises(HttpError) as ei:
        p.feed(b"v" * 2000)
    assert ei.value.status == 431
    # many short lines: the running total trips it too
    p = RequestParser(Rec(), max_header_bytes=1000, max_headers=10_000)
    p.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(HttpError) as ei:
        for i in range(200):
            p.feed(b"X-%d: v\r\n" % i)
    assert ei.value.status == 431


def test_header_count_limit_exact():
    headers = [b"Host: a"] + [b"X-%d: v" % i for i in range(9)]
    assert status_of(req(headers=headers), max_headers=10) is None
    assert status_of(req(headers=headers), max_headers=9) == 431
    assert status_of(req(headers=headers), 1, max_headers=9) == 431
    # detected as soon as the 11th field starts, before its line ends
    p = RequestParser(Rec(), max_headers=10)
    p.feed(req(headers=headers)[:-2])
    with pytest.raises(HttpError) as ei:
        p.feed(b"Y")
    assert ei.value.status == 431


def test_body_limit_exact_content_length():
    ok = req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: 100"], b"x" * 100)
    assert status_of(ok, max_body_bytes=100) is None
    rec = Rec()
    p = RequestParser(rec, max_body_bytes=99)
    with pytest.raises(HttpError) as ei:
        p.feed(ok)
    assert ei.value.status == 413
    assert rec.heads == []  # rejected before the head is handed out


def test_body_limit_exact_chunked():
    body = b"32\r\n" + b"x" * 50 + b"\r\n32\r\n" + b"y" * 50 + b"\r\n0\r\n\r\n"
    assert status_of(chunked(body), max_body_bytes=100) is None
    assert status_of(chunked(body), 1, max_body_bytes=100) is None
    rec = Rec()
    p = RequestParser(rec, max_body_bytes=99)
    with pytest.raises(HttpError) as ei:
        p.feed(chunked(body))
    assert ei.value.status == 413
    # the oversize chunk was refused from its size line: none of its data was handed out
    assert rec.events[1:] == [("body", b"x" * 50)]


class LimitingRec(Rec):
    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.parser = None

    def on_request(self, head):
        super().on_request(head)
        self.parser.set_body_limit(self.limit)


@pytest.mark.parametrize("framing", ["cl", "chunked"])
def test_set_body_limit_for_current_message(framing):
    def make(n):
        if framing == "cl":
            return req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: %d" % n], b"z" * n)
        return chunked(b"%x\r\n" % n + b"z" * n + b"\r\n0\r\n\r\n")

    for n, fails in ((10, False), (11, True)):
        rec = LimitingRec(10)
        p = RequestParser(rec)
        rec.parser = p
        if fails:
            with pytest.raises(HttpError) as ei:
                p.feed(make(n))
            assert ei.value.status == 413
            assert not any(e[0] == "body" for e in rec.events)
        else:
            p.feed(make(n))
            assert rec.events[-1] == ("done",)
    # the lowered limit ends with the message; the next one has the configured limit again
    rec = LimitingRec(10)
    p = RequestParser(rec)
    rec.parser = p
    p.feed(make(10))
    rec.limit = 10**9
    p.resume()
    p.feed(make(50))
    assert rec.events[-1] == ("done",)


def test_set_body_limit_cannot_raise_the_ceiling():
    rec = LimitingRec(10**9)
    p = RequestParser(rec, max_body_bytes=10)
    rec.parser = p
    with pytest.raises(HttpError) as ei:
        p.feed(chunked(b"b\r\n" + b"z" * 11 + b"\r\n0\r\n\r\n"))
    assert ei.value.status == 413


def test_large_pipelined_burst_is_drained():
    one = req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: 1000"], b"b" * 1000)
    rec, p = parse(one * 200)
    assert [e[0] for e in rec.events].count("done") == 200
    assert p.buffered == 0
    p.feed(one)
    assert rec.events[-1] == ("done",)


def test_set_body_limit_lowered_mid_body():
    class R(Rec):
        def on_body(self, data):
            super().on_body(data)
            parser.set_body_limit(4)

    rec = R()
    parser = RequestParser(rec)
    parser.feed(req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: 10"], b"abc"))
    with pytest.raises(HttpError) as ei:
        parser.feed(b"de")
    assert ei.value.status == 413


# ------------------------------------------------------ pipelining, pause and resume
def test_pipelined_requests_pause_and_resume():
    r1 = req(b"GET /1 HTTP/1.1")
    r2 = req(b"POST /2 HTTP/1.1", [b"Host: a", b"Content-Length: 3"], b"abc")
    r3 = req(b"GET /3 HTTP/1.1")
    rec = Rec()
    p = RequestParser(rec)
    assert not p.paused and not p.in_head and not p.in_body and p.buffered == 0
    p.feed(r1 + r2 + r3[:5])
    assert [e[0] for e in rec.events] == ["head", "done"]
    assert p.paused and p.buffered == len(r2) + 5
    p.feed(r3[5:])  # while paused: only appended
    assert len(rec.events) == 2 and p.buffered == len(r2) + len(r3)
    p.resume()
    assert [e[:3] for e in rec.events[2:]] == [("head", b"POST", b"/2"), ("body", b"abc"),
                                               ("done",)]
    assert p.paused and p.buffered == len(r3)
    p.resume()
    assert rec.events[-2][:3] == ("head", b"GET", b"/3") and rec.events[-1] == ("done",)
    assert p.buffered == 0
    p.resume()
    assert not p.paused
    p.resume()  # resuming a running parser is harmless


def test_resume_from_inside_callback_continues():
    class R(Rec):
        def on_request_complete(self):
            super().on_request_complete()
            parser.resume()

    rec = R()
    parser = RequestParser(rec)
    parser.feed(req(b"GET /1 HTTP/1.1") + req(b"GET /2 HTTP/1.1") + b"GET /3")
    assert [e[2] for e in rec.events if e[0] == "head"] == [b"/1", b"/2"]
    assert parser.in_head and parser.buffered == 6


def test_state_properties():
    rec = Rec()
    p = RequestParser(rec)
    p.feed(b"\r\n")
    assert not p.in_head
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\n")
    assert p.in_head and not p.in_body
    p.feed(b"Content-Length: 4\r\n\r\nab")
    assert p.in_body and not p.in_head and not p.paused and p.buffered == 0
    p.feed(b"cd")
    assert not p.in_body and not p.in_head and p.paused


def test_take_buffered_after_upgrade_and_connect():
    r = req(b"GET /ws HTTP/1.1", [b"Host: a", b"Connection: upgrade", b"Upgrade: websocket"])
    rec = Rec()
    p = RequestParser(rec)
    p.feed(r + b"\x81\x05hello")
    assert rec.heads[0].upgrade == b"websocket" and p.paused
    assert p.take_buffered() == b"\x81\x05hello"
    assert p.buffered == 0
    with pytest.raises(RuntimeError):
        p.feed(b"more")
    p.resume()  # no effect once finished
    # CONNECT, tunnel bytes split across feeds
    rec = Rec()
    p = RequestParser(rec)
    p.feed(req(b"CONNECT h:443 HTTP/1.1", [b"Host: h:443"]) + b"\x16\x03")
    p.feed(b"\x01")
    assert p.take_buffered() == b"\x16\x03\x01"


def test_take_buffered_inside_callback():
    class R(Rec):
        def on_request(self, head):
            super().on_request(head)
            self.tunnel = parser.take_buffered()

    rec = R()
    parser = RequestParser(rec)
    parser.feed(req(b"CONNECT h:443 HTTP/1.1", [b"Host: h:443"]) + b"TLS-BYTES")
    assert rec.tunnel == b"TLS-BYTES"
    assert rec.events[-1][0] == "head"  # the parser stopped at once
    assert parser.buffered == 0


# ---------------------------------------------------------------- errors and callbacks
def test_error_is_sticky():
    p = RequestParser(Rec())
    with pytest.raises(HttpError) as first:
        p.feed(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
    with pytest.raises(HttpError) as again:
        p.feed(req())
    assert again.value is first.value
    with pytest.raises(HttpError):
        p.resume()


def test_callback_exception_propagates_and_kills_parser():
    class Boom(Exception):
        pass

    class R(Rec):
        def on_request(self, head):
            raise Boom("x")

    p = RequestParser(R())
    with pytest.raises(Boom):
        p.feed(req())
    with pytest.raises(Boom):
        p.feed(req())


def test_reentrant_feed_rejected():
    class R(Rec):
        def on_request(self, head):
            parser.feed(b"x")

    parser = RequestParser(R())
    with pytest.raises(RuntimeError):
        parser.feed(req())


def test_handler_without_optional_methods():
    class Only:
        def __init__(self):
            self.n = 0

        def on_request(self, head):
            self.n += 1

    h = Only()
    p = RequestParser(h)
    p.feed(req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: 2"], b"ab"))
    assert h.n == 1 and p.paused


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_input(kind):
    rec = Rec()
    p = RequestParser(rec)
    buf = kind(req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: 3"], b"abc"))
    p.feed(buf)
    assert rec.events[1:] == [("body", b"abc"), ("done",)]


def test_body_passthrough_object_when_feed_is_all_body():
    got = []

    class R(Rec):
        def on_body(self, data):
            got.append(data)

    p = RequestParser(R())
    p.feed(req(b"POST / HTTP/1.1", [b"Host: a", b"Content-Length: 6"]))
    piece = b"abcdef"
    p.feed(piece)
    assert got == [b"abcdef"] and got[0] is piece  # no copy for a pure body read


def test_invalid_limits_rejected():
    with pytest.raises(ValueError):
        RequestParser(Rec(), max_request_line_bytes=0)
    with pytest.raises(ValueError):
        RequestParser(Rec(), max_body_bytes=-1)


def test_header_list_is_an_ordinary_list():
    """The parser fills the head's list in place, with room made ahead (no reallocation per
    field): to its readers it must be a plain list in every way."""
    import copy
    import pickle
    fields = [b"Host: a"] + [b"X-%d: %d" % (i, i) for i in range(40)]   # past the room
    h = head_of(req(headers=fields))
    want = [(b"host", b"a")] + [(b"x-%d" % i, b"%d" % i) for i in range(40)]
    assert type(h.headers) is list and h.headers == want and len(h.headers) == 41
    assert pickle.loads(pickle.dumps(h.headers)) == want and copy.copy(h.headers) == want
    h.headers.append((b"x-more", b"1"))
    del h.headers[1:40]
    assert h.headers == [(b"host", b"a"), (b"x-39", b"39"), (b"x-more", b"1")]
    small = head_of(req(headers=[b"Host: a", b"X: 1"]))
    assert small.headers == [(b"host", b"a"), (b"x", b"1")]
    small.headers.pop()
    small.headers.extend([(b"y", b"2")] * 20)
    assert len(small.headers) == 21 and small.headers[-1] == (b"y", b"2")
