"""What the two parser harnesses share: how an input becomes a stream and its cuts, an event
recorder, an independent (deliberately simple) chunked decoder, and the head checks."""
from __future__ import annotations

import random

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                  b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
FIELD = frozenset([9] + list(range(32, 127)) + list(range(128, 256)))


class Broken(AssertionError):
    """An invariant does not hold (the fuzzer reports it as a crash)."""


def check(cond, what, *ctx):
    if not cond:
        raise Broken(what + ("" if not ctx else ": " + " | ".join(repr(c) for c in ctx)))


def cuts(stream: bytes, mode: int, seed: int) -> list[bytes]:
    """The stream cut into feeds: 0 random sizes, 1 byte by byte, 2 sizes 1..3, 3 two halves."""
    n = len(stream)
    if mode == 1 and n <= 4096:
        return [stream[i:i + 1] for i in range(n)] or [b""]
    if mode == 3:
        k = seed % (n + 1)
        return [stream[:k], stream[k:]]
    rnd = random.Random(seed)
    hi = 3 if mode == 2 else max(1, n // 3)
    out, i = [], 0
    while i < n:
        k = rnd.randint(1, hi)
        out.append(stream[i:i + k])
        i += k
    return out or [b""]


def as_kind(piece: bytes, kind: int):
    """Hand the parser bytes, bytearray or memoryview (feed() takes any buffer)."""
    if kind == 1:
        return bytearray(piece)
    if kind == 2:
        return memoryview(piece)
    return piece


class Recorder:
    """Parser events, consecutive body pieces merged (a cut is not an event)."""

    def __init__(self):
        self.events: list = []
        self.heads: list = []

    def body(self, data):
        check(type(data) is bytes and len(data) > 0, "on_body got empty or non-bytes", data)
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))


def dechunk(stream: bytes, off: int):
    """Independent, lenient decoder of a chunked body starting at ``off``: (decoded bytes,
    offset after the trailer section, or None where the data ends or stops making sense)."""
    out = bytearray()
    while True:
        i = stream.find(b"\r\n", off)
        if i < 0:
            return bytes(out), None
        line = stream[off:i].split(b";", 1)[0]
        if not line or any(c not in b"0123456789abcdefABCDEF" for c in line):
            return bytes(out), None
        size = int(line, 16)
        off = i + 2
        if size == 0:
            while True:
                i = stream.find(b"\r\n", off)
                if i < 0:
                    return bytes(out), None
                empty = i == off
                off = i + 2
                if empty:
                    return bytes(out), off
        data = stream[off:off + size]
        out += data
        if len(data) < size or stream[off + size:off + size + 2] != b"\r\n":
            return bytes(out), None
        off += size + 2


def check_fields(headers):
    for item in headers:
        check(type(item) is tuple and len(item) == 2, "header item not a pair", item)
        name, value = item
        check(type(name) is bytes and type(value) is bytes, "header not bytes", item)
        check(len(name) > 0 and all(c in TCHAR for c in name), "header name not a token", name)
        check(name == name.lower(), "header name not lower-case", name)
        check(all(c in FIELD for c in value), "header value has a forbidden octet", value)
        check(not value[:1] in (b" ", b"\t") and not value[-1:] in (b" ", b"\t"),
              "header value not OWS-trimmed", value)


def values(headers, name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def content_length_of(headers) -> int:
    """-1 without Content-Length; else the (agreed) value, checked element by element."""
    found = -1
    for v in values(headers, b"content-length"):
        for part in v.split(b","):
            part = part.strip(b" \t")
            check(part.isdigit(), "accepted a non-digit Content-Length", v)
            n = int(part)
            check(found in (-1, n), "accepted differing Content-Length values", v)
            found = n
    return found


def connection_tokens(headers) -> tuple:
    out = []
    for v in values(headers, b"connection"):
        for t in v.split(b","):
            t = t.strip(b" \t")
            if t:
                out.append(t.lower())
    return tuple(out)
