"""``ai:`` routes: the OpenAI-compatible endpoint over every configured provider.

One ``AITarget`` per route, built at compile time: the models the route allows (each with
its provider adapter, its provider's keep-alive pool, price and fallback chain), the
``GET /v1/models`` answer made once, and for a prompt route its template split into parts.

Per request (``open``):

* ``GET .../models``: the route's models in OpenAI's list format, answered at once;
* ``POST``: an ``AICall`` (call.py) takes the body, then runs chat, embeddings or the
  prompt, with fallbacks, streaming, usage settlement and the route's token limits and
  budget (policies that expose ``ai_reserve`` / ``ai_settle``).

Registered in ``fastgate.targets.REGISTRY``; the request path never imports anything here
lazily (everything is imported when the target module loads, before ``listening on``).
"""
from __future__ import annotations

import re

import orjson

from fastgate.ai.call import AICall
from fastgate.ai.client import ProviderPool
from fastgate.ai.providers import ADAPTERS

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_JSON = (b"content-type", b"application/json")


class ModelEntry:
    """A configured model as requests use it."""

    __slots__ = ("name", "name_b", "model_id", "provider", "adapter", "pp", "price",
                 "fallback_names", "fallbacks")

    def __init__(self, m, provider, adapter, pp):
        self.name = m.name
        self.name_b = m.name.encode()
        self.model_id = m.model
        self.provider = provider.name
        self.adapter = adapter
        self.pp = pp
        self.price = m.price
        self.fallback_names = tuple(m.fallbacks)
        self.fallbacks = ()            # ModelEntry chain after this one, resolved below

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        p = self.price
        if p is None:
            return 0.0
        return (input_tokens * p.input_per_1k + output_tokens * p.output_per_1k) / 1000.0


def _models(snap) -> dict:
    """Every configured model, once per build (routes share them)."""
    ai = snap.config.ai
    services = snap.services
    adapters = {}
    out = {}
    for m in ai.models:
        p = ai.providers[m.provider]
        adapter = adapters.get(p.name)
        if adapter is None:
            adapter = adapters[p.name] = ADAPTERS[p.type](p)
        # The pool outlives reloads while the provider's settings are unchanged: warm
        # keep-alive connections survive a config change.
        pp = services.keep("ai_provider", p.name, p, lambda p=p: ProviderPool(p))
        out[m.name] = ModelEntry(m, p, adapter, pp)
    for m in ai.models:
        chain = []
        seen = {m.name}
        todo = list(m.fallbacks)
        while todo:             # fallbacks of fallbacks, in order, each model once
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            chain.append(out[name])
            todo.extend(out[name].fallback_names)
        out[m.name].fallbacks = tuple(chain)
    return out


class Prompt:
    """A prompt route's template, split once into literal text and variables."""

    __slots__ = ("model", "system", "parts", "variables", "max_tokens", "temperature")

    def __init__(self, cfg):
        self.model = cfg.model
        self.system = cfg.system
        self.variables = tuple(cfg.variables)
        self.max_tokens = cfg.max_tokens
        self.temperature = cfg.temperature
        parts = []
        pos = 0
        for m in _VAR.finditer(cfg.template):
            parts.append((cfg.template[pos:m.start()], m.group(1)))
            pos = m.end()
        parts.append((cfg.template[pos:], None))
        self.parts = tuple(parts)

    def render(self, values: dict) -> str:
        """The template with each variable's value inserted as text."""
        out = []
        for literal, var in self.parts:
            out.append(literal)
            if var is not None:
                v = values[var]
                out.append(v if isinstance(v, str) else orjson.dumps(v).decode())
        return "".join(out)


class AITarget:
    __slots__ = ("route_name", "endpoint", "allowed", "prompt", "models_body", "accounts",
                 "timeout_s", "accounts_ready")
    takes_body = True

    def __init__(self, route_cfg, snap):
        models = snap.services.memo("ai_models", lambda: _models(snap))
        rai = route_cfg.ai
        self.route_name = route_cfg.name
        self.endpoint = rai.endpoint
        self.prompt = Prompt(rai.prompt) if rai.prompt is not None else None
        if self.prompt is not None:
            names = [self.prompt.model]
        else:
            names = rai.models or [m.name for m in snap.config.ai.models]
        self.allowed = {n: models[n] for n in names}
        self.models_body = orjson.dumps({"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": models[n].provider}
            for n in names]})
        self.timeout_s = route_cfg.timeout_s
        self.accounts = ()
        self.accounts_ready = False

    def route_accounts(self, route):
        """The route's policies that account for AI usage (token limits, budget): found
        once, on the compiled route's access phase."""
        if not self.accounts_ready:
            found = []
            for fn in route.access:
                policy = getattr(fn, "__self__", None)
                if policy is not None and hasattr(policy, "ai_reserve") and policy not in found:
                    found.append(policy)
            self.accounts = tuple(found)
            self.accounts_ready = True
        return self.accounts

    def open(self, ex):
        method = ex.head.method
        if method == b"GET" or method == b"HEAD":
            if ex.path.endswith(b"/models") and self.prompt is None:
                ex.answer_local(200, [_JSON], self.models_body)
            else:
                ex.answer_error(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
            return None
        if method != b"POST":
            ex.answer_error(405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
            return None
        call = AICall(self, ex)
        if ex.request_body is not None:
            # The route's request-body policies (validate, waf) had the body buffered and
            # may have replaced it: that is the body.
            call.parts.append(ex.request_body)
        else:
            pending = ex.take_pending() if ex.pending else None
            if pending:
                call.parts.extend(pending)
        if ex.body_done:
            call.run()
            if ex.finished:
                return None
        return call


def build(route_cfg, snap):
    if route_cfg.ai is None:
        return None
    return AITarget(route_cfg, snap)
