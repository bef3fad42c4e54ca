"""Parser behaviours the fuzzers (tests/fuzz) found wrong, one test each, in plain form; the
inputs themselves replay from tests/fuzz/corpus/ in tests/fuzz/test_fuzz_smoke.py."""
import pytest

from fastgate._core.http import HttpError, RequestParser, ResponseParser


def _request_error(data, size, **limits):
    p = RequestParser(None, **limits)
    with pytest.raises(HttpError) as info:
        for i in range(0, len(data), size):
            p.feed(data[i:i + size])
    return info.value.status, info.value.message


def _response_error(data, size, **limits):
    p = ResponseParser(None, **limits)
    p.start(False)
    with pytest.raises(HttpError) as info:
        for i in range(0, len(data), size):
            p.feed(data[i:i + size])
    return info.value.status, info.value.message


@pytest.mark.parametrize("tail", [b"", b"\r\n", b"\r\n\r\n"])
def test_one_field_too_many_and_too_large_fails_the_same_whatever_the_cuts(tail):
    """A field line beyond max_headers that also overflows max_header_bytes: the size check
    depends on how much of the line has arrived, the count does not; checked size-first, the
    message (which the client reads in the JSON error) depended on the TCP segmentation."""
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 30 + tail
    got = {_request_error(data, size, max_headers=1, max_header_bytes=20)
           for size in (len(data), 1, 2, 7)}
    assert got == {(431, "too many header fields")}


def test_trailer_count_and_size_fail_the_same_whatever_the_cuts():
    data = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nA: 1\r\nB: 2\r\nC: " + b"y" * 40 + b"\r\n\r\n")
    got = {_request_error(data, size, max_headers=2, max_header_bytes=40)
           for size in (len(data), 1, 3)}
    assert got == {(431, "too many trailer fields")}


def test_response_field_count_and_size_fail_the_same_whatever_the_cuts():
    data = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: " + b"y" * 60 + b"\r\n\r\n"
    got = {_response_error(data, size, max_headers=1, max_header_bytes=40)
           for size in (len(data), 1, 5)}
    assert got == {(502, "too many header fields")}


@pytest.mark.parametrize("line", [b"\rX: 1\r\n", b"\rPOST \n", b"X: 1\r\n"])
def test_full_header_section_then_one_field_too_many_fails_the_same_whatever_the_cuts(line):
    """Fields filling max_header_bytes exactly, at max_headers, then one more line: a lone CR
    (all of the line a small read may hold) already cannot fit, so the size error is the one
    every cut must give."""
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 9 + b"\r\n" + line
    got = {_request_error(data, size, max_headers=2, max_header_bytes=27)
           for size in (len(data), 1, 2, 3)}
    assert got == {(431, "header section too large")}
