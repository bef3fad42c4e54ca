"""HTTP/1.1 parsers: micro-benchmarks against httptools (llhttp) as the reference.

Run: .venv/bin/python -m pytest benchmarks/micro/test_bench_http.py --benchmark-enable \
       --benchmark-warmup=on --benchmark-time-unit=ns -q

Target: per request at least as fast as httptools on typical 5-15 header GET requests.

What one round measures, for every parser: one complete request (or response) fed as one read
into a parser that lives across rounds (a keep-alive connection), up to a Python object
holding method, target/path, headers and the end-of-message event.
* ``fastgate``: ``RequestParser.feed()`` + ``resume()``; the handler keeps the RequestHead
  (headers lower-cased, Host/CL/TE/Connection interpreted, every rule of RFC 9112 checked).
* ``httptools_raw``: the least a Python handler can do with llhttp: append each header as
  delivered (original case), keep the URL, read the method. Less work than fastgate does.
* ``httptools_equiv``: the same handler, also lower-casing names and splitting the URL into
  path and query (``parse_url``): the information RequestHead carries.
Each benchmark checks its result first, so a wrong answer cannot hide behind a fast number.
"""
from __future__ import annotations

import httptools
import pytest

from fastgate._core.http import RequestParser, ResponseParser


def _request(n_headers: int) -> bytes:
    base = [
        b"Host: api.example.com",
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        b"Accept: application/json, text/plain, */*",
        b"Accept-Encoding: gzip, deflate, br",
        b"Accept-Language: en-US,en;q=0.9",
        b"Connection: keep-alive",
        b"Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjMifQ.sig",
        b"X-Request-ID: 3f2a9c1e-8d4b-4c7a-9e1f-2b6d8a0c4e5f",
        b"Cache-Control: no-cache",
        b"Referer: https://app.example.com/orders",
        b"Origin: https://app.example.com",
        b"Cookie: session=abc123def456; theme=dark",
        b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"Sec-Fetch-Mode: cors",
        b"X-Custom-Tenant: tenant-42",
    ]
    lines = [b"GET /v1/orders/12345?expand=items&limit=10 HTTP/1.1"] + base[:n_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


REQUESTS = {n: _request(n) for n in (5, 10, 15)}


class FastgateHandler:
    __slots__ = ("head", "done")

    def __init__(self):
        self.head = None
        self.done = 0

    def on_request(self, head):
        self.head = head

    def on_request_complete(self):
        self.done += 1


class HttptoolsRaw:
    __slots__ = ("url", "headers", "method", "done", "parser")

    def __init__(self):
        self.url = None
        self.headers = None
        self.done = 0

    def on_message_begin(self):
        self.headers = []

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.method = self.parser.get_method()

    def on_message_complete(self):
        self.done += 1


class HttptoolsEquiv(HttptoolsRaw):
    __slots__ = ("path", "query")

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_headers_complete(self):
        self.method = self.parser.get_method()
        u = httptools.parse_url(self.url)
        self.path = u.path
        self.query = u.query or b""


def _fastgate_round(parser, data):
    parser.feed(data)
    parser.resume()


@pytest.mark.parametrize("n", sorted(REQUESTS))
def test_request_fastgate(benchmark, n):
    data = REQUESTS[n]
    h = FastgateHandler()
    p = RequestParser(h)
    _fastgate_round(p, data)
    assert h.done == 1 and len(h.head.headers) == n and h.head.path == b"/v1/orders/12345"
    assert h.head.query == b"expand=items&limit=10" and h.head.host == b"api.example.com"
    benchmark.group = f"request-{n}-headers"
    benchmark(_fastgate_round, p, data)
    assert p.buffered == 0 and not p.in_head


@pytest.mark.parametrize("n", sorted(REQUESTS))
@pytest.mark.parametrize("kind", [HttptoolsRaw, HttptoolsEquiv], ids=["raw", "equiv"])
def test_request_httptools(benchmark, n, kind):
    data = REQUESTS[n]
    h = kind()
    p = httptools.HttpRequestParser(h)
    h.parser = p
    p.feed_data(data)
    assert h.done == 1 and len(h.headers) == n and h.method == b"GET"
    benchmark.group = f"request-{n}-headers"
    benchmark(p.feed_data, data)


# A POST with a small JSON body: the body callback is part of the round.
POST = (b"POST /v1/orders HTTP/1.1\r\nHost: api.example.com\r\n"
        b"Content-Type: application/json\r\nContent-Length: 27\r\n"
        b"Authorization: Bearer abc.def.ghi\r\nX-Request-ID: 42\r\n\r\n"
        b'{"item": "book", "qty": 2}\n')


class FastgateBody(FastgateHandler):
    __slots__ = ("body",)

    def on_body(self, data):
        self.body = data


class HttptoolsBody(HttptoolsEquiv):
    __slots__ = ("body",)

    def on_body(self, data):
        self.body = data


def test_post_fastgate(benchmark):
    h = FastgateBody()
    p = RequestParser(h)
    _fastgate_round(p, POST)
    assert h.body == b'{"item": "book", "qty": 2}\n' and h.head.content_length == 27
    benchmark.group = "post-small-body"
    benchmark(_fastgate_round, p, POST)


def test_post_httptools_equiv(benchmark):
    h = HttptoolsBody()
    p = httptools.HttpRequestParser(h)
    h.parser = p
    p.feed_data(POST)
    assert h.body == b'{"item": "book", "qty": 2}\n'
    benchmark.group = "post-small-body"
    benchmark(p.feed_data, POST)


# Upstream response head + small body.
RESPONSE = (b"HTTP/1.1 200 OK\r\nDate: Sun, 29 Nov 2026 05:00:00 GMT\r\n"
            b"Server: upstream\r\nContent-Type: application/json\r\nContent-Length: 16\r\n"
            b"Cache-Control: no-store\r\nX-Request-ID: 42\r\nVary: Accept-Encoding\r\n"
            b"Connection: keep-alive\r\n\r\n{\"ok\": true}\n\n\n\n")


class FastgateResp:
    __slots__ = ("head", "body", "done")

    def __init__(self):
        self.done = 0

    def on_response(self, head):
        self.head = head

    def on_body(self, data):
        self.body = data

    def on_response_complete(self):
        self.done += 1


class HttptoolsResp:
    __slots__ = ("headers", "status", "body", "done", "parser")

    def __init__(self):
        self.done = 0

    def on_message_begin(self):
        self.headers = []

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()

    def on_body(self, data):
        self.body = data

    def on_message_complete(self):
        self.done += 1


def _response_round(parser, data):
    parser.start(False)
    parser.feed(data)


def test_response_fastgate(benchmark):
    h = FastgateResp()
    p = ResponseParser(h)
    _response_round(p, RESPONSE)
    assert h.done == 1 and h.head.status == 200 and len(h.head.headers) == 8
    benchmark.group = "response-8-headers"
    benchmark(_response_round, p, RESPONSE)
    assert p.buffered == 0


def test_response_httptools_equiv(benchmark):
    h = HttptoolsResp()
    p = httptools.HttpResponseParser(h)
    h.parser = p
    p.feed_data(RESPONSE)
    assert h.done == 1 and h.status == 200 and len(h.headers) == 8
    benchmark.group = "response-8-headers"
    benchmark(p.feed_data, RESPONSE)


# Bulk body throughput: 64 KiB reads of a chunked upload (16 KiB chunks).
CHUNKED_HEAD = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_READ = (b"4000\r\n" + b"x" * 0x4000 + b"\r\n") * 4


class Sink:
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0

    def on_body(self, data):
        self.n += len(data)


def test_chunked_64k_read_fastgate(benchmark):
    h = Sink()
    p = RequestParser(h, max_body_bytes=1 << 62)
    p.feed(CHUNKED_HEAD)
    p.feed(CHUNKED_READ)
    assert h.n == 4 * 0x4000
    benchmark.group = "chunked-64k-read"
    benchmark(p.feed, CHUNKED_READ)


def test_chunked_64k_read_httptools(benchmark):
    h = Sink()
    p = httptools.HttpRequestParser(h)
    p.feed_data(CHUNKED_HEAD)
    p.feed_data(CHUNKED_READ)
    assert h.n == 4 * 0x4000
    benchmark.group = "chunked-64k-read"
    benchmark(p.feed_data, CHUNKED_READ)
