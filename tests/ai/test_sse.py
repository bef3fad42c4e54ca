"""fastgate.ai.sse: the incremental server-sent-events parser."""
import pytest

from fastgate.ai.sse import SSEParser


def parse_all(data: bytes, splits=None):
    p = SSEParser()
    out = []
    if splits is None:
        out += p.feed(data)
    else:
        prev = 0
        for s in list(splits) + [len(data)]:
            out += p.feed(data[prev:s])
            prev = s
    return out + p.close()


def test_basic_events():
    assert parse_all(b"data: hello\n\ndata: world\n\n") == [("message", "hello"),
                                                            ("message", "world")]


def test_event_field_and_default():
    data = b"event: message_start\ndata: {\"a\":1}\n\ndata: x\n\n"
    assert parse_all(data) == [("message_start", '{"a":1}'), ("message", "x")]


def test_event_name_does_not_leak_to_next_block():
    assert parse_all(b"event: ping\ndata: 1\n\ndata: 2\n\n") == [("ping", "1"), ("message", "2")]


def test_multiline_data_joined_with_newline():
    assert parse_all(b"data: a\ndata: b\ndata:c\n\n") == [("message", "a\nb\nc")]


def test_comments_id_retry_ignored():
    data = b": keep-alive\nid: 7\nretry: 100\ndata: x\n: another\n\n:\n\n"
    assert parse_all(data) == [("message", "x")]


def test_only_one_leading_space_stripped():
    assert parse_all(b"data:  two\n\n") == [("message", " two")]
    assert parse_all(b"data:none\n\n") == [("message", "none")]


def test_data_without_colon_is_empty_line():
    assert parse_all(b"data\ndata: x\n\n") == [("message", "\nx")]
    assert parse_all(b"data:\n\n") == [("message", "")]


def test_block_without_data_dispatches_nothing():
    assert parse_all(b"event: ping\n\n\n\ndata: y\n\n") == [("message", "y")]


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
def test_line_endings(nl):
    data = nl.join([b"event: e", b"data: 1", b"", b"data: 2", b"data: 3", b"", b""])
    assert parse_all(data) == [("e", "1"), ("message", "2\n3")]


def test_cr_at_chunk_end_then_lf():
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n\r") == [("message", "a")]
    assert p.feed(b"\ndata: b\r\n\r\n") == [("message", "b")]


def test_mixed_line_endings_every_split():
    data = (b"event: a\r\ndata: 1\r\n\r\n: c\rdata: 2\rdata: 3\r\r"
            b"data: {\"x\": \"\xc3\xa9\xe2\x82\xac\"}\n\nevent: z\ndata: end\n\n")
    want = [("a", "1"), ("message", "2\n3"), ("message", '{"x": "\u00e9\u20ac"}'),
            ("z", "end")]
    assert parse_all(data) == want
    for i in range(len(data) + 1):
        assert parse_all(data, [i]) == want, i
    for i in range(len(data) + 1):
        for j in range(i, min(len(data), i + 7) + 1):
            assert parse_all(data, [i, j]) == want, (i, j)
    p = SSEParser()
    got = []
    for k in range(len(data)):
        got += p.feed(data[k:k + 1])
    assert got == want


def test_utf8_split_inside_character():
    data = "data: h\u00e9llo \U0001F600\n\n".encode()
    for i in range(len(data) + 1):
        assert parse_all(data, [i]) == [("message", "h\u00e9llo \U0001F600")]


def test_incremental_returns_as_soon_as_complete():
    p = SSEParser()
    assert p.feed(b"data: one\n") == []
    assert p.feed(b"\ndata: tw") == [("message", "one")]
    assert p.feed(b"o\n\n") == [("message", "two")]


def test_close_flushes_unterminated_event():
    p = SSEParser()
    assert p.feed(b"data: a\n\ndata: tail") == [("message", "a")]
    assert p.close() == [("message", "tail")]
    p = SSEParser()
    p.feed(b"data: x\n")
    assert p.close() == [("message", "x")]
    assert SSEParser().close() == []


def test_empty_feed():
    p = SSEParser()
    assert p.feed(b"") == []
    assert p.close() == []


def test_line_limit():
    p = SSEParser(max_line=16)
    with pytest.raises(ValueError):
        p.feed(b"data: " + b"x" * 32)
    p = SSEParser(max_line=16)
    p.feed(b"data: 123456789\n\n")            # complete lines of any count are fine
    with pytest.raises(ValueError):
        p.feed(b"data: 1\n\ndata: " + b"y" * 20)
