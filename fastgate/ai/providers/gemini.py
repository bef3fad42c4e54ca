"""Gemini API (POST {base}/v1beta/models/{model}:generateContent, streaming
``:streamGenerateContent?alt=sse``, embeddings ``:batchEmbedContents``) <-> OpenAI.
The key goes in the ``x-goog-api-key`` header only, never in the URL.

Request: system/developer messages -> ``systemInstruction`` (merged, blank-line joined);
roles user/assistant -> user/model (same-role neighbours merged); image parts -> ``inlineData``
(data URIs) or ``fileData`` (URLs); ``input_audio`` and file data URIs -> ``inlineData``;
assistant tool calls -> ``functionCall`` parts; ``tool`` results -> ``functionResponse``
parts in a user turn, named after the earlier assistant tool call with that id (a JSON
object result is sent as is, anything else as ``{"result": text}``); tools ->
``functionDeclarations`` with ``parametersJsonSchema`` (JSON Schema as OpenAI clients write
it, ``additionalProperties`` and all); ``tool_choice`` -> ``functionCallingConfig`` mode
AUTO/NONE/ANY (+ ``allowedFunctionNames``); max tokens, temperature, top_p, stop, seed ->
``generationConfig``; ``response_format`` json_object -> ``responseMimeType``
application/json, json_schema -> also ``responseJsonSchema``.

Thought signatures (Gemini 3 rejects a replayed function call without the signature it came
with): a ``functionCall`` part's ``thoughtSignature`` travels inside the OpenAI tool call id
(``call_<12 hex>_ts_<signature, base64url>``) and is put back on the part when the client
sends the history again; a function call without one (history from another model) gets
Google's documented "skip_thought_signature_validator" placeholder, except on models before
Gemini 3 (gemini-1.x/2.x, gemma), which never asked for one.

Usage: the last ``usageMetadata`` of the answer; input = promptTokenCount (+
toolUsePromptTokenCount), output = candidatesTokenCount + thoughtsTokenCount, cached =
cachedContentTokenCount.
"""
from __future__ import annotations

import base64
import os
import sys
import time
from array import array

from . import ADAPTERS, ProviderRequest, Usage
from .common import (JSON_CT, Adapter, Chunks, JSONDecodeError, StreamBase, as_message,
                     check_n, completion, data_uri, dumps, image_url_of, ival, loads,
                     max_tokens_of, new_id, stop_list, text_of, tool_args, usage_dict)

SKIP_SIGNATURE = "skip_thought_signature_validator"
_SIG = "_ts_"

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "FINISH_REASON_UNSPECIFIED": "stop",
          "MALFORMED_FUNCTION_CALL": "stop", "UNEXPECTED_TOOL_CALL": "stop",
          "TOO_MANY_TOOL_CALLS": "stop", "OTHER": "stop", "LANGUAGE": "content_filter"}
# SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_* ... -> content_filter

ERROR_TYPES = {"INVALID_ARGUMENT": "invalid_request_error",
               "FAILED_PRECONDITION": "invalid_request_error",
               "NOT_FOUND": "invalid_request_error", "OUT_OF_RANGE": "invalid_request_error",
               "RESOURCE_EXHAUSTED": "rate_limit_error", "INTERNAL": "server_error",
               "UNAVAILABLE": "server_error", "DEADLINE_EXCEEDED": "server_error"}
_KEY_REASONS = frozenset(("API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
                          "API_KEY_HTTP_REFERRER_BLOCKED", "API_KEY_IP_ADDRESS_BLOCKED"))
_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                "gif": "image/gif", "webp": "image/webp", "heic": "image/heic",
                "pdf": "application/pdf"}


def finish_reason(fr) -> str:
    return FINISH.get(fr, "content_filter") if fr else "stop"


# --- thought signatures in tool call ids ----------------------------------------------------

def call_id(signature=None) -> str:
    cid = "call_" + os.urandom(6).hex()
    if isinstance(signature, str) and signature:
        cid += _SIG + signature.replace("+", "-").replace("/", "_").rstrip("=")
    return cid


def signature_of(cid) -> str | None:
    if isinstance(cid, str) and len(cid) > 21 and cid[17:21] == _SIG and cid[:5] == "call_":
        s = cid[21:].replace("-", "+").replace("_", "/")
        return s + "=" * (-len(s) % 4)
    return None


def _needs_placeholder(model_id: str) -> bool:
    m = model_id.rsplit("/", 1)[-1]
    return not m.startswith(("gemini-1", "gemini-2", "gemma"))


# --- request --------------------------------------------------------------------------------

def _user_parts(content) -> list:
    if isinstance(content, str):
        return [{"text": content}] if content else []
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
                out.append({"text": txt})
        elif t == "image_url":
            url = image_url_of(p)
            du = data_uri(url)
            if du is not None:
                out.append({"inlineData": {"mimeType": du[0], "data": du[1]}})
            else:
                fd = {"fileUri": url}
                ext = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
                if ext in _MIME_BY_EXT:
                    fd["mimeType"] = _MIME_BY_EXT[ext]
                out.append({"fileData": fd})
        elif t == "input_audio":
            a = p.get("input_audio")
            if not isinstance(a, dict) or not isinstance(a.get("data"), str):
                raise ValueError("input_audio parts need input_audio.data")
            out.append({"inlineData": {"mimeType": "audio/" + str(a.get("format") or "wav"),
                                       "data": a["data"]}})
        elif t == "file":
            f = p.get("file")
            du = data_uri(f.get("file_data") or "") if isinstance(f, dict) else None
            if du is None:
                raise ValueError("file parts must carry file_data as a data URI for this model")
            out.append({"inlineData": {"mimeType": du[0], "data": du[1]}})
        else:
            raise ValueError(f"unsupported content part type {t!r} for this model")
    return out


def _push(out: list, role: str, parts: list) -> None:
    if not parts:
        return
    if out and out[-1]["role"] == role:
        out[-1]["parts"].extend(parts)
    else:
        out.append({"role": role, "parts": parts})


def _result(text: str) -> dict:
    if text[:1] == "{":
        try:
            v = loads(text)
        except JSONDecodeError:
            v = None
        if isinstance(v, dict):
            return v
    return {"result": text}


def _tools(tools) -> list:
    if not isinstance(tools, list):
        raise ValueError("tools must be a list")
    decls = []
    for t in tools:
        f = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise ValueError("tools must be {type: function, function: {name, parameters}}")
        d = {"name": f["name"]}
        if f.get("description"):
            d["description"] = f["description"]
        if isinstance(f.get("parameters"), dict) and f["parameters"]:
            d["parametersJsonSchema"] = f["parameters"]
        decls.append(d)
    return [{"functionDeclarations": decls}]


def _tool_config(tc) -> dict | None:
    if tc is None:
        return None
    if tc == "auto":
        fc = {"mode": "AUTO"}
    elif tc == "none":
        fc = {"mode": "NONE"}
    elif tc == "required":
        fc = {"mode": "ANY"}
    elif isinstance(tc, dict) and tc.get("type") == "function" \
            and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str):
        fc = {"mode": "ANY", "allowedFunctionNames": [tc["function"]["name"]]}
    else:
        raise ValueError("unsupported tool_choice (auto, none, required or a function)")
    return {"functionCallingConfig": fc}


def gemini_usage(um, usage: Usage) -> dict | None:
    """usageMetadata -> ``usage`` (replaced, not added: the last one is the total) and the
    OpenAI usage dict."""
    if not isinstance(um, dict) or (type(um.get("promptTokenCount")) is not int
                                    and type(um.get("candidatesTokenCount")) is not int):
        return None
    usage.input_tokens = ival(um.get("promptTokenCount")) + ival(um.get("toolUsePromptTokenCount"))
    th = um.get("thoughtsTokenCount")
    usage.output_tokens = ival(um.get("candidatesTokenCount")) + ival(th)
    cc = um.get("cachedContentTokenCount")
    usage.cached_tokens = ival(cc)
    usage.reported = True
    return usage_dict(usage, cc is not None, None, ival(th) if th is not None else None)


class GeminiAdapter(Adapter):
    kind = "gemini"

    def __init__(self, provider):
        super().__init__(provider)
        h = [JSON_CT]
        if provider.api_key:
            h.append((b"x-goog-api-key", provider.api_key.encode()))
        self.headers = tuple(h)
        bp = self.base_path
        self.root = bp if bp.endswith(b"/v1beta") else bp + b"/v1beta"

    def _model(self, model_id: str) -> str:
        return model_id if "/" in model_id else "models/" + model_id

    def chat_request(self, model_id: str, body: dict, stream: bool) -> ProviderRequest:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("messages must be a non-empty list")
        check_n(body)
        placeholder = _needs_placeholder(model_id)
        names = {}
        system = []
        contents = []
        for m in msgs:
            if not isinstance(m, dict):
                raise ValueError("each message must be an object")
            role = m.get("role")
            if role == "user":
                _push(contents, "user", _user_parts(m.get("content")))
            elif role == "assistant":
                parts = []
                c = m.get("content")
                if c:
                    t = text_of(c, "assistant")
                    if t:
                        parts.append({"text": t})
                first = None
                signed = False
                for tc in m.get("tool_calls") or ():
                    f = tc.get("function") if isinstance(tc, dict) else None
                    if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                        raise ValueError("assistant tool_calls need function.name")
                    tid = tc.get("id")
                    names[tid] = f["name"]
                    p = {"functionCall": {"name": f["name"], "args": tool_args(f.get("arguments"))}}
                    sig = signature_of(tid)
                    if sig:
                        p["thoughtSignature"] = sig
                        signed = True
                    if first is None:
                        first = p
                    parts.append(p)
                if first is not None and not signed and placeholder:
                    first["thoughtSignature"] = SKIP_SIGNATURE
                _push(contents, "model", parts)
            elif role in ("tool", "function"):
                name = names.get(m.get("tool_call_id")) or m.get("name")
                if not isinstance(name, str) or not name:
                    raise ValueError("a tool message answers no earlier assistant tool call "
                                     "(tool_call_id unknown)")
                _push(contents, "user", [{"functionResponse": {
                    "name": name, "response": _result(text_of(m.get("content"), "tool"))}}])
            elif role in ("system", "developer"):
                t = text_of(m.get("content"), role)
                if t:
                    system.append(t)
            else:
                raise ValueError(f"unsupported message role {role!r}")
        if not contents:
            raise ValueError("messages need at least one user or assistant message")
        d = {"contents": contents}
        if system:
            d["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        gc = {}
        mt = max_tokens_of(body)
        if mt is not None:
            gc["maxOutputTokens"] = mt
        for k, g in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
            v = body.get(k)
            if v is not None:
                gc[g] = v
        st = stop_list(body.get("stop"))
        if st:
            gc["stopSequences"] = st
        rf = body.get("response_format")
        if rf is not None:
            t = rf.get("type") if isinstance(rf, dict) else None
            if t == "json_object":
                gc["responseMimeType"] = "application/json"
            elif t == "json_schema":
                js = rf.get("json_schema")
                schema = js.get("schema") if isinstance(js, dict) else None
                if not isinstance(schema, dict):
                    raise ValueError("response_format.json_schema.schema must be an object")
                gc["responseMimeType"] = "application/json"
                gc["responseJsonSchema"] = schema
            elif t != "text":
                raise ValueError(f"unsupported response_format type {t!r}")
        if gc:
            d["generationConfig"] = gc
        tools = body.get("tools")
        if tools:
            d["tools"] = _tools(tools)
            tc = _tool_config(body.get("tool_choice"))
            if tc is not None:
                d["toolConfig"] = tc
        path = self.root + b"/" + self._model(model_id).encode() + (
            b":streamGenerateContent?alt=sse" if stream else b":generateContent")
        return ProviderRequest(b"POST", path, self.headers, dumps(d))

    def chat_response(self, raw: bytes, model_name: str):
        try:
            doc = loads(raw)
        except JSONDecodeError:
            raise ValueError("the AI provider's answer is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("the AI provider's answer is not a GenerateContentResponse")
        usage = Usage()
        ud = gemini_usage(doc.get("usageMetadata"), usage) or usage_dict(usage)
        texts = []
        calls = []
        cands = doc.get("candidates")
        if isinstance(cands, list) and cands and isinstance(cands[0], dict):
            c = cands[0]
            content = c.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for p in parts if isinstance(parts, list) else ():
                if not isinstance(p, dict) or p.get("thought"):
                    continue
                if "text" in p:
                    texts.append(p["text"] or "")
                fc = p.get("functionCall")
                if isinstance(fc, dict):
                    calls.append({"id": call_id(p.get("thoughtSignature")), "type": "function",
                                  "function": {"name": fc.get("name"),
                                               "arguments": dumps(fc.get("args") or {}).decode()}})
            finish = finish_reason(c.get("finishReason"))
        else:                                  # the prompt itself was blocked
            pf = doc.get("promptFeedback")
            finish = "content_filter" if isinstance(pf, dict) and pf.get("blockReason") else "stop"
        if calls and finish == "stop":
            finish = "tool_calls"
        msg = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
        if calls:
            msg["tool_calls"] = calls
        rid = doc.get("responseId")
        out = completion("chatcmpl-" + rid if isinstance(rid, str) and rid else new_id(),
                         int(time.time()), model_name, msg, finish, ud)
        return out, usage

    def chat_stream(self, model_name: str, include_usage: bool):
        return GeminiStream(self, model_name, include_usage)

    def _error_fields(self, status, doc):
        if isinstance(doc, list) and doc:          # some endpoints wrap errors in a list
            doc = doc[0]
        e = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(e, dict):
            return None
        gs = e.get("status")
        gs = gs if isinstance(gs, str) else None
        msg = as_message(e.get("message"))
        refused = gs == "UNAUTHENTICATED" or (isinstance(msg, str) and "API key not valid" in msg)
        for det in e.get("details") or ():
            if isinstance(det, dict) and det.get("reason") in _KEY_REASONS:
                refused = True
        return msg, ERROR_TYPES.get(gs), gs.lower() if gs else None, None, refused

    # --- embeddings ---
    def embeddings_request(self, model_id: str, body: dict) -> ProviderRequest:
        inp = body.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(s, str) for s in inp):
            texts = inp
        else:
            raise ValueError("input must be a string or a non-empty list of strings "
                             "(token arrays are not supported by this model)")
        model = self._model(model_id)
        dims = body.get("dimensions")
        if dims is not None and (type(dims) is not int or dims < 1):
            raise ValueError("dimensions must be a positive integer")
        reqs = []
        for t in texts:
            r = {"model": model, "content": {"parts": [{"text": t}]}}
            if dims is not None:
                r["outputDimensionality"] = dims
            reqs.append(r)
        path = self.root + b"/" + model.encode() + b":batchEmbedContents"
        return ProviderRequest(b"POST", path, self.headers, dumps({"requests": reqs}))

    def embeddings_response(self, raw: bytes, model_name: str, encoding_format=None):
        """``encoding_format`` (the client's): "base64" answers little-endian float32
        base64 strings as OpenAI does; otherwise float lists (which the OpenAI SDKs also
        accept when they asked for base64 by default)."""
        try:
            doc = loads(raw)
        except JSONDecodeError:
            raise ValueError("the AI provider's answer is not valid JSON") from None
        embs = doc.get("embeddings") if isinstance(doc, dict) else None
        if not isinstance(embs, list):
            one = doc.get("embedding") if isinstance(doc, dict) else None   # :embedContent
            if not isinstance(one, dict):
                raise ValueError("the AI provider's answer has no embeddings")
            embs = [one]
        data = []
        for i, e in enumerate(embs):
            v = e.get("values") if isinstance(e, dict) else None
            v = v if isinstance(v, list) else []
            if encoding_format == "base64":
                a = array("f", v)
                if sys.byteorder != "little":
                    a.byteswap()
                v = base64.b64encode(a.tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": v})
        usage = Usage()
        um = doc.get("usageMetadata")
        if isinstance(um, dict) and type(um.get("promptTokenCount")) is int:
            usage.input_tokens = ival(um["promptTokenCount"])
            usage.reported = True
        n = usage.input_tokens
        return ({"object": "list", "data": data, "model": model_name,
                 "usage": {"prompt_tokens": n, "total_tokens": n}}, usage)


class GeminiStream(StreamBase):
    def __init__(self, adapter, model_name, include_usage):
        super().__init__(adapter, model_name, include_usage)
        self.ch = None
        self.ntools = 0
        self.udict = None

    def _event(self, event, data, out):
        try:
            e = loads(data)
        except JSONDecodeError:
            out.append(self.fail("the AI provider sent an unreadable stream event"))
            return
        if not isinstance(e, dict):
            return
        if "error" in e:
            err = e["error"]
            msg = as_message(err.get("message")) if isinstance(err, dict) else as_message(err)
            out.append(self.fail(msg or "the AI provider reported an error mid-stream"))
            return
        if self.ch is None:
            rid = e.get("responseId")
            self.ch = Chunks("chatcmpl-" + rid if isinstance(rid, str) and rid else new_id(),
                             int(time.time()), self.model_name)
            out.append(self.ch.delta({"role": "assistant", "content": ""}))
        ud = gemini_usage(e.get("usageMetadata"), self.usage)
        if ud is not None:
            self.udict = ud
        if self.complete:
            return
        ch = self.ch
        cands = e.get("candidates")
        c = cands[0] if isinstance(cands, list) and cands and isinstance(cands[0], dict) else None
        if c is None:
            pf = e.get("promptFeedback")
            if isinstance(pf, dict) and pf.get("blockReason"):
                self.complete = True
                out.append(ch.finish("content_filter"))
            return
        content = c.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for p in parts if isinstance(parts, list) else ():
            if not isinstance(p, dict) or p.get("thought"):
                continue
            txt = p.get("text")
            if txt:
                out.append(ch.delta({"content": txt}))
            fc = p.get("functionCall")
            if isinstance(fc, dict):
                out.append(ch.delta({"tool_calls": [{
                    "index": self.ntools, "id": call_id(p.get("thoughtSignature")),
                    "type": "function",
                    "function": {"name": fc.get("name"),
                                 "arguments": dumps(fc.get("args") or {}).decode()}}]}))
                self.ntools += 1
        fr = c.get("finishReason")
        if fr:
            r = finish_reason(fr)
            if r == "stop" and self.ntools:
                r = "tool_calls"
            self.complete = True
            out.append(ch.finish(r))

    def _final(self, out):
        if self.include_usage:
            out.append(self.ch.usage(self.udict or usage_dict(self.usage)))


ADAPTERS["gemini"] = GeminiAdapter
