"""Replays the OWASP CRS regression corpus (../shared/waf-corpus/crs-requests.json) through
``Engine.inspect`` as go-ftw puts the requests on the wire, and prints blocked / total per
class x expect x paranoia level.

    python -m tests.waf.corpus                 # the table (all seven rule classes enabled)
    python -m tests.waf.corpus --rules sqli,xss
    python -m tests.waf.corpus --misses sqli   # attack cases of a class that passed (PL1)
    python -m tests.waf.corpus --blocked-benign xss   # benign cases blocked, with the check

go-ftw's changes (see the corpus README): a body without Content-Type gets
``application/x-www-form-urlencoded``; such a form body with no ``%`` and no ``+`` has each key
and value URL-encoded (Go's url.QueryEscape); multipart bodies get CRLF line ends;
``encoded_request`` is sent verbatim. None of this applies when ``autocomplete_headers`` is
false. Header names are lower-cased, as the gateway's parser hands them over.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections import defaultdict

CORPUS = os.environ.get("FASTGATE_WAF_CORPUS") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "waf-corpus", "crs-requests.json")
CLASSES = ("sqli", "xss", "path_traversal", "command_injection", "rfi", "php", "java", "generic")
ALL_RULES = ("sqli", "xss", "path_traversal", "command_injection", "rfi", "php", "java")

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def query_escape(b: bytes) -> bytes:
    """Go's url.QueryEscape."""
    out = bytearray()
    for c in b:
        if c in _UNRESERVED:
            out.append(c)
        elif c == 0x20:
            out += b"+"
        else:
            out += b"%%%02X" % c
    return bytes(out)


def _go_form_encode(body: bytes) -> bytes:
    items = []
    for item in body.split(b"&"):
        k, eq, v = item.partition(b"=")
        items.append(query_escape(k) + (b"=" + query_escape(v) if eq else b""))
    return b"&".join(items)


def _parse_raw(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, _ = (lines[0].split(b" ", 2) + [b"", b""])[:3]
    headers = []
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        headers.append((n.strip().lower(), v.strip()))
    return method, target, headers, body or None


def build_request(case):
    """(method, raw_target, headers, body, content_type) as go-ftw sends the case."""
    if case.get("encoded_request"):
        method, target, headers, body = _parse_raw(base64.b64decode(case["encoded_request"]))
    else:
        method = case["method"].encode()
        target = case["uri"].encode("utf-8")
        headers = [(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in case["headers"].items()]
        body = case["body"].encode("utf-8") if case.get("body") is not None else None
        if body == b"":
            body = None
        if case.get("autocomplete_headers", True):
            names = {n for n, _ in headers}
            if body is not None and b"content-type" not in names:
                headers.append((b"content-type", b"application/x-www-form-urlencoded"))
            ct = dict(headers).get(b"content-type", b"").lower()
            if body is not None and ct.startswith(b"application/x-www-form-urlencoded") \
                    and b"%" not in body and b"+" not in body:
                body = _go_form_encode(body)
            if body is not None and ct.startswith(b"multipart/form-data"):
                body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            if b"connection" not in names:
                headers.append((b"connection", b"close"))
            if body is not None and b"content-length" not in names:
                headers.append((b"content-length", str(len(body)).encode()))
    ct = None
    for n, v in headers:
        if n == b"content-type":
            ct = v
    return method, target, headers, body, ct


def load_cases(path: str = CORPUS):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["cases"]


def evaluate(engine, cases):
    """{(class, expect, pl): [blocked, total]} and the per-case results."""
    table = defaultdict(lambda: [0, 0])
    results = []
    for case in cases:
        req = build_request(case)
        m, why = engine.explain(*req)
        key = (case["class"], case["expect"], case["pl"])
        table[key][1] += 1
        if m is not None:
            table[key][0] += 1
        results.append((case, m, why))
    return table, results


def format_table(table) -> str:
    pls = (1, 2, 3, 4)
    head = "| class | " + " | ".join(f"attack PL{p}" for p in pls) + " | " + \
        " | ".join(f"benign PL{p}" for p in pls) + " |"
    lines = [head, "|---" * (1 + 2 * len(pls)) + "|"]
    tot = defaultdict(lambda: [0, 0])
    for cls in CLASSES:
        cells = []
        for expect in ("attack", "benign"):
            for p in pls:
                b, t = table.get((cls, expect, p), (0, 0))
                tot[(expect, p)][0] += b
                tot[(expect, p)][1] += t
                cells.append(f"{b}/{t}" + (f" ({100 * b / t:.0f}%)" if t else ""))
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    cells = []
    for expect in ("attack", "benign"):
        for p in pls:
            b, t = tot[(expect, p)]
            cells.append(f"{b}/{t}" + (f" ({100 * b / t:.0f}%)" if t else ""))
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from fastgate.waf import Engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default=",".join(ALL_RULES))
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--misses", metavar="CLASS")
    ap.add_argument("--blocked-benign", metavar="CLASS")
    ap.add_argument("--pl", type=int, default=1)
    args = ap.parse_args(argv)
    engine = Engine(rules=tuple(args.rules.split(",")))
    table, results = evaluate(engine, load_cases(args.corpus))
    print(format_table(table))
    for case, m, why in results:
        show = False
        if args.misses and case["class"] == args.misses and case["expect"] == "attack" \
                and case["pl"] == args.pl and m is None:
            show = True
        if args.blocked_benign and case["class"] == args.blocked_benign and case["expect"] == "benign" \
                and m is not None:
            show = True
        if show:
            req = build_request(case)
            print(case["id"], f"pl{case['pl']}", m and (m.rule, m.part, why), req[1][:150],
                  {k: v[:120] for k, v in case["headers"].items()
                   if k.lower() not in ("host", "user-agent", "accept")},
                  repr((case.get("body") or "")[:200]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
