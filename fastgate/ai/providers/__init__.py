"""Provider adapters: translation between OpenAI's chat-completions format and each
provider's wire format. Pure code: no sockets, no clocks beyond ``time.time()`` for
``created``; the target (``fastgate/ai/target.py``) does the I/O.

``ADAPTERS[provider.type]`` is a class taking a ``fastgate.config.schema.Provider``::

    adapter = ADAPTERS[p.type](p)
    adapter.host, adapter.port, adapter.scheme, adapter.base_path   # from base_url
    req = adapter.chat_request(model_id, body, stream)     -> ProviderRequest
    doc, usage = adapter.chat_response(raw, model_name)    -> OpenAI chat.completion (dict), Usage
    tr = adapter.chat_stream(model_name, include_usage)     -> StreamTranslator
    status, err = adapter.error_response(status, raw)       -> (int, bytes: OpenAI error JSON)
    req = adapter.embeddings_request(model_id, body)        -> ProviderRequest (ValueError if
    doc, usage = adapter.embeddings_response(raw, model_name,   the type has no embeddings)
                                             encoding_format=None)   # the client's; optional

``body`` is the client's request as a dict (already checked: a JSON object); anything the
adapter cannot translate raises ``ValueError(message)`` (the client gets 400
``invalid_request`` with that message). ``model_name`` is the configured model name that
answered (what the client sees in ``model``); ``model_id`` the provider's own id.
``chat_response``/``embeddings_response`` raise ValueError when the provider's 2xx body is
not a valid answer (a provider fault: the target answers 502). ``error_response`` keeps the
provider's status class (4xx stays 4xx, 5xx stays 5xx, 529 -> 503, others -> 502), except
that a refused provider key (401/403, or a provider saying its key is invalid) is a generic
502: the gateway's credentials are wrong, not the client's; the key, and any 8+-character
piece of it, never appears in anything returned. ``encoding_format`` "base64" makes Gemini
answer base64 float32 strings like OpenAI (OpenAI-format providers do it themselves).

A StreamTranslator takes the provider's response body bytes as they arrive, in any split:
``feed(data) -> bytes`` returns the OpenAI-format SSE bytes to send now (``data: {json}\\n\\n``
per ``chat.completion.chunk``; may be b""), ``finish() -> bytes`` what is left at the end
of the provider's body (the usage chunk when ``include_usage``, then ``data: [DONE]\\n\\n``),
``fail(message) -> bytes`` the OpenAI-format error event that ends a broken stream
(``data: {"error": {...}}\\n\\n`` then ``data: [DONE]\\n\\n``); ``usage`` is the provider's
count so far (a Usage). A provider error event mid-stream comes out of ``feed`` as that error
event; ``finish()`` on a body that stopped before the provider's end marker gives the error
event too (never a silent truncation); once the stream has ended (``[DONE]`` sent) ``feed``,
``finish`` and ``fail`` return b"".
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0      # part of input_tokens served from the provider's cache
    reported: bool = False      # the provider gave its own counts


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    method: bytes                       # b"POST" / b"GET"
    path: bytes                         # base path + endpoint (+ query), e.g. b"/v1/chat/completions"
    headers: tuple                      # ((name, value), ...) lower-case bytes: auth,
                                        # content-type, version headers; never host or length
    body: bytes


ADAPTERS: dict = {}     # filled by the adapter modules below (type -> class)

from . import openai, anthropic, gemini  # noqa: E402,F401  (register themselves)
