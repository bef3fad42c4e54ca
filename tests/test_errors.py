"""One table of error answers: the request parser, the proxy's responses and the admin listener
give a status the same code."""
import pytest

from fastgate._core.http import HttpError, RequestParser
from fastgate.admin import server as admin_server
from fastgate.errors import ERROR_CODES, ERRORS, default_message, error_code
from fastgate.server import responses


def test_the_proxy_uses_the_table_itself():
    assert responses.ERROR_CODES is ERROR_CODES
    assert admin_server.error_code is error_code


def test_codes_clients_rely_on():
    assert {s: ERROR_CODES[s] for s in (400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 502,
                                        504, 505)} == {
        400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
        405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
        414: "uri_too_long", 429: "rate_limited", 431: "header_too_large", 502: "bad_gateway",
        504: "gateway_timeout", 505: "version_not_supported"}
    assert all(kind.code and kind.message for kind in ERRORS.values())
    assert len(set(ERROR_CODES.values())) == len(ERROR_CODES)
    assert (error_code(418), default_message(418)) == ("error", "error")


class _Sink:
    def on_request(self, head):
        pass


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\nHost: a\r\n a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413),
    (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 5 + b"\r\n", 431),
    (b"GET / HTTP/3.0\r\n", 505),
])
def test_parser_refusals_use_the_table(data, status):
    p = RequestParser(_Sink(), max_request_line_bytes=64, max_headers=4, max_body_bytes=10)
    with pytest.raises(HttpError) as exc:
        p.feed(data)
    assert (exc.value.status, exc.value.code) == (status, ERROR_CODES[status])
