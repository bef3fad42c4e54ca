"""The WAF's normalisers and engine (fastgate._core.wafdecode, fastgate.waf.Engine) on
arbitrary requests.

Input (FuzzedDataProvider): a target (raw bytes, or a path and query built from fuzzer
bytes), some headers (names from a list and arbitrary values, cookies too), a body and one
of the content types the engine parses (JSON, form, multipart, XML, text, none).

Invariants: ``decode`` returns bytes and is deterministic; ``inspect`` returns None or a
Match whose rule is one of the engine's rules (``waf_error``, the fail-closed answer to an
internal exception, counts as a broken invariant: it is a bug) and whose part names where
it matched without carrying the request's bytes beyond a short name; the same request gives
the same answer twice.
"""
from __future__ import annotations

import atheris

import fastgate.waf.engine as _engine
from fastgate._core.wafdecode import decode
from fastgate.waf import RULES, Engine

from ._http import check

# The precise stage's time limit (0.9 ms) makes a verdict depend on the machine's speed, and
# instrumented code is slow: the harness fuzzes what the engine decides, not how fast.
_engine.DEADLINE_S = 1e9
ENGINE = Engine(rules=RULES, exclude_args=("skip",), exclude_headers=("x-skip",),
                inspect_body_bytes=4096)
HEADER_NAMES = [b"user-agent", b"referer", b"cookie", b"x-forwarded-for", b"x-custom",
                b"authorization", b"accept", b"content-type", b"x-skip", b"host"]
CTYPES = [None, b"application/json", b"application/x-www-form-urlencoded",
          b"multipart/form-data; boundary=XyZ", b"text/xml", b"text/plain",
          b"application/json; charset=utf-8", b"multipart/form-data"]
PIECES = [b"'", b"\"", b"%27", b"%2527", b"%u0027", b"&#39;", b"\\u0027", b"/*", b"*/", b"--",
          b" or 1=1", b"union select", b"<script>", b"javascript:", b"../", b"..%2f",
          b"%c0%af", b";cat /etc/passwd", b"$(id)", b"`id`", b"${jndi:ldap://x}", b"\x00",
          b"%00", b"\\", b"{", b"}", b"[", b"]", b"=", b"&", b"--XyZ\r\n", b"\r\n\r\n",
          b"Content-Disposition: form-data; name=\"a\"\r\n", b"<?php", b"onerror=",
          b"&lt;", b"\xc0\xaf", b"\xef\xbc\x9c", b"skip=", b"a" * 300]


def _blob(fdp, n) -> bytes:
    out = []
    for _ in range(fdp.ConsumeIntInRange(0, n)):
        if fdp.ConsumeBool():
            out.append(PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)])
        else:
            out.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12)))
    return b"".join(out)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        d1, d2 = decode(raw), decode(raw)
        check(type(d1) is bytes and d1 == d2, "decode is not deterministic bytes")
        return
    if fdp.ConsumeBool():
        target = b"/" + _blob(fdp, 6)
    else:
        target = b"/p/" + _blob(fdp, 4) + b"?" + _blob(fdp, 8)
    headers = []
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        headers.append((HEADER_NAMES[fdp.ConsumeIntInRange(0, len(HEADER_NAMES) - 1)],
                        _blob(fdp, 5)))
    ctype = CTYPES[fdp.ConsumeIntInRange(0, len(CTYPES) - 1)]
    body = _blob(fdp, 12) if mode >= 2 else None
    m1 = ENGINE.inspect(b"POST", target, headers, body, ctype)
    m2 = ENGINE.inspect(b"POST", target, headers, body, ctype)
    check(m1 == m2, "the same request judged twice differently", m1, m2)
    if m1 is not None:
        check(m1.rule in RULES, f"rule {m1.rule!r} (an internal error of the engine?)")
        check(isinstance(m1.part, str) and 0 < len(m1.part) <= 200, f"part {m1.part!r}")


SEEDS = [b"\x00" + b"%2527%20or%201=1", b"\x01\x01" + b"\x05" * 40, b"\x02\x00" + b"\x03" * 60,
         b"\x03\x01" + b"\x07" * 60]
