"""The AI scenarios' fixed data: the client's chat request, the fake OpenAI provider's answers
(precomputed bytes, served by ``benchmarks.upstream``) and the checks that an answer relayed
by a gateway is still the fake's answer.

The fake serves ``POST /ai/<chunks>/<gap_ms>/v1/chat/completions`` (and, with 20 chunks and no
gap, ``/v1/chat/completions``): every target is configured with the base URL
``http://127.0.0.1:<port>/ai/<chunks>/<gap_ms>/v1``, so the stream's shape travels in the URL
and the fake never parses JSON. It looks for ``"stream": true`` / ``"stream":true`` and
``"include_usage": true`` in the body, nothing else. A stream is: the role chunk and the first
content chunk at once, then one content chunk every ``gap_ms`` (``chunks`` in all), then the
finish chunk, the usage chunk (with ``stream_options.include_usage``) and ``data: [DONE]``.
"""
from __future__ import annotations

import json

MODEL = "bench-chat"              # the model the client asks for, the same name everywhere
PROVIDER_KEY = "sk-fake-provider"  # what the gateways send to the fake
LITELLM_KEY = "sk-bench"           # LiteLLM's master key, the client's API key for it
CLIENT_KEY = "sk-bench-client"     # what clients of gateways without auth send (ignored)
DEFAULT_CHUNKS = 20

# A realistic chat request: a system and a user message, model, max_tokens (~450 bytes).
_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant for an online hardware store. "
     "Answer in two or three sentences, name the product, and never invent prices or stock "
     "levels."},
    {"role": "user", "content": "I am choosing between the 18V compact drill and the 20V "
     "hammer drill to hang shelves on the brick walls of my flat. Which one should I buy, "
     "and do I need special bits?"},
]


def _dumps(obj) -> bytes:
    # compact, as the OpenAI SDKs send it
    return json.dumps(obj, separators=(",", ":")).encode()


CHAT_BODY = _dumps({"model": MODEL, "messages": _MESSAGES, "max_tokens": 256,
                    "temperature": 0.2})
STREAM_BODY = _dumps({"model": MODEL, "messages": _MESSAGES, "max_tokens": 256,
                      "temperature": 0.2, "stream": True,
                      "stream_options": {"include_usage": True}})

# The answer. Its first words are the time-to-first-token marker: a gateway that sends
# something before the provider answered (headers, a comment, a keep-alive) is not credited.
FIRST_TOKEN = "For brick walls,"
ANSWER = (FIRST_TOKEN + " take the 20V hammer drill: its hammer mode drives through brick and "
          "mortar that the 18V compact drill struggles with, and it still drills wood and "
          "plasterboard for the shelves themselves. Use masonry bits sized for your wall plugs, "
          "usually 6 or 8 mm, and switch the hammer mode off for tiles.")
PROMPT_TOKENS = 96
COMPLETION_TOKENS = 64
USAGE = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
         "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                       "accepted_prediction_tokens": 0,
                                       "rejected_prediction_tokens": 0}}
_ID = "chatcmpl-fastgatebench000000000000001"
_CREATED = 1764547200
_UPSTREAM_MODEL = "bench-chat-2026-01-01"
_FP = "fp_bench0001"

CHAT_JSON = _dumps({
    "id": _ID, "object": "chat.completion", "created": _CREATED, "model": _UPSTREAM_MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER,
                                         "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": USAGE, "service_tier": "default", "system_fingerprint": _FP})

# what every relayed answer must contain (the load generator checks each one)
CHAT_MARKERS = (FIRST_TOKEN.encode(), b'"completion_tokens"')
STREAM_MARKERS = (FIRST_TOKEN.encode(), b'"completion_tokens"', b"[DONE]")


def pieces(n: int) -> list[str]:
    """ANSWER in n content chunks: the first is FIRST_TOKEN, the rest share the other words."""
    n = max(1, int(n))
    rest = ANSWER[len(FIRST_TOKEN):].split(" ")[1:]
    if n == 1:
        return [ANSWER]
    out = [FIRST_TOKEN]
    k = n - 1
    for i in range(k):
        words = rest[i * len(rest) // k:(i + 1) * len(rest) // k]
        out.append(" " + " ".join(words) if words else "")
    return out


def _chunk(delta, finish=None, usage=False, choices=True) -> bytes:
    obj = {"id": _ID, "object": "chat.completion.chunk", "created": _CREATED,
           "model": _UPSTREAM_MODEL, "service_tier": "default", "system_fingerprint": _FP,
           "choices": ([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                       if choices else [])}
    if usage:
        obj["usage"] = None
    return b"data: " + _dumps(obj) + b"\n\n"


def stream_events(n: int, include_usage: bool) -> tuple[bytes, list[bytes], bytes]:
    """(first event bytes: role + first content chunk, the other content events, the end:
    finish chunk, usage chunk when asked, [DONE]) as SSE event bytes, unframed."""
    ps = pieces(n)
    u = include_usage
    first = (_chunk({"role": "assistant", "content": "", "refusal": None}, usage=u)
             + _chunk({"content": ps[0]}, usage=u))
    middle = [_chunk({"content": p}, usage=u) for p in ps[1:]]
    end = _chunk({}, finish="stop", usage=u)
    if u:
        obj = {"id": _ID, "object": "chat.completion.chunk", "created": _CREATED,
               "model": _UPSTREAM_MODEL, "service_tier": "default",
               "system_fingerprint": _FP, "choices": [], "usage": USAGE}
        end += b"data: " + _dumps(obj) + b"\n\n"
    end += b"data: [DONE]\n\n"
    return first, middle, end


def upstream_path(chunks: int, gap_ms: float) -> str:
    """The fake's base path for this stream shape (append /chat/completions)."""
    return f"/ai/{int(chunks)}/{gap_ms:g}/v1"


# --- checking relayed answers (the harness's probe; the load generator checks markers) -------

class BadAnswer(Exception):
    pass


def check_chat(data: bytes) -> str:
    try:
        obj = json.loads(data)
        content = obj["choices"][0]["message"]["content"]
        usage = obj.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BadAnswer(f"not a chat.completion ({e!r}): {data[:200]!r}") from None
    if content != ANSWER:
        raise BadAnswer(f"the answer's content changed: {str(content)[:120]!r}")
    if usage.get("completion_tokens") != COMPLETION_TOKENS:
        raise BadAnswer(f"usage not relayed: {usage!r}")
    return (f"chat.completion intact, usage {usage.get('prompt_tokens')}+"
            f"{usage.get('completion_tokens')} tokens, {len(data)} bytes")


def check_stream(data: bytes, want_usage: bool = True) -> str:
    """The relayed SSE body: the content intact, the usage chunk, data: [DONE] last."""
    events = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].strip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if lines:
            events.append(b"\n".join(lines))
    if not events:
        raise BadAnswer(f"no SSE data events: {data[:200]!r}")
    if events[-1] != b"[DONE]":
        raise BadAnswer(f"the stream does not end with data: [DONE]: {events[-1][:120]!r}")
    text, content_events, usage = [], 0, None
    for ev in events[:-1]:
        try:
            obj = json.loads(ev)
        except ValueError:
            raise BadAnswer(f"an event is not JSON: {ev[:120]!r}") from None
        if "error" in obj:
            raise BadAnswer(f"error event: {ev[:200]!r}")
        for ch in obj.get("choices") or ():
            c = (ch.get("delta") or {}).get("content")
            if c:
                text.append(c)
                content_events += 1
        if obj.get("usage"):
            usage = obj["usage"]
    if "".join(text) != ANSWER:
        raise BadAnswer(f"the streamed content changed: {''.join(text)[:120]!r}")
    if want_usage and (usage or {}).get("completion_tokens") != COMPLETION_TOKENS:
        raise BadAnswer(f"no usage chunk with the provider's count (got {usage!r}) although "
                        "the request set stream_options.include_usage")
    return (f"{content_events} content chunks, text intact, usage "
            f"{(usage or {}).get('prompt_tokens')}+{(usage or {}).get('completion_tokens')}, "
            f"[DONE] last, {len(events)} events")
