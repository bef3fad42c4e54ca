"""fastgate._core.router.normalize_path on arbitrary bytes.

Invariants: the only exception is ValueError; a result is bytes that starts with "/", has no
"//", no "." or ".." segment, no NUL, no percent-encoded unreserved character, only upper-case
escapes; normalising it again gives it back (the same object: already-normal paths are
returned as they are); and it equals an independent implementation of RFC 3986 6.2.2 + 5.2.4
with merged slashes, which also agrees on which paths are refused.
"""
from __future__ import annotations

import re

from fastgate._core.router import normalize_path

from ._http import check

UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
HEX = frozenset(b"0123456789abcdefABCDEF")
_ESC = re.compile(rb"%([0-9A-Fa-f]{2})")


def reference(path: bytes):
    """The normal form, or None where the path must be refused."""
    if not path.startswith(b"/") or b"\x00" in path:
        return None
    i = 0
    out = bytearray()
    while i < len(path):
        c = path[i]
        if c == 0x25:
            esc = path[i + 1:i + 3]
            if len(esc) < 2 or not all(x in HEX for x in esc):
                return None
            v = int(esc, 16)
            if v == 0:
                return None
            out += bytes([v]) if v in UNRESERVED else b"%" + esc.upper()
            i += 3
        else:
            out.append(c)
            i += 1
    segs = bytes(out).split(b"/")[1:]
    stack: list[bytes] = []
    for s in segs:
        if s == b"..":
            if not stack:
                return None
            stack.pop()
        elif s not in (b".", b""):
            stack.append(s)
    res = b"/" + b"/".join(stack)
    if stack and segs[-1] in (b"", b".", b".."):
        res += b"/"
    return res


def TestOneInput(data: bytes) -> None:
    try:
        out = normalize_path(data)
    except ValueError:
        check(reference(data) is None, "refused a path the reference accepts", data)
        return
    check(type(out) is bytes and out.startswith(b"/"), "result not a /path", data, out)
    check(b"//" not in out and b"\x00" not in out, "// or NUL left", data, out)
    segs = out.split(b"/")[1:]
    check(not any(s in (b".", b"..") for s in segs), "dot segment left", data, out)
    for m in _ESC.finditer(out):
        check(m.group(1) == m.group(1).upper(), "lower-case escape left", data, out)
        check(int(m.group(1), 16) not in UNRESERVED, "encoded unreserved left", data, out)
    again = normalize_path(out)
    check(again is out, "not idempotent (or a normal path was copied)", data, out, again)
    if out == data:
        check(out is data, "a normal path was copied", data)
    check(out == reference(data), "differs from the reference", data, out, reference(data))


SEEDS = [b"/", b"/a/b/../c/./d", b"/%7euser/%2e%2E/x%2fy", b"//a//b//", b"/a/..",
         b"/a/%zz", b"/a/%00", b"/.", b"/..", b"/a/b/..%2f", b"/%41%42%43/%e2%82%ac", b"a",
         b"/static/./img/../css//x.css?q", b"/a/%2E/b/."]
