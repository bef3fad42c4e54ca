"""fastgate._core.writer.join_head against a plain Python reference."""
from hypothesis import given, settings, strategies as st

from fastgate._core.writer import header_lines, join_head

names = st.sampled_from([b"host", b"connection", b"x-a", b"keep-alive", b"te", b"x-b", b"cookie"])
values = st.binary(min_size=0, max_size=40)


def reference(first, headers, drop, tokens, tail):
    out = [first]
    for n, v in headers:
        if n in drop or n in tokens:
            continue
        out.append(n + b": " + v + b"\r\n")
    return b"".join(out + list(tail))


def test_basic():
    got = join_head(b"GET / HTTP/1.1\r\n", [(b"a", b"1"), (b"connection", b"x"), (b"x", b"2")],
                    frozenset([b"connection"]), (b"x",), [b"z: 9\r\n", b"\r\n"])
    assert got == b"GET / HTTP/1.1\r\na: 1\r\nz: 9\r\n\r\n"


def test_many_headers_beyond_stack_buffer():
    hs = [(b"h%d" % i, b"v") for i in range(300)]
    assert join_head(b"", hs, frozenset(), (), []) == reference(b"", hs, set(), (), [])


def test_header_lines():
    assert header_lines([]) == b""
    assert header_lines([(b"a", b"b"), (b"c", b"d")]) == b"a: b\r\nc: d\r\n"


@settings(max_examples=200)
@given(st.lists(st.tuples(names, values), max_size=30), st.frozensets(names),
       st.lists(names, max_size=3).map(tuple), st.lists(values, max_size=4))
def test_matches_reference(headers, drop, tokens, tail):
    assert join_head(b"L\r\n", headers, drop, tokens, tail) == reference(b"L\r\n", headers, drop, tokens, tail)
