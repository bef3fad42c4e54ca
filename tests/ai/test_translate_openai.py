"""OpenAI wire format adapters (openai, openai_compatible, mistral): passthrough, usage,
streams, errors, embeddings; plus the shared key scrubber."""
import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgate.ai.providers import ADAPTERS, ProviderRequest, Usage
from fastgate.ai.providers.common import Scrubber
from fastgate.ai.providers.openai import mistral_id
from fastgate.config.schema import Provider

KEY = "sk-proj-Zx81KqLmN0pQrStUvWxYz1234567890abcdEF"


def adapter(typ="openai", base="https://api.openai.com/v1", key=KEY):
    return ADAPTERS[typ](Provider(name="oa", type=typ, base_url=base, api_key=key))


def events(out: bytes):
    """OpenAI SSE bytes -> list of decoded data payloads ("[DONE]" kept as the string)."""
    assert out.endswith(b"\n\n") or out == b""
    res = []
    for block in out.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: "), block
        d = block[6:]
        res.append("[DONE]" if d == b"[DONE]" else orjson.loads(d))
    return res


def sse(*objs, done=True):
    out = b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta=None, finish=None, usage="absent", choices=True, model="gpt-4o-2024-08-06"):
    c = {"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1700000000,
         "model": model, "system_fingerprint": "fp_1",
         "choices": ([{"index": 0, "delta": delta or {}, "logprobs": None,
                       "finish_reason": finish}] if choices else [])}
    if usage != "absent":
        c["usage"] = usage
    return c


UP_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def upstream_stream(include_usage_nulls=True):
    u = None if include_usage_nulls else "absent"
    return sse(chunk({"role": "assistant", "content": "", "refusal": None}, usage=u),
               chunk({"content": "Hel"}, usage=u), chunk({"content": "lo"}, usage=u),
               chunk({}, "stop", usage=u), chunk(choices=False, usage=UP_USAGE))


def run_stream(tr, data: bytes, split=None):
    if split is None:
        return tr.feed(data) + tr.finish()
    out = b""
    for i in range(0, len(data), split):
        out += tr.feed(data[i:i + split])
    return out + tr.finish()


# --- base URL ----------------------------------------------------------------------------

def test_base_url_parsed():
    a = adapter("openai_compatible", "http://127.0.0.1:9000/v1", None)
    assert (a.scheme, a.host, a.port, a.base_path) == ("http", "127.0.0.1", 9000, b"/v1")
    a = adapter()
    assert (a.scheme, a.host, a.port, a.base_path) == ("https", "api.openai.com", 443, b"/v1")
    a = adapter("mistral", "https://api.mistral.ai/v1/")
    assert a.base_path == b"/v1"
    assert adapter("openai_compatible", "http://localhost:11434", None).base_path == b""
    with pytest.raises(ValueError):
        adapter(base="ftp://x")


def test_registered_types():
    assert {"openai", "openai_compatible", "mistral", "anthropic", "gemini"} <= set(ADAPTERS)


# --- requests ----------------------------------------------------------------------------

BODY = {"model": "fast", "messages": [{"role": "system", "content": "s"},
                                      {"role": "user", "content": "hi"}],
        "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "f"}}]}


def test_request_passthrough_model_rewritten():
    body = dict(BODY)
    r = adapter().chat_request("gpt-4o-mini", body, False)
    assert isinstance(r, ProviderRequest)
    assert r.method == b"POST" and r.path == b"/v1/chat/completions"
    sent = orjson.loads(r.body)
    assert sent == {**BODY, "model": "gpt-4o-mini"}
    assert body == BODY                            # the client's dict is not modified
    h = dict(r.headers)
    assert h[b"authorization"] == b"Bearer " + KEY.encode()
    assert h[b"content-type"] == b"application/json"
    assert all(k == k.lower() and k not in (b"host", b"content-length") for k, _ in r.headers)


def test_stream_request_always_asks_usage():
    r = adapter().chat_request("gpt-4o", {**BODY, "stream": True}, True)
    sent = orjson.loads(r.body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    r = adapter().chat_request("gpt-4o", {**BODY, "stream": True, "stream_options": {
        "include_usage": False, "include_obfuscation": False}}, True)
    assert orjson.loads(r.body)["stream_options"] == {"include_usage": True,
                                                      "include_obfuscation": False}


def test_non_stream_request_drops_stream_options():
    r = adapter().chat_request("gpt-4o", {**BODY, "stream_options": {"include_usage": True}},
                               False)
    assert "stream_options" not in orjson.loads(r.body)


def test_openai_compatible_without_key_sends_no_authorization():
    a = adapter("openai_compatible", "http://127.0.0.1:11434/v1", None)
    r = a.chat_request("llama3", BODY, False)
    assert b"authorization" not in dict(r.headers)
    assert r.path == b"/v1/chat/completions"


# --- responses ---------------------------------------------------------------------------

RESPONSE = {
    "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_x",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls",
                 "message": {"role": "assistant", "content": None, "refusal": None,
                             "tool_calls": [
                                 {"id": "call_1", "type": "function",
                                  "function": {"name": "a", "arguments": "{\"x\":1}"}},
                                 {"id": "call_2", "type": "function",
                                  "function": {"name": "b", "arguments": "{}"}}]}}],
    "usage": UP_USAGE}


def test_response_model_rewritten_and_usage():
    doc, usage = adapter().chat_response(orjson.dumps(RESPONSE), "fast")
    assert doc["model"] == "fast"
    assert {k: v for k, v in doc.items() if k != "model"} == \
        {k: v for k, v in RESPONSE.items() if k != "model"}
    assert usage == Usage(input_tokens=11, output_tokens=7, cached_tokens=4, reported=True)
    ChatCompletion.model_validate(doc)


def test_response_without_usage_not_reported():
    r = {k: v for k, v in RESPONSE.items() if k != "usage"}
    _, usage = adapter("openai_compatible", "http://127.0.0.1:1/v1", None).chat_response(
        orjson.dumps(r), "m")
    assert usage == Usage()


def test_response_garbage_raises():
    with pytest.raises(ValueError):
        adapter().chat_response(b"<html>", "m")
    with pytest.raises(ValueError):
        adapter().chat_response(b"[1]", "m")


# --- streams -----------------------------------------------------------------------------

@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_relay(include_usage):
    tr = adapter().chat_stream("fast", include_usage)
    out = run_stream(tr, upstream_stream())
    evs = events(out)
    assert evs[-1] == "[DONE]" and evs.count("[DONE]") == 1
    chunks = [ChatCompletionChunk.model_validate(e) for e in evs[:-1]]
    assert all(c.model == "fast" for c in chunks)
    assert all("usage" not in e for e in evs[:4])            # stripped from content chunks
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[3].choices[0].finish_reason == "stop"
    if include_usage:
        assert len(chunks) == 5 and chunks[4].choices == []
        assert evs[4]["usage"] == UP_USAGE and evs[4]["id"] == "chatcmpl-up1"
    else:
        assert len(chunks) == 4
    assert tr.usage == Usage(11, 7, 4, True)


def test_stream_every_split_same_output():
    data = upstream_stream()
    whole = events(run_stream(adapter().chat_stream("fast", True), data))
    for n in (1, 2, 3, 5, 7, 64):
        assert events(run_stream(adapter().chat_stream("fast", True), data, n)) == whole


def test_stream_is_incremental():
    tr = adapter().chat_stream("fast", False)
    data = upstream_stream()
    first = data.index(b"\n\n") + 2
    out = tr.feed(data[:first])
    assert events(out)[0]["choices"][0]["delta"]["role"] == "assistant"
    assert tr.feed(data[first:first + 3]) == b""
    rest = tr.feed(data[first + 3:])
    assert b"Hel" in rest and b"[DONE]" not in rest        # [DONE] comes from finish()
    assert events(tr.finish()) == ["[DONE]"]


def test_stream_without_done_but_finished_is_complete():
    data = upstream_stream()[:-len(b"data: [DONE]\n\n")]
    evs = events(run_stream(adapter().chat_stream("fast", False), data))
    assert evs[-1] == "[DONE]" and not any(isinstance(e, dict) and "error" in e for e in evs)


def test_stream_truncated_ends_with_error_event():
    data = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), done=False)
    tr = adapter().chat_stream("fast", True)
    evs = events(run_stream(tr, data))
    assert "error" in evs[-2] and evs[-1] == "[DONE]"
    assert evs[-2]["error"]["type"] == "server_error"


def test_stream_midstream_error_event():
    data = sse(chunk({"role": "assistant", "content": ""}),
               {"error": {"message": "boom " + KEY, "type": "server_error"}}, done=False)
    tr = adapter().chat_stream("fast", False)
    out = tr.feed(data)
    evs = events(out)
    assert evs[-1] == "[DONE]" and "boom" in evs[-2]["error"]["message"]
    assert KEY not in out.decode() and KEY[:12] not in out.decode()
    assert tr.feed(b"data: {}\n\n") == b"" and tr.finish() == b"" and tr.fail("x") == b""


def test_fail_format():
    tr = adapter().chat_stream("fast", False)
    out = tr.fail("upstream timed out")
    assert out.endswith(b"\n\ndata: [DONE]\n\n")
    e = events(out)[0]["error"]
    assert e["message"] == "upstream timed out" and e["type"] == "server_error" and e["code"]
    assert tr.fail("again") == b""


def test_stream_unreadable_event_fails():
    tr = adapter().chat_stream("fast", False)
    evs = events(tr.feed(b"data: {not json\n\n"))
    assert "error" in evs[0] and evs[1] == "[DONE]"


def test_stream_tool_call_deltas_relayed():
    tc0 = {"index": 0, "id": "call_a", "type": "function",
           "function": {"name": "a", "arguments": ""}}
    tc1 = {"index": 1, "id": "call_b", "type": "function",
           "function": {"name": "b", "arguments": ""}}
    data = sse(chunk({"role": "assistant", "content": None, "tool_calls": [tc0]}),
               chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\""}}]}),
               chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
               chunk({"tool_calls": [tc1]}),
               chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
               chunk({}, "tool_calls"))
    evs = events(run_stream(adapter().chat_stream("fast", False), data, 9))
    from openai.lib.streaming.chat import ChatCompletionStreamState
    st = ChatCompletionStreamState()
    for e in evs[:-1]:
        st.handle_chunk(ChatCompletionChunk.model_validate(e))
    final = st.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == \
        [("call_a", "a", '{"x":1}'), ("call_b", "b", "{}")]
    assert final.choices[0].finish_reason == "tool_calls"


# --- mistral -----------------------------------------------------------------------------

def test_mistral_request():
    a = adapter("mistral", "https://api.mistral.ai/v1")
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "max_completion_tokens": 50, "seed": 3, "user": "u1",
            "messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "call_abcdefghijklmnop", "type": "function",
                              "function": {"name": "f", "arguments": "{}"}},
                             {"id": "Ab3dE6gH9", "type": "function",
                              "function": {"name": "g", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "call_abcdefghijklmnop", "content": "1"},
                         {"role": "tool", "tool_call_id": "Ab3dE6gH9", "content": "2"}]}
    orig = orjson.dumps(body)
    r = a.chat_request("mistral-large-latest", body, True)
    assert orjson.dumps(body) == orig                     # client body untouched
    sent = orjson.loads(r.body)
    assert r.path == b"/v1/chat/completions"
    assert "stream_options" not in sent and "max_completion_tokens" not in sent
    assert sent["max_tokens"] == 50 and sent["random_seed"] == 3 and "seed" not in sent
    assert "user" not in sent and sent["stream"] is True
    ids = [tc["id"] for tc in sent["messages"][1]["tool_calls"]]
    assert ids[1] == "Ab3dE6gH9" and len(ids[0]) == 9 and ids[0].isalnum()
    assert [m["tool_call_id"] for m in sent["messages"][2:]] == ids
    assert mistral_id("call_abcdefghijklmnop") == ids[0]     # stable


@pytest.mark.parametrize("include_usage", [False, True])
def test_mistral_stream_usage_on_last_choice_chunk(include_usage):
    u = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    data = sse(chunk({"role": "assistant", "content": ""}, model="mistral-small"),
               chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]},
                                  {"type": "text", "text": "Hi"}]}, model="mistral-small"),
               chunk({"tool_calls": [{"id": "abcABC123", "function": {"name": "f", "arguments": "{}"}},
                                     {"id": "xyzXYZ789", "function": {"name": "g", "arguments": "{\"a\":2}"}}]},
                     model="mistral-small"),
               chunk({"content": ""}, "tool_calls", usage=u, model="mistral-small"))
    tr = adapter("mistral", "https://api.mistral.ai/v1").chat_stream("fast", include_usage)
    evs = events(run_stream(tr, data))
    chunks = [ChatCompletionChunk.model_validate(e) for e in evs[:-1]]
    assert "usage" not in evs[3]
    assert chunks[1].choices[0].delta.content == "Hi"
    assert [t.index for t in chunks[2].choices[0].delta.tool_calls] == [0, 1]
    assert chunks[2].choices[0].delta.tool_calls[0].type == "function"
    if include_usage:
        assert evs[4]["choices"] == [] and evs[4]["usage"] == u and evs[4]["model"] == "fast"
    else:
        assert len(chunks) == 4
    assert tr.usage == Usage(9, 3, 0, True)


def test_mistral_response_content_list_flattened():
    r = {"id": "x", "object": "chat.completion", "created": 1, "model": "magistral",
         "choices": [{"index": 0, "finish_reason": "stop", "message": {
             "role": "assistant", "content": [{"type": "thinking", "thinking": []},
                                              {"type": "text", "text": "Answer"}]}}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    doc, usage = adapter("mistral", "https://api.mistral.ai/v1").chat_response(
        orjson.dumps(r), "fast")
    assert doc["choices"][0]["message"]["content"] == "Answer"
    assert usage == Usage(5, 2, 0, True)
    ChatCompletion.model_validate(doc)


# --- errors ------------------------------------------------------------------------------

def err(status, doc, a=None):
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    st, body = (a or adapter()).error_response(status, raw)
    text = body.decode()
    assert KEY not in text
    for i in range(len(KEY) - 7):
        assert KEY[i:i + 8] not in text, KEY[i:i + 8]
    d = orjson.loads(body)
    assert set(d) == {"error"} and set(d["error"]) == {"message", "type", "param", "code"}
    assert isinstance(d["error"]["message"], str) and d["error"]["message"]
    return st, d["error"]


def test_error_401_is_generic_502():
    st, e = err(401, {"error": {"message": "Incorrect API key provided: sk-proj-********"
                                           "**************************90abcdEF. You can find "
                                           "your API key at https://platform.openai.com.",
                                "type": "invalid_request_error", "param": None,
                                "code": "invalid_api_key"}})
    assert st == 502 and "credentials" in e["message"] and "sk-" not in e["message"]


def test_error_403_generic():
    st, e = err(403, {"error": {"message": "Project " + KEY + " lacks access",
                                "type": "invalid_request_error"}})
    assert st == 502 and "credentials" in e["message"]


def test_error_invalid_api_key_code_any_status():
    st, _ = err(400, {"error": {"message": "bad key", "code": "invalid_api_key"}})
    assert st == 502


def test_error_4xx_kept_and_key_scrubbed():
    st, e = err(400, {"error": {"message": "weird: key " + KEY[3:20] + " echoed",
                                "type": "invalid_request_error", "param": "messages",
                                "code": "bad"}})
    assert st == 400 and e["type"] == "invalid_request_error" and e["param"] == "messages"
    assert e["message"].startswith("weird: key ") and "***" in e["message"]
    assert e["code"] == "bad"


def test_error_status_classes():
    assert err(429, {"error": {"message": "slow down", "type": "requests",
                               "code": "rate_limit_exceeded"}})[0] == 429
    st, e = err(500, {"error": {"message": "oops", "type": None}})
    assert st == 500 and e["type"] == "server_error"
    assert err(503, {"error": {"message": "overloaded"}})[0] == 503
    assert err(404, {"error": {"message": "The model `x` does not exist"}})[0] == 404


def test_error_unparseable_generic():
    st, e = err(500, b"<html>internal " + KEY.encode() + b"</html>")
    assert st == 500 and "500" in e["message"] and "html" not in e["message"]
    st, e = err(400, b"")
    assert st == 400
    st, e = err(302, b"moved")
    assert st == 502


def test_error_mistral_and_other_shapes():
    m = adapter("mistral", "https://api.mistral.ai/v1")
    st, e = err(422, {"object": "error", "message": {"detail": [{"type": "extra_forbidden"}]},
                      "type": "invalid_request_error", "param": None, "code": None}, m)
    assert st == 422 and "extra_forbidden" in e["message"]
    st, e = err(401, {"message": "Unauthorized", "request_id": "r"}, m)
    assert st == 502
    st, e = err(400, {"error": "model 'x' not found"},
                adapter("openai_compatible", "http://127.0.0.1:1/v1", None))
    assert st == 400 and e["message"] == "model 'x' not found"


# --- scrubber ----------------------------------------------------------------------------

def test_scrubber():
    s = Scrubber("abcdefghijklmnop")
    assert s("x abcdefghijklmnop y") == "x *** y"
    assert s("x cdefghij y") == "x *** y"             # any 8+ substring
    assert s("x cdefghi y") == "x cdefghi y"           # 7 chars: kept
    assert s("abcdefgh..ijklmnop") == "***..***"
    assert s("plain text") == "plain text"
    assert Scrubber("short")("a short key") == "a *** key"
    assert Scrubber(None)("anything") == "anything"
    assert s(None) is None and s(5) == 5


# --- embeddings --------------------------------------------------------------------------

def test_embeddings_passthrough():
    a = adapter()
    body = {"model": "emb", "input": ["a", "b"], "encoding_format": "float"}
    r = a.embeddings_request("text-embedding-3-small", body)
    assert r.path == b"/v1/embeddings" and r.method == b"POST"
    assert orjson.loads(r.body) == {**body, "model": "text-embedding-3-small"}
    resp = {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                     {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    doc, usage = a.embeddings_response(orjson.dumps(resp), "emb")
    assert doc["model"] == "emb" and doc["data"] == resp["data"]
    assert usage == Usage(2, 0, 0, True)
    CreateEmbeddingResponse.model_validate(doc)


def test_mistral_embeddings_dimensions():
    r = adapter("mistral", "https://api.mistral.ai/v1").embeddings_request(
        "mistral-embed", {"model": "e", "input": "x", "dimensions": 256})
    sent = orjson.loads(r.body)
    assert sent["output_dimension"] == 256 and "dimensions" not in sent
