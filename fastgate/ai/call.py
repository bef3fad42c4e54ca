"""One AI request: the client's body in, a provider call (with fallbacks) out, the answer
back in OpenAI's format, and the usage settled.

    run()            the body is complete: parse, pick the model (400 model_not_found),
                     reserve the estimate on the route's token limits and budget
    _try_next()      the next model of the chain: translate, send over its provider's pool
    provider_head    2xx: a stream starts translating (the client's head waits for the first
                     translated bytes, so a provider failing before them still falls back);
                     429 / 5xx: the next model, while nothing reached the client
    provider_body    streamed: translated and relayed per provider read; else collected
    provider_end     the answer (non-streamed) or the stream's tail; usage settled
    provider_failed  connect failure / timeout / lost connection: the next model before the
                     first byte, after it an OpenAI-format error event ends the stream
    cancel()         the client went away: the provider connection is closed (that stops the
                     generation) and the usage counted so far is billed

Settlement happens exactly once per request: the provider's own counts when it gave them,
else an estimate (prompt bytes / 4, streamed text bytes / 4). It feeds the metrics
(``fastgate_ai_tokens_total``, ``fastgate_ai_cost_usd_total``, the usage ledger behind
``GET /usage``), the token limits and the budget, and the access log (model, tokens, cost).
"""
from __future__ import annotations

import logging
import time

import orjson

from fastgate.ai.client import ProviderCall, request_bytes
from fastgate.policies.rate_limit import RateLimitPolicy
from fastgate.server.response import P_WAITING

log = logging.getLogger("fastgate.ai")

DEFAULT_MAX_OUTPUT = 1024       # reserved when the request names no max_tokens
MAX_PROVIDER_BODY = 32 << 20    # a non-streamed answer larger than this is refused (502)
RETRY_STATUSES = frozenset((408, 409, 429))

_JSON = (b"content-type", b"application/json")
_SSE = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
_H_MODEL = b"x-fastgate-model"
_monotonic = time.monotonic


class _Head:
    """A response head made here (the stream's), in the shape ``send_head`` reads."""

    __slots__ = ("status", "headers", "content_length", "keep_alive", "connection_tokens")

    def __init__(self, status, headers):
        self.status = status
        self.headers = headers
        self.content_length = -1
        self.keep_alive = True
        self.connection_tokens = ()


class AICall:
    __slots__ = ("target", "ex", "parts", "attached", "doc", "kind", "stream",
                 "include_usage", "chain", "idx", "entry", "pcall", "status", "buf",
                 "buf_len", "translator", "head_sent", "reservations", "settled",
                 "prompt_est", "out_est", "streamed", "cancelled")

    def __init__(self, target, ex):
        self.target = target
        self.ex = ex
        self.parts = []
        self.attached = True            # body chunks come to body()
        self.doc = None
        self.kind = "chat"              # chat | embeddings | prompt
        self.stream = False
        self.include_usage = False
        self.chain = ()
        self.idx = 0
        self.entry = None
        self.pcall = None
        self.status = 0
        self.buf = None
        self.buf_len = 0
        self.translator = None
        self.head_sent = False
        self.reservations = None
        self.settled = False
        self.prompt_est = 0
        self.out_est = 0
        self.streamed = 0
        self.cancelled = False

    # ------------------------------------------------------------------ client body
    def body(self, data):
        self.parts.append(data)

    def body_end(self):
        self.run()

    def flush_up(self):
        pass

    # ------------------------------------------------------------------ the request
    def run(self):
        ex = self.ex
        raw = b"".join(self.parts)
        self.parts = None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._refuse(400, "invalid_request", "the request body is not valid JSON")
            return
        if not isinstance(doc, dict):
            self._refuse(400, "invalid_request", "the request body must be a JSON object")
            return
        target = self.target
        prompt = target.prompt
        if prompt is not None:
            missing = [v for v in prompt.variables if v not in doc]
            if missing:
                self._refuse(400, "invalid_request",
                             f"missing variable {missing[0]!r} in the request body")
                return
            self.kind = "prompt"
            messages = []
            if prompt.system:
                messages.append({"role": "system", "content": prompt.system})
            # The values go in as the text of one message: they cannot add messages,
            # roles or fields, whatever they hold.
            messages.append({"role": "user", "content": prompt.render(doc)})
            chat = {"model": prompt.model, "messages": messages}
            if prompt.max_tokens is not None:
                chat["max_tokens"] = prompt.max_tokens
            if prompt.temperature is not None:
                chat["temperature"] = prompt.temperature
            if doc.get("stream") is True:
                chat["stream"] = True
            doc = chat
        elif target.endpoint == "embeddings":
            self.kind = "embeddings"
        model = doc.get("model")
        entry = target.allowed.get(model) if isinstance(model, str) else None
        if entry is None:
            self._refuse(400, "model_not_found",
                         f"model {model!r} is not available on this route" if isinstance(
                             model, str) else "the request names no model")
            return
        if self.kind != "embeddings":
            if not isinstance(doc.get("messages"), list) or not doc["messages"]:
                self._refuse(400, "invalid_request", "messages must be a non-empty list")
                return
            self.stream = doc.get("stream") is True
            so = doc.get("stream_options")
            self.include_usage = (self.stream and isinstance(so, dict)
                                  and so.get("include_usage") is True)
        self.doc = doc
        self.chain = (entry,) + entry.fallbacks
        # Admission: the estimate is reserved now and replaced by the real usage later.
        self.prompt_est = len(raw) // 4 + 1
        if self.kind == "embeddings":
            self.out_est = 0
        else:
            mt = doc.get("max_completion_tokens") or doc.get("max_tokens")
            self.out_est = mt if isinstance(mt, int) and mt > 0 else DEFAULT_MAX_OUTPUT
        accounts = target.route_accounts(ex.route)
        if accounts:
            self._reserve(accounts, entry)
        self._try_next()

    def _reserve(self, accounts, entry):
        ex = self.ex
        tokens = self.prompt_est + self.out_est
        usd = entry.cost(self.prompt_est, self.out_est)
        res = []
        for policy in accounts:
            amount = tokens if isinstance(policy, RateLimitPolicy) else usd
            res.append((policy, policy.ai_reserve(ex, amount)))
        self.reservations = res

    def _try_next(self):
        ex = self.ex
        while self.idx < len(self.chain):
            entry = self.chain[self.idx]
            self.idx += 1
            try:
                if self.kind == "embeddings":
                    preq = entry.adapter.embeddings_request(entry.model_id, self.doc)
                else:
                    preq = entry.adapter.chat_request(entry.model_id, self.doc, self.stream)
            except ValueError as exc:
                if self.idx < len(self.chain):
                    continue            # this provider cannot take it; a fallback may
                self._refuse(400, "invalid_request", str(exc))
                return
            self.entry = entry
            self.status = 0
            self.buf = None
            self.buf_len = 0
            self.translator = None
            ex.upstream_name = entry.provider
            ex.upstream_target = entry.pp.label
            # The connect is bounded by its own timeout; the read timeout starts once the
            # request went out (provider_sent).
            ex.conn.up_deadline = 0.0
            self.pcall = ProviderCall(entry.pp, self, request_bytes(entry.pp, preq))
            self.pcall.start()
            return

    def _next_or(self, status, code, message) -> None:
        """Fall back to the next model while nothing reached the client, else answer."""
        if not self.head_sent and self.idx < len(self.chain) and not self.cancelled:
            log.info("model %s failed (%s); falling back", self.entry.name, message)
            self._try_next()
            return
        self._fail(status, code, message)

    # ------------------------------------------------------------------ provider events
    def provider_sent(self, pcall):
        self.ex.conn.up_deadline = _monotonic() + (self.target.timeout_s or
                                                   self.entry.pp.read_timeout)

    def provider_head(self, pcall, head):
        if pcall is not self.pcall:
            return
        self.status = status = head.status
        ex = self.ex
        ex.upstream_duration = _monotonic() - ex.start
        if 200 <= status < 300 and self.stream:
            self.translator = self.entry.adapter.chat_stream(self.entry.name,
                                                             self.include_usage)
        else:
            self.buf = []

    def provider_body(self, pcall, data):
        if pcall is not self.pcall:
            return
        ex = self.ex
        # read_timeout_s is the longest silence between two reads (nginx's proxy_read_timeout)
        ex.conn.up_deadline = _monotonic() + (self.target.timeout_s or
                                              self.entry.pp.read_timeout)
        tr = self.translator
        if tr is None:
            self.buf_len += len(data)
            if self.buf_len > MAX_PROVIDER_BODY:
                self._drop_provider()
                self._fail(502, "bad_gateway", "provider answer too large")
                return
            self.buf.append(data)
            return
        try:
            out = tr.feed(data)
        except Exception as exc:  # noqa: BLE001 - a provider sending garbage
            log.warning("model %s: untranslatable stream: %r", self.entry.name, exc)
            self._drop_provider()
            self._stream_broken("the provider sent an invalid stream")
            return
        if out:
            self._send(out)

    def provider_read_done(self, pcall):
        ex = self.ex
        if ex.wbuf:
            ex.flush_output()

    def provider_end(self, pcall):
        if pcall is not self.pcall:
            return
        self.pcall = None
        ex = self.ex
        ex.conn.up_deadline = 0.0
        status = self.status
        entry = self.entry
        if not 200 <= status < 300:
            raw = b"".join(self.buf or ())
            if (status >= 500 or status in RETRY_STATUSES) and not self.head_sent \
                    and self.idx < len(self.chain):
                log.info("model %s answered %d; falling back", entry.name, status)
                self._try_next()
                return
            st, body = entry.adapter.error_response(status, raw)
            self._answer(st, body)
            return
        tr = self.translator
        if tr is not None:
            try:
                tail = tr.finish()
            except Exception as exc:  # noqa: BLE001
                log.warning("model %s: stream ended badly: %r", entry.name, exc)
                self._stream_broken("the provider's stream ended early")
                return
            self._settle(tr.usage)
            if tail:
                self._send(tail)
            elif not self.head_sent:
                self._send(b"")
            ex.send_end()
            return
        raw = b"".join(self.buf)
        try:
            if self.kind == "embeddings":
                doc, usage = entry.adapter.embeddings_response(
                    raw, entry.name, self.doc.get("encoding_format"))
            else:
                doc, usage = entry.adapter.chat_response(raw, entry.name)
        except Exception as exc:  # noqa: BLE001 - an answer we cannot read
            log.warning("model %s: unreadable answer: %r", entry.name, exc)
            self._fail(502, "bad_gateway", "the provider's answer could not be read")
            return
        self._settle(usage)
        if self.kind == "prompt":
            text = _message_text(doc)
            body = orjson.dumps({"result": text, "model": entry.name, "usage": {
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}})
        else:
            body = orjson.dumps(doc)
        self._answer(200, body)

    def provider_failed(self, pcall, kind, reason):
        if pcall is not self.pcall:
            return
        self.pcall = None
        self.ex.conn.up_deadline = 0.0
        log.warning("model %s (%s): %s", self.entry.name, self.entry.pp.label, reason)
        if self.head_sent:
            self._stream_broken("the provider failed mid-stream")
            return
        if kind == "timeout":
            self._next_or(504, "gateway_timeout", "the provider timed out")
        else:
            self._next_or(502, "bad_gateway", "the provider could not be reached"
                          if kind == "connect" else "the provider failed")

    # ------------------------------------------------------------------ client side events
    def cancel(self):
        """The client went away (or the exchange ended): stop the provider call and bill
        what it counted so far."""
        if self.cancelled:
            return
        self.cancelled = True
        self._drop_provider()
        if not self.settled:
            tr = self.translator
            self._settle(tr.usage if tr is not None else None)

    def pause_reading(self):
        if self.pcall is not None:
            self.pcall.pause_reading()

    def resume_reading(self):
        if self.pcall is not None:
            self.pcall.resume_reading()

    def timed_out(self):
        if self.pcall is not None:
            self.pcall.timed_out()

    # ------------------------------------------------------------------ answers
    def _send(self, data: bytes):
        ex = self.ex
        if not self.head_sent:
            self.head_sent = True
            ex.conn.resume(P_WAITING)
            ex.send_head(_Head(200, list(_SSE) + [(_H_MODEL, self.entry.name_b)]),
                         ex.route.drop_response_headers)
        if data:
            self.streamed += len(data)
            ex.send_body(data)

    def _stream_broken(self, message):
        """After the first byte: an OpenAI-format error event ends the stream."""
        ex = self.ex
        tr = self.translator
        self._settle(tr.usage if tr is not None else None)
        if tr is not None:
            try:
                self._send(tr.fail(message))
            except Exception:  # noqa: BLE001
                log.exception("stream error event failed")
                ex.target_failed(502, "bad_gateway", message)
                return
            ex.send_end()
        else:
            ex.target_failed(502, "bad_gateway", message)

    def _answer(self, status, body):
        ex = self.ex
        if not self.settled:
            self._settle(None, failed=status >= 400)
        headers = [_JSON]
        if self.entry is not None and status < 400:
            headers.append((_H_MODEL, self.entry.name_b))
        ex.conn.resume(P_WAITING)
        ex.call = None
        ex.answer_local(status, headers, body)

    def _refuse(self, status, code, message):
        ex = self.ex
        if not self.settled:
            self._settle(None, failed=True)
        ex.call = None
        ex.conn.resume(P_WAITING)
        ex.answer_error(status, code, message)

    def _fail(self, status, code, message):
        if not self.settled:
            self._settle(None, failed=True)
        ex = self.ex
        if self.head_sent:
            self._stream_broken(message)
            return
        ex.call = None
        ex.target_failed(status, code, message)

    def _drop_provider(self):
        pcall, self.pcall = self.pcall, None
        if pcall is not None:
            pcall.cancel()
        self.ex.conn.up_deadline = 0.0

    # ------------------------------------------------------------------ settlement
    def _settle(self, usage, failed=False):
        """Once per request: the provider's counts (or the estimate) to the metrics, the
        token limits, the budget and the access log."""
        if self.settled:
            return
        self.settled = True
        entry = self.entry
        ex = self.ex
        if usage is not None and usage.reported:
            tin, tout = usage.input_tokens, usage.output_tokens
        elif failed and not self.head_sent:
            tin = tout = 0              # nothing was generated for this client
        else:
            tin = self.prompt_est
            tout = self.streamed // 4
        cost = entry.cost(tin, tout) if entry is not None else 0.0
        if entry is not None and (tin or tout):
            metrics = ex.conn.gateway.metrics
            if metrics is not None:
                metrics.ai_usage(entry.name, ex.consumer, tin, tout, cost)
        res = self.reservations
        if res is not None:
            for policy, handle in res:
                try:
                    if isinstance(policy, RateLimitPolicy):
                        policy.ai_settle(ex, handle, tin + tout)
                    else:
                        policy.ai_settle(ex, handle, cost)
                except Exception:  # noqa: BLE001 - accounting must not break the answer
                    log.exception("settling AI usage failed")
        if entry is not None:
            ex.log_fields = {"model": entry.name, "input_tokens": tin,
                             "output_tokens": tout, "cost_usd": round(cost, 8)}


def _message_text(doc) -> str:
    try:
        content = doc["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
