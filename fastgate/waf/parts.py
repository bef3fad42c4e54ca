"""What a request is made of, as (part name, kind, raw bytes) triples the detectors judge.

Part names say where something is (``path``, ``args:id``, ``args_names``, ``headers:x-foo``,
``cookies:session``, ``body:json:user.name``, ``body:form:comment``,
``body:multipart:notes``), never what it holds: a name that is itself odd (the payload sits in
a key) is replaced by ``*``. Kinds tell a detector what sort of slot the bytes came from:
``path``, ``value``, ``name`` (argument or cookie names), ``jsonkey``, ``header``,
``filename``, ``body`` (a body that could not be parsed, judged as text).

Every loop here is bounded: parts per request, JSON depth and items, multipart sections.
"""
from __future__ import annotations

import re

import orjson

__all__ = ("collect", "iter_parts", "split_pairs", "unquote_plus", "MAX_PARTS", "MAX_JSON_DEPTH")

MAX_PARTS = 2048
MAX_JSON_DEPTH = 32
MAX_MULTIPART_SECTIONS = 256

# Headers that only frame the message (or that the gateway itself validated): never inspected.
FRAMING_HEADERS = frozenset({
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"te",
    b"trailer", b"upgrade", b"expect", b"proxy-connection",
})

_SAFE_NAME = re.compile(rb"[A-Za-z0-9_.\-\[\]]{1,64}")
_HEX = b"0123456789abcdefABCDEF"


_NAMES: dict = {}     # safe_name's answers: names repeat (JSON keys, headers); bounded


def safe_name(name: bytes) -> str:
    got = _NAMES.get(name)
    if got is None:
        got = name.decode("ascii") if _SAFE_NAME.fullmatch(name) else "*"
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        _NAMES[name] = got
    return got


def unquote_plus(b: bytes) -> bytes:
    """Form/query decoding of one component: '+' is a space, %HH a byte (bad escapes kept)."""
    if b"+" in b:
        b = b.replace(b"+", b" ")
    if b"%" not in b:
        return b
    out = bytearray()
    parts = b.split(b"%")
    out += parts[0]
    for p in parts[1:]:
        if len(p) >= 2 and p[0] in _HEX and p[1] in _HEX:
            out.append(int(p[:2], 16))
            out += p[2:]
        else:
            out += b"%"
            out += p
    return bytes(out)


def split_pairs(data: bytes, sep: bytes = b"&"):
    """(name, value) pairs of a query string or form body, decoded once."""
    for item in data.split(sep):
        if not item:
            continue
        name, eq, value = item.partition(b"=")
        yield unquote_plus(name), unquote_plus(value), bool(eq)


def _path_parts(path: bytes, out: list) -> None:
    out.append(("path", "path", path))
    if b"%" in path or b"\\" in path or b";" in path:
        for seg in path.split(b"/"):
            if seg:
                out.append(("path", "segment", seg))


def _cookies(value: bytes, out: list, exclude_args) -> None:
    for item in value.split(b";"):
        item = item.strip()
        if not item:
            continue
        name, _, v = item.partition(b"=")
        name = name.strip()
        out.append(("cookies_names", "name", name))
        if v:
            out.append(("cookies:" + safe_name(name), "value", v))


def _json_walk(node, path: str, depth: int, exclude_args, budget: list):
    """The parts of a parsed JSON document, in document order (a generator: the precise
    stage takes them one by one and can pause between any two)."""
    if budget[0] <= 0:
        return
    if isinstance(node, str):
        budget[0] -= 1
        yield ("body:json:" + (path or "$"), "value", node.encode("utf-8", "surrogatepass"))
        return
    if depth >= MAX_JSON_DEPTH:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            if budget[0] <= 0:
                return
            if k.lower() in exclude_args:
                continue
            kb = k.encode("utf-8", "surrogatepass")
            budget[0] -= 1
            yield ("body:json_keys:" + (path or "$"), "jsonkey", kb)
            if isinstance(v, (dict, list, str)):
                name = safe_name(kb)
                yield from _json_walk(v, path + "." + name if path else name, depth + 1,
                                      exclude_args, budget)
    elif isinstance(node, list):
        for v in node:
            if budget[0] <= 0:
                return
            if isinstance(v, (dict, list, str)):
                yield from _json_walk(v, path, depth + 1, exclude_args, budget)


def _json_body(body: bytes, exclude_args):
    try:
        doc = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError, ValueError, TypeError):
        # Not JSON (or truncated at inspect_body_bytes): judge it as text.
        yield ("body", "body", body)
        return
    yield from _json_walk(doc, "", 0, exclude_args, [MAX_PARTS])


_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;,]{1,200}))', re.I)
_DISP_NAME = re.compile(rb'\bname\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.I)
_DISP_FILE = re.compile(rb'\bfilename\*?\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.I)


def _multipart(body: bytes, content_type: bytes, out: list, exclude_args) -> None:
    m = _BOUNDARY.search(content_type)
    if not m:
        out.append(("body", "body", body))
        return
    boundary = b"--" + (m.group(1) or m.group(2))
    sections = body.split(boundary)
    for sec in sections[1:MAX_MULTIPART_SECTIONS + 1]:
        if sec.startswith(b"--"):
            break
        head, sep, content = sec.partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = sec.partition(b"\n\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        hl = head.lower()
        nm = _DISP_NAME.search(head)
        name = (nm.group(1) if nm.group(1) is not None else nm.group(2)) if nm else b""
        if name.lower().decode("latin-1") in exclude_args:
            continue
        label = safe_name(name) if name else "*"
        out.append(("body:multipart_names", "name", name))
        fm = _DISP_FILE.search(head)
        if fm:
            fname = fm.group(1) if fm.group(1) is not None else fm.group(2)
            out.append(("body:multipart_filename:" + label, "filename", fname))
            # File content is inspected only when it is declared text.
            if b"content-type:" in hl and b"text/" not in hl:
                continue
        out.append(("body:multipart:" + label, "value", content))


_XML_TEXT = re.compile(rb">([^<]{1,65536})<")
_XML_ATTR = re.compile(rb"""\s[\w:.-]{1,64}\s*=\s*(?:"([^"]{0,65536})"|'([^']{0,65536})')""")


def _xml(body: bytes, out: list) -> None:
    n = 0
    for m in _XML_TEXT.finditer(body):
        out.append(("body:xml", "value", m.group(1)))
        n += 1
        if n >= MAX_PARTS:
            return
    for m in _XML_ATTR.finditer(body):
        out.append(("body:xml", "value", m.group(1) if m.group(1) is not None else m.group(2)))
        n += 1
        if n >= MAX_PARTS:
            return
    if b"<!" in body:  # DOCTYPE / ENTITY declarations are judged with the markup around them
        out.append(("body:xml", "body", body))


def collect(raw_target: bytes, headers, body, content_type, exclude_args, exclude_headers,
            body_limit: int) -> list:
    """Every part of a request, in inspection order."""
    return list(iter_parts(raw_target, headers, body, content_type, exclude_args,
                           exclude_headers, body_limit))


def iter_parts(raw_target: bytes, headers, body, content_type, exclude_args, exclude_headers,
               body_limit: int):
    """The same, as a generator: the head's parts first, then the body's one by one."""
    out: list = []
    path, q, query = raw_target.partition(b"?")
    _path_parts(path, out)
    if q:
        for name, value, _ in split_pairs(query):
            lname = name.lower().decode("latin-1")
            if lname in exclude_args:
                continue
            out.append(("args_names", "name", name))
            if value:
                out.append(("args:" + safe_name(name), "value", value))
    for name, value in headers:
        if name in FRAMING_HEADERS or name in exclude_headers or not value:
            continue
        if name == b"cookie":
            _cookies(value, out, exclude_args)
            continue
        if name == b"host":
            host = value.rsplit(b":", 1)[0] if value.count(b":") == 1 else value
            out.append(("headers:host", "header", host))
            continue
        out.append(("headers:" + safe_name(name), "header", value))
        if len(out) > MAX_PARTS:
            break
    yield from out
    if not body:
        return
    if len(body) > body_limit:
        body = body[:body_limit]
    ct = (content_type or b"").lower()
    if ct.startswith(b"application/x-www-form-urlencoded") or (not ct and b"=" in body[:256]):
        n = len(out)
        for name, value, _ in split_pairs(body):
            lname = name.lower().decode("latin-1")
            if lname in exclude_args:
                continue
            yield ("body:form_names", "name", name)
            n += 1
            if value:
                yield ("body:form:" + safe_name(name), "value", value)
                n += 1
            if n > MAX_PARTS:
                break
    elif b"json" in ct:
        yield from _json_body(body, exclude_args)
    elif ct.startswith(b"multipart/"):
        parts: list = []
        _multipart(body, content_type, parts, exclude_args)
        yield from parts
    elif b"xml" in ct:
        parts = []
        _xml(body, parts)
        yield from parts
    else:
        yield ("body", "body", body)
