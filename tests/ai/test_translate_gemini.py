"""Gemini adapter: request translation (checked against google-genai's pydantic types, which
forbid unknown fields), responses, streams (every split), usage, thought signatures,
embeddings, errors."""
import base64
import struct

import orjson
import pytest
from google.genai import types as gt
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgate.ai.providers import ADAPTERS, Usage
from fastgate.ai.providers.gemini import SKIP_SIGNATURE, call_id, signature_of
from fastgate.config.schema import Provider

KEY = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
SIG = base64.b64encode(bytes(range(200, 256)) + b"\xfb\xff\xfe").decode()   # has + / =


def adapter(base="https://generativelanguage.googleapis.com", key=KEY):
    return ADAPTERS["gemini"](Provider(name="gem", type="gemini", base_url=base, api_key=key))


def check_request(d):
    assert set(d) <= {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig"}
    for c in d["contents"]:
        gt.Content.model_validate(c)
        assert c["role"] in ("user", "model") and c["parts"]
    roles = [c["role"] for c in d["contents"]]
    assert all(a != b for a, b in zip(roles, roles[1:])), roles
    if "systemInstruction" in d:
        gt.Content.model_validate(d["systemInstruction"])
    if "generationConfig" in d:
        gt.GenerationConfig.model_validate(d["generationConfig"])
    for t in d.get("tools", ()):
        gt.Tool.model_validate(t)
    if "toolConfig" in d:
        gt.ToolConfig.model_validate(d["toolConfig"])


def req(body, stream=False, model="gemini-2.5-flash"):
    r = adapter().chat_request(model, body, stream)
    d = orjson.loads(r.body)
    check_request(d)
    return d


# --- requests ------------------------------------------------------------------------------

def test_paths_and_key_only_in_header():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    r = adapter().chat_request("gemini-2.5-flash", body, False)
    assert r.method == b"POST" and r.path == b"/v1beta/models/gemini-2.5-flash:generateContent"
    r2 = adapter().chat_request("gemini-2.5-flash", body, True)
    assert r2.path == b"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    for x in (r, r2):
        h = dict(x.headers)
        assert h[b"x-goog-api-key"] == KEY.encode() and h[b"content-type"] == b"application/json"
        assert KEY.encode() not in x.path and b"key=" not in x.path and KEY.encode() not in x.body
        assert b"authorization" not in h
    assert adapter().chat_request("tunedModels/my-model", body, False).path == \
        b"/v1beta/tunedModels/my-model:generateContent"
    assert adapter("https://gw.example.com/google/v1beta").chat_request("g", body, False).path == \
        b"/google/v1beta/models/g:generateContent"
    a = adapter("http://127.0.0.1:9000")
    assert (a.scheme, a.host, a.port, a.base_path) == ("http", "127.0.0.1", 9000, b"")


def test_system_roles_and_generation_config():
    d = req({"messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Speak French."}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
        {"role": "user", "content": "and again"}],
        "max_completion_tokens": 50, "temperature": 0.3, "top_p": 0.8, "stop": ["END"],
        "seed": 7})
    assert d["systemInstruction"] == {"parts": [{"text": "Be terse.\n\nSpeak French."}]}
    assert d["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "Salut"}]},
        {"role": "user", "parts": [{"text": "again"}, {"text": "and again"}]}]
    assert d["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.3, "topP": 0.8,
                                     "stopSequences": ["END"], "seed": 7}
    d = req({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "stop": "S"})
    assert d["generationConfig"] == {"maxOutputTokens": 9, "stopSequences": ["S"]}
    assert "generationConfig" not in req({"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(ValueError):
        req({"messages": [{"role": "user", "content": "x"}], "n": 3})


def test_response_format():
    base = {"messages": [{"role": "user", "content": "colors"}]}
    gc = req({**base, "response_format": {"type": "json_object"}})["generationConfig"]
    assert gc == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"c": {"type": ["string", "null"]}},
              "required": ["c"], "additionalProperties": False}
    gc = req({**base, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema, "strict": True}}})["generationConfig"]
    assert gc == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert "generationConfig" not in req({**base, "response_format": {"type": "text"}})
    with pytest.raises(ValueError):
        req({**base, "response_format": {"type": "yaml"}})


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time"}}]


def test_tools_and_tool_choice():
    base = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    d = req(base)
    assert d["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather",
         "parametersJsonSchema": TOOLS[0]["function"]["parameters"]},
        {"name": "get_time"}]}]
    assert "toolConfig" not in d
    mode = lambda tc: req({**base, "tool_choice": tc})["toolConfig"]["functionCallingConfig"]
    assert mode("auto") == {"mode": "AUTO"} and mode("none") == {"mode": "NONE"}
    assert mode("required") == {"mode": "ANY"}
    assert mode({"type": "function", "function": {"name": "get_time"}}) == \
        {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    with pytest.raises(ValueError):
        req({**base, "tool_choice": {"type": "allowed_tools"}})


def history(first_id="call_1", second_id="call_2"):
    return [{"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": first_id, "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": second_id, "type": "function",
                 "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": second_id, "content": "10:00"},
            {"role": "tool", "tool_call_id": first_id, "content": "{\"temp\": 18}"},
            {"role": "user", "content": "thanks"}]


def test_parallel_tool_calls_and_responses():
    d = req({"messages": history(), "tools": TOOLS})
    assert [c["role"] for c in d["contents"]] == ["user", "model", "user"]
    assert d["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_time", "args": {}}}]
    # the function name comes from the assistant call with that id
    assert d["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_time", "response": {"result": "10:00"}}},
        {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
        {"text": "thanks"}]


def test_tool_message_unknown_id():
    with pytest.raises(ValueError):
        req({"messages": [{"role": "user", "content": "x"},
                          {"role": "tool", "tool_call_id": "nope", "content": "1"}]})
    d = req({"messages": [{"role": "user", "content": "x"},
                          {"role": "function", "name": "legacy", "content": "1"}]})
    assert d["contents"][0]["parts"][1]["functionResponse"]["name"] == "legacy"


def test_thought_signature_round_trip():
    cid = call_id(SIG)
    assert cid.startswith("call_") and "+" not in cid and "/" not in cid and "=" not in cid
    assert signature_of(cid) == SIG
    assert signature_of(call_id()) is None and signature_of("call_abc") is None
    assert signature_of("toolu_01ABC") is None
    d = req({"messages": history(cid, call_id()), "tools": TOOLS}, model="gemini-3-pro-preview")
    parts = d["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SIG and "thoughtSignature" not in parts[1]


def test_placeholder_signature_for_foreign_history():
    d = req({"messages": history(), "tools": TOOLS}, model="gemini-3-flash-preview")
    parts = d["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SKIP_SIGNATURE and "thoughtSignature" not in parts[1]
    d = req({"messages": history(), "tools": TOOLS}, model="gemini-2.5-pro")
    assert all("thoughtSignature" not in p for p in d["contents"][1]["parts"])


def test_images_audio_files():
    d = req({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.PNG?x=1"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]}]})
    p = d["contents"][0]["parts"]
    assert p[1] == {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}
    assert p[2] == {"fileData": {"fileUri": "https://example.com/a/cat.PNG?x=1",
                                 "mimeType": "image/png"}}
    assert p[3] == {"fileData": {"fileUri": "https://example.com/render"}}
    assert p[4] == {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}}
    assert p[5] == {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}


def test_invalid_requests():
    for body in ({"messages": []}, {"messages": [{"role": "x", "content": "y"}]},
                 {"messages": [{"role": "system", "content": "only"}]},
                 {"messages": [{"role": "user", "content": [{"type": "video"}]}]}):
        with pytest.raises(ValueError):
            adapter().chat_request("g", body, False)


# --- responses -----------------------------------------------------------------------------

def gresp(parts, finish="STOP", usage=None, **more):
    r = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish,
                         "index": 0}],
         "usageMetadata": usage or {"promptTokenCount": 10, "candidatesTokenCount": 4,
                                    "totalTokenCount": 14},
         "modelVersion": "gemini-2.5-flash", "responseId": "resp-1", **more}
    gt.GenerateContentResponse.model_validate(r)       # a real Gemini answer
    return r


def test_response_text_and_thoughts_skipped():
    raw = orjson.dumps(gresp([{"text": "thinking...", "thought": True}, {"text": "Hello"},
                              {"text": " world"}],
                             usage={"promptTokenCount": 10, "candidatesTokenCount": 4,
                                    "thoughtsTokenCount": 20, "cachedContentTokenCount": 6,
                                    "totalTokenCount": 34}))
    doc, usage = adapter().chat_response(raw, "fast")
    c = ChatCompletion.model_validate(doc)
    assert c.id == "chatcmpl-resp-1" and c.model == "fast"
    assert c.choices[0].message.content == "Hello world" and c.choices[0].finish_reason == "stop"
    assert usage == Usage(input_tokens=10, output_tokens=24, cached_tokens=6, reported=True)
    assert doc["usage"] == {"prompt_tokens": 10, "completion_tokens": 24, "total_tokens": 34,
                            "prompt_tokens_details": {"cached_tokens": 6},
                            "completion_tokens_details": {"reasoning_tokens": 20}}


def test_response_parallel_function_calls():
    raw = orjson.dumps(gresp([
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_time", "args": {}}}]))
    doc, _ = adapter().chat_response(raw, "fast")
    c = ChatCompletion.model_validate(doc)
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    tcs = ch.message.tool_calls
    assert [(t.function.name, orjson.loads(t.function.arguments)) for t in tcs] == \
        [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert signature_of(tcs[0].id) == SIG and signature_of(tcs[1].id) is None
    assert tcs[0].id != tcs[1].id
    # the client sends the history back: the signature returns to its part
    hist = [{"role": "user", "content": "x"}, doc["choices"][0]["message"],
            {"role": "tool", "tool_call_id": tcs[0].id, "content": "18C"},
            {"role": "tool", "tool_call_id": tcs[1].id, "content": "10:00"}]
    d = req({"messages": hist, "tools": TOOLS}, model="gemini-3-pro-preview")
    assert d["contents"][1]["parts"][0]["thoughtSignature"] == SIG
    assert [p["functionResponse"]["name"] for p in d["contents"][2]["parts"]] == \
        ["get_weather", "get_time"]


@pytest.mark.parametrize("fr,want", [("STOP", "stop"), ("MAX_TOKENS", "length"),
                                     ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
                                     ("BLOCKLIST", "content_filter"),
                                     ("PROHIBITED_CONTENT", "content_filter"),
                                     ("SPII", "content_filter"), ("IMAGE_SAFETY", "content_filter"),
                                     ("OTHER", "stop")])
def test_finish_reasons(fr, want):
    doc, _ = adapter().chat_response(orjson.dumps(gresp([{"text": "x"}], fr)), "m")
    assert doc["choices"][0]["finish_reason"] == want


def test_response_safety_without_content_and_blocked_prompt():
    r = {"candidates": [{"finishReason": "SAFETY", "index": 0,
                         "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                            "probability": "HIGH"}]}],
         "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}
    gt.GenerateContentResponse.model_validate(r)
    doc, usage = adapter().chat_response(orjson.dumps(r), "m")
    assert doc["choices"][0]["finish_reason"] == "content_filter"
    assert doc["choices"][0]["message"]["content"] == ""
    assert usage == Usage(5, 0, 0, True)
    ChatCompletion.model_validate(doc)
    r = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    gt.GenerateContentResponse.model_validate(r)
    doc, _ = adapter().chat_response(orjson.dumps(r), "m")
    assert doc["choices"][0]["finish_reason"] == "content_filter"
    ChatCompletion.model_validate(doc)


def test_response_garbage():
    with pytest.raises(ValueError):
        adapter().chat_response(b"<", "m")


# --- streams -------------------------------------------------------------------------------

def sse_in(*resps):
    return b"".join(b"data: " + orjson.dumps(r) + b"\r\n\r\n" for r in resps)


def part_event(parts, finish=None, usage=None):
    c = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        c["finishReason"] = finish
    r = {"candidates": [c], "modelVersion": "gemini-2.5-flash", "responseId": "rs-9"}
    if usage:
        r["usageMetadata"] = usage
    gt.GenerateContentResponse.model_validate(r)
    return r


STREAM = sse_in(
    part_event([{"text": "pondering", "thought": True}],
               usage={"promptTokenCount": 40, "totalTokenCount": 40}),
    part_event([{"text": "The wea"}], usage={"promptTokenCount": 40, "candidatesTokenCount": 2,
                                              "totalTokenCount": 42}),
    part_event([{"text": "ther: \u00e9"}], usage={"promptTokenCount": 40, "candidatesTokenCount": 5,
                                                  "totalTokenCount": 45}),
    part_event([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": SIG},
                {"functionCall": {"name": "get_time", "args": {}}}], "STOP",
               usage={"promptTokenCount": 40, "candidatesTokenCount": 12, "thoughtsTokenCount": 8,
                      "cachedContentTokenCount": 30, "totalTokenCount": 60}))


def sse_events(out):
    res = []
    for block in out.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: ")
        d = block[6:]
        res.append("[DONE]" if d == b"[DONE]" else orjson.loads(d))
    return res


def run(data, include_usage=False, split=None):
    tr = adapter().chat_stream("fast", include_usage)
    if split is None:
        out = tr.feed(data)
    else:
        out = b"".join(tr.feed(data[i:i + split]) for i in range(0, len(data), split))
    return tr, sse_events(out + tr.finish())


def accumulate(evs):
    st = ChatCompletionStreamState()
    for e in evs:
        if e != "[DONE]":
            st.handle_chunk(ChatCompletionChunk.model_validate(e))
    return st.get_final_completion()


def test_stream_text_tools_usage():
    tr, evs = run(STREAM, include_usage=True)
    assert evs[-1] == "[DONE]" and evs.count("[DONE]") == 1
    chunks = [ChatCompletionChunk.model_validate(e) for e in evs[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == "chatcmpl-rs-9" and c.model == "fast" for c in chunks)
    final = accumulate(evs).choices[0]
    assert final.message.content == "The weather: \u00e9"
    assert [(t.index, t.function.name, t.function.arguments) for t in final.message.tool_calls] \
        == [(0, "get_weather", '{"city":"Paris"}'), (1, "get_time", "{}")]
    assert signature_of(final.message.tool_calls[0].id) == SIG
    assert final.finish_reason == "tool_calls"
    # the LAST usageMetadata, not a sum over events
    assert tr.usage == Usage(input_tokens=40, output_tokens=20, cached_tokens=30, reported=True)
    assert evs[-2]["choices"] == [] and evs[-2]["usage"] == {
        "prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60,
        "prompt_tokens_details": {"cached_tokens": 30},
        "completion_tokens_details": {"reasoning_tokens": 8}}


def test_stream_no_usage_chunk_unless_asked():
    tr, evs = run(STREAM)
    assert not any(isinstance(e, dict) and "usage" in e for e in evs)
    assert tr.usage.output_tokens == 20


def _norm(evs):
    out = []
    for e in evs:
        if e == "[DONE]":
            out.append(e)
            continue
        e = {k: v for k, v in orjson.loads(orjson.dumps(e)).items() if k != "created"}
        for ch in e.get("choices", ()):
            for t in ch["delta"].get("tool_calls", ()):
                t["id"] = signature_of(t["id"])            # ids are random, signatures not
        out.append(e)
    return out


def test_stream_every_byte_split():
    _, whole = run(STREAM, True)
    for n in range(1, len(STREAM) // 3, 7):
        _, got = run(STREAM, True, n)
        assert _norm(got) == _norm(whole), n
    _, got = run(STREAM, True, 1)
    assert _norm(got) == _norm(whole)


def test_stream_is_incremental_and_finishes():
    tr = adapter().chat_stream("fast", False)
    out = sse_events(tr.feed(sse_in(part_event([{"text": "Hi"}]))))
    assert out[0]["choices"][0]["delta"]["role"] == "assistant"
    assert out[1]["choices"][0]["delta"] == {"content": "Hi"}
    out = sse_events(tr.feed(sse_in(part_event([{"text": "!"}], "MAX_TOKENS",
                                               usage={"promptTokenCount": 3,
                                                      "candidatesTokenCount": 2}))))
    assert out[-1]["choices"][0]["finish_reason"] == "length"
    assert sse_events(tr.finish()) == ["[DONE]"]
    assert tr.usage == Usage(3, 2, 0, True)


def test_stream_safety_finish():
    _, evs = run(sse_in(part_event([{"text": "par"}]),
                        {"candidates": [{"finishReason": "SAFETY", "index": 0}]}))
    assert evs[-2]["choices"][0]["finish_reason"] == "content_filter"


def test_stream_error_and_truncation():
    tr = adapter().chat_stream("fast", True)
    evs = sse_events(tr.feed(sse_in(part_event([{"text": "a"}]),
                                    {"error": {"code": 503, "message": "The model is overloaded.",
                                               "status": "UNAVAILABLE"}})))
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["message"] == "The model is overloaded."
    assert tr.finish() == b""
    _, evs = run(sse_in(part_event([{"text": "a"}])))
    assert "error" in evs[-2] and evs[-1] == "[DONE]"


# --- embeddings ----------------------------------------------------------------------------

def test_embeddings_request():
    a = adapter()
    r = a.embeddings_request("gemini-embedding-001", {"model": "emb", "input": "hello",
                                                      "dimensions": 768})
    assert r.path == b"/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert KEY.encode() not in r.path and dict(r.headers)[b"x-goog-api-key"] == KEY.encode()
    assert orjson.loads(r.body) == {"requests": [{
        "model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]},
        "outputDimensionality": 768}]}
    d = orjson.loads(a.embeddings_request("text-embedding-004", {"input": ["a", "b"]}).body)
    assert [x["content"]["parts"][0]["text"] for x in d["requests"]] == ["a", "b"]
    for bad in ([1, 2, 3], [], None, [["a"]]):
        with pytest.raises(ValueError):
            a.embeddings_request("m", {"input": bad})


def test_embeddings_response():
    raw = orjson.dumps({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]})
    doc, usage = adapter().embeddings_response(raw, "emb")
    CreateEmbeddingResponse.model_validate(doc)
    assert doc == {"object": "list", "model": "emb",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                            {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]}],
                   "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    assert usage == Usage()
    raw = orjson.dumps({"embeddings": [{"values": [0.5, -1.0]}],
                        "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}})
    doc, usage = adapter().embeddings_response(raw, "emb", encoding_format="base64")
    assert usage == Usage(3, 0, 0, True) and doc["usage"]["prompt_tokens"] == 3
    assert struct.unpack("<2f", base64.b64decode(doc["data"][0]["embedding"])) == (0.5, -1.0)
    doc, _ = adapter().embeddings_response(orjson.dumps({"embedding": {"values": [1.0]}}), "e")
    assert doc["data"][0]["embedding"] == [1.0]
    with pytest.raises(ValueError):
        adapter().embeddings_response(b"{}", "emb")


# --- errors --------------------------------------------------------------------------------

def err(status, doc):
    st, body = adapter().error_response(status, doc if isinstance(doc, bytes) else orjson.dumps(doc))
    text = body.decode()
    for i in range(len(KEY) - 7):
        assert KEY[i:i + 8] not in text
    e = orjson.loads(body)["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return st, e


def gerr(code, status, msg, details=()):
    return {"error": {"code": code, "message": msg, "status": status, "details": list(details)}}


def test_invalid_key_400_is_generic_502():
    st, e = err(400, gerr(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                          [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]))
    assert st == 502 and "credentials" in e["message"]
    st, e = err(400, gerr(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."))
    assert st == 502
    st, e = err(403, gerr(403, "PERMISSION_DENIED", "Key " + KEY + " has no access"))
    assert st == 502 and "credentials" in e["message"]


def test_errors_translated():
    st, e = err(400, gerr(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
    assert (st, e["type"], e["code"], e["message"]) == (
        400, "invalid_request_error", "invalid_argument", "Invalid JSON payload received.")
    st, e = err(429, gerr(429, "RESOURCE_EXHAUSTED", "Quota exceeded"))
    assert (st, e["type"]) == (429, "rate_limit_error")
    st, e = err(503, gerr(503, "UNAVAILABLE", "The model is overloaded."))
    assert (st, e["type"]) == (503, "server_error")
    st, e = err(404, [gerr(404, "NOT_FOUND", "models/x is not found")])
    assert (st, e["message"]) == (404, "models/x is not found")
    st, e = err(400, gerr(400, "INVALID_ARGUMENT", "bad value near " + KEY[4:20]))
    assert "***" in e["message"]
    st, e = err(500, b"Internal error " + KEY.encode())
    assert st == 500 and "Internal" not in e["message"]
