"""Incremental server-sent-events parser (the WHATWG ``text/event-stream`` format).

    p = SSEParser()
    for event, data in p.feed(chunk):     # chunk: bytes, split anywhere
        ...

``feed`` returns the events completed by this chunk, each ``(event, data)``: ``event`` the
last ``event:`` field of the block ("message" when it had none), ``data`` the ``data:``
lines joined with "\\n" (str). Lines end in "\\n", "\\r\\n" or "\\r" (a "\\r" that ends a
chunk waits for the next byte); one space after the colon is dropped; comment lines
(":...") and the ``id``/``retry`` fields are ignored; a block without data dispatches
nothing. ``close()`` returns the event left unterminated at the end of the body (a
stream whose last block lacks its blank line), and a line longer than ``max_line``
raises ValueError (a provider that never ends a line must not grow memory without bound).
"""
from __future__ import annotations

__all__ = ["SSEParser"]

_NL = b"\n"
_CR = b"\r"


class SSEParser:
    __slots__ = ("_buf", "_cr", "_event", "_data", "max_line")

    def __init__(self, max_line: int = 32 * 1024 * 1024):
        self._buf = b""          # bytes of the unfinished line
        self._cr = False         # the last chunk ended with "\r" (maybe half of "\r\n")
        self._event = None       # event: of the block being read
        self._data = None        # list of data: lines of the block being read
        self.max_line = max_line

    def feed(self, data: bytes) -> list:
        if not data:
            return []
        if self._cr:
            self._cr = False
            if data[:1] == _NL:
                data = data[1:]
        if _CR in data:
            if data[-1:] == _CR:
                self._cr = True          # a following "\n" belongs to this line end
            data = data.replace(b"\r\n", _NL).replace(_CR, _NL)
        buf = self._buf + data if self._buf else data
        end = buf.rfind(_NL)
        if end < 0:
            if len(buf) > self.max_line:
                raise ValueError("server-sent event line too long")
            self._buf = buf
            return []
        self._buf = buf[end + 1:]
        if len(self._buf) > self.max_line:
            raise ValueError("server-sent event line too long")
        out = []
        for line in buf[:end].split(_NL):
            self._line(line, out)
        return out

    def close(self) -> list:
        """End of the body: the event whose blank line never came (if any)."""
        out = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list) -> None:
        if not line:                                  # blank line: dispatch
            if self._data is not None:
                out.append((self._event or "message",
                            "\n".join(self._data) if len(self._data) > 1 else self._data[0]))
            self._event = self._data = None
            return
        if line[:5] == b"data:":
            v = line[6:] if line[5:6] == b" " else line[5:]
            s = v.decode("utf-8", "replace")
            if self._data is None:
                self._data = [s]
            else:
                self._data.append(s)
            return
        if line[:1] == b":":                          # comment
            return
        name, colon, v = line.partition(b":")
        if colon and v[:1] == b" ":
            v = v[1:]
        if name == b"event":
            self._event = v.decode("utf-8", "replace")
        elif name == b"data":                         # "data" without a colon: empty line
            if self._data is None:
                self._data = [""]
            else:
                self._data.append("")
        # id, retry and unknown fields: ignored
