"""A fake LLM provider on loopback, speaking the real wire formats of OpenAI, Anthropic and Gemini.

Used by the AI-gateway integration tests and as the benchmarks' provider. It is a raw
``asyncio.Protocol`` HTTP/1.1 server (keep-alive, pipelining, Content-Length and chunked request
bodies, TCP_NODELAY) running its own event loop in a background thread::

    with FakeLLM(keys={"openai": "sk-test", "anthropic": "sk-ant-test", "gemini": "AIza-test"}) as llm:
        llm.base_url("openai")     # http://127.0.0.1:PORT/v1  (SDK base_url / gateway base_url)
        llm.base_url("anthropic")  # http://127.0.0.1:PORT
        llm.base_url("gemini")     # http://127.0.0.1:PORT
        ...
        llm.requests[-1].body      # every request is recorded

or as its own process (benchmarks pin it to a core)::

    python -m tests.helpers.fake_llm --port 8011 [--kinds openai,anthropic] [--key openai=sk-x]
                                     [--chunks 4] [--chunk-delay 0] [--record]

It prints ``fake_llm listening on 127.0.0.1:PORT`` once it accepts connections.

Endpoints
---------
OpenAI (also ``mistral`` / ``openai_compatible``)::
    POST /v1/chat/completions   plain, or SSE ``chat.completion.chunk`` events ending ``data: [DONE]``;
                                with ``stream_options.include_usage`` every chunk has ``"usage": null``
                                and a last chunk with ``"choices": []`` carries the usage
    POST /v1/embeddings         ``encoding_format`` float or base64 (the SDK's default)
    GET  /v1/models, GET /v1/models/{id}
Anthropic::
    POST /v1/messages           plain, or SSE message_start (usage.input_tokens,
                                cache_read_input_tokens, output_tokens: 1), content_block_start,
                                ping, content_block_delta (text_delta / input_json_delta),
                                content_block_stop, message_delta (cumulative usage.output_tokens),
                                message_stop.  Requires ``max_tokens``; rejects role "system".
    POST /v1/messages/count_tokens
    GET  /v1/models             (when the request has an ``anthropic-version`` header)
Gemini (``v1beta``, ``v1`` and ``v1alpha``)::
    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (without alt=sse: a streamed JSON array)
    POST /v1beta/models/{model}:batchEmbedContents | :embedContent | :countTokens
    GET  /v1beta/models
    Every stream chunk has ``usageMetadata`` with promptTokenCount/totalTokenCount only; the last
    chunk has finishReason and the full usageMetadata (candidatesTokenCount, thoughtsTokenCount
    when non-zero, cachedContentTokenCount when non-zero).

Auth (expected keys from ``keys=``; a kind missing from it, or ``keys=None``: any key, even none)
    OpenAI     ``Authorization: Bearer <key>``; missing or wrong: 401 invalid_request_error, the
               wrong-key message quotes the key masked like the real one
               ("Incorrect API key provided: sk-ab***yz. ...", see :func:`mask_key`).
    Anthropic  ``x-api-key`` (documented) or ``Authorization: Bearer <key>`` (what the installed
               anthropic SDK sends; ``anthropic_bearer=False`` refuses it); missing or wrong: 401
               authentication_error.  An ``anthropic-version``
               header is always required (400 invalid_request_error).
    Gemini     ``x-goog-api-key``; missing: 403 PERMISSION_DENIED, wrong: 400 INVALID_ARGUMENT /
               API_KEY_INVALID like the real API (``gemini_bad_key_status=401`` to change it).
               A ``key=`` query parameter is ALWAYS rejected with 400, so tests catch keys in URLs.

Deterministic answers
---------------------
The reply text is ``"echo: " + <last user text>`` (see :func:`reply_text`); the last user text is
the text of the last user message (text parts joined with " "), or, when the conversation ends
with tool results, those results' text joined with " " (OpenAI ``role: tool`` messages, Anthropic
``tool_result`` blocks, Gemini ``functionResponse`` parts: a response object with one string value
gives that string, otherwise its compact JSON).  Tokens are whitespace-separated words
(:func:`words`):

    input  = words of every system/developer/user/assistant/tool text in the request
    output = words of the reply text (after ``stop`` and ``max_tokens`` are applied)

``stop``/``stop_sequences``/``stopSequences`` cut the reply before the first match (Anthropic
stop_reason "stop_sequence"); ``max_tokens``/``max_completion_tokens``/``maxOutputTokens`` cut it
to that many words (finish "length" / "max_tokens" / "MAX_TOKENS").  Streams split the text into
``chunks`` pieces on word boundaries (constructor default 4; fewer if the reply has fewer words);
the pieces concatenate to the plain reply.  :meth:`FakeLLM.expected_usage` computes the numbers.

Behaviours, chosen by the requested model id (a token anywhere in it, delimited by non
alphanumerics, so ``gpt-4o-mini-tools`` or ``claude-x-fail-429`` work; tokens combine):
    (none)            normal answer
    tools             2 parallel tool calls: names = the request's first two tools (the first
                      repeated if only one; "get_weather"/"get_time" if none), arguments
                      ``{"text": <last user text>, "index": i}``; finish tool_calls / tool_use /
                      STOP with functionCall parts.  Output tokens: words(name) + words(compact
                      JSON of the arguments) per call.  A conversation ending in tool results gets
                      a normal text answer (so tool loops terminate).
    fail-<status>     that status with the provider's error body, before any byte of an answer
                      (fail-429 adds ``retry-after: <retry_after>``; fail-400/401/403/404/429/500/
                      502/503/504/529 all have provider-specific types)
    slow-<ms>         waits ms before the response head
    hang              reads the request, never answers (until the client goes away)
    drop-mid-stream   sends the head and about half of the stream, then closes the connection
                      without ending the chunked body; a plain request gets half its body, then close
    error-mid-stream  about half of the stream, then a provider error event (OpenAI
                      ``data: {"error": ...}``, Anthropic ``event: error`` overloaded_error, Gemini
                      ``data: {"error": ...}``) and the end of the body; a plain request gets a 500
    slow-stream-<ms>  ms between stream chunks (for cancellation tests)
    chunks-<n>        n stream pieces instead of the constructor's ``chunks``
    big / big-<n>     reply has n (default ``big_words``=1000) extra filler words "w0 w1 ...", and the
                      stream has one piece per word up to ``big_chunks`` (default 500)
    cached-<n>        n prompt tokens were "cached": OpenAI prompt_tokens += n and
                      prompt_tokens_details.cached_tokens = n; Anthropic cache_read_input_tokens = n
                      (input_tokens unchanged, as Anthropic counts them apart); Gemini
                      promptTokenCount += n and cachedContentTokenCount = n
    think-<n>         n reasoning tokens: OpenAI completion_tokens += n (reasoning_tokens = n);
                      Anthropic output_tokens += n; Gemini thoughtsTokenCount = n (candidates unchanged)

Records: ``.requests`` (list of :class:`Recorded`, appended under a lock; ``record=False`` to keep
none), ``.connections_opened``, ``.connections_closed``, ``.cancelled_requests`` (any request whose
client went away before the answer was complete), ``.cancelled_streams`` (the streamed ones
among them), ``.completed`` (answers fully written).  :meth:`FakeLLM.wait_for` polls a condition.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import socket
import struct
import sys
import threading
import time
from urllib.parse import parse_qsl

import orjson

KINDS = ("openai", "anthropic", "gemini")
KIND_ALIASES = {"mistral": "openai", "openai_compatible": "openai"}

_WORD = re.compile(r"\S+")
_GEMINI_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):([A-Za-z]+)$")

# ------------------------------------------------------------------------- deterministic model


def words(text: str) -> int:
    """The fake's token count of a text: its whitespace-separated words."""
    return len(text.split())


def reply_text(user_text: str) -> str:
    return "echo: " + user_text


def embedding(text: str, dims: int = 8) -> list[float]:
    """The deterministic embedding of a text (values are multiples of 1/256: exact in float32)."""
    raw = hashlib.shake_128(text.encode()).digest(dims)
    return [b / 256.0 - 0.5 for b in raw]


def tool_calls(user_text: str, names=()) -> list[tuple[str, dict]]:
    """The two (name, arguments) tool calls the `tools` behaviour answers."""
    names = list(names) or ["get_weather", "get_time"]
    return [(names[0], {"text": user_text, "index": 0}), (names[1 % len(names)], {"text": user_text, "index": 1})]


def tool_tokens(calls) -> int:
    return sum(words(name) + words(orjson.dumps(args).decode()) for name, args in calls)


def split_pieces(text: str, n: int) -> list[str]:
    """Split text into at most n pieces on word boundaries; they concatenate back to text."""
    starts = [m.start() for m in _WORD.finditer(text)]
    if n <= 1 or len(starts) <= 1:
        return [text]
    n = min(n, len(starts))
    idx = [0] + [starts[(len(starts) * j) // n] for j in range(1, n)] + [len(text)]
    return [text[idx[j]:idx[j + 1]] for j in range(n)]


def _thirds(s: str) -> list[str]:
    """A JSON text cut in three (streamed tool arguments arrive as such fragments)."""
    n = len(s)
    return [p for p in (s[:n // 3], s[n // 3:2 * n // 3], s[2 * n // 3:]) if p]


def mask_key(key: str) -> str:
    """How the OpenAI 401 quotes a wrong key: the first and last characters, the rest starred
    (a key shorter than 8 characters is quoted whole, as the real API does)."""
    if len(key) >= 20:
        return key[:8] + "*" * (len(key) - 12) + key[-4:]
    if len(key) >= 8:
        return key[:5] + "***" + key[-2:]
    return key


_FILLER_CACHE: dict[int, str] = {}


def _filler(n: int) -> str:
    s = _FILLER_CACHE.get(n)
    if s is None:
        s = _FILLER_CACHE[n] = " ".join("w%d" % i for i in range(n))
    return s


# ------------------------------------------------------------------------- behaviours


class Behaviour:
    __slots__ = ("tools", "fail", "slow_ms", "hang", "drop", "error_mid", "stream_ms", "chunks",
                 "big", "cached", "think")

    _RX = re.compile(
        r"(?<![A-Za-z0-9])(?:(tools)|fail-(\d{3})|slow-stream-(\d+)|slow-(\d+)|(hang)|(drop-mid-stream)"
        r"|(error-mid-stream)|chunks-(\d+)|big(?:-(\d+))?|cached-(\d+)|think-(\d+))(?![A-Za-z0-9])")

    def __init__(self, model: str, big_words: int):
        self.tools = self.hang = self.drop = self.error_mid = False
        self.fail = self.slow_ms = self.stream_ms = self.chunks = self.big = self.cached = self.think = 0
        for m in self._RX.finditer(model or ""):
            tools, fail, sstream, slow, hang, drop, errmid, chunks, big, cached, think = m.groups()
            if tools:
                self.tools = True
            elif fail:
                self.fail = int(fail)
            elif sstream:
                self.stream_ms = int(sstream)
            elif slow:
                self.slow_ms = int(slow)
            elif hang:
                self.hang = True
            elif drop:
                self.drop = True
            elif errmid:
                self.error_mid = True
            elif chunks:
                self.chunks = max(1, int(chunks))
            elif cached:
                self.cached = int(cached)
            elif think:
                self.think = int(think)
            else:   # big
                self.big = int(big) if big else big_words

    def __repr__(self):
        return "Behaviour(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__
                                           if getattr(self, k))


# ------------------------------------------------------------------------- records


class Recorded:
    """One request the fake received."""
    __slots__ = ("method", "path", "query_string", "query", "headers", "raw_body", "body", "kind",
                 "model", "stream", "behaviour", "completed", "cancelled", "t")

    def __init__(self, method, path, query_string, headers, raw_body):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.query = dict(parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        self.headers = headers            # lower-case name -> value (repeats joined with ", ")
        self.raw_body = raw_body
        self.body = None                  # parsed JSON (None if no body or not JSON)
        self.kind = None                  # "openai" | "anthropic" | "gemini" | None
        self.model = None
        self.stream = False
        self.behaviour = None
        self.completed = False            # the whole answer was written
        self.cancelled = False            # the client went away before that
        self.t = time.monotonic()

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Recorded %s %s%s model=%r stream=%s>" % (
            self.method, self.path, "?" + self.query_string if self.query_string else "", self.model,
            self.stream)


# ------------------------------------------------------------------------- HTTP bits

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(code: int) -> bytes:
    s = _STATUS_LINES.get(code)
    if s is None:
        s = _STATUS_LINES[code] = ("HTTP/1.1 %d %s\r\nserver: fake-llm\r\n" % (
            code, _REASONS.get(code, "Status"))).encode()
    return s


CT_JSON = b"content-type: application/json\r\n"
CT_GJSON = b"content-type: application/json; charset=UTF-8\r\n"
CT_SSE = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
CT_GSSE = b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


class _Plan:
    """What to answer: a plain body, or stream steps (each step written after step_delay)."""
    __slots__ = ("status", "ctype", "extra", "body", "steps", "tail", "fault", "fault_event", "head_delay",
                 "step_delay", "hang")

    def __init__(self, status, ctype, extra=b"", body=None, steps=None, tail=b""):
        self.status = status
        self.ctype = ctype
        self.extra = extra
        self.body = body
        self.steps = steps
        self.tail = tail
        self.fault = None           # None | "drop" | "error"
        self.fault_event = b""
        self.head_delay = 0.0
        self.step_delay = 0.0
        self.hang = False


class _Bad(Exception):
    """A request error answered in the provider's format."""

    def __init__(self, status, message, kind_type=None, code=None, param=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind_type = kind_type
        self.code = code
        self.param = param


# ------------------------------------------------------------------------- the server


class FakeLLM:
    """The fake provider. ``port=0`` picks a free port; see the module docstring."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, keys: dict | None = None,
                 kinds=KINDS, chunks: int = 4, chunk_delay: float = 0.0, big_words: int = 1000,
                 big_chunks: int = 500, embed_dims: int = 8, retry_after: int = 1,
                 models=("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-haiku-4-5",
                         "gemini-2.5-flash"),
                 gemini_bad_key_status: int = 400, anthropic_bearer: bool = True, record: bool = True,
                 use_uvloop: bool = False, ssl=None):
        self.host = host
        self.ssl = ssl                  # an ssl.SSLContext: serve HTTPS
        self._want_port = port
        self.port: int | None = None
        self.keys = dict(keys) if keys else {}
        self.kinds = frozenset(KIND_ALIASES.get(k, k) for k in kinds)
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.big_words = big_words
        self.big_chunks = big_chunks
        self.embed_dims = embed_dims
        self.retry_after = retry_after
        self.models = list(models)
        self.gemini_bad_key_status = gemini_bad_key_status
        self.anthropic_bearer = anthropic_bearer
        self.record = record
        self.use_uvloop = use_uvloop

        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self.connections_opened = 0
        self.connections_closed = 0
        self.cancelled_requests = 0
        self.cancelled_streams = 0
        self.completed = 0
        self._seq = 0
        self._behaviours: dict[str, Behaviour] = {}
        self._conns: set = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._boot_error: BaseException | None = None
        self._routes = {
            "/v1/chat/completions": self._openai_chat,
            "/v1/embeddings": self._openai_embeddings,
            "/v1/models": self._models,
            "/v1/messages": self._anthropic_messages,
            "/v1/messages/count_tokens": self._anthropic_count,
        }

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "FakeLLM":
        self._thread = threading.Thread(target=self._thread_main, name="fake-llm", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake LLM did not start")
        if self._boot_error is not None:
            raise self._boot_error
        return self

    def _new_loop(self):
        if self.use_uvloop:
            try:
                import uvloop
                return uvloop.new_event_loop()
            except ImportError:
                pass
        return asyncio.new_event_loop()

    def _thread_main(self):
        self.loop = self._new_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except BaseException as e:     # noqa: BLE001 - reported to start()
            self._boot_error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _listen(self):
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), self.host, self._want_port,
                                                reuse_address=True, backlog=2048, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    def _shutdown(self):
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            if c.transport is not None:
                c.transport.abort()
        self.loop.call_later(0.01, self.loop.stop)

    def stop(self):
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_forever(self):
        """Run in the calling thread (the CLI)."""
        self.loop = self._new_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._listen())
        print("fake_llm listening on %s:%d" % (self.host, self.port), flush=True)
        try:
            self.loop.run_forever()
        except KeyboardInterrupt:
            pass

    # ---------------------------------------------------------------- test helpers
    def base_url(self, kind: str = "openai") -> str:
        kind = KIND_ALIASES.get(kind, kind)
        root = self.url
        return root + "/v1" if kind == "openai" else root

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("https" if self.ssl is not None else "http", self.host, self.port)

    def reset(self):
        with self._lock:
            self.requests.clear()
        self.cancelled_requests = self.cancelled_streams = self.completed = 0

    def requests_for(self, kind=None, path=None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if (kind is None or r.kind == kind)
                    and (path is None or r.path == path)]

    def last(self, kind=None) -> Recorded | None:
        got = self.requests_for(kind)
        return got[-1] if got else None

    @staticmethod
    def wait_for(pred, timeout: float = 5.0, interval: float = 0.01) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(interval)
        return bool(pred())

    def expected_usage(self, prompt_texts, user_text, *, model="", tools=False, tool_names=(),
                       max_tokens=None, stop=None) -> dict:
        """The neutral usage the fake reports: {"input": P, "output": C, "cached": n, "think": n}.

        prompt_texts: every text of the request (system + messages); user_text: the last user text.
        Provider mapping: see the module docstring (cached-/think- behaviours)."""
        beh = self._behaviour(model)
        p = sum(words(t) for t in prompt_texts)
        if tools or beh.tools:
            c = tool_tokens(tool_calls(user_text, tool_names))
        else:
            c = words(self._answer_text(user_text, beh, max_tokens, stop)[0])
        return {"input": p, "output": c, "cached": beh.cached, "think": beh.think}

    # ---------------------------------------------------------------- request dispatch
    def _behaviour(self, model) -> Behaviour:
        model = model if isinstance(model, str) else ""
        b = self._behaviours.get(model)
        if b is None:
            b = self._behaviours[model] = Behaviour(model, self.big_words)
        return b

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    def _handle(self, rec: Recorded) -> _Plan:
        if self.record:
            with self._lock:
                self.requests.append(rec)
        path = rec.path
        route = self._routes.get(path)
        if route is None:
            m = _GEMINI_PATH.match(path)
            if m is not None:
                return self._gemini(rec, m.group(2), m.group(3))
            if path.startswith("/v1/models/"):
                return self._models(rec, path[len("/v1/models/"):])
            if path in ("/v1beta/models", "/v1/models", "/v1alpha/models") and "gemini" in self.kinds:
                return self._gemini_models(rec)
            return self._json(404, {"error": {"message": "Unknown path %s" % path, "type": "invalid_request_error",
                                              "param": None, "code": "unknown_url"}})
        return route(rec)

    # ---------------------------------------------------------------- shared helpers
    def _json(self, status, obj, ctype=CT_JSON, extra=b"") -> _Plan:
        return _Plan(status, ctype, extra, orjson.dumps(obj))

    def _parse_body(self, rec):
        if not rec.raw_body:
            return None
        try:
            rec.body = orjson.loads(rec.raw_body)
        except orjson.JSONDecodeError:
            raise _Bad(400, "We could not parse the JSON body of your request.") from None
        return rec.body

    def _apply_timing(self, plan: _Plan, beh: Behaviour, stream: bool) -> _Plan:
        plan.head_delay = beh.slow_ms / 1000.0
        plan.hang = beh.hang
        if plan.steps is not None:
            plan.step_delay = beh.stream_ms / 1000.0 if beh.stream_ms else self.chunk_delay
        return plan

    def _answer_text(self, user_text, beh, max_tokens, stop):
        """(text, finish, stop_sequence) with finish in {"stop", "length", "stop_sequence"}."""
        text = reply_text(user_text)
        if beh.big:
            text = text + " " + _filler(beh.big)
        finish, seq = "stop", None
        if stop:
            stops = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
            best = -1
            for s in stops:
                i = text.find(s)
                if i >= 0 and (best < 0 or i < best):
                    best, seq = i, s
            if best >= 0:
                text, finish = text[:best], "stop_sequence"
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0:
            ms = list(_WORD.finditer(text))
            if len(ms) > max_tokens:
                text = text[:ms[max_tokens - 1].end()] if max_tokens else ""
                finish, seq = "length", None
        return text, finish, seq

    def _n_chunks(self, beh: Behaviour) -> int:
        if beh.chunks:
            return beh.chunks
        if beh.big:
            return self.big_chunks
        return self.chunks

    @staticmethod
    def _fault_cut(n_steps: int) -> int:
        return max(1, n_steps // 2) if n_steps >= 2 else n_steps

    def _finish_stream(self, plan: _Plan, beh: Behaviour, error_event: bytes) -> _Plan:
        if beh.drop or beh.error_mid:
            k = self._fault_cut(len(plan.steps))
            plan.steps = plan.steps[:k]
            plan.tail = b""
            plan.fault = "drop" if beh.drop else "error"
            plan.fault_event = error_event
        return plan

    # ================================================================ OpenAI
    def _oa_error(self, status, message, etype=None, code=None, param=None, extra=b"") -> _Plan:
        if etype is None:
            etype = "requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
        if status == 429:
            extra += b"retry-after: %d\r\nx-ratelimit-remaining-requests: 0\r\n" % self.retry_after
        return self._json(status, {"error": {"message": message, "type": etype, "param": param, "code": code}},
                          extra=extra)

    def _oa_fail(self, status, model) -> _Plan:
        if status == 401:
            return self._oa_error(401, "Incorrect API key provided: sk-fa***il. You can find your API key at "
                                       "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        if status == 404:
            return self._oa_error(404, "The model `%s` does not exist or you do not have access to it." % model,
                                  code="model_not_found")
        if status == 429:
            return self._oa_error(429, "Rate limit reached for %s in organization org-fake on requests per min "
                                       "(RPM): Limit 3, Used 3, Requested 1. Please try again in %ds." % (
                                           model, self.retry_after), code="rate_limit_exceeded")
        if status == 400:
            return self._oa_error(400, "Invalid request (fake failure).", code="invalid_value")
        if status == 403:
            return self._oa_error(403, "You are not allowed to sample from this model", code="model_not_allowed")
        if status in (502, 503, 504, 529):
            return self._oa_error(status, "The server is overloaded or not ready yet.")
        return self._oa_error(status, "The server had an error while processing your request. Sorry about that!")

    def _oa_auth(self, rec) -> _Plan | None:
        want = self.keys.get("openai")
        if want is None:
            return None
        auth = rec.headers.get("authorization")
        if not auth:
            return self._oa_error(401, "You didn't provide an API key. You need to provide your API key in an "
                                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or key != want:
            return self._oa_error(401, "Incorrect API key provided: %s. You can find your API key at "
                                       "https://platform.openai.com/account/api-keys." % mask_key(key or auth),
                                  code="invalid_api_key")
        return None

    def _oa_common(self, rec):
        if "openai" not in self.kinds:
            return self._json(404, {"error": {"message": "not served", "type": "invalid_request_error",
                                              "param": None, "code": None}})
        rec.kind = "openai"
        return self._oa_auth(rec)

    @staticmethod
    def _oa_text(content) -> str:
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content
                            if isinstance(p, dict) and isinstance(p.get("text"), str))
        return ""

    def _openai_chat(self, rec: Recorded) -> _Plan:
        plan = self._oa_common(rec)
        if plan is not None:
            return plan
        if rec.method != "POST":
            return self._oa_error(405, "Method not allowed.")
        try:
            body = self._parse_body(rec)
        except _Bad as e:
            return self._oa_error(400, e.message)
        if not isinstance(body, dict):
            return self._oa_error(400, "We could not parse the JSON body of your request.")
        model = body.get("model")
        rec.model = model
        rec.stream = stream = body.get("stream") is True
        if not model:
            return self._oa_error(400, "you must provide a model parameter", param=None)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return self._oa_error(400, "Missing required parameter: 'messages'.", param="messages",
                                  code="missing_required_parameter")
        beh = rec.behaviour = self._behaviour(model)
        if beh.fail:
            return self._apply_timing(self._oa_fail(beh.fail, model), beh, False)
        if beh.error_mid and not stream:
            return self._apply_timing(self._oa_fail(500, model), beh, False)

        prompt = 0
        for m in msgs:
            if isinstance(m, dict):
                prompt += words(self._oa_text(m.get("content")))
        # the last user text: trailing tool results, else the last user message
        tool_texts = []
        i = len(msgs) - 1
        while i >= 0 and isinstance(msgs[i], dict) and msgs[i].get("role") == "tool":
            tool_texts.append(self._oa_text(msgs[i].get("content")))
            i -= 1
        if tool_texts:
            user_text, after_tools = " ".join(reversed(tool_texts)), True
        else:
            user_text, after_tools = "", False
            for m in reversed(msgs):
                if isinstance(m, dict) and m.get("role") == "user":
                    user_text = self._oa_text(m.get("content"))
                    break
        n_cached, n_think = beh.cached, beh.think
        usage_p = prompt + n_cached
        seq = self._next_id()
        cid = "chatcmpl-fake%08d" % seq
        created = int(time.time())
        extra = b"x-request-id: req_fake%08d\r\nopenai-processing-ms: 1\r\nopenai-version: 2020-10-01\r\n" % seq

        calls = None
        if beh.tools and not after_tools:
            names = []
            for t in body.get("tools") or ():
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name"):
                    names.append(t["function"]["name"])
            for f in body.get("functions") or ():
                if isinstance(f, dict) and f.get("name"):
                    names.append(f["name"])
            calls = tool_calls(user_text, names)
            out = tool_tokens(calls)
            finish = "tool_calls"
            text = None
        else:
            mt = body.get("max_completion_tokens")
            if mt is None:
                mt = body.get("max_tokens")
            text, finish, _ = self._answer_text(user_text, beh, mt, body.get("stop"))
            finish = "length" if finish == "length" else "stop"
            out = words(text)
        usage = {"prompt_tokens": usage_p, "completion_tokens": out + n_think,
                 "total_tokens": usage_p + out + n_think,
                 "prompt_tokens_details": {"cached_tokens": n_cached, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": n_think, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}
        tc_objs = None
        if calls is not None:
            tc_objs = [{"id": "call_fake%08d%d" % (seq, j), "type": "function",
                        "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
                       for j, (name, args) in enumerate(calls)]

        if not stream:
            msg = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            if tc_objs is not None:
                msg["tool_calls"] = tc_objs
            obj = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                   "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                   "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake"}
            plan = self._json(200, obj, extra=extra)
            if beh.drop:
                plan.fault = "drop"
            return self._apply_timing(plan, beh, False)

        so = body.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        pre = (b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
               b'"service_tier":"default","system_fingerprint":"fp_fake",'
               b'"choices":[{"index":0,"delta":' % (cid.encode(), created, orjson.dumps(model)))
        post_open = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") \
            + b"}\n\n"

        def ev(delta) -> bytes:
            return _chunk(pre + orjson.dumps(delta) + post_open)

        steps = []
        if tc_objs is None:
            pieces = split_pieces(text, self._n_chunks(beh)) if text else []
            first = ev({"role": "assistant", "content": "", "refusal": None})
            if not pieces:
                steps.append(first)
            for j, p in enumerate(pieces):
                e = ev({"content": p})
                steps.append(first + e if j == 0 else e)
        else:
            first = ev({"role": "assistant", "content": None, "refusal": None})
            for j, tc in enumerate(tc_objs):
                args = tc["function"]["arguments"]
                parts = _thirds(args)
                head = ev({"tool_calls": [{"index": j, "id": tc["id"], "type": "function",
                                           "function": {"name": tc["function"]["name"], "arguments": ""}}]})
                for k, p in enumerate(parts):
                    e = ev({"tool_calls": [{"index": j, "function": {"arguments": p}}]})
                    if k == 0:
                        e = head + e
                        if j == 0:
                            e = first + e
                    steps.append(e)
        tail = _chunk(pre + b'{},"logprobs":null,"finish_reason":"%s"}]' % finish.encode()
                      + (b',"usage":null' if include_usage else b"") + b"}\n\n")
        if include_usage:
            tail += _chunk(b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                           b'"service_tier":"default","system_fingerprint":"fp_fake","choices":[],"usage":%s}\n\n'
                           % (cid.encode(), created, orjson.dumps(model), orjson.dumps(usage)))
        tail += _chunk(b"data: [DONE]\n\n")
        plan = _Plan(200, CT_SSE, extra, steps=steps, tail=tail)
        err = _chunk(b"data: " + orjson.dumps({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": None, "code": None}}) + b"\n\n")
        return self._apply_timing(self._finish_stream(plan, beh, err), beh, True)

    def _openai_embeddings(self, rec: Recorded) -> _Plan:
        plan = self._oa_common(rec)
        if plan is not None:
            return plan
        if rec.method != "POST":
            return self._oa_error(405, "Method not allowed.")
        try:
            body = self._parse_body(rec)
        except _Bad as e:
            return self._oa_error(400, e.message)
        if not isinstance(body, dict):
            return self._oa_error(400, "We could not parse the JSON body of your request.")
        model = rec.model = body.get("model")
        if not model:
            return self._oa_error(400, "you must provide a model parameter")
        beh = rec.behaviour = self._behaviour(model)
        if beh.fail:
            return self._apply_timing(self._oa_fail(beh.fail, model), beh, False)
        inp = body.get("input")
        if isinstance(inp, str):
            items = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
            items = [inp]
        elif isinstance(inp, list) and inp:
            items = inp
        else:
            return self._oa_error(400, "'input' is a required property", param="input")
        dims = body.get("dimensions") or self.embed_dims
        b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(items):
            if isinstance(item, str):
                key, tokens = item, tokens + words(item)
            elif isinstance(item, list):
                key, tokens = " ".join(str(x) for x in item), tokens + len(item)
            else:
                return self._oa_error(400, "Invalid type for 'input[%d]'." % i, param="input")
            vec = embedding(key, dims)
            emb = base64.b64encode(struct.pack("<%df" % dims, *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        obj = {"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        seq = self._next_id()
        return self._apply_timing(self._json(200, obj, extra=b"x-request-id: req_fake%08d\r\n" % seq), beh, False)

    def _models(self, rec: Recorded, one: str | None = None) -> _Plan:
        anthropic = "anthropic" in self.kinds and (
            "anthropic-version" in rec.headers or "x-api-key" in rec.headers or "openai" not in self.kinds)
        if anthropic:
            rec.kind = "anthropic"
            plan = self._ant_auth(rec)
            if plan is not None:
                return plan
            objs = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                    for m in self.models]
            if one is not None:
                return self._json(200, {"type": "model", "id": one, "display_name": one,
                                        "created_at": "2025-01-01T00:00:00Z"})
            return self._json(200, {"data": objs, "has_more": False, "first_id": objs[0]["id"] if objs else None,
                                    "last_id": objs[-1]["id"] if objs else None})
        plan = self._oa_common(rec)
        if plan is not None:
            return plan
        if one is not None:
            return self._json(200, {"id": one, "object": "model", "created": 1700000000, "owned_by": "system"})
        return self._json(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in self.models]})

    # ================================================================ Anthropic
    _ANT_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                  404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                  500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "api_error",
                  529: "overloaded_error"}

    def _ant_error(self, status, message, etype=None) -> _Plan:
        seq = self._next_id()
        extra = b"request-id: req_fake%08d\r\n" % seq
        if status == 429:
            extra += b"retry-after: %d\r\nanthropic-ratelimit-requests-remaining: 0\r\n" % self.retry_after
        return self._json(status, {"type": "error", "error": {"type": etype or self._ANT_TYPES.get(status, "api_error"),
                                                              "message": message},
                                   "request_id": "req_fake%08d" % seq}, extra=extra)

    def _ant_fail(self, status) -> _Plan:
        msg = {401: "invalid x-api-key", 403: "Your API key does not have permission to use the specified resource.",
               404: "model: not found", 429: "Number of request tokens has exceeded your per-minute rate limit",
               503: "Overloaded", 529: "Overloaded", 400: "Invalid request (fake failure)"}.get(status, "Internal server error")
        return self._ant_error(status, msg)

    def _ant_auth(self, rec) -> _Plan | None:
        want = self.keys.get("anthropic")
        if want is not None:
            got = rec.headers.get("x-api-key")
            if not got and self.anthropic_bearer:
                scheme, _, tok = rec.headers.get("authorization", "").partition(" ")
                if scheme.lower() == "bearer":
                    got = tok.strip()
            if not got:
                return self._ant_error(401, "x-api-key header is required")
            if got != want:
                return self._ant_error(401, "invalid x-api-key")
        if not rec.headers.get("anthropic-version"):
            return self._ant_error(400, "anthropic-version: header is required")
        return None

    @staticmethod
    def _ant_blocks_text(content) -> tuple[str, list[str]]:
        """(text of the text blocks, texts of the tool_result blocks)."""
        if isinstance(content, str):
            return content, []
        texts, results = [], []
        if isinstance(content, list):
            for b in content:
                if not isinstance(b, dict):
                    continue
                t = b.get("type")
                if t == "text" and isinstance(b.get("text"), str):
                    texts.append(b["text"])
                elif t == "tool_result":
                    c = b.get("content")
                    if isinstance(c, str):
                        results.append(c)
                    elif isinstance(c, list):
                        results.append(" ".join(x.get("text", "") for x in c
                                                if isinstance(x, dict) and isinstance(x.get("text"), str)))
                    else:
                        results.append("")
        return " ".join(texts), results

    def _ant_parse(self, rec):
        if "anthropic" not in self.kinds:
            return None, self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}})
        rec.kind = "anthropic"
        plan = self._ant_auth(rec)
        if plan is not None:
            return None, plan
        if rec.method != "POST":
            return None, self._ant_error(405, "Method not allowed", "invalid_request_error")
        try:
            body = self._parse_body(rec)
        except _Bad:
            return None, self._ant_error(400, "There was an issue with your request body: invalid JSON")
        if not isinstance(body, dict):
            return None, self._ant_error(400, "There was an issue with your request body: invalid JSON")
        rec.model = body.get("model")
        rec.stream = body.get("stream") is True
        if not rec.model:
            return None, self._ant_error(400, "model: Field required")
        msgs = body.get("messages")
        if not isinstance(msgs, list):
            return None, self._ant_error(400, "messages: Field required")
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("user", "assistant"):
                return None, self._ant_error(400, 'messages.%d.role: Input should be \'user\' or \'assistant\'' % i
                                             if role != "system" else
                                             'messages: Unexpected role "system". The Messages API accepts a '
                                             'top-level `system` parameter, not "system" as an input message role.')
        return body, None

    def _ant_prompt(self, body):
        system = body.get("system")
        prompt = words(self._ant_blocks_text(system)[0]) if system else 0
        user_text, after_tools = "", False
        for m in body["messages"]:
            t, res = self._ant_blocks_text(m.get("content"))
            prompt += words(t) + sum(words(r) for r in res)
        for m in reversed(body["messages"]):
            if m.get("role") == "user":
                t, res = self._ant_blocks_text(m.get("content"))
                if res:
                    user_text, after_tools = " ".join(res), True
                else:
                    user_text = t
                break
        return prompt, user_text, after_tools

    def _anthropic_count(self, rec: Recorded) -> _Plan:
        body, plan = self._ant_parse(rec)
        if plan is not None:
            return plan
        return self._json(200, {"input_tokens": self._ant_prompt(body)[0]})

    def _anthropic_messages(self, rec: Recorded) -> _Plan:
        body, plan = self._ant_parse(rec)
        if plan is not None:
            return plan
        model = rec.model
        stream = rec.stream
        beh = rec.behaviour = self._behaviour(model)
        if beh.fail:
            return self._apply_timing(self._ant_fail(beh.fail), beh, False)
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool):
            return self._ant_error(400, "max_tokens: Field required")
        if beh.error_mid and not stream:
            return self._apply_timing(self._ant_fail(500), beh, False)
        prompt, user_text, after_tools = self._ant_prompt(body)
        seq = self._next_id()
        mid = "msg_fake%08d" % seq
        extra = b"request-id: req_fake%08d\r\n" % seq
        calls = None
        stop_seq = None
        if beh.tools and not after_tools:
            names = [t["name"] for t in body.get("tools") or () if isinstance(t, dict) and t.get("name")]
            calls = tool_calls(user_text, names)
            out = tool_tokens(calls)
            stop_reason = "tool_use"
            content = [{"type": "tool_use", "id": "toolu_fake%08d%d" % (seq, j), "name": name, "input": args}
                       for j, (name, args) in enumerate(calls)]
        else:
            text, finish, stop_seq = self._answer_text(user_text, beh, mt, body.get("stop_sequences"))
            stop_reason = {"stop": "end_turn", "length": "max_tokens"}.get(finish, finish)
            out = words(text)
            content = [{"type": "text", "text": text}]
        out += beh.think
        usage = {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": beh.cached, "output_tokens": out, "service_tier": "standard"}
        if not stream:
            obj = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": stop_reason, "stop_sequence": stop_seq, "usage": usage}
            plan = self._json(200, obj, extra=extra)
            if beh.drop:
                plan.fault = "drop"
            return self._apply_timing(plan, beh, False)

        def ev(name: bytes, obj) -> bytes:
            return _chunk(b"event: %s\ndata: %s\n\n" % (name, orjson.dumps(obj)))

        start = ev(b"message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": beh.cached, "output_tokens": 1, "service_tier": "standard"}}})
        ping = ev(b"ping", {"type": "ping"})
        steps = []
        if calls is None:
            text = content[0]["text"]
            pieces = split_pieces(text, self._n_chunks(beh)) if text else []
            head = start + ev(b"content_block_start", {"type": "content_block_start", "index": 0,
                                                       "content_block": {"type": "text", "text": ""}}) + ping
            if not pieces:
                steps.append(head)
            for j, p in enumerate(pieces):
                e = ev(b"content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": p}})
                steps.append(head + e if j == 0 else e)
            stops = ev(b"content_block_stop", {"type": "content_block_stop", "index": 0})
        else:
            pending = start
            for j, blk in enumerate(content):
                args = orjson.dumps(blk["input"]).decode()
                parts = _thirds(args)
                bs = ev(b"content_block_start", {"type": "content_block_start", "index": j, "content_block": {
                    "type": "tool_use", "id": blk["id"], "name": blk["name"], "input": {}}})
                if j == 0:
                    bs += ping
                bs += ev(b"content_block_delta", {"type": "content_block_delta", "index": j,
                                                  "delta": {"type": "input_json_delta", "partial_json": ""}})
                for k, p in enumerate(parts):
                    e = ev(b"content_block_delta", {"type": "content_block_delta", "index": j,
                                                    "delta": {"type": "input_json_delta", "partial_json": p}})
                    if k == 0:
                        e = pending + bs + e
                        pending = b""
                    steps.append(e)
                pending = ev(b"content_block_stop", {"type": "content_block_stop", "index": j})
            stops = pending
        tail = stops + ev(b"message_delta", {"type": "message_delta",
                                             "delta": {"stop_reason": stop_reason, "stop_sequence": stop_seq},
                                             "usage": {"output_tokens": out}}) \
            + ev(b"message_stop", {"type": "message_stop"})
        plan = _Plan(200, CT_SSE, extra, steps=steps, tail=tail)
        err = ev(b"error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                            "request_id": "req_fake%08d" % seq})
        return self._apply_timing(self._finish_stream(plan, beh, err), beh, True)

    # ================================================================ Gemini
    _G_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED", 529: "UNAVAILABLE"}

    def _g_error(self, status, message, details=None) -> _Plan:
        err = {"code": status, "message": message, "status": self._G_STATUS.get(status, "UNKNOWN")}
        extra = b""
        if status == 429:
            extra = b"retry-after: %d\r\n" % self.retry_after
            details = (details or []) + [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                          "retryDelay": "%ds" % self.retry_after}]
        if details:
            err["details"] = details
        return self._json(status, {"error": err}, ctype=CT_GJSON, extra=extra)

    def _g_fail(self, status) -> _Plan:
        msg = {429: "Resource has been exhausted (e.g. check quota).", 503: "The model is overloaded. "
               "Please try again later.", 500: "An internal error has occurred. Please retry or report in "
               "https://developers.generativeai.google/guide/troubleshooting", 404: "models/x is not found",
               401: "Request had invalid authentication credentials.", 403: "The caller does not have permission",
               400: "Invalid request (fake failure).", 504: "Deadline exceeded"}.get(status, "Unknown error")
        return self._g_error(status, msg)

    def _g_auth(self, rec) -> _Plan | None:
        if "key" in rec.query:
            return self._g_error(400, "This fake provider refuses API keys in the URL (`key=` query parameter); "
                                      "send the x-goog-api-key header.")
        want = self.keys.get("gemini")
        if want is None:
            return None
        got = rec.headers.get("x-goog-api-key")
        if not got:
            return self._g_error(403, "Method doesn't allow unregistered callers (callers without established "
                                      "identity). Please use API Key or other form of API consumer identity to "
                                      "call this API.")
        if got != want:
            st = self.gemini_bad_key_status
            return self._g_error(st, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
        return None

    @staticmethod
    def _g_parts_text(parts) -> tuple[str, list[str]]:
        texts, results = [], []
        if isinstance(parts, list):
            for p in parts:
                if not isinstance(p, dict):
                    continue
                if isinstance(p.get("text"), str) and not p.get("thought"):
                    texts.append(p["text"])
                elif isinstance(p.get("functionResponse"), dict):
                    r = p["functionResponse"].get("response")
                    if isinstance(r, dict) and len(r) == 1 and isinstance(next(iter(r.values())), str):
                        results.append(next(iter(r.values())))
                    else:
                        results.append(orjson.dumps(r).decode())
        return " ".join(texts), results

    def _gemini_models(self, rec) -> _Plan:
        rec.kind = "gemini"
        plan = self._g_auth(rec)
        if plan is not None:
            return plan
        return self._json(200, {"models": [{"name": "models/" + m, "version": "001", "displayName": m,
                                            "supportedGenerationMethods": ["generateContent", "countTokens",
                                                                           "embedContent", "batchEmbedContents"]}
                                           for m in self.models]}, ctype=CT_GJSON)

    def _gemini(self, rec: Recorded, model: str, method: str) -> _Plan:
        if "gemini" not in self.kinds:
            return self._g_error(404, "not served")
        rec.kind = "gemini"
        rec.model = model
        rec.stream = method == "streamGenerateContent"
        plan = self._g_auth(rec)
        if plan is not None:
            return plan
        if rec.method != "POST":
            return self._g_error(405, "Method not allowed")
        if method not in ("generateContent", "streamGenerateContent", "batchEmbedContents", "embedContent",
                          "countTokens"):
            return self._g_error(404, "Method %s not found" % method)
        try:
            body = self._parse_body(rec)
        except _Bad:
            return self._g_error(400, "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return self._g_error(400, "Invalid JSON payload received.")
        beh = rec.behaviour = self._behaviour(model)
        if beh.fail:
            return self._apply_timing(self._g_fail(beh.fail), beh, False)
        if method in ("batchEmbedContents", "embedContent"):
            return self._apply_timing(self._gemini_embed(body, method), beh, False)

        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self._g_error(400, "* GenerateContentRequest.contents: contents is not specified\n")
        for c in contents:
            if not isinstance(c, dict) or c.get("role", "user") not in ("user", "model", "function"):
                return self._g_error(400, "Please use a valid role: user, model.")
        si = body.get("systemInstruction") or body.get("system_instruction")
        prompt = words(self._g_parts_text(si.get("parts"))[0]) if isinstance(si, dict) else 0
        for c in contents:
            t, res = self._g_parts_text(c.get("parts"))
            prompt += words(t) + sum(words(r) for r in res)
        if method == "countTokens":
            return self._json(200, {"totalTokens": prompt, "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": prompt}]}, ctype=CT_GJSON)
        user_text, after_tools = "", False
        for c in reversed(contents):
            if c.get("role", "user") in ("user", "function"):
                t, res = self._g_parts_text(c.get("parts"))
                if res:
                    user_text, after_tools = " ".join(res), True
                else:
                    user_text = t
                break
        if beh.error_mid and not rec.stream:
            return self._apply_timing(self._g_fail(500), beh, False)
        gc = body.get("generationConfig") or body.get("generation_config") or {}
        seq = self._next_id()
        rid = "fake%08d" % seq
        if beh.tools and not after_tools:
            names = []
            for t in body.get("tools") or ():
                if isinstance(t, dict):
                    for fd in t.get("functionDeclarations") or t.get("function_declarations") or ():
                        if isinstance(fd, dict) and fd.get("name"):
                            names.append(fd["name"])
            calls = tool_calls(user_text, names)
            out = tool_tokens(calls)
            parts_list = [[{"functionCall": {"name": n, "args": a}}] for n, a in calls]
            finish = "STOP"
            full_parts = [p[0] for p in parts_list]
        else:
            text, fin, _ = self._answer_text(user_text, beh, gc.get("maxOutputTokens"), gc.get("stopSequences"))
            finish = "MAX_TOKENS" if fin == "length" else "STOP"
            out = words(text)
            full_parts = [{"text": text}]
            parts_list = None if not rec.stream else [[{"text": p}] for p in split_pieces(text, self._n_chunks(beh))]
        p_count = prompt + beh.cached
        um = {"promptTokenCount": p_count, "candidatesTokenCount": out,
              "totalTokenCount": p_count + out + beh.think,
              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p_count}]}
        if beh.cached:
            um["cachedContentTokenCount"] = beh.cached
        if beh.think:
            um["thoughtsTokenCount"] = beh.think
        if not rec.stream:
            obj = {"candidates": [{"content": {"parts": full_parts, "role": "model"}, "finishReason": finish,
                                   "index": 0}],
                   "usageMetadata": um, "modelVersion": model, "responseId": rid}
            plan = self._json(200, obj, ctype=CT_GJSON)
            if beh.drop:
                plan.fault = "drop"
            return self._apply_timing(plan, beh, False)

        sse = rec.query.get("alt") == "sse"
        partial_um = {"promptTokenCount": p_count, "totalTokenCount": p_count,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p_count}]}
        steps = []
        n = len(parts_list)
        for j, parts in enumerate(parts_list):
            cand = {"content": {"parts": parts, "role": "model"}, "index": 0}
            last = j == n - 1
            if last:
                cand["finishReason"] = finish
            obj = orjson.dumps({"candidates": [cand], "usageMetadata": um if last else partial_um,
                                "modelVersion": model, "responseId": rid})
            if sse:
                steps.append(_chunk(b"data: " + obj + b"\r\n\r\n"))
            else:
                steps.append(_chunk((b"[" if j == 0 else b",\r\n") + obj))
        tail = b"" if sse else _chunk(b"]")
        plan = _Plan(200, CT_GSSE if sse else CT_GJSON, steps=steps, tail=tail)
        err_obj = orjson.dumps({"error": {"code": 500, "message": "An internal error has occurred.",
                                          "status": "INTERNAL"}})
        err = _chunk(b"data: " + err_obj + b"\r\n\r\n") if sse else _chunk(b",\r\n" + err_obj + b"]")
        return self._apply_timing(self._finish_stream(plan, beh, err), beh, True)

    def _gemini_embed(self, body, method) -> _Plan:
        reqs = body.get("requests") if method == "batchEmbedContents" else [body]
        if not isinstance(reqs, list) or not reqs:
            return self._g_error(400, "* BatchEmbedContentsRequest.requests: requests is not specified\n")
        out = []
        for r in reqs:
            c = r.get("content") if isinstance(r, dict) else None
            if not isinstance(c, dict):
                return self._g_error(400, "* EmbedContentRequest.content: content is not specified\n")
            text = self._g_parts_text(c.get("parts"))[0]
            dims = r.get("outputDimensionality") or self.embed_dims
            out.append({"values": embedding(text, dims)})
        if method == "embedContent":
            return self._json(200, {"embedding": out[0]}, ctype=CT_GJSON)
        return self._json(200, {"embeddings": out}, ctype=CT_GJSON)


# ------------------------------------------------------------------------- per connection


class _Conn(asyncio.Protocol):
    __slots__ = ("srv", "transport", "buf", "busy", "closed", "current", "task", "paused", "drain", "pending")

    def __init__(self, srv: FakeLLM):
        self.srv = srv
        self.transport = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.current: Recorded | None = None
        self.task = None
        self.paused = False
        self.drain = None
        self.pending = None     # parsed head awaiting its body

    # -------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.srv.connections_opened += 1
        self.srv._conns.add(self)

    def connection_lost(self, exc):
        self.closed = True
        srv = self.srv
        srv.connections_closed += 1
        srv._conns.discard(self)
        cur = self.current
        if cur is not None:
            self.current = None
            cur.cancelled = True
            srv.cancelled_requests += 1
            if cur.stream:
                srv.cancelled_streams += 1
        if self.task is not None:
            self.task.cancel()
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self._process()

    def eof_received(self):
        return False

    # -------------------------------------------------------------- parsing
    def _fail(self, status):
        if not self.closed:
            body = b'{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}'
            self.transport.write(_status_line(status) + CT_JSON + b"content-length: %d\r\n" % len(body) + _CLOSE
                                 + b"\r\n" + body)
            self.transport.close()
        self.closed = True

    def _process(self):
        buf = self.buf
        while buf and not self.closed and not self.busy:
            if self.pending is None:
                while buf[:2] == b"\r\n":
                    del buf[:2]
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        self._fail(431)
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    self._fail(400)
                    return
                method, target, version = parts
                headers = {}
                for line in lines[1:]:
                    k, sep, v = line.partition(":")
                    if not sep:
                        self._fail(400)
                        return
                    k = k.strip().lower()
                    v = v.strip()
                    if k in headers:
                        headers[k] = headers[k] + ", " + v
                    else:
                        headers[k] = v
                te = headers.get("transfer-encoding", "")
                chunked = "chunked" in te.lower()
                try:
                    length = 0 if chunked else int(headers.get("content-length") or 0)
                except ValueError:
                    self._fail(400)
                    return
                conn_h = headers.get("connection", "").lower()
                keep = ("close" not in conn_h) if version == "HTTP/1.1" else ("keep-alive" in conn_h)
                self.pending = (method, target, headers, chunked, length, keep, end + 4, False)
            method, target, headers, chunked, length, keep, start, continued = self.pending
            if chunked:
                got = self._dechunk(start)
                if got is None:
                    if not continued and headers.get("expect", "").lower() == "100-continue":
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        self.pending = self.pending[:7] + (True,)
                    return
                if got is False:
                    self._fail(400)
                    return
                body, consumed = got
            else:
                if len(buf) < start + length:
                    if not continued and length and headers.get("expect", "").lower() == "100-continue":
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        self.pending = self.pending[:7] + (True,)
                    return
                body = bytes(buf[start:start + length])
                consumed = start + length
            del buf[:consumed]
            self.pending = None
            path, _, qs = target.partition("?")
            rec = Recorded(method, path, qs, headers, body)
            srv = self.srv
            try:
                plan = srv._handle(rec)
            except Exception as e:  # noqa: BLE001 - a bug in the fake must not hang the client
                plan = srv._json(500, {"error": {"message": "fake_llm internal error: %r" % (e,),
                                                 "type": "server_error", "param": None, "code": None}})
            self._respond(rec, plan, keep)

    def _dechunk(self, start):
        """(body, end offset) | None (incomplete) | False (malformed)."""
        buf = self.buf
        pos = start
        out = []
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size_s = bytes(buf[pos:nl]).split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                return False
            pos = nl + 2
            if size == 0:
                # trailers until an empty line
                while True:
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        return None
                    if nl == pos:
                        return b"".join(out), nl + 2
                    pos = nl + 2
            if len(buf) < pos + size + 2:
                return None
            out.append(bytes(buf[pos:pos + size]))
            pos += size + 2

    # -------------------------------------------------------------- answering
    @staticmethod
    def _head(plan: _Plan, length, keep) -> bytes:
        return b"".join((_status_line(plan.status), plan.ctype,
                         _CHUNKED if length is None else b"content-length: %d\r\n" % length,
                         plan.extra, b"" if keep else _CLOSE, b"\r\n"))

    def _respond(self, rec: Recorded, plan: _Plan, keep: bool):
        if plan.head_delay or plan.hang or plan.fault or (plan.steps is not None and plan.step_delay):
            self.busy = True
            self.current = rec
            self.task = asyncio.get_running_loop().create_task(self._run(rec, plan, keep))
            return
        t = self.transport
        if plan.steps is None:
            t.write(self._head(plan, len(plan.body), keep) + plan.body)
        else:
            t.write(self._head(plan, None, keep) + b"".join(plan.steps) + plan.tail + _LAST_CHUNK)
        rec.completed = True
        self.srv.completed += 1
        if not keep:
            t.close()
            self.closed = True

    async def _wait_drain(self):
        if self.paused and not self.closed:
            self.drain = asyncio.get_running_loop().create_future()
            await self.drain

    async def _run(self, rec: Recorded, plan: _Plan, keep: bool):
        t = self.transport
        try:
            if plan.head_delay:
                await asyncio.sleep(plan.head_delay)
            if plan.hang:
                await asyncio.get_running_loop().create_future()
            if self.closed:
                return
            if plan.steps is None:
                if plan.fault == "drop":
                    half = plan.body[:len(plan.body) // 2]
                    t.write(self._head(plan, len(plan.body), keep) + half)
                    self.current = None
                    t.close()
                    self.closed = True
                    return
                t.write(self._head(plan, len(plan.body), keep) + plan.body)
            else:
                steps = plan.steps
                delay = plan.step_delay
                t.write(self._head(plan, None, keep) + (steps[0] if steps else b""))
                for s in steps[1:]:
                    if delay:
                        await asyncio.sleep(delay)
                    await self._wait_drain()
                    if self.closed:
                        return
                    t.write(s)
                if delay:
                    await asyncio.sleep(delay)
                if self.closed:
                    return
                if plan.fault == "drop":
                    self.current = None
                    t.close()
                    self.closed = True
                    return
                if plan.fault == "error":
                    t.write(plan.fault_event + _LAST_CHUNK)
                else:
                    t.write(plan.tail + _LAST_CHUNK)
            rec.completed = True
            self.srv.completed += 1
            self.current = None
        except asyncio.CancelledError:
            return
        finally:
            self.task = None
        if not keep:
            t.close()
            self.closed = True
            return
        self.busy = False
        if self.buf:
            self._process()


# ------------------------------------------------------------------------- CLI


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.helpers.fake_llm", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: openai,anthropic,gemini")
    ap.add_argument("--key", action="append", default=[], metavar="KIND=KEY", help="expected key of a kind")
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    ap.add_argument("--record", action="store_true", help="keep every request in memory (off by default)")
    ap.add_argument("--no-uvloop", action="store_true")
    a = ap.parse_args(argv)
    keys = {}
    for kv in a.key:
        k, _, v = kv.partition("=")
        keys[KIND_ALIASES.get(k, k)] = v
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    FakeLLM(a.port, a.host, keys=keys or None, kinds=kinds, chunks=a.chunks, chunk_delay=a.chunk_delay,
            record=a.record, use_uvloop=not a.no_uvloop).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
