"""Shared pieces of the provider adapters: base URL, key scrubbing, OpenAI error bodies,
OpenAI chunk framing, usage dicts, content helpers and the stream translator skeleton."""
from __future__ import annotations

import os

import orjson

from fastgate.config.values import parse_url

from . import Usage
from ..sse import SSEParser

loads = orjson.loads
dumps = orjson.dumps
JSONDecodeError = orjson.JSONDecodeError

DONE = b"data: [DONE]\n\n"
JSON_CT = (b"content-type", b"application/json")


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + os.urandom(12).hex()


# --- the provider's key never leaves ----------------------------------------------------------

class Scrubber:
    """``scrub(text)`` -> text with the key and every 8+-character piece of it replaced by
    "***" (an 8+ common substring always contains a common 8-character window)."""
    __slots__ = ("key", "windows")
    W = 8

    def __init__(self, key: str | None):
        self.key = key or None
        k = self.key
        self.windows = (frozenset(k[i:i + self.W] for i in range(len(k) - self.W + 1))
                        if k and len(k) >= self.W else None)

    def __call__(self, text):
        if not isinstance(text, str):
            return text
        k = self.key
        if k is None:
            return text
        ws = self.windows
        if ws is None:                       # a key shorter than 8 characters: the whole key
            return text.replace(k, "***") if k in text else text
        w = self.W
        n = len(text)
        if n < w:
            return text
        covered = None
        for i in range(n - w + 1):
            if text[i:i + w] in ws:
                if covered is None:
                    covered = bytearray(n)
                covered[i:i + w] = b"\1" * w
        if covered is None:
            return text
        out = []
        i = 0
        while i < n:
            if covered[i]:
                while i < n and covered[i]:
                    i += 1
                out.append("***")
            else:
                j = covered.find(b"\1", i)
                j = n if j < 0 else j
                out.append(text[i:j])
                i = j
        return "".join(out)


# --- OpenAI error bodies -------------------------------------------------------------------

def error_doc(message: str, etype: str, code=None, param=None) -> dict:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def error_bytes(message: str, etype: str, code=None, param=None) -> bytes:
    return dumps(error_doc(message, etype, code, param))


def type_for_status(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def client_status(status: int) -> int:
    """The status the client gets for a provider error status (same class; odd ones 502)."""
    if 400 <= status < 500:
        return status
    if status == 529:                         # Anthropic "overloaded": a standard 5xx
        return 503
    if 500 <= status < 600:
        return status
    return 502


# --- base adapter --------------------------------------------------------------------------

class Adapter:
    """Base URL and key handling, and error translation through ``_error_fields``."""
    kind = "openai"

    def __init__(self, provider):
        r = parse_url(provider.base_url)
        if isinstance(r, str):
            raise ValueError(f"provider {provider.name!r}: {r}")
        self.scheme, self.host, self.port, path = r
        self.base_path = path.rstrip("/").encode()
        self.provider = provider
        self.name = provider.name
        self.scrub = Scrubber(provider.api_key)

    def auth_failed_message(self) -> str:
        return (f"the AI provider {self.name!r} refused the gateway's credentials "
                "(a gateway configuration problem, not the request's)")

    def error_response(self, status: int, raw: bytes):
        """Provider error (status, body) -> (client status, OpenAI error JSON bytes).
        401/403 (and a key the provider calls invalid) -> 502 with a generic message;
        every text field is scrubbed of the provider's key."""
        try:
            doc = loads(raw) if raw else None
        except (JSONDecodeError, TypeError):
            doc = None
        fields = self._error_fields(status, doc) if isinstance(doc, (dict, list)) else None
        if fields is not None and fields[4]:
            status = 401
        if status in (401, 403):
            return 502, error_bytes(self.auth_failed_message(), "api_error",
                                    "provider_auth_error")
        cs = client_status(status)
        if fields is None or not fields[0]:
            return cs, error_bytes(
                f"the AI provider {self.name!r} answered with status {status}",
                type_for_status(cs), "provider_error")
        msg, etype, code, param, _ = fields
        sc = self.scrub
        if code is not None and not isinstance(code, (str, int)):
            code = None
        if param is not None and not isinstance(param, str):
            param = None
        return cs, error_bytes(sc(msg), etype or type_for_status(cs), sc(code), sc(param))

    def _error_fields(self, status, doc):
        """-> (message, type, code, param, key_refused) or None (not an error shape)."""
        raise NotImplementedError

    def embeddings_request(self, model_id: str, body: dict):
        raise ValueError(f"provider type {self.provider.type!r} has no embeddings endpoint")

    def embeddings_response(self, raw: bytes, model_name: str, encoding_format=None):
        raise ValueError(f"provider type {self.provider.type!r} has no embeddings endpoint")


def as_message(v) -> str | None:
    """An error's message field as text (some providers nest objects there)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    try:
        return dumps(v).decode()
    except TypeError:
        return None


# --- OpenAI chunks and usage ---------------------------------------------------------------

class Chunks:
    """Frames ``chat.completion.chunk`` events of one stream (one choice, index 0)."""
    __slots__ = ("head", "pre")

    def __init__(self, cid: str, created: int, model_name: str):
        h = dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model_name})[:-1]
        self.head = b"data: " + h
        self.pre = self.head + b',"choices":[{"index":0,"delta":'

    def delta(self, delta: dict) -> bytes:
        return self.pre + dumps(delta) + b',"logprobs":null,"finish_reason":null}]}\n\n'

    def finish(self, reason: str) -> bytes:
        return self.pre + b'{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]}\n\n'

    def usage(self, usage: dict) -> bytes:
        return self.head + b',"choices":[],"usage":' + dumps(usage) + b"}\n\n"


def usage_dict(u: Usage, cache_known: bool = False, cache_write: int | None = None,
               reasoning: int | None = None) -> dict:
    d = {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
         "total_tokens": u.input_tokens + u.output_tokens}
    if cache_known or cache_write is not None:
        ptd = {"cached_tokens": u.cached_tokens}
        if cache_write is not None:
            ptd["cache_write_tokens"] = cache_write
        d["prompt_tokens_details"] = ptd
    if reasoning is not None:
        d["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return d


def ival(v) -> int:
    """A token count from a provider document (missing/null/odd -> 0)."""
    return v if type(v) is int and v > 0 else 0


def completion(cid: str, created: int, model_name: str, message: dict, finish: str,
               usage: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage}


# --- request helpers -----------------------------------------------------------------------

def text_of(content, what: str) -> str:
    """A message content that may only hold text (string or text parts) -> str."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                out.append(p["text"])
            elif isinstance(p, dict) and p.get("type") == "refusal":
                out.append(p.get("refusal") or "")
            else:
                raise ValueError(f"{what} content parts must be text")
        return "".join(out)
    raise ValueError(f"{what} content must be a string or a list of parts")


def data_uri(url: str):
    """"data:image/png;base64,AAAA" -> ("image/png", "AAAA"); None if not a data URI."""
    if not url.startswith("data:"):
        return None
    head, comma, data = url.partition(",")
    if not comma or not head.endswith(";base64"):
        raise ValueError("data URIs must be base64 encoded (data:<type>;base64,<data>)")
    mime = head[5:-7].split(";", 1)[0].strip().lower()
    if not mime:
        raise ValueError("data URI without a media type")
    return mime, data


def image_url_of(part: dict) -> str:
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise ValueError("image_url parts need image_url.url")
    return url


def tool_args(arguments) -> dict:
    """An assistant tool call's ``arguments`` (JSON text) -> dict."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "" or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        raise ValueError("tool call arguments must be a JSON string")
    try:
        v = loads(arguments)
    except JSONDecodeError:
        raise ValueError("tool call arguments are not valid JSON") from None
    if not isinstance(v, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return v


def stop_list(stop) -> list | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop or None
    raise ValueError("stop must be a string or a list of strings")


def max_tokens_of(body: dict):
    v = body.get("max_completion_tokens")
    if v is None:
        v = body.get("max_tokens")
    if v is not None and (type(v) is not int or v < 1):
        raise ValueError("max_tokens must be a positive integer")
    return v


def check_n(body: dict) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise ValueError("this model's provider answers one choice per request (n must be 1)")


def json_instruction(rf) -> str | None:
    """``response_format`` -> a system instruction for providers without a JSON mode."""
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise ValueError("response_format must be an object")
    t = rf.get("type")
    if t == "text" or t is None:
        return None
    if t == "json_object":
        return ("Respond with one valid JSON object and nothing else: no prose, no markdown, "
                "no code fences.")
    if t == "json_schema":
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("response_format.json_schema.schema must be an object")
        return ("Respond with one valid JSON value that conforms to this JSON Schema, and "
                "nothing else (no prose, no markdown, no code fences): " + dumps(schema).decode())
    raise ValueError(f"unsupported response_format type {t!r}")


# --- stream translator skeleton ------------------------------------------------------------

class StreamBase:
    """Provider SSE bytes in -> OpenAI SSE bytes out. Subclasses implement ``_event`` (append
    output to ``out``; set ``complete`` once the provider said the answer is whole)."""

    def __init__(self, adapter, model_name: str, include_usage: bool):
        self.scrub = adapter.scrub
        self.model_name = model_name
        self.include_usage = include_usage
        self.usage = Usage()
        self.sse = SSEParser()
        self.ended = False           # our [DONE] went out
        self.complete = False        # the provider finished its answer

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""
        try:
            events = self.sse.feed(data)
        except ValueError as e:
            return self.fail(str(e))
        if not events:
            return b""
        out = []
        for ev, d in events:
            self._safe_event(ev, d, out)
            if self.ended:
                break
        return b"".join(out)

    def _safe_event(self, ev, d, out) -> None:
        """One event; one of a shape no provider sends (a number where a list belongs, ...)
        ends the stream with the error event rather than raising out of the translator
        (found by tests/fuzz/fuzz_ai_stream.py)."""
        try:
            self._event(ev, d, out)
        except (TypeError, KeyError, IndexError, AttributeError, ValueError):
            out.append(self.fail("the AI provider sent an invalid stream event"))

    def finish(self) -> bytes:
        """End of the provider's body: the rest, then ``data: [DONE]`` (a stream that stopped
        before the provider's end marker ends with the error event instead)."""
        if self.ended:
            return b""
        out = []
        for ev, d in self.sse.close():
            self._safe_event(ev, d, out)
            if self.ended:
                return b"".join(out)
        if not self.complete:
            out.append(self.fail("the AI provider's stream ended before the answer was complete"))
            return b"".join(out)
        self._final(out)
        self.ended = True
        out.append(DONE)
        return b"".join(out)

    def fail(self, message: str) -> bytes:
        """The error event that ends a broken stream (b"" once the stream has ended)."""
        if self.ended:
            return b""
        self.ended = True
        return (b"data: " + dumps({"error": {"message": self.scrub(message) or "stream failed",
                                             "type": "server_error", "param": None,
                                             "code": "provider_stream_error"}})
                + b"\n\n" + DONE)

    def _event(self, event: str, data: str, out: list) -> None:
        raise NotImplementedError

    def _final(self, out: list) -> None:
        """At the end of a complete stream, before [DONE]: the usage chunk (if asked)."""
        raise NotImplementedError
