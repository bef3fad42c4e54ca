"""The AI stream translators (fastgate.ai.providers: OpenAI-format, Anthropic, Gemini) and the
SSE parser on arbitrary provider bytes, split anywhere.

Input (FuzzedDataProvider): which provider and whether the client asked for usage; then
either raw bytes, or a stream built from fuzzer-chosen events of that provider's shape
(text and tool-call deltas, usage, finish reasons, errors, pings, junk fields, wrong types),
serialised as SSE and then maybe mutated; the body is fed in fuzzer-chosen pieces.

Invariants: ``feed``/``finish``/``fail`` return bytes or raise ValueError (a stream the
provider broke), nothing else; everything sent is a sequence of SSE events ``data: X\\n\\n``
where X is ``[DONE]`` or a JSON object (a ``chat.completion.chunk`` with ``choices`` a list,
or an ``{"error": {...}}``); ``[DONE]`` comes at most once and nothing after it; the usage
chunk appears only when the client asked for it; ``usage`` counts are non-negative ints;
the same input split differently gives the same output.
"""
from __future__ import annotations

import atheris
import orjson

from fastgate.ai.providers import ADAPTERS
from fastgate.ai.sse import SSEParser
from fastgate.config.schema import Provider

from ._http import check

PROVIDERS = [
    ADAPTERS["openai"](Provider(name="oa", type="openai", base_url="http://127.0.0.1:1/v1",
                                api_key="sk-fuzz-key-0123456789")),
    ADAPTERS["mistral"](Provider(name="mi", type="mistral", base_url="http://127.0.0.1:1/v1",
                                 api_key="mi-fuzz-key-0123456789")),
    ADAPTERS["anthropic"](Provider(name="an", type="anthropic", base_url="http://127.0.0.1:1",
                                   api_key="sk-ant-fuzz-key-0123456789")),
    ADAPTERS["gemini"](Provider(name="ge", type="gemini", base_url="http://127.0.0.1:1",
                                api_key="AIza-fuzz-key-0123456789")),
]
KEYS = [b"sk-fuzz-key-0123456789", b"mi-fuzz-key-0123456789", b"sk-ant-fuzz-key-0123456789",
        b"AIza-fuzz-key-0123456789"]

WORDS = ["", "hi", " there", "\u00e9", "\U0001F600", "{", "\"", "\\", "\n", "data: x",
         "[DONE]", "null"]
FINISH = [None, "stop", "length", "tool_calls", "content_filter", "end_turn", "max_tokens",
          "stop_sequence", "tool_use", "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "weird",
          7]


def _val(fdp):
    k = fdp.ConsumeIntInRange(0, 7)
    if k == 0:
        return None
    if k == 1:
        return fdp.ConsumeIntInRange(-3, 1 << 40)
    if k == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if k == 3:
        return [1, "a"]
    if k == 4:
        return {"x": 1}
    if k == 5:
        return fdp.ConsumeBool()
    return WORDS[fdp.ConsumeIntInRange(0, len(WORDS) - 1)]


def _pick(fdp, seq):
    return seq[fdp.ConsumeIntInRange(0, len(seq) - 1)]


def _usage_openai(fdp):
    return {"prompt_tokens": _val(fdp) if fdp.ConsumeIntInRange(0, 5) == 0 else
            fdp.ConsumeIntInRange(0, 5000),
            "completion_tokens": fdp.ConsumeIntInRange(0, 5000),
            "total_tokens": fdp.ConsumeIntInRange(0, 9000)}


def _event_openai(fdp):
    k = fdp.ConsumeIntInRange(0, 6)
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    if k == 0:
        return None, {**base, "choices": [], "usage": _usage_openai(fdp)}
    if k == 1:
        return None, {**base, "choices": [{"index": 0, "delta": {
            "tool_calls": [{"index": fdp.ConsumeIntInRange(0, 3),
                            "id": _val(fdp), "type": "function",
                            "function": {"name": _val(fdp), "arguments": _val(fdp)}}]},
            "finish_reason": None}]}
    if k == 2:
        return None, {"error": {"message": _val(fdp), "type": "server_error"}}
    if k == 3:
        return None, {**base, "choices": _val(fdp)}
    return None, {**base, "choices": [{"index": 0, "delta": {
        "role": "assistant", "content": _val(fdp)}, "finish_reason": _pick(fdp, FINISH)}],
        "usage": None}


def _event_anthropic(fdp):
    k = fdp.ConsumeIntInRange(0, 9)
    if k == 0:
        return "message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "c", "usage": {"input_tokens": fdp.ConsumeIntInRange(0, 9000),
                                    "cache_read_input_tokens": _val(fdp),
                                    "output_tokens": fdp.ConsumeIntInRange(0, 3)}}}
    if k == 1:
        block = ({"type": "text", "text": ""} if fdp.ConsumeBool() else
                 {"type": "tool_use", "id": _val(fdp), "name": _val(fdp), "input": {}})
        return "content_block_start", {"type": "content_block_start",
                                       "index": fdp.ConsumeIntInRange(0, 3),
                                       "content_block": block}
    if k in (2, 3):
        delta = ({"type": "text_delta", "text": _val(fdp)} if fdp.ConsumeBool() else
                 {"type": "input_json_delta", "partial_json": _val(fdp)})
        return "content_block_delta", {"type": "content_block_delta",
                                       "index": fdp.ConsumeIntInRange(0, 3), "delta": delta}
    if k == 4:
        return "content_block_stop", {"type": "content_block_stop",
                                      "index": fdp.ConsumeIntInRange(0, 3)}
    if k == 5:
        return "message_delta", {"type": "message_delta", "delta": {
            "stop_reason": _pick(fdp, FINISH)}, "usage": {
            "output_tokens": fdp.ConsumeIntInRange(0, 9000)}}
    if k == 6:
        return "message_stop", {"type": "message_stop"}
    if k == 7:
        return "error", {"type": "error", "error": {"type": "overloaded_error",
                                                    "message": _val(fdp)}}
    if k == 8:
        return "ping", {"type": "ping"}
    return _pick(fdp, ["x", "message_start", None]), {"type": _val(fdp)}


def _event_gemini(fdp):
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        if fdp.ConsumeBool():
            parts.append({"text": _val(fdp)})
        else:
            parts.append({"functionCall": {"name": _val(fdp), "args": _val(fdp)}})
    doc = {"candidates": [{"content": {"role": "model", "parts": parts},
                           "finishReason": _pick(fdp, FINISH), "index": 0}]}
    if fdp.ConsumeBool():
        doc["usageMetadata"] = {"promptTokenCount": fdp.ConsumeIntInRange(0, 9000),
                                "candidatesTokenCount": fdp.ConsumeIntInRange(0, 9000),
                                "thoughtsTokenCount": _val(fdp),
                                "totalTokenCount": fdp.ConsumeIntInRange(0, 20000)}
    if fdp.ConsumeIntInRange(0, 9) == 0:
        doc = {"error": {"code": 500, "message": _val(fdp), "status": "INTERNAL"}}
    return None, doc


EVENTS = [_event_openai, _event_openai, _event_anthropic, _event_gemini]


def _body(fdp, which) -> bytes:
    if fdp.ConsumeIntInRange(0, 4) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
    out = []
    for _ in range(fdp.ConsumeIntInRange(0, 14)):
        name, doc = EVENTS[which](fdp)
        nl = b"\r\n" if fdp.ConsumeIntInRange(0, 7) == 0 else b"\n"
        if name is not None:
            out.append(b"event: " + str(name).encode() + nl)
        out.append(b"data: " + orjson.dumps(doc) + nl + nl)
        if fdp.ConsumeIntInRange(0, 9) == 0:
            out.append(b": comment" + nl)
    if which < 2 and fdp.ConsumeBool():
        out.append(b"data: [DONE]\n\n")
    body = b"".join(out)
    if body and fdp.ConsumeIntInRange(0, 3) == 0:       # one byte changed, dropped or added
        i = fdp.ConsumeIntInRange(0, len(body) - 1)
        k = fdp.ConsumeIntInRange(0, 2)
        b = bytes([fdp.ConsumeIntInRange(0, 255)])
        body = body[:i] + (b + body[i + 1:] if k == 0 else body[i + 1:] if k == 1
                           else b + body[i:])
    return body


def _run(which, include_usage, body, cuts):
    tr = PROVIDERS[which].chat_stream("fuzz-model", include_usage)
    out = []
    broken = False
    pos = 0
    try:
        for c in cuts + [len(body)]:
            if c < pos:
                continue
            out.append(tr.feed(body[pos:c]))
            pos = c
        out.append(tr.finish())
    except ValueError:
        broken = True
        out.append(tr.fail("the provider sent an invalid stream"))
    for piece in out:
        check(isinstance(piece, bytes), f"translator returned {type(piece).__name__}")
    u = tr.usage
    for f in ("input_tokens", "output_tokens", "cached_tokens"):
        v = getattr(u, f)
        check(type(v) is int and v >= 0, f"usage.{f} = {v!r}")
    return b"".join(out), broken


def _check_sse(sent: bytes, include_usage: bool):
    parser = SSEParser()
    events = parser.feed(sent)
    check(parser.close() == [], "the output ends inside an event")
    done = False
    for _event, data in events:
        check(not done, "an event after [DONE]")
        if data == "[DONE]":
            done = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            check(False, f"event is not JSON: {data[:80]!r}")
        check(isinstance(doc, dict), "event is not a JSON object")
        if "error" in doc:
            check(isinstance(doc["error"], dict) and isinstance(
                doc["error"].get("message"), str), "malformed error event")
            continue
        check(doc.get("object") == "chat.completion.chunk", "not a chat.completion.chunk")
        check(isinstance(doc.get("choices"), list), "choices is not a list")
        if doc.get("usage") is not None:
            check(include_usage, "a usage chunk the client did not ask for")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, len(PROVIDERS) - 1)
    include_usage = fdp.ConsumeBool()
    body = _body(fdp, which)
    cuts = sorted(fdp.ConsumeIntInRange(0, len(body)) for _ in range(
        fdp.ConsumeIntInRange(0, 6))) if body else []
    sent, broken = _run(which, include_usage, body, cuts)
    _check_sse(sent, include_usage)
    for key in KEYS:
        check(key not in sent, "a provider key in the output")
    # the same body in one piece gives the same answer
    whole, broken2 = _run(which, include_usage, body, [])
    check(broken == broken2 and _normal(whole) == _normal(sent),
          "the output depends on how the body was split")


def _normal(sent: bytes) -> bytes:
    """The output without its per-stream ids and times."""
    out = []
    for _e, data in SSEParser().feed(sent):
        if data == "[DONE]":
            out.append(b"[DONE]")
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            out.append(data.encode())
            continue
        if isinstance(doc, dict):
            doc.pop("id", None)
            doc.pop("created", None)
            for ch in doc.get("choices") or ():      # tool-call ids made up per stream
                for tc in (ch.get("delta") or {}).get("tool_calls") or ():
                    if isinstance(tc, dict) and isinstance(tc.get("id"), str) and \
                            tc["id"].startswith("call_"):
                        tc["id"] = "call_"
        out.append(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    return b"\n".join(out)


SEEDS = [
    b"\x00\x01" + b"\x05" * 64,
    b"\x02\x01" + b"\x03" * 64,
    b"\x03\x00" + b"\x07" * 64,
    b"\x01\x01" + b"\x02" * 64,
]
