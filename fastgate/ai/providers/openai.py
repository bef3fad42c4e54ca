"""OpenAI wire format: ``openai``, ``openai_compatible`` (vLLM, Ollama, ...) and ``mistral``.

Passthrough: the client's body goes up with ``model`` replaced by the provider's id, answers
come back with ``model`` replaced by the configured name. Streams always ask upstream for
usage (``stream_options.include_usage``; Mistral sends it unasked and rejects the option):
``usage`` is stripped from every chunk and, when the client asked for it, sent once as the
usage chunk (``choices: []``) just before ``data: [DONE]``.

Mistral differences handled here: no ``stream_options`` / ``max_completion_tokens`` /
``seed`` (-> ``random_seed``) and a few OpenAI-only fields dropped; tool call ids must be 9
alphanumerics (other ids are mapped to a stable 9-character hash); content given as a list
of chunks (reasoning models) is flattened to its text; ``dimensions`` -> ``output_dimension``.
"""
from __future__ import annotations

import hashlib
import re

from . import ADAPTERS, ProviderRequest, Usage
from .common import (JSON_CT, Adapter, Chunks, JSONDecodeError, StreamBase, as_message,
                     dumps, ival, loads, new_id)


def openai_usage(u, usage: Usage) -> None:
    """OpenAI ``usage`` dict -> ``usage`` (in place)."""
    if not isinstance(u, dict):
        return
    pt = u.get("prompt_tokens")
    ct = u.get("completion_tokens")
    if type(pt) is not int and type(ct) is not int:
        return
    usage.input_tokens = ival(pt)
    usage.output_tokens = ival(ct)
    d = u.get("prompt_tokens_details")
    usage.cached_tokens = ival(d.get("cached_tokens")) if isinstance(d, dict) else 0
    usage.reported = True


class OpenAIAdapter(Adapter):
    kind = "openai"

    def __init__(self, provider):
        super().__init__(provider)
        h = [JSON_CT]
        if provider.api_key:
            h.append((b"authorization", b"Bearer " + provider.api_key.encode()))
        self.headers = tuple(h)
        self.chat_path = self.base_path + b"/chat/completions"
        self.embeddings_path = self.base_path + b"/embeddings"

    # --- chat ---
    def chat_request(self, model_id: str, body: dict, stream: bool) -> ProviderRequest:
        d = dict(body)
        d["model"] = model_id
        if stream:
            d["stream"] = True
            self._stream_options(d)
        else:
            d.pop("stream", None)
            d.pop("stream_options", None)
        self._fix_request(d)
        return ProviderRequest(b"POST", self.chat_path, self.headers, dumps(d))

    def _stream_options(self, d: dict) -> None:
        so = d.get("stream_options")
        d["stream_options"] = ({**so, "include_usage": True} if isinstance(so, dict)
                               else {"include_usage": True})

    def _fix_request(self, d: dict) -> None:
        pass

    def chat_response(self, raw: bytes, model_name: str):
        doc = _load_doc(raw)
        if not isinstance(doc.get("choices"), list):
            raise ValueError("the AI provider's answer has no choices")
        doc["model"] = model_name
        usage = Usage()
        openai_usage(doc.get("usage"), usage)
        self._fix_response(doc)
        return doc, usage

    def _fix_response(self, doc: dict) -> None:
        pass

    def chat_stream(self, model_name: str, include_usage: bool):
        return OpenAIStream(self, model_name, include_usage)

    def _error_fields(self, status, doc):
        if not isinstance(doc, dict):
            return None
        e = doc.get("error")
        if isinstance(e, dict):                            # OpenAI, vLLM, ...
            code = e.get("code")
            refused = code == "invalid_api_key"
            return (as_message(e.get("message")), _str(e.get("type")), code, e.get("param"),
                    refused)
        if isinstance(e, str):                             # {"error": "text"} (Ollama)
            return e, None, None, None, False
        msg = doc.get("message")                           # Mistral
        if msg is None:
            msg = doc.get("detail")
        if msg is not None:
            return as_message(msg), _str(doc.get("type")), doc.get("code"), doc.get("param"), False
        return None

    # --- embeddings ---
    def embeddings_request(self, model_id: str, body: dict) -> ProviderRequest:
        d = dict(body)
        d["model"] = model_id
        self._fix_embeddings(d)
        return ProviderRequest(b"POST", self.embeddings_path, self.headers, dumps(d))

    def _fix_embeddings(self, d: dict) -> None:
        pass

    def embeddings_response(self, raw: bytes, model_name: str, encoding_format=None):
        doc = _load_doc(raw)
        if not isinstance(doc.get("data"), list):
            raise ValueError("the AI provider's answer has no embeddings")
        doc["model"] = model_name
        usage = Usage()
        u = doc.get("usage")
        if isinstance(u, dict) and type(u.get("prompt_tokens")) is int:
            usage.input_tokens = ival(u["prompt_tokens"])
            usage.reported = True
        return doc, usage


def _str(v):
    return v if isinstance(v, str) else None


def _load_doc(raw: bytes) -> dict:
    try:
        doc = loads(raw)
    except JSONDecodeError:
        raise ValueError("the AI provider's answer is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("the AI provider's answer is not a JSON object")
    return doc


class OpenAIStream(StreamBase):
    def __init__(self, adapter, model_name: str, include_usage: bool):
        super().__init__(adapter, model_name, include_usage)
        self.raw_usage = None
        self.cid = None
        self.created = None
        self.fix = adapter._fix_chunk if isinstance(adapter, MistralAdapter) else None
        self.tools = 0

    def _event(self, event, data, out):
        if data == "[DONE]":
            self.complete = True
            return
        try:
            c = loads(data)
        except JSONDecodeError:
            out.append(self.fail("the AI provider sent an unreadable stream event"))
            return
        if not isinstance(c, dict):
            return
        choices = c.get("choices")
        if choices is not None and not (isinstance(choices, list) and
                                        all(isinstance(ch, dict) for ch in choices)):
            raise TypeError("choices is not a list of objects")
        if not choices and "error" in c:
            e = c["error"]
            msg = as_message(e.get("message") if isinstance(e, dict) else e)
            out.append(self.fail(msg or "the AI provider reported an error"))
            return
        if "usage" in c:
            u = c.pop("usage")
            if isinstance(u, dict):
                self.raw_usage = u
                openai_usage(u, self.usage)
        if self.cid is None:
            self.cid = c.get("id")
            self.created = c.get("created")
        if not choices:                   # the usage chunk: re-sent at the end when asked
            return
        c["model"] = self.model_name
        c["object"] = "chat.completion.chunk"
        for ch in choices:
            if isinstance(ch, dict) and ch.get("finish_reason"):
                self.complete = True
        if self.fix is not None:
            self.fix(c, self)
        out.append(b"data: " + dumps(c) + b"\n\n")

    def _final(self, out):
        if self.include_usage and self.raw_usage is not None:
            cid = self.cid if isinstance(self.cid, str) else new_id()
            created = self.created if type(self.created) is int else 0
            out.append(Chunks(cid, created, self.model_name).usage(self.raw_usage))


# --- Mistral ---------------------------------------------------------------------------------

_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MISTRAL_DROP = ("stream_options", "user", "store", "service_tier", "logit_bias", "logprobs",
                 "top_logprobs", "modalities", "audio", "reasoning_effort", "verbosity",
                 "web_search_options", "prompt_cache_key", "safety_identifier", "metadata")


def mistral_id(tid):
    """Any tool call id -> 9 alphanumerics (stable: the same id maps to the same one)."""
    if not isinstance(tid, str) or _MISTRAL_ID.fullmatch(tid):
        return tid
    n = int.from_bytes(hashlib.blake2b(tid.encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(out)


def _flatten(content):
    """Mistral content chunks [{"type": "text", "text": ...}, {"type": "thinking"...}] -> text."""
    return "".join(p.get("text") or "" for p in content
                   if isinstance(p, dict) and p.get("type") == "text")


class MistralAdapter(OpenAIAdapter):
    kind = "mistral"

    def _stream_options(self, d):
        d.pop("stream_options", None)          # rejected (422); usage comes unasked

    def _fix_request(self, d):
        for k in _MISTRAL_DROP:
            if k in d:
                del d[k]
        if "max_completion_tokens" in d:
            v = d.pop("max_completion_tokens")
            d.setdefault("max_tokens", v)
        if "seed" in d:
            d.setdefault("random_seed", d.pop("seed"))
        msgs = d.get("messages")
        if isinstance(msgs, list):
            new = None
            for i, m in enumerate(msgs):
                if not isinstance(m, dict):
                    continue
                if m.get("role") == "tool" and "tool_call_id" in m:
                    t = mistral_id(m["tool_call_id"])
                    if t != m["tool_call_id"]:
                        m = {**m, "tool_call_id": t}
                elif isinstance(m.get("tool_calls"), list):
                    tcs = [({**tc, "id": mistral_id(tc.get("id"))}
                            if isinstance(tc, dict) and mistral_id(tc.get("id")) != tc.get("id")
                            else tc) for tc in m["tool_calls"]]
                    if any(a is not b for a, b in zip(tcs, m["tool_calls"])):
                        m = {**m, "tool_calls": tcs}
                if m is not msgs[i]:
                    if new is None:
                        new = list(msgs)
                    new[i] = m
            if new is not None:
                d["messages"] = new

    def _fix_response(self, doc):
        for ch in doc["choices"]:
            m = ch.get("message") if isinstance(ch, dict) else None
            if isinstance(m, dict) and isinstance(m.get("content"), list):
                m["content"] = _flatten(m["content"])

    def _fix_chunk(self, c, st):
        for ch in c["choices"]:
            d = ch.get("delta") if isinstance(ch, dict) else None
            if not isinstance(d, dict):
                continue
            if isinstance(d.get("content"), list):
                d["content"] = _flatten(d["content"])
            tcs = d.get("tool_calls")
            if isinstance(tcs, list):     # whole calls, each a new index across the stream
                for tc in tcs:
                    if not isinstance(tc, dict):
                        continue
                    if tc.get("id") or "index" not in tc:
                        tc["index"] = st.tools
                        st.tools += 1
                    if tc.get("id") and "type" not in tc:
                        tc["type"] = "function"

    def _fix_embeddings(self, d):
        if "dimensions" in d:
            d.setdefault("output_dimension", d.pop("dimensions"))
        d.pop("user", None)


ADAPTERS["openai"] = OpenAIAdapter
ADAPTERS["openai_compatible"] = OpenAIAdapter
ADAPTERS["mistral"] = MistralAdapter
