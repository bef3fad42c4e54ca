"""Request ids and W3C traceparent handling."""
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgate.observe.ids import (new_request_id, new_span_id, request_id_from,
                                  trace_id_of, traceparent_from)

HEX32 = re.compile(r"[0-9a-f]{32}")
TP = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize("value", [
    b"a", b"abc-123", b"A.b_c:d-e", b"x" * 128, b"0af7651916cd43dd8448eb211c80319c",
    b"req:2024-01-01T00:00:00.000", "str-value-ok",
])
def test_sane_request_ids_are_kept(value):
    want = value.decode() if isinstance(value, bytes) else value
    assert request_id_from(value) == want


@pytest.mark.parametrize("value", [
    None, b"", b"x" * 129, b"has space", b"semi;colon", b"quote\"", b"new\nline", b"tab\t",
    b"slash/", b"\xff\xfe", "caf\u00e9", b"<script>", b"%41", b"a,b",
])
def test_other_request_ids_are_replaced(value):
    rid = request_id_from(value)
    assert HEX32.fullmatch(rid)


def test_generated_ids_are_unique():
    ids = {request_id_from(None) for _ in range(20000)}
    assert len(ids) == 20000
    spans = {new_span_id() for _ in range(20000)}
    assert len(spans) == 20000
    assert all(s != "0" * 16 and len(s) == 16 for s in spans)


def test_forked_children_do_not_repeat_the_parent_ids():
    new_request_id()   # the pool is now filled in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        try:
            os.write(w, " ".join(new_request_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = set(f.read().decode().split())
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(50)}
    assert len(child) == 50 and not (child & parent)


@pytest.mark.parametrize("flags, out_flags", [("01", "01"), ("00", "00"), ("03", "03"),
                                              ("ff", "03"), ("04", "00")])
def test_valid_traceparent_keeps_trace_and_gets_a_new_parent(flags, out_flags):
    incoming = f"00-{TRACE}-{PARENT}-{flags}".encode()
    out = traceparent_from(incoming)
    m = TP.fullmatch(out)
    assert m, out
    assert m.group(1) == TRACE and trace_id_of(out) == TRACE
    assert m.group(2) != PARENT and m.group(2) != "0" * 16
    assert m.group(3) == out_flags   # reserved flag bits are cleared


def test_future_version_with_extra_fields_is_understood_as_00():
    out = traceparent_from(f"cc-{TRACE}-{PARENT}-01-what-ever".encode())
    assert trace_id_of(out) == TRACE and out.startswith("00-")


def test_surrounding_whitespace_is_tolerated():
    assert trace_id_of(traceparent_from(f"  00-{TRACE}-{PARENT}-01\t".encode())) == TRACE


@pytest.mark.parametrize("value", [
    None, b"", b"garbage",
    f"ff-{TRACE}-{PARENT}-01".encode(),                    # version ff is invalid
    f"00-{'0' * 32}-{PARENT}-01".encode(),                 # all-zero trace-id
    f"00-{TRACE}-{'0' * 16}-01".encode(),                  # all-zero parent-id
    f"00-{TRACE.upper()}-{PARENT}-01".encode(),            # upper-case hex
    f"00-{TRACE}-{PARENT}-01-extra".encode(),              # version 00 has exactly 4 fields
    f"cc-{TRACE}-{PARENT}-01extra".encode(),               # future version needs a dash
    f"00-{TRACE[:-1]}-{PARENT}-01".encode(),               # short trace-id
    f"00-{TRACE}x-{PARENT}-01".encode(),
    f"00_{TRACE}-{PARENT}-01".encode(),
    f"0-{TRACE}0-{PARENT}-01".encode(),
    f"00-{TRACE}-{PARENT}-1".encode(),
    f"00-{TRACE[:10]}-{TRACE[11:]}-{PARENT}-01".encode(),  # dash inside the trace-id
    f"00-{TRACE}-{PARENT}-0g".encode(),
    "00-\u0664bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".encode(),   # non-ASCII digit
])
def test_invalid_traceparent_starts_a_new_trace(value):
    out = traceparent_from(value)
    m = TP.fullmatch(out)
    assert m, out
    assert m.group(1) != TRACE and m.group(1) != "0" * 32 and m.group(3) == "01"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=80), st.text(max_size=80)))
def test_any_input_gives_valid_output(value):
    out = traceparent_from(value)
    assert TP.fullmatch(out)
    rid = request_id_from(value)
    assert 1 <= len(rid) <= 128 and re.fullmatch(r"[A-Za-z0-9._:-]+", rid)


def test_trailing_blanks_are_tolerated_too():
    assert trace_id_of(traceparent_from(f"00-{TRACE}-{PARENT}-01 \t".encode())) == TRACE
    assert trace_id_of(traceparent_from(f" 00-{TRACE}-{PARENT}-01 ")) == TRACE   # str


def test_a_traceparent_with_upper_case_hex_starts_a_new_trace():
    out = traceparent_from(f"00-{TRACE.upper()}-{PARENT}-01".encode())
    assert TP.fullmatch(out) and trace_id_of(out) != TRACE
