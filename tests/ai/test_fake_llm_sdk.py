"""The fake LLM provider (tests/helpers/fake_llm.py) driven by the official SDKs.

If the SDKs parse what the fake sends (plain, streamed, tools, errors, embeddings), the fake's
wire format is the providers' own, so gateway tests against it mean something.
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.helpers.fake_llm import FakeLLM, embedding, mask_key, split_pieces, tool_calls, tool_tokens, words

OA_KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123"
ANT_KEY = "sk-ant-test-0123456789"
G_KEY = "AIza-test-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake():
    with FakeLLM(keys={"openai": OA_KEY, "anthropic": ANT_KEY, "gemini": G_KEY}, chunks=4) as f:
        yield f


@pytest.fixture(scope="module")
def oa(fake):
    return openai.OpenAI(base_url=fake.base_url("openai"), api_key=OA_KEY, max_retries=0, timeout=5)


@pytest.fixture(scope="module")
def ant(fake):
    return anthropic.Anthropic(base_url=fake.base_url("anthropic"), api_key=ANT_KEY, max_retries=0, timeout=5)


@pytest.fixture(scope="module")
def gem(fake):
    return genai.Client(api_key=G_KEY, http_options=gtypes.HttpOptions(
        base_url=fake.base_url("gemini"), timeout=5000,
        retry_options=gtypes.HttpRetryOptions(attempts=1)))


USER = [{"role": "user", "content": "hello big world"}]
TOOLS_OA = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "fetch", "parameters": {"type": "object"}}}]


# ================================================================== OpenAI


def test_openai_plain(fake, oa):
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "be brief"}, *USER])
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "echo: hello big world"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 4, 9)
    rec = fake.last("openai")
    assert rec.path == "/v1/chat/completions" and rec.method == "POST"
    assert rec.headers["authorization"] == "Bearer " + OA_KEY
    assert rec.body["messages"][1]["content"] == "hello big world" and rec.model == "gpt-4o-mini"
    assert fake.expected_usage(["be brief", "hello big world"], "hello big world") == {
        "input": 5, "output": 4, "cached": 0, "think": 0}


def test_openai_stream_with_usage(oa):
    chunks = list(oa.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True,
                                             stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) == 4 and "".join(texts) == "echo: hello big world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_raw_sse(fake):
    body = {"model": "gpt-4o-mini-chunks-2", "messages": USER, "stream": True}
    r = httpx.post(fake.base_url("openai") + "/chat/completions", json=body,
                   headers={"authorization": "Bearer " + OA_KEY})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    datas = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" not in d for d in datas)       # no include_usage: no usage at all
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in datas) == "echo: hello big world"
    assert len([d for d in datas if d["choices"][0]["delta"].get("content")]) == 2


def test_openai_tools_plain_and_loop(oa):
    r = oa.chat.completions.create(model="gpt-4o-mini-tools", messages=USER, tools=TOOLS_OA)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert [tc.function.name for tc in msg.tool_calls] == ["lookup", "fetch"]
    assert [json.loads(tc.function.arguments) for tc in msg.tool_calls] == [
        {"text": "hello big world", "index": 0}, {"text": "hello big world", "index": 1}]
    assert r.usage.completion_tokens == tool_tokens(tool_calls("hello big world", ["lookup", "fetch"]))
    # answering the tool calls ends the loop with text
    follow = [*USER, msg.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "sunny"},
              {"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "22C"}]
    r2 = oa.chat.completions.create(model="gpt-4o-mini-tools", messages=follow, tools=TOOLS_OA)
    assert r2.choices[0].message.content == "echo: sunny 22C"


def test_openai_tools_stream_accumulates(oa):
    with oa.chat.completions.stream(model="gpt-4o-mini-tools", messages=USER, tools=TOOLS_OA) as s:
        deltas = [e for e in s if e.type == "tool_calls.function.arguments.delta"]
        final = s.get_final_completion()
    assert len(deltas) >= 4                     # arguments arrive in pieces
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [json.loads(c.function.arguments)["index"] for c in calls] == [0, 1]
    assert all(c.id.startswith("call_") for c in calls)


def test_openai_max_tokens_stop_cached_think(oa):
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=2)
    assert r.choices[0].message.content == "echo: hello" and r.choices[0].finish_reason == "length"
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=USER, stop=[" big"])
    assert r.choices[0].message.content == "echo: hello" and r.usage.completion_tokens == 2
    r = oa.chat.completions.create(model="gpt-4o-mini-cached-7-think-5", messages=USER)
    u = r.usage
    assert (u.prompt_tokens, u.prompt_tokens_details.cached_tokens) == (10, 7)
    assert (u.completion_tokens, u.completion_tokens_details.reasoning_tokens) == (9, 5)


def test_openai_errors(fake, oa):
    with pytest.raises(openai.RateLimitError) as ei:
        oa.chat.completions.create(model="gpt-fail-429", messages=USER)
    assert ei.value.response.headers["retry-after"] == "1"
    assert ei.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as ei:
        oa.chat.completions.create(model="gpt-fail-500", messages=USER, stream=True)
    assert ei.value.status_code == 500 and ei.value.body["type"] == "server_error"
    with pytest.raises(openai.APIStatusError) as ei:
        oa.chat.completions.create(model="gpt-fail-503", messages=USER)
    assert ei.value.status_code == 503
    bad = openai.OpenAI(base_url=fake.base_url("openai"), api_key="sk-wrong-key-0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        bad.chat.completions.create(model="gpt-4o-mini", messages=USER)
    msg = ei.value.body["message"]
    assert msg.startswith("Incorrect API key provided: sk-wrong*") and "0123456789abcdef" not in msg
    assert mask_key("sk-wrong-key-0123456789abcdef") in msg and ei.value.body["code"] == "invalid_api_key"
    assert fake.last("openai").headers["authorization"] == "Bearer sk-wrong-key-0123456789abcdef"


def test_openai_error_and_drop_mid_stream(oa):
    got = []
    with pytest.raises(openai.APIError) as ei:
        for c in oa.chat.completions.create(model="gpt-error-mid-stream", messages=USER, stream=True):
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) and "".join(got) != "echo: hello big world"
    assert "server had an error" in ei.value.message
    got = []
    with pytest.raises(openai.APIConnectionError):
        for c in oa.chat.completions.create(model="gpt-drop-mid-stream", messages=USER, stream=True):
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) and "".join(got) != "echo: hello big world"


def test_openai_embeddings_and_models(fake, oa):
    e = oa.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])  # base64 by default
    assert fake.last("openai").body["encoding_format"] == "base64"
    assert [d.embedding for d in e.data] == [embedding("alpha beta"), embedding("gamma")]
    assert (e.usage.prompt_tokens, e.usage.total_tokens) == (3, 3)
    f = oa.embeddings.create(model="text-embedding-3-small", input="alpha beta", encoding_format="float",
                             dimensions=4)
    assert f.data[0].embedding == embedding("alpha beta", 4)
    raw = httpx.post(fake.base_url("openai") + "/embeddings", headers={"authorization": "Bearer " + OA_KEY},
                     json={"model": "m", "input": "alpha beta", "encoding_format": "base64"}).json()
    assert list(struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))) == embedding("alpha beta")
    assert "gpt-4o-mini" in [m.id for m in oa.models.list()]
    with pytest.raises(openai.RateLimitError):
        oa.embeddings.create(model="emb-fail-429", input="x")


# ================================================================== Anthropic


def test_anthropic_plain(fake, ant):
    m = ant.messages.create(model="claude-haiku-4-5-cached-3", max_tokens=100, system="be brief",
                            messages=USER)
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "echo: hello big world"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cache_read_input_tokens) == (5, 4, 3)
    rec = fake.last("anthropic")
    assert rec.headers["anthropic-version"] and rec.body["max_tokens"] == 100
    m = ant.messages.create(model="claude-x", max_tokens=1, messages=USER)
    assert m.stop_reason == "max_tokens" and m.content[0].text == "echo:"
    m = ant.messages.create(model="claude-x", max_tokens=50, messages=USER, stop_sequences=["big"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "big" and m.content[0].text == "echo: hello "


def test_anthropic_stream_text(ant):
    with ant.messages.stream(model="claude-x-cached-2", max_tokens=100, messages=USER) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) == 4 and "".join(pieces) == "echo: hello big world"
    assert final.content[0].text == "echo: hello big world" and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (3, 4, 2)
    types = [e.type for e in ant.messages.create(model="claude-x", max_tokens=100, messages=USER, stream=True)]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert types.count("content_block_delta") == 4


def test_anthropic_raw_events_have_ping_and_usage(fake):
    r = httpx.post(fake.url + "/v1/messages", headers={"x-api-key": ANT_KEY, "anthropic-version": "2023-06-01"},
                   json={"model": "claude-x", "max_tokens": 10, "stream": True, "messages": USER})
    events = [e.split("\n", 1) for e in r.text.split("\n\n") if e]
    names = [e[0].removeprefix("event: ") for e in events]
    assert "ping" in names and names[-1] == "message_stop"
    start = json.loads(events[0][1][6:])["message"]["usage"]
    assert start["input_tokens"] == 3 and start["cache_read_input_tokens"] == 0
    delta = json.loads(events[names.index("message_delta")][1][6:])
    assert delta["usage"] == {"output_tokens": 4}      # cumulative, once at the end


def test_anthropic_tools_stream(ant):
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    with ant.messages.stream(model="claude-tools", max_tokens=100, messages=USER, tools=tools) as s:
        json_deltas = [e for e in s if e.type == "input_json"]
        final = s.get_final_message()
    assert len(json_deltas) >= 4 and final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [
        ("tool_use", "lookup", {"text": "hello big world", "index": 0}),
        ("tool_use", "lookup", {"text": "hello big world", "index": 1})]
    plain = ant.messages.create(model="claude-tools", max_tokens=100, messages=USER, tools=tools)
    assert [b.id for b in plain.content][0].startswith("toolu_") and plain.stop_reason == "tool_use"
    follow = USER + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in plain.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": plain.content[0].id,
                                                   "content": "sunny"}]}]
    done = ant.messages.create(model="claude-tools", max_tokens=100, messages=follow, tools=tools)
    assert done.content[0].text == "echo: sunny"


def test_anthropic_errors(fake, ant):
    with pytest.raises(anthropic.RateLimitError) as ei:
        ant.messages.create(model="claude-fail-429", max_tokens=10, messages=USER)
    assert ei.value.response.headers["retry-after"] == "1"
    assert ei.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as ei:
        ant.messages.create(model="claude-fail-500", max_tokens=10, messages=USER)
    assert ei.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIStatusError) as ei:
        ant.messages.create(model="claude-fail-529", max_tokens=10, messages=USER, stream=True)
    assert ei.value.status_code == 529 and ei.value.body["error"]["type"] == "overloaded_error"
    bad = anthropic.Anthropic(base_url=fake.base_url("anthropic"), api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="claude-x", max_tokens=10, messages=USER)
    url = fake.url + "/v1/messages"
    r = httpx.post(url, headers={"x-api-key": ANT_KEY}, json={"model": "c", "max_tokens": 5, "messages": USER})
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
    hdrs = {"x-api-key": ANT_KEY, "anthropic-version": "2023-06-01"}
    r = httpx.post(url, headers=hdrs, json={"model": "c", "messages": USER})
    assert r.status_code == 400 and r.json()["error"]["message"] == "max_tokens: Field required"
    r = httpx.post(url, headers=hdrs, json={"model": "c", "max_tokens": 5,
                                            "messages": [{"role": "system", "content": "x"}, *USER]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    got = []
    with pytest.raises(anthropic.APIError) as ei:
        with ant.messages.stream(model="claude-error-mid-stream", max_tokens=10, messages=USER) as s:
            for t in s.text_stream:
                got.append(t)
    assert got and "Overloaded" in str(ei.value)


# ================================================================== Gemini


def test_gemini_plain(fake, gem):
    r = gem.models.generate_content(model="gemini-2.5-flash-think-3", contents="hello big world",
                                    config=gtypes.GenerateContentConfig(system_instruction="be brief"))
    assert r.text == "echo: hello big world"
    assert r.candidates[0].finish_reason == gtypes.FinishReason.STOP
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.thoughts_token_count, u.total_token_count) == \
        (5, 4, 3, 12)
    rec = fake.last("gemini")
    assert rec.headers["x-goog-api-key"] == G_KEY and "key" not in rec.query
    assert rec.path.endswith("/models/gemini-2.5-flash-think-3:generateContent")
    r = gem.models.generate_content(model="gemini-x", contents="hello big world",
                                    config=gtypes.GenerateContentConfig(max_output_tokens=2))
    assert r.text == "echo: hello" and r.candidates[0].finish_reason == gtypes.FinishReason.MAX_TOKENS


def test_gemini_stream(fake, gem):
    chunks = list(gem.models.generate_content_stream(model="gemini-2.5-flash-cached-4", contents="hello big world"))
    assert fake.last("gemini").query == {"alt": "sse"}
    assert len(chunks) == 4 and "".join(c.text for c in chunks) == "echo: hello big world"
    last = chunks[-1].usage_metadata
    assert (last.prompt_token_count, last.candidates_token_count, last.cached_content_token_count) == (7, 4, 4)
    assert all(c.usage_metadata.candidates_token_count is None for c in chunks[:-1])
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    # without alt=sse: a streamed JSON array
    r = httpx.post(fake.url + "/v1beta/models/gemini-x:streamGenerateContent", headers={"x-goog-api-key": G_KEY},
                   json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    arr = r.json()
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in arr) == "echo: hi"


def test_gemini_tools(gem):
    cfg = gtypes.GenerateContentConfig(tools=[gtypes.Tool(function_declarations=[
        gtypes.FunctionDeclaration(name="lookup"), gtypes.FunctionDeclaration(name="fetch")])])
    r = gem.models.generate_content(model="gemini-tools", contents="hello big world", config=cfg)
    assert [(f.name, f.args) for f in r.function_calls] == [
        ("lookup", {"text": "hello big world", "index": 0}), ("fetch", {"text": "hello big world", "index": 1})]
    chunks = list(gem.models.generate_content_stream(model="gemini-tools", contents="hi", config=cfg))
    assert [f.name for c in chunks for f in (c.function_calls or [])] == ["lookup", "fetch"]
    contents = [gtypes.Content(role="user", parts=[gtypes.Part(text="hi")]),
                r.candidates[0].content,
                gtypes.Content(role="user", parts=[gtypes.Part.from_function_response(
                    name="lookup", response={"result": "sunny"})])]
    assert gem.models.generate_content(model="gemini-tools", contents=contents, config=cfg).text == "echo: sunny"


def test_gemini_errors_and_embeddings(fake, gem):
    with pytest.raises(genai_errors.ClientError) as ei:
        gem.models.generate_content(model="gemini-fail-429", contents="x")
    assert ei.value.code == 429 and ei.value.status == "RESOURCE_EXHAUSTED"
    for code, status in ((500, "INTERNAL"), (503, "UNAVAILABLE")):
        with pytest.raises(genai_errors.ServerError) as ei:
            gem.models.generate_content(model="gemini-fail-%d" % code, contents="x")
        assert ei.value.code == code and ei.value.status == status
    bad = genai.Client(api_key="wrong", http_options=gtypes.HttpOptions(
        base_url=fake.base_url("gemini"), retry_options=gtypes.HttpRetryOptions(attempts=1)))
    with pytest.raises(genai_errors.ClientError) as ei:
        bad.models.generate_content(model="gemini-x", contents="x")
    assert ei.value.code == 400 and "API key not valid" in ei.value.message
    r = httpx.post(fake.url + "/v1beta/models/gemini-x:generateContent?key=" + G_KEY,
                   json={"contents": [{"parts": [{"text": "x"}]}]})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    got = []
    with pytest.raises(genai_errors.ServerError):
        for c in gem.models.generate_content_stream(model="gemini-error-mid-stream", contents="hello big world"):
            got.append(c.text)
    assert got
    e = gem.models.embed_content(model="text-embedding-004", contents=["alpha beta", "gamma"])
    assert [x.values for x in e.embeddings] == [embedding("alpha beta"), embedding("gamma")]
    assert fake.last("gemini").path.endswith(":batchEmbedContents")


# ================================================================== HTTP level


def _raw_request(body: dict, path="/v1/chat/completions", extra=b"") -> bytes:
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\ncontent-type: application/json\r\n"
            b"%scontent-length: %d\r\n\r\n%s" % (path.encode(), OA_KEY.encode(), extra, len(data), data))


def test_keep_alive_is_fast_and_counted(fake):
    opened, closed = fake.connections_opened, fake.connections_closed
    conn = http.client.HTTPConnection("127.0.0.1", fake.port)
    body = json.dumps({"model": "gpt-4o-mini", "messages": USER})
    t0 = time.monotonic()
    for _ in range(200):
        conn.request("POST", "/v1/chat/completions", body, {"authorization": "Bearer " + OA_KEY,
                                                           "content-type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["usage"]["completion_tokens"] == 4
    elapsed = time.monotonic() - t0
    conn.close()
    assert elapsed < 2.0, elapsed            # a 40 ms delayed-ACK stall per request would take 8 s
    assert fake.connections_opened == opened + 1
    assert fake.wait_for(lambda: fake.connections_closed >= closed + 1)


def test_chunked_request_body_and_pipelining(fake):
    data = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "chunky body"}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 7]), data[i:i + 7]) for i in range(0, len(data), 7))
    req1 = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n"
            b"transfer-encoding: chunked\r\n\r\n%s0\r\n\r\n" % (OA_KEY.encode(), chunked))
    req2 = _raw_request({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "second"}]},
                        extra=b"connection: close\r\n")
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(req1 + req2)              # both at once: answered in order
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"echo: chunky body") < out.index(b"echo: second")
    assert fake.requests[-2].body["messages"][0]["content"] == "chunky body"


def test_client_disconnect_cancels_stream(fake):
    before_s, before_r = fake.cancelled_streams, fake.cancelled_requests
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(_raw_request({"model": "gpt-slow-stream-300", "messages": USER, "stream": True}))
        assert b"echo" in s.recv(65536)     # the head and the first piece, then we hang up
    assert fake.wait_for(lambda: fake.cancelled_streams == before_s + 1)
    rec = fake.requests_for(kind="openai")[-1]
    assert rec.cancelled and not rec.completed
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:    # hang: never answered
        s.sendall(_raw_request({"model": "gpt-hang", "messages": USER}))
        s.settimeout(0.2)
        with pytest.raises(socket.timeout):
            s.recv(100)
    assert fake.wait_for(lambda: fake.cancelled_requests == before_r + 2)
    assert fake.cancelled_streams == before_s + 1


def test_slow_and_big(fake, oa):
    t0 = time.monotonic()
    r = oa.chat.completions.create(model="gpt-slow-150", messages=USER)
    assert time.monotonic() - t0 >= 0.15 and r.choices[0].message.content == "echo: hello big world"
    chunks = list(oa.chat.completions.create(model="gpt-big-300", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert words(text) == 4 + 300 and len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 304
    assert split_pieces("a b  c", 2) == ["a ", "b  c"]


def test_cli_entry_point():
    p = subprocess.Popen([sys.executable, "-m", "tests.helpers.fake_llm", "--port", "0", "--kinds", "openai",
                          "--key", "openai=sk-cli"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("fake_llm listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        c = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key="sk-cli", max_retries=0)
        assert c.chat.completions.create(model="m", messages=USER).choices[0].message.content == \
            "echo: hello big world"
        r = httpx.post("http://127.0.0.1:%d/v1/messages" % port, json={})
        assert r.status_code == 404                                   # anthropic not served
    finally:
        p.terminate()
        p.wait(5)
