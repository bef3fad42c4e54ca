"""Anthropic Messages API adapter: request translation (checked against the anthropic SDK's
param types), responses, streams (every split), usage, errors."""
import orjson
import pydantic
import pytest
import typing_extensions as te
import anthropic.types as at
from anthropic.types import message_create_params as mcp
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fastgate.ai.providers import ADAPTERS, Usage
from fastgate.config.schema import Provider

KEY = "sk-ant-api03-Qw3rTy7UiOpAsDfGhJkL0zXcVbNm1234567890-AbCdEfGh"


def adapter(base="https://api.anthropic.com", key=KEY):
    return ADAPTERS["anthropic"](Provider(name="ant", type="anthropic", base_url=base,
                                          api_key=key))


# --- SDK-type checks of what we send ---------------------------------------------------------

def td_check(d, td, extra=()):
    h = te.get_type_hints(td, include_extras=True)
    req = {k for k, v in h.items() if te.get_origin(v) is te.Required}
    assert isinstance(d, dict)
    assert req <= set(d), (td.__name__, req - set(d))
    assert set(d) <= set(h) | set(extra), (td.__name__, set(d) - set(h))


BLOCKS = {"text": at.TextBlockParam, "image": at.ImageBlockParam,
          "tool_use": at.ToolUseBlockParam, "tool_result": at.ToolResultBlockParam,
          "document": at.DocumentBlockParam}
SOURCES = {"base64": at.Base64ImageSourceParam, "url": at.URLImageSourceParam}
CHOICES = {"auto": at.ToolChoiceAutoParam, "any": at.ToolChoiceAnyParam,
           "tool": at.ToolChoiceToolParam, "none": at.ToolChoiceNoneParam}


def check_request(d, stream):
    # temperature / top_p: Messages API params of anthropic-version 2023-06-01 (this SDK
    # release no longer lists them)
    td_check(d, mcp.MessageCreateParamsStreaming if stream else mcp.MessageCreateParamsNonStreaming,
             extra=("temperature", "top_p"))
    assert isinstance(d["max_tokens"], int) and d["max_tokens"] > 0
    assert isinstance(d.get("system", ""), str)
    for m in d["messages"]:
        assert set(m) == {"role", "content"} and m["role"] in ("user", "assistant")
        assert m["content"], m
        for b in m["content"]:
            td_check(b, BLOCKS[b["type"]])
            if b["type"] == "image":
                td_check(b["source"], SOURCES[b["source"]["type"]])
            if b["type"] == "document":
                td_check(b["source"], at.Base64PDFSourceParam)
            if b["type"] == "text":
                assert b["text"]
            if b["type"] == "tool_use":
                assert isinstance(b["input"], dict)
        types = [b["type"] for b in m["content"]]
        if "tool_result" in types:                 # results lead the message
            assert types == sorted(types, key=lambda t: t != "tool_result")
    roles = [m["role"] for m in d["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:])), roles
    for t in d.get("tools", ()):
        td_check(t, at.ToolParam)
        assert t["input_schema"].get("type") == "object"
    if "tool_choice" in d:
        td_check(d["tool_choice"], CHOICES[d["tool_choice"]["type"]])
    if "metadata" in d:
        td_check(d["metadata"], at.MetadataParam)


def req(body, stream=False, model="claude-haiku-4-5"):
    r = adapter().chat_request(model, body, stream)
    d = orjson.loads(r.body)
    check_request(d, stream)
    return d


# --- requests ------------------------------------------------------------------------------

def test_path_and_headers():
    r = adapter().chat_request("claude-haiku-4-5", {"messages": [{"role": "user", "content": "hi"}]},
                               False)
    assert r.method == b"POST" and r.path == b"/v1/messages"
    h = dict(r.headers)
    assert h[b"x-api-key"] == KEY.encode() and h[b"anthropic-version"] == b"2023-06-01"
    assert h[b"content-type"] == b"application/json" and b"authorization" not in h
    assert adapter("https://proxy.example.com/anthropic").chat_request(
        "m", {"messages": [{"role": "user", "content": "x"}]}, False).path == b"/anthropic/v1/messages"
    assert adapter("https://proxy.example.com/v1").chat_request(
        "m", {"messages": [{"role": "user", "content": "x"}]}, False).path == b"/v1/messages"
    a = adapter("http://127.0.0.1:9000")
    assert (a.scheme, a.host, a.port, a.base_path) == ("http", "127.0.0.1", 9000, b"")


def test_system_developer_and_params():
    d = req({"model": "fast", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Late system note."}],
        "max_tokens": 100, "temperature": 1.7, "top_p": 0.9, "stop": "END", "user": "u-1"},
        stream=True)
    assert d["system"] == "You are terse.\n\nAnswer in French.\n\nLate system note."
    assert d["model"] == "claude-haiku-4-5" and d["max_tokens"] == 100 and d["stream"] is True
    assert d["temperature"] == 1 and "top_p" not in d        # clamped; never both
    assert d["stop_sequences"] == ["END"] and d["metadata"] == {"user_id": "u-1"}
    assert d["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_max_tokens_default_and_precedence():
    base = {"messages": [{"role": "user", "content": "hi"}]}
    assert req(base)["max_tokens"] == 4096
    assert req({**base, "max_tokens": 10, "max_completion_tokens": 20})["max_tokens"] == 20
    d = req({**base, "top_p": 0.5, "stop": ["a", "b"]})
    assert d["top_p"] == 0.5 and d["stop_sequences"] == ["a", "b"] and "temperature" not in d
    with pytest.raises(ValueError):
        req({**base, "max_tokens": 0})
    with pytest.raises(ValueError):
        req({**base, "n": 2})


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time"}}]


def test_tools_and_tool_choice():
    base = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    d = req(base)
    assert d["tools"][0] == {"name": "get_weather", "description": "Weather of a city",
                             "input_schema": TOOLS[0]["function"]["parameters"]}
    assert d["tools"][1] == {"name": "get_time",
                             "input_schema": {"type": "object", "properties": {}}}
    assert "tool_choice" not in d
    assert req({**base, "tool_choice": "auto"})["tool_choice"] == {"type": "auto"}
    assert req({**base, "tool_choice": "none"})["tool_choice"] == {"type": "none"}
    assert req({**base, "tool_choice": "required"})["tool_choice"] == {"type": "any"}
    assert req({**base, "tool_choice": {"type": "function", "function": {"name": "get_time"}}}
               )["tool_choice"] == {"type": "tool", "name": "get_time"}
    assert req({**base, "parallel_tool_calls": False})["tool_choice"] == \
        {"type": "auto", "disable_parallel_tool_use": True}
    assert req({**base, "tool_choice": "required", "parallel_tool_calls": False}
               )["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    with pytest.raises(ValueError):
        req({**base, "tool_choice": "sometimes"})
    with pytest.raises(ValueError):
        req({**base, "tools": [{"type": "custom", "custom": {"name": "x"}}]})


def test_tool_calls_and_results_merged():
    d = req({"messages": [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call.2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "10:00"}]},
        {"role": "user", "content": "Thanks, and tomorrow?"}], "tools": TOOLS})
    assert [m["role"] for m in d["messages"]] == ["user", "assistant", "user"]
    assert d["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]
    assert d["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "10:00"},
        {"type": "text", "text": "Thanks, and tomorrow?"}]


def test_assistant_tool_call_without_content_and_bad_arguments():
    d = req({"messages": [{"role": "user", "content": "x"},
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"id": "toolu_1", "type": "function",
                               "function": {"name": "f", "arguments": "{}"}}]},
                          {"role": "tool", "tool_call_id": "toolu_1", "content": ""}]})
    assert d["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "f",
                                            "input": {}}]
    assert d["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1"}]
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(ValueError):
            req({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": bad}}]}]})
    with pytest.raises(ValueError):
        req({"messages": [{"role": "tool", "content": "x"}]})          # no tool_call_id


def test_images_and_pdf():
    d = req({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "file", "file": {"filename": "a.pdf",
                                  "file_data": "data:application/pdf;base64,JVBERi0="}}]}]})
    c = d["messages"][0]["content"]
    assert c[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                "data": "iVBORw0KGgo="}}
    assert c[2] == {"type": "image", "source": {"type": "url",
                                                "url": "https://example.com/cat.jpg"}}
    assert c[3]["type"] == "document" and c[3]["source"]["media_type"] == "application/pdf"
    with pytest.raises(ValueError):
        req({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]}]})
    with pytest.raises(ValueError):
        req({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]})


def test_response_format_becomes_system_instruction():
    base = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "List two colors"}]}
    d = req({**base, "response_format": {"type": "json_object"}})
    assert d["system"].startswith("Be brief.\n\n") and "JSON object" in d["system"]
    schema = {"type": "object", "properties": {"colors": {"type": "array"}}}
    d = req({**base, "response_format": {"type": "json_schema", "json_schema": {
        "name": "c", "schema": schema, "strict": True}}})
    assert orjson.dumps(schema).decode() in d["system"]
    assert req({**base, "response_format": {"type": "text"}})["system"] == "Be brief."
    with pytest.raises(ValueError):
        req({**base, "response_format": {"type": "json_schema"}})


def test_invalid_messages():
    for body in ({"messages": []}, {"messages": "hi"}, {"messages": [{"role": "wizard", "content": "x"}]},
                 {"messages": [{"role": "system", "content": "only system"}]},
                 {"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}):
        with pytest.raises(ValueError):
            adapter().chat_request("m", body, False)


# --- responses -----------------------------------------------------------------------------

def message(content, stop_reason="end_turn", usage=None):
    m = {"id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
         "content": content, "stop_reason": stop_reason, "stop_sequence": None,
         "usage": usage or {"input_tokens": 12, "output_tokens": 6}}
    at.Message.model_validate(m)                   # the fixture is a real Messages answer
    return orjson.dumps(m)


def test_response_text():
    doc, usage = adapter().chat_response(message([{"type": "text", "text": "Hello"},
                                                  {"type": "text", "text": " there"}]), "fast")
    c = ChatCompletion.model_validate(doc)
    assert c.id.startswith("chatcmpl-") and c.model == "fast" and c.object == "chat.completion"
    assert c.choices[0].message.content == "Hello there" and c.choices[0].finish_reason == "stop"
    assert c.choices[0].message.tool_calls is None
    assert doc["usage"] == {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    assert usage == Usage(12, 6, 0, True)


def test_response_parallel_tool_calls():
    raw = message([{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                   {"type": "text", "text": "Let me check."},
                   {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
                   {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}}],
                  "tool_use")
    doc, _ = adapter().chat_response(raw, "fast")
    c = ChatCompletion.model_validate(doc)
    assert c.choices[0].finish_reason == "tool_calls"
    assert c.choices[0].message.content == "Let me check."
    tcs = c.choices[0].message.tool_calls
    assert [(t.id, t.type, t.function.name, orjson.loads(t.function.arguments)) for t in tcs] == [
        ("toolu_A", "function", "get_weather", {"city": "Paris"}),
        ("toolu_B", "function", "get_time", {})]
    doc, _ = adapter().chat_response(message([{"type": "tool_use", "id": "toolu_C", "name": "f",
                                               "input": {}}], "tool_use"), "fast")
    assert doc["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize("reason,want", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                         ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                         ("refusal", "content_filter"),
                                         ("model_context_window_exceeded", "length"),
                                         ("pause_turn", "stop")])
def test_finish_reasons(reason, want):
    doc, _ = adapter().chat_response(message([{"type": "text", "text": "x"}], reason), "m")
    assert doc["choices"][0]["finish_reason"] == want
    ChatCompletion.model_validate(doc)


def test_response_cache_usage():
    raw = message([{"type": "text", "text": "x"}], usage={
        "input_tokens": 20, "output_tokens": 5, "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 1000})
    doc, usage = adapter().chat_response(raw, "m")
    assert usage == Usage(input_tokens=1320, output_tokens=5, cached_tokens=1000, reported=True)
    assert doc["usage"]["prompt_tokens"] == 1320 and doc["usage"]["total_tokens"] == 1325
    assert doc["usage"]["prompt_tokens_details"] == {"cached_tokens": 1000,
                                                     "cache_write_tokens": 300}
    ChatCompletion.model_validate(doc)


def test_response_garbage():
    with pytest.raises(ValueError):
        adapter().chat_response(b"nope", "m")
    with pytest.raises(ValueError):
        adapter().chat_response(b'{"type": "message"}', "m")


# --- streams -------------------------------------------------------------------------------

EVENT = pydantic.TypeAdapter(at.RawMessageStreamEvent)


def ev(obj, name=None):
    if obj["type"] not in ("ping", "error"):
        EVENT.validate_python(obj)              # a real stream event
    return b"event: " + (name or obj["type"]).encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def start(usage=None):
    return ev({"type": "message_start", "message": {
        "id": "msg_01S", "type": "message", "role": "assistant", "content": [],
        "model": "claude-haiku-4-5", "stop_reason": None, "stop_sequence": None,
        "usage": usage or {"input_tokens": 25, "cache_creation_input_tokens": 10,
                           "cache_read_input_tokens": 100, "output_tokens": 1}}})


def text_delta(i, t):
    return ev({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}})


def json_delta(i, t):
    return ev({"type": "content_block_delta", "index": i,
               "delta": {"type": "input_json_delta", "partial_json": t}})


def block_start(i, block):
    return ev({"type": "content_block_start", "index": i, "content_block": block})


def block_stop(i):
    return ev({"type": "content_block_stop", "index": i})


def msg_delta(reason, out_tokens, **more):
    return ev({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
               "usage": {"output_tokens": out_tokens, **more}})


STOP = ev({"type": "message_stop"})
PING = ev({"type": "ping"})

TOOL_STREAM = b"".join([
    start(), PING,
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    ev({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
    block_stop(0),
    block_start(1, {"type": "text", "text": ""}),
    text_delta(1, "Let me "), text_delta(1, "check \u00e9t\u00e9."), block_stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}),
    json_delta(2, ""), json_delta(2, "{\"city\": "), json_delta(2, "\"Paris\"}"), block_stop(2),
    block_start(3, {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
    block_stop(3),
    msg_delta("tool_use", 30), PING, msg_delta("tool_use", 42), STOP])


def sse_events(out: bytes):
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


def test_stream_text_and_parallel_tools():
    tr, evs = run(TOOL_STREAM, include_usage=True)
    assert evs[-1] == "[DONE]" and evs.count("[DONE]") == 1
    chunks = [ChatCompletionChunk.model_validate(e) for e in evs[:-1]]
    assert all(c.id == "chatcmpl-msg_01S" and c.model == "fast" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    first_tool = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    t0 = first_tool[0].choices[0].delta.tool_calls[0]
    assert (t0.index, t0.id, t0.type, t0.function.name) == (0, "toolu_01", "function", "get_weather")
    later = [c.choices[0].delta.tool_calls[0] for c in first_tool[1:]]
    assert all(t.id is None and t.function.name is None for t in later
               if t.index == 0)                              # id/name only on the first fragment
    final = accumulate(evs)
    ch = final.choices[0]
    assert ch.message.content == "Let me check \u00e9t\u00e9."
    assert [(t.id, t.function.name, t.function.arguments) for t in ch.message.tool_calls] == [
        ("toolu_01", "get_weather", '{"city": "Paris"}'), ("toolu_02", "get_time", "{}")]
    assert ch.finish_reason == "tool_calls"
    assert evs[-2]["choices"] == [] and evs[-2]["usage"] == {
        "prompt_tokens": 135, "completion_tokens": 42, "total_tokens": 177,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10}}
    # cumulative output counts: the last message_delta, never the sum (1 + 30 + 42)
    assert tr.usage == Usage(input_tokens=135, output_tokens=42, cached_tokens=100, reported=True)


def test_stream_without_include_usage_has_no_usage_chunk():
    tr, evs = run(TOOL_STREAM)
    assert all(e == "[DONE]" or e["choices"] for e in evs)
    assert not any(isinstance(e, dict) and "usage" in e for e in evs)
    assert evs[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert tr.usage.output_tokens == 42


def _norm(evs):
    return [e if e == "[DONE]" else {**e, "created": 0} for e in evs]


def test_stream_every_byte_split():
    _, whole = run(TOOL_STREAM, True)
    for n in range(1, 40):
        _, got = run(TOOL_STREAM, True, n)
        assert accumulate(_norm(got)).model_dump(exclude={"created"}) == \
            accumulate(_norm(whole)).model_dump(exclude={"created"}), n
        assert _norm(got)[-2:] == _norm(whole)[-2:]
    # one byte at a time gives exactly the same events
    _, got = run(TOOL_STREAM, True, 1)
    assert _norm(got) == _norm([e for e in whole])


def test_stream_is_incremental():
    tr = adapter().chat_stream("fast", False)
    head = start() + block_start(0, {"type": "text", "text": ""}) + text_delta(0, "Hi")
    out = sse_events(tr.feed(head))
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert out[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert tr.usage.input_tokens == 135 and tr.usage.reported
    out = sse_events(tr.feed(block_stop(0) + msg_delta("end_turn", 3) + STOP))
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
    assert sse_events(tr.finish()) == ["[DONE]"]


def test_stream_usage_from_message_delta_with_input():
    data = b"".join([start({"input_tokens": 0, "output_tokens": 0}),
                     block_start(0, {"type": "text", "text": ""}), text_delta(0, "x"),
                     block_stop(0), msg_delta("max_tokens", 9, input_tokens=50,
                                              cache_read_input_tokens=5), STOP])
    tr, evs = run(data, True)
    assert tr.usage == Usage(55, 9, 5, True)
    assert evs[-3]["choices"][0]["finish_reason"] == "length"


def test_stream_error_event_fails():
    data = start() + block_start(0, {"type": "text", "text": ""}) + text_delta(0, "par") + \
        ev({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    tr = adapter().chat_stream("fast", True)
    evs = sse_events(tr.feed(data))
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["message"] == "Overloaded"
    assert evs[-2]["error"]["type"] == "server_error"
    assert tr.feed(STOP) == b"" and tr.finish() == b"" and tr.fail("x") == b""


def test_stream_truncated_fails_at_finish():
    tr, evs = run(start() + block_start(0, {"type": "text", "text": ""}) + text_delta(0, "par"))
    assert "error" in evs[-2] and evs[-1] == "[DONE]"
    assert not any("choices" in e and e["choices"] and e["choices"][0]["finish_reason"]
                   for e in evs if isinstance(e, dict))


def test_fail_scrubs_key():
    tr = adapter().chat_stream("fast", False)
    out = tr.fail("connection reset talking with key " + KEY)
    assert KEY[:10] not in out.decode() and KEY[-12:] not in out.decode()
    assert out.endswith(b"data: [DONE]\n\n")


# --- errors --------------------------------------------------------------------------------

def err(status, doc):
    st, body = adapter().error_response(status, doc if isinstance(doc, bytes) else orjson.dumps(doc))
    text = body.decode()
    for i in range(len(KEY) - 7):
        assert KEY[i:i + 8] not in text
    e = orjson.loads(body)["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return st, e


def aerr(t, msg):
    return {"type": "error", "error": {"type": t, "message": msg}, "request_id": "req_1"}


def test_errors():
    st, e = err(400, aerr("invalid_request_error", "messages.0.content: empty"))
    assert (st, e["type"], e["message"], e["code"]) == (
        400, "invalid_request_error", "messages.0.content: empty", "invalid_request_error")
    st, e = err(429, aerr("rate_limit_error", "Number of request tokens has exceeded your limit"))
    assert (st, e["type"]) == (429, "rate_limit_error")
    st, e = err(529, aerr("overloaded_error", "Overloaded"))
    assert (st, e["type"]) == (503, "server_error")
    st, e = err(500, aerr("api_error", "Internal server error"))
    assert (st, e["type"]) == (500, "server_error")
    st, e = err(404, aerr("not_found_error", "model: claude-x"))
    assert (st, e["type"]) == (404, "invalid_request_error")


def test_auth_errors_generic():
    for status in (401, 403):
        st, e = err(status, aerr("authentication_error", "invalid x-api-key " + KEY[:20]))
        assert st == 502 and "credentials" in e["message"] and "x-api-key" not in e["message"]


def test_error_scrub_and_garbage():
    st, e = err(400, aerr("invalid_request_error", "bad header value " + KEY[5:30]))
    assert st == 400 and "***" in e["message"]
    st, e = err(502, b"<html>bad gateway</html>")
    assert st == 502 and "html" not in e["message"]


def test_no_embeddings():
    with pytest.raises(ValueError):
        adapter().embeddings_request("claude", {"input": "x"})
    with pytest.raises(ValueError):
        adapter().embeddings_response(b"{}", "m")
