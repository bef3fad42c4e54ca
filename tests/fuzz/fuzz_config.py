"""The config loader (fastgate.config.parse_config) on arbitrary text and on mutated valid
documents.

Input: byte 0 picks the mode: raw bytes, the same as str, or a valid base document mutated
by the rest of the input (FuzzedDataProvider: replace/delete/add/retype values along a path),
handed over as a dict or dumped as YAML or JSON text.

Invariants: parse_config returns a Config or raises ConfigError, nothing else; a ConfigError
carries at least one error; every error is one line of the shape "key.path: message" (a
non-blank path without leading space, ": ", a non-blank message); the base documents are
valid; the same document gives the same answer twice (checked on a sample).
"""
from __future__ import annotations

import copy
import json

import atheris
import yaml

from fastgate.config import ConfigError, parse_config
from fastgate.config.loader import route_level_keys, top_level_keys

from ._http import check

ENV = {"FG_TOKEN": "t0ken-from-env", "FG_PORT": "8080", "FG_EMPTY": ""}
SECRET = "0123456789abcdef0123456789abcdef-hs"

BASES = [
    {"listeners": [{"bind": "127.0.0.1:8080"}],
     "routes": [{"name": "hello", "paths": ["/hello"], "respond": {"status": 200, "body": "hi"}}]},
    {"listeners": [{"bind": "127.0.0.1:${FG_PORT}"}, {"bind": "[::1]:0"}],
     "admin": {"bind": "127.0.0.1:9901", "token": "${FG_TOKEN}"},
     "drain_timeout_s": 5,
     "limits": {"max_request_line_bytes": 4096, "max_header_bytes": 16384, "max_headers": 50,
                "max_body_bytes": 1048576, "header_timeout_s": 5, "body_timeout_s": 10,
                "keepalive_timeout_s": 30, "max_connections": 100,
                "max_connections_per_ip": 10},
     "upstreams": {"orders": {"targets": [{"url": "http://127.0.0.1:9001", "weight": 2},
                                          {"url": "http://127.0.0.1:9002"}],
                              "balance": "hash", "hash_on": "header:X-User",
                              "connect_timeout_s": 1, "read_timeout_s": 5, "keepalive": 8,
                              "retries": 1, "tls_verify": True,
                              "health_check": {"path": "/health", "interval_s": 5,
                                               "healthy_after": 2, "unhealthy_after": 3}}},
     "consumers": [{"name": "alice", "groups": ["payments"], "jwt_subjects": ["user-1"],
                    "api_keys": ["sha256:" + "ab" * 32]}],
     "auth": {"keys": {"type": "api_key", "header": "X-API-Key", "bearer": True},
              "sso": {"type": "jwt", "issuer": "https://idp.test/", "audiences": ["orders"],
                      "algorithms": ["HS256"], "secret": SECRET, "clock_skew_s": 10,
                      "forward_claims": {"sub": "X-User-Id"}}},
     "routes": [
         {"name": "orders", "hosts": ["api.example.com", "*.example.org"],
          "methods": ["GET", "POST"], "paths": ["/orders", "/orders/{id}", "/static/*"],
          "upstream": "orders", "strip_prefix": "/api", "rewrite": "/v2/orders/{id}",
          "auth": {"using": ["sso", "keys"], "groups": ["payments"]},
          "rate_limits": [{"limit": 100, "per": "second", "burst": 200, "by": "consumer",
                           "scope": "local"}],
          "transform": {"request": {"set_headers": {"X-A": "1"}, "remove_headers": ["X-B"],
                                    "set_query": {"q": "1"}},
                        "response": {"set_headers": {"X-C": "2"}}},
          "cors": {"origins": ["https://app.example.com"], "methods": ["GET"],
                   "headers": ["Authorization"], "credentials": False, "max_age_s": 600},
          "ip": {"allow": ["10.0.0.0/8"], "deny": []},
          "lifecycle": {"state": "published", "sunset": "2027-06-30T00:00:00Z"},
          "max_body_bytes": 1024, "timeout_s": 10},
         {"name": "fixed", "paths": ["/fixed"], "methods": ["GET"],
          "respond": {"status": 404, "body": "nope", "headers": {"X-Why": "test"}}}],
     "logging": {"access_log": "off", "redact_headers": ["authorization"]}},
    # the AI gateway: providers of every type, priced models with fallbacks, chat,
    # embeddings and prompt routes, a token limit and a budget
    {"listeners": [{"bind": "127.0.0.1:8080"}],
     "auth": {"keys": {"type": "api_key", "bearer": True}},
     "consumers": [{"name": "app", "api_keys": ["sha256:" + "cd" * 32]}],
     "ai": {"providers": {
         "oa": {"type": "openai", "api_key": "${FG_TOKEN}"},
         "ant": {"type": "anthropic", "base_url": "https://api.anthropic.com", "api_key": "k"},
         "gem": {"type": "gemini", "api_key": "k", "read_timeout_s": 60},
         "mis": {"type": "mistral", "api_key": "k"},
         "local": {"type": "openai_compatible", "base_url": "http://127.0.0.1:11434/v1",
                   "tls_verify": False}},
         "models": [
             {"name": "fast", "provider": "ant", "model": "claude-haiku-4-5",
              "price": {"input_per_1k": 0.001, "output_per_1k": 0.005},
              "fallbacks": ["backup"]},
             {"name": "backup", "provider": "oa", "model": "gpt-4o-mini",
              "price": {"input_per_1k": 0.00015, "output_per_1k": 0.0006}},
             {"name": "emb", "provider": "gem", "model": "text-embedding-004"},
             {"name": "small", "provider": "mis", "model": "mistral-small"},
             {"name": "llama", "provider": "local", "model": "llama3"}]},
     "routes": [
         {"name": "llm", "paths": ["/v1/chat/completions", "/v1/models"],
          "auth": {"using": ["keys"]}, "ai": {"endpoint": "chat", "models": ["fast", "backup"]},
          "rate_limits": [{"limit": 200000, "per": "minute", "unit": "tokens",
                           "by": "consumer"}],
          "budget": {"usd": 25, "per": "day", "by": "consumer"}},
         {"name": "emb", "paths": ["/v1/embeddings"], "ai": {"endpoint": "embeddings",
                                                             "models": ["emb"]}},
         {"name": "sentiment", "paths": ["/apis/sentiment"], "methods": ["POST"],
          "ai": {"prompt": {"model": "fast", "system": "One word.",
                            "template": "Label: {{text}}", "max_tokens": 5,
                            "temperature": 0.2}}}]},
]

KEYS = sorted(set(top_level_keys()) | set(route_level_keys()) | {
    "bind", "tls", "token", "url", "targets", "weight", "balance", "limit", "per", "burst",
    "by", "scope", "status", "body", "headers", "using", "type", "secret", "algorithms",
    "issuer", "audiences", "jwks_url", "jwks_file", "cert_file", "key_file", "access_log",
    "providers", "models", "provider", "model", "price", "input_per_1k", "output_per_1k",
    "fallbacks", "endpoint", "prompt", "template", "system", "usd", "unit", "base_url",
    "api_key"})
STRINGS = ["127.0.0.1:8080", "[::1]:0", "0.0.0.0:65536", "http://h:1/p", "https://x/",
           "/a/{x}", "/s/*", "/a/{x}/{x}", "GET", "get", "consumer", "header:X", "claim:c",
           "second", "cluster", "tokens", "${FG_TOKEN}", "${MISSING}", "${FG_EMPTY:-d}", "$${",
           "${", "${1}", "off", "*", "10.0.0.0/8", "::/0", "orders", "", "\x00", "a\nb",
           "key: value", "sha256:" + "0" * 64, "none", "HS256", "RS256", "jwt", "api_key",
           "1e999", "0x10", "-1", "\u00e9\u20ac", "\ud800"]


def rand_scalar(fdp):
    k = fdp.ConsumeIntInRange(0, 9)
    if k == 0:
        return None
    if k == 1:
        return fdp.ConsumeBool()
    if k == 2:
        return fdp.ConsumeIntInRange(-2, 70000)
    if k == 3:
        return fdp.ConsumeInt(9)
    if k == 4:
        return fdp.ConsumeFloat()
    if k in (5, 6):
        return STRINGS[fdp.ConsumeIntInRange(0, len(STRINGS) - 1)]
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))


def rand_value(fdp, depth=0):
    k = fdp.ConsumeIntInRange(0, 5)
    if depth < 3 and k == 4:
        return [rand_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if depth < 3 and k == 5:
        return {rand_key(fdp): rand_value(fdp, depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 3))}
    return rand_scalar(fdp)


def rand_key(fdp):
    k = fdp.ConsumeIntInRange(0, 7)
    if k == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if k == 1:
        return fdp.ConsumeIntInRange(-1, 3)
    return KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]


def mutate(doc, fdp):
    """One change somewhere in ``doc``: walk down by input choices, then alter that node."""
    parent, key = None, None
    node = doc
    while isinstance(node, (dict, list)) and node and fdp.ConsumeIntInRange(0, 3):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        node = parent[key]
    op = fdp.ConsumeIntInRange(0, 5)
    if parent is None:
        if isinstance(doc, dict):
            doc[rand_key(fdp)] = rand_value(fdp)
        return
    if op == 0:
        del parent[key]
    elif op == 1 and isinstance(node, dict):
        node[rand_key(fdp)] = rand_value(fdp)
    elif op == 2 and isinstance(node, list):
        node.append(copy.deepcopy(node[0]) if node and fdp.ConsumeBool() else rand_value(fdp))
    elif op == 3:
        parent[key] = [node]
    else:
        parent[key] = rand_value(fdp)


def check_errors(exc: ConfigError):
    check(isinstance(exc.errors, list) and exc.errors, "ConfigError without errors")
    for line in exc.errors:
        check(isinstance(line, str), "error not a str", line)
        check("\n" not in line and "\r" not in line, "error spans lines", line)
        path, sep, msg = line.partition(": ")
        check(sep and path.strip() and path[:1] not in (" ", "\t") and msg.strip(),
              "error line not 'key.path: message'", line)


def load(doc):
    try:
        return parse_config(doc, ENV, base_dir="/nonexistent-fuzz-dir"), None
    except ConfigError as exc:
        check_errors(exc)
        return None, exc.errors


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 6
    if mode == 0:
        load(data[1:])
        return
    if mode == 1:
        load(data[1:].decode("utf-8", "replace"))
        return
    fdp = atheris.FuzzedDataProvider(data[1:])
    doc = copy.deepcopy(BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        mutate(doc, fdp)
    if mode in (2, 3):
        if data[0] & 0x80:   # determinism, on a sample (it doubles the cost of an input)
            first = load(copy.deepcopy(doc))
            again = load(doc)
            check((first[0] is None) == (again[0] is None) and first[1] == again[1],
                  "the same document answered differently")
        else:
            load(doc)
        return
    try:
        text = (yaml.safe_dump(doc, allow_unicode=True) if mode == 4
                else json.dumps(doc, ensure_ascii=False))
    except (ValueError, TypeError, yaml.YAMLError):
        return   # not representable (e.g. NaN in JSON keys); the dict modes cover it
    load(text)


for _base in BASES:
    check(load(copy.deepcopy(_base))[0] is not None, "a base document is not valid",
          load(copy.deepcopy(_base))[1])

SEEDS = [b"\x00" + yaml.safe_dump(b).encode() for b in BASES] + \
        [b"\x01" + json.dumps(b).encode() for b in BASES] + \
        [bytes([m]) + b"\x00\x01\x02\x03\x04\x05\x06\x07" * 4 for m in (2, 3, 4, 5)]
