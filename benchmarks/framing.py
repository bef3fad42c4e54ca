"""Just enough HTTP/1.1 message framing for the load generator and the upstream.

Both sides only need to know where a message ends, not what it says, so they look for the end
of the head, then Content-Length or chunked framing, and skip the body without copying it.
Input comes from the servers under test, so sizes are bounded and bad framing raises
``FramingError`` instead of looping or growing a buffer without limit.
"""
from __future__ import annotations

MAX_HEAD = 65536
MAX_LINE = 4096


class FramingError(Exception):
    pass


def parse_content_length(head_lower: bytes):
    """Content-Length of a lower-cased head, None when absent."""
    i = head_lower.find(b"\r\ncontent-length:")
    if i < 0:
        return None
    j = head_lower.find(b"\r\n", i + 17)
    raw = head_lower[i + 17:] if j < 0 else head_lower[i + 17:j]
    try:
        n = int(raw)
    except ValueError:
        raise FramingError("bad content-length") from None
    if n < 0:
        raise FramingError("negative content-length")
    return n


def is_chunked(head_lower: bytes) -> bool:
    i = head_lower.find(b"\r\ntransfer-encoding:")
    if i < 0:
        return False
    j = head_lower.find(b"\r\n", i + 20)
    return b"chunked" in (head_lower[i + 20:] if j < 0 else head_lower[i + 20:j])


# Chunked-decoder states
C_SIZE, C_DATA, C_DATA_CRLF, C_TRAILER, C_DONE = range(5)


MAX_KEPT = 4 << 20


class ChunkedSkipper:
    """Walks chunked framing across arbitrary packet splits, counting body bytes; with
    ``keep`` the body's data is also collected in ``parts`` (up to MAX_KEPT bytes)."""

    __slots__ = ("state", "remaining", "line", "body_bytes", "parts")

    def __init__(self, keep=False):
        self.state = C_SIZE
        self.remaining = 0
        self.line = b""
        self.body_bytes = 0
        self.parts = [] if keep else None

    def feed(self, data, pos: int) -> int:
        """Consume data[pos:]; return the index just past the message end, or -1 if not done."""
        n = len(data)
        while pos < n:
            st = self.state
            if st == C_DATA or st == C_DATA_CRLF:
                take = n - pos
                if take > self.remaining:
                    take = self.remaining
                if st == C_DATA and self.parts is not None:
                    if self.body_bytes > MAX_KEPT:
                        raise FramingError("body too large to keep")
                    self.parts.append(data[pos:pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    if st == C_DATA:
                        self.state = C_DATA_CRLF
                        self.remaining = 2
                    else:
                        self.state = C_SIZE
            else:  # a line: chunk size or a trailer line
                j = data.find(b"\n", pos)
                if j < 0:
                    self.line += bytes(data[pos:])
                    if len(self.line) > MAX_LINE:
                        raise FramingError("chunk line too long")
                    return -1
                line = self.line + bytes(data[pos:j]) if self.line else bytes(data[pos:j])
                self.line = b""
                pos = j + 1
                if st == C_SIZE:
                    try:
                        size = int(line.split(b";", 1)[0], 16)
                    except ValueError:
                        raise FramingError("bad chunk size") from None
                    if size < 0:
                        raise FramingError("bad chunk size")
                    if size == 0:
                        self.state = C_TRAILER
                    else:
                        self.state = C_DATA
                        self.remaining = size
                        self.body_bytes += size
                else:  # trailer section ends with an empty line
                    if not line.strip():
                        self.state = C_DONE
                        return pos
                    if len(line) > MAX_LINE:
                        raise FramingError("trailer too long")
        return -1
