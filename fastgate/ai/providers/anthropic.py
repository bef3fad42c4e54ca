"""Anthropic Messages API (POST {base}/v1/messages) <-> OpenAI chat completions.

Request: system and developer messages (wherever they are) -> top-level ``system`` (joined
with blank lines); ``max_completion_tokens``/``max_tokens`` -> ``max_tokens`` (4096 when
absent: Anthropic requires it); ``temperature`` clamped to Anthropic's 0..1, ``top_p`` only
when no temperature is given (recent models refuse the two together); ``stop`` ->
``stop_sequences``; ``user`` -> ``metadata.user_id``; tools -> ``input_schema`` tools;
``tool_choice`` auto/none/required/{function} -> auto/none/any/tool, and
``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``; assistant ``tool_calls`` ->
``tool_use`` blocks, ``tool`` messages -> ``tool_result`` blocks (consecutive results, and
any same-role neighbours, merged into one message; results first); image parts -> image
blocks (base64 for data URIs, url otherwise); PDF file parts -> document blocks.
Tool call ids are made to fit Anthropic's ``[A-Za-z0-9_-]`` (other characters -> "_").

``response_format``: the Messages API has no JSON *mode* (json_object) and its native
structured outputs (``output_config.format``) only exist on recent models, so both
json_object and json_schema become a system instruction (the schema quoted in it): it works
on every model; the answer is not schema-validated by the provider.

Not translated (ignored): penalties, seed, logprobs, logit_bias, reasoning_effort, thinking
blocks in answers. ``n`` > 1 is refused.
"""
from __future__ import annotations

import re
import time

from . import ADAPTERS, ProviderRequest, Usage
from .common import (JSON_CT, Adapter, Chunks, JSONDecodeError, StreamBase, as_message,
                     check_n, completion, data_uri, dumps, image_url_of, ival,
                     json_instruction, loads, max_tokens_of, new_id, stop_list, text_of,
                     tool_args, usage_dict)

DEFAULT_MAX_TOKENS = 4096
VERSION = b"2023-06-01"

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
          "max_tokens": "length", "model_context_window_exceeded": "length",
          "tool_use": "tool_calls", "refusal": "content_filter"}

ERROR_TYPES = {"invalid_request_error": "invalid_request_error",
               "not_found_error": "invalid_request_error",
               "request_too_large": "invalid_request_error",
               "rate_limit_error": "rate_limit_error",
               "authentication_error": "authentication_error",
               "permission_error": "permission_error",
               "billing_error": "invalid_request_error",
               "api_error": "server_error", "overloaded_error": "server_error",
               "timeout_error": "server_error"}

_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_OK_ID = re.compile(r"[A-Za-z0-9_-]+")


def tool_id(tid) -> str:
    if not isinstance(tid, str) or not tid:
        raise ValueError("tool calls and tool messages need an id")
    return tid if _OK_ID.fullmatch(tid) else _BAD_ID_CHARS.sub("_", tid)


def _image(url: str) -> dict:
    du = data_uri(url)
    if du is None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("image URLs must be http(s) URLs or data URIs")
        return {"type": "image", "source": {"type": "url", "url": url}}
    mime, data = du
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def _user_blocks(content) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ValueError("user message content must be a string or a list of parts")
    out = []
    for p in content:
        t = p.get("type") if isinstance(p, dict) else None
        if t == "text":
            txt = p.get("text")
            if not isinstance(txt, str):
                raise ValueError("text parts need a text string")
            if txt:
                b = {"type": "text", "text": txt}
                if "cache_control" in p:
                    b["cache_control"] = p["cache_control"]
                out.append(b)
        elif t == "image_url":
            out.append(_image(image_url_of(p)))
        elif t == "file":
            f = p.get("file")
            du = data_uri(f.get("file_data") or "") if isinstance(f, dict) else None
            if du is None or du[0] != "application/pdf":
                raise ValueError("file parts must be PDF data URIs (file_data) for this model")
            out.append({"type": "document",
                        "source": {"type": "base64", "media_type": du[0], "data": du[1]}})
        else:
            raise ValueError(f"unsupported content part type {t!r} for this model")
    return out


def _push(out: list, role: str, blocks: list) -> None:
    if not blocks:
        return
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _tools(tools) -> list:
    if not isinstance(tools, list):
        raise ValueError("tools must be a list")
    out = []
    for t in tools:
        f = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise ValueError("tools must be {type: function, function: {name, parameters}}")
        schema = f.get("parameters")
        d = {"name": f["name"],
             "input_schema": schema if isinstance(schema, dict) and schema
             else {"type": "object", "properties": {}}}
        if f.get("description"):
            d["description"] = f["description"]
        out.append(d)
    return out


def _tool_choice(tc, parallel) -> dict | None:
    if tc is None:
        d = None
    elif tc == "auto":
        d = {"type": "auto"}
    elif tc == "none":
        return {"type": "none"}
    elif tc == "required":
        d = {"type": "any"}
    elif isinstance(tc, dict) and tc.get("type") == "function" \
            and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str):
        d = {"type": "tool", "name": tc["function"]["name"]}
    else:
        raise ValueError("unsupported tool_choice (auto, none, required or a function)")
    if parallel is False:
        d = d or {"type": "auto"}
        d["disable_parallel_tool_use"] = True
    return d


def anthropic_usage(u, st) -> None:
    """Fold an Anthropic usage dict into ``st`` (counts are cumulative: the latest wins)."""
    if not isinstance(u, dict):
        return
    v = u.get("input_tokens")
    if v is not None:
        st.a_in = ival(v)
    v = u.get("cache_creation_input_tokens")
    if v is not None:
        st.a_cw = ival(v)
    v = u.get("cache_read_input_tokens")
    if v is not None:
        st.a_cr = ival(v)
        st.a_cache_known = True
    v = u.get("output_tokens")
    if v is not None:
        st.a_out = ival(v)
    us = st.usage
    us.input_tokens = st.a_in + st.a_cw + st.a_cr
    us.cached_tokens = st.a_cr
    us.output_tokens = st.a_out
    us.reported = True


class _Counts:
    __slots__ = ("usage", "a_in", "a_cw", "a_cr", "a_out", "a_cache_known")

    def __init__(self, usage):
        self.usage = usage
        self.a_in = self.a_cw = self.a_cr = self.a_out = 0
        self.a_cache_known = False

    def openai(self) -> dict:
        return usage_dict(self.usage, self.a_cache_known, self.a_cw if self.a_cw else None)


class AnthropicAdapter(Adapter):
    kind = "anthropic"

    def __init__(self, provider):
        super().__init__(provider)
        h = [JSON_CT, (b"anthropic-version", VERSION)]
        if provider.api_key:
            h.append((b"x-api-key", provider.api_key.encode()))
        self.headers = tuple(h)
        bp = self.base_path
        self.chat_path = (bp if bp.endswith(b"/v1") else bp + b"/v1") + b"/messages"

    def chat_request(self, model_id: str, body: dict, stream: bool) -> ProviderRequest:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("messages must be a non-empty list")
        check_n(body)
        system = []
        out = []
        for m in msgs:
            if not isinstance(m, dict):
                raise ValueError("each message must be an object")
            role = m.get("role")
            if role == "user":
                _push(out, "user", _user_blocks(m.get("content")))
            elif role == "assistant":
                blocks = []
                c = m.get("content")
                if c:
                    t = text_of(c, "assistant")
                    if t:
                        blocks.append({"type": "text", "text": t})
                for tc in m.get("tool_calls") or ():
                    f = tc.get("function") if isinstance(tc, dict) else None
                    if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                        raise ValueError("assistant tool_calls need function.name")
                    blocks.append({"type": "tool_use", "id": tool_id(tc.get("id")),
                                   "name": f["name"], "input": tool_args(f.get("arguments"))})
                _push(out, "assistant", blocks)
            elif role == "tool":
                b = {"type": "tool_result", "tool_use_id": tool_id(m.get("tool_call_id"))}
                t = text_of(m.get("content"), "tool")
                if t:
                    b["content"] = t
                _push(out, "user", [b])
            elif role in ("system", "developer"):
                t = text_of(m.get("content"), role)
                if t:
                    system.append(t)
            else:
                raise ValueError(f"unsupported message role {role!r}")
        if not out:
            raise ValueError("messages need at least one user or assistant message")
        for m in out:                       # tool results must lead their user message
            c = m["content"]
            if m["role"] == "user" and len(c) > 1 and any(b["type"] == "tool_result" for b in c):
                c.sort(key=lambda b: b["type"] != "tool_result")
        ji = json_instruction(body.get("response_format"))
        if ji:
            system.append(ji)
        mt = max_tokens_of(body)
        d = {"model": model_id, "max_tokens": mt or DEFAULT_MAX_TOKENS, "messages": out}
        if system:
            d["system"] = "\n\n".join(system)
        v = body.get("temperature")
        if v is not None:
            if not isinstance(v, (int, float)):
                raise ValueError("temperature must be a number")
            d["temperature"] = min(max(v, 0), 1)
        v = body.get("top_p")
        if v is not None and "temperature" not in d:     # recent models refuse both at once
            d["top_p"] = v
        st = stop_list(body.get("stop"))
        if st:
            d["stop_sequences"] = st
        tools = body.get("tools")
        if tools:
            d["tools"] = _tools(tools)
            tc = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
            if tc is not None:
                d["tool_choice"] = tc
        if isinstance(body.get("user"), str) and body["user"]:
            d["metadata"] = {"user_id": body["user"]}
        if stream:
            d["stream"] = True
        return ProviderRequest(b"POST", self.chat_path, self.headers, dumps(d))

    def chat_response(self, raw: bytes, model_name: str):
        try:
            doc = loads(raw)
        except JSONDecodeError:
            raise ValueError("the AI provider's answer is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
            raise ValueError("the AI provider's answer is not an Anthropic message")
        texts = []
        calls = []
        for b in doc["content"]:
            t = b.get("type") if isinstance(b, dict) else None
            if t == "text":
                texts.append(b.get("text") or "")
            elif t == "tool_use":
                calls.append({"id": b.get("id"), "type": "function",
                              "function": {"name": b.get("name"),
                                           "arguments": dumps(b.get("input") or {}).decode()}})
        msg = {"role": "assistant",
               "content": "".join(texts) if texts or not calls else None}
        if calls:
            msg["tool_calls"] = calls
        counts = _Counts(Usage())
        anthropic_usage(doc.get("usage"), counts)
        mid = doc.get("id")
        doc = completion("chatcmpl-" + mid if isinstance(mid, str) else new_id(),
                         int(time.time()), model_name, msg,
                         FINISH.get(doc.get("stop_reason"), "stop"), counts.openai())
        return doc, counts.usage

    def chat_stream(self, model_name: str, include_usage: bool):
        return AnthropicStream(self, model_name, include_usage)

    def _error_fields(self, status, doc):
        e = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(e, dict):
            return None
        at = e.get("type")
        return (as_message(e.get("message")), ERROR_TYPES.get(at),
                at if isinstance(at, str) else None, None, at == "authentication_error")


class AnthropicStream(StreamBase):
    def __init__(self, adapter, model_name, include_usage):
        super().__init__(adapter, model_name, include_usage)
        self.counts = _Counts(self.usage)
        self.ch = None
        self.blocks = {}            # content block index -> [tool index, got arguments]
        self.ntools = 0
        self.finish_reason = None

    def _chunks(self, mid=None) -> Chunks:
        if self.ch is None:
            self.ch = Chunks("chatcmpl-" + mid if isinstance(mid, str) and mid else new_id(),
                             int(time.time()), self.model_name)
        return self.ch

    def _event(self, event, data, out):
        try:
            e = loads(data)
        except JSONDecodeError:
            out.append(self.fail("the AI provider sent an unreadable stream event"))
            return
        t = e.get("type") if isinstance(e, dict) else None
        if t == "content_block_delta":
            d = e.get("delta")
            if not isinstance(d, dict):
                return
            dt = d.get("type")
            if dt == "text_delta":
                txt = d.get("text")
                if txt:
                    out.append(self._chunks().delta({"content": txt}))
            elif dt == "input_json_delta":
                st = self.blocks.get(e.get("index"))
                pj = d.get("partial_json")
                if st is not None and pj:
                    st[1] = True
                    out.append(self._chunks().delta(
                        {"tool_calls": [{"index": st[0], "function": {"arguments": pj}}]}))
            # thinking_delta, signature_delta, citations_delta: not relayed
        elif t == "message_start":
            m = e.get("message")
            m = m if isinstance(m, dict) else {}
            ch = self._chunks(m.get("id"))
            anthropic_usage(m.get("usage"), self.counts)
            out.append(ch.delta({"role": "assistant", "content": ""}))
        elif t == "content_block_start":
            b = e.get("content_block")
            bt = b.get("type") if isinstance(b, dict) else None
            if bt == "text":
                if b.get("text"):
                    out.append(self._chunks().delta({"content": b["text"]}))
            elif bt == "tool_use":
                st = [self.ntools, False]
                self.ntools += 1
                self.blocks[e.get("index")] = st
                inp = b.get("input")
                args = dumps(inp).decode() if inp else ""
                st[1] = bool(args)
                out.append(self._chunks().delta({"tool_calls": [{
                    "index": st[0], "id": b.get("id"), "type": "function",
                    "function": {"name": b.get("name"), "arguments": args}}]}))
        elif t == "content_block_stop":
            st = self.blocks.get(e.get("index"))
            if st is not None and not st[1]:          # a call without arguments: "{}"
                st[1] = True
                out.append(self._chunks().delta(
                    {"tool_calls": [{"index": st[0], "function": {"arguments": "{}"}}]}))
        elif t == "message_delta":
            d = e.get("delta")
            sr = d.get("stop_reason") if isinstance(d, dict) else None
            if sr:
                self.finish_reason = FINISH.get(sr, "stop")
            anthropic_usage(e.get("usage"), self.counts)
        elif t == "message_stop":
            if not self.complete:
                self.complete = True
                out.append(self._chunks().finish(self.finish_reason or "stop"))
        elif t == "error":
            err = e.get("error")
            msg = as_message(err.get("message")) if isinstance(err, dict) else None
            out.append(self.fail(msg or "the AI provider reported an error mid-stream"))
        # ping and unknown events: nothing

    def _final(self, out):
        if self.include_usage:
            out.append(self._chunks().usage(self.counts.openai()))


ADAPTERS["anthropic"] = AnthropicAdapter
