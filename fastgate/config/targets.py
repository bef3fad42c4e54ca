"""What a route ends in: ``upstreams`` (and a route's ``upstream``), ``respond``, and the AI
target (the top-level ``ai`` section and a route's ``ai``).

Parsers take ``(ctx, e, path, value)`` (see sections.py).
"""
from __future__ import annotations

import re
from functools import partial

from . import schema as S
from .check import (REQUIRED, Obj, c_bool, c_header_name, c_header_value, c_int, c_list,
                    c_map, c_num, c_str, tname)
from .values import (MANAGED_HEADERS, c_base_url, c_duration, c_name, c_probe_path,
                     parse_key_source, parse_url)

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_TEMPLATE_VAR = re.compile(r"\{\{(.*?)\}\}", re.S)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROVIDER_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai/v1",
    "openai_compatible": None,
}


# --- upstreams ------------------------------------------------------------------------------

def parse_upstreams(ctx, e, path, v):
    if not isinstance(v, dict):
        e.add(path, f"expected a mapping of upstream names, got {tname(v)}")
        return None
    out = {}
    for name, item in v.items():
        if not isinstance(name, str):
            e.add(path, f"upstream names must be strings, got {name!r}")
            continue
        p = path + (name,)
        if c_name("an upstream name")(e, p, name) is None:
            continue
        u = parse_upstream(ctx, e, p, name, item)
        if u is not None:
            out[name] = u
    return out


def parse_upstream(ctx, e, path, name, v):
    o = Obj(e, path, v, ("targets", "balance", "hash_on", "connect_timeout_s",
                         "read_timeout_s", "keepalive", "retries", "health_check",
                         "tls_verify", "ca_file"))
    targets = o.get("targets", c_list(parse_target, nonempty=True, unique=True,
                                      key=lambda t: (t.scheme, t.host, t.port, t.path)))
    balance = o.get("balance", c_str(("round_robin", "least_conn", "hash")), "round_robin")
    hash_on = o.get("hash_on", c_hash_on, None)
    if hash_on is not None and balance != "hash":
        e.add(o.p("hash_on"), "only used with balance: hash")
    if balance == "hash" and hash_on is None and not o.has("hash_on"):
        hash_on = S.HashOn("ip", None)
    return S.Upstream(
        name=name,
        targets=targets or [],
        balance=balance,
        hash_on=hash_on,
        connect_timeout_s=o.get("connect_timeout_s", c_duration(), 3.0),
        read_timeout_s=o.get("read_timeout_s", c_duration(), 30.0),
        keepalive=o.get("keepalive", c_int(lo=0), 64),
        retries=o.get("retries", c_int(lo=0, hi=10), 1),
        health_check=o.get("health_check", parse_health_check, None),
        tls_verify=o.get("tls_verify", c_bool, True),
        ca_file=o.get("ca_file", ctx.c_file, None),
    )


def parse_target(e, path, v):
    if isinstance(v, str):
        v = {"url": v}  # shorthand: targets: ["http://h:1"]
    o = Obj(e, path, v, ("url", "weight"))
    url = o.get("url", c_str())
    weight = o.get("weight", c_int(lo=1, hi=1000), 1)
    if url is None:
        return None
    r = parse_url(url)
    if isinstance(r, str):
        e.add(o.p("url"), r)
        return None
    scheme, host, port, p = r
    return S.Target(url=url, scheme=scheme, host=host, port=port, path=p, weight=weight or 1)


def parse_health_check(e, path, v):
    o = Obj(e, path, v, ("path", "interval_s", "timeout_s", "healthy_after", "unhealthy_after"))
    interval = o.get("interval_s", c_duration(), 5.0)
    timeout = o.get("timeout_s", c_duration(), 2.0)
    if interval is not None and timeout is not None and timeout > interval:
        e.add(o.p("timeout_s"), "must not exceed interval_s")
    return S.HealthCheck(
        path=o.get("path", c_probe_path, "/health"),
        interval_s=interval, timeout_s=timeout,
        healthy_after=o.get("healthy_after", c_int(lo=1, hi=100), 2),
        unhealthy_after=o.get("unhealthy_after", c_int(lo=1, hi=100), 3),
    )


def c_hash_on(e, path, v):
    r = parse_key_source(v, ("ip", "consumer", "header"))
    if isinstance(r, str):
        e.add(path, r)
        return None
    return S.HashOn(*r)


# --- respond --------------------------------------------------------------------------------

def _c_respond_header(e, path, v):
    name = c_header_name(lower=False)(e, path, v)
    if name is not None and name.lower() in MANAGED_HEADERS:
        e.add(path, f"{name} is set by the gateway (framing) and cannot be configured")
        return None
    return name


def parse_respond(ctx, e, path, v):
    o = Obj(e, path, v, ("status", "body", "headers"))
    status = o.get("status", c_int(lo=200, hi=599), 200)
    body = o.get("body", c_str(empty=True, ctl=True), "")
    if body and status in (204, 304):
        e.add(o.p("body"), f"a {status} response has no body")
    return S.Respond(status=status, body=body,
                     headers=o.get("headers", c_map(_c_respond_header, c_header_value,
                                                    fold=True), {}))


# --- ai: providers and models ---------------------------------------------------------------

def parse_ai(ctx, e, path, v):
    ctx.has_ai = True
    o = Obj(e, path, v, ("providers", "models"))
    providers = o.get("providers", parse_providers)
    models = o.get("models", lambda e2, p2, v2: parse_models(e2, p2, v2, providers))
    if providers is None or models is None:
        return None
    return S.AI(providers=providers, models=models)


def parse_providers(e, path, v):
    if not isinstance(v, dict):
        e.add(path, f"expected a mapping of provider names, got {tname(v)}")
        return None
    if not v:
        e.add(path, "at least one provider is required")
    out = {}
    for name, item in v.items():
        if not isinstance(name, str):
            e.add(path, f"provider names must be strings, got {name!r}")
            continue
        p = path + (name,)
        if c_name("a provider name")(e, p, name) is None:
            continue
        o = Obj(e, p, item, ("type", "base_url", "api_key", "connect_timeout_s",
                             "read_timeout_s", "tls_verify"))
        typ = o.get("type", c_str(tuple(PROVIDER_URLS)))
        base = o.get("base_url", c_base_url, PROVIDER_URLS.get(typ))
        if typ == "openai_compatible" and not o.has("base_url"):
            e.add(o.p("base_url"), "required for type openai_compatible")
        api_key = o.get("api_key", c_str(max_len=4096),
                        REQUIRED if typ not in (None, "openai_compatible") else None)
        if o.ok:
            out[name] = S.Provider(
                name=name, type=typ, base_url=base, api_key=api_key,
                connect_timeout_s=o.get("connect_timeout_s", c_duration(), 5.0),
                read_timeout_s=o.get("read_timeout_s", c_duration(), 300.0),
                tls_verify=o.get("tls_verify", c_bool, True))
    return out


def _parse_price(e, path, v):
    po = Obj(e, path, v, ("input_per_1k", "output_per_1k"))
    return S.Price(input_per_1k=po.get("input_per_1k", c_num(lo=0.0)),
                   output_per_1k=po.get("output_per_1k", c_num(lo=0.0)))


def parse_models(e, path, v, providers):
    if not isinstance(v, list):
        e.add(path, f"expected a list, got {tname(v)}")
        return None
    if not v:
        e.add(path, "at least one model is required")
    out = []
    names: dict[str, int] = {}
    for i, item in enumerate(v):
        p = path + (i,)
        o = Obj(e, p, item, ("name", "provider", "model", "price", "fallbacks"))
        name = o.get("name", c_str(pattern=_MODEL_NAME, what="a model name", max_len=200))
        if name is not None:
            if name in names:
                e.add(o.p("name"), f"duplicate model name {name!r} (also ai.models[{names[name]}])")
            names.setdefault(name, i)
        prov = o.get("provider", c_str())
        if prov is not None and providers is not None and prov not in providers:
            e.add(o.p("provider"), f"unknown provider {prov!r} "
                                   f"(ai.providers: {', '.join(sorted(providers)) or 'none'})")
        out.append(S.Model(
            name=name, provider=prov,
            model=o.get("model", c_str(max_len=512)),
            price=o.get("price", _parse_price, None),
            fallbacks=o.get("fallbacks", c_list(c_str(), unique=True), []),
        ))
    all_names = {m.name for m in out}
    for i, m in enumerate(out):
        for j, fb in enumerate(m.fallbacks or []):
            fp = path + (i, "fallbacks", j)
            if fb == m.name:
                e.add(fp, "a model cannot be its own fallback")
            elif fb not in all_names:
                e.add(fp, f"unknown model {fb!r}")
    return out


# --- a route's ai ---------------------------------------------------------------------------

def parse_route_ai(ctx, e, path, v):
    o = Obj(e, path, v, ("endpoint", "models", "prompt"))
    if o.ok and ctx.ai is None and not ctx.has_ai:
        e.add(path, "ai routes need the top-level ai section (providers and models)")
    if o.ok and o.has("endpoint") == o.has("prompt"):
        e.add(path, "needs exactly one of endpoint, prompt")
    if o.has("models") and o.has("prompt"):
        e.add(o.p("models"), "only used with endpoint (a prompt names its model)")
    models = o.get("models", c_list(c_str(), nonempty=True, unique=True), None)
    for i, m in enumerate(models or []):
        ctx.check_model(e, o.p("models") + (i,), m)
    endpoint = o.get("endpoint", c_str(("chat", "embeddings")), None)
    if endpoint == "embeddings" and ctx.ai is not None:
        by_name = {m.name: m for m in ctx.ai.models}
        for i, name in enumerate(models if models is not None else list(by_name)):
            m = by_name.get(name)
            p = ctx.ai.providers.get(m.provider) if m is not None else None
            if p is not None and p.type not in EMBEDDING_PROVIDERS:
                where = o.p("models") + (i,) if models is not None else o.p("endpoint")
                e.add(where, f"model {name!r} is served by {p.type} provider {p.name!r}, "
                             "which has no embeddings endpoint (openai, openai_compatible, "
                             "gemini and mistral have)")
    return S.RouteAI(endpoint=endpoint, models=models,
                     prompt=o.get("prompt", partial(parse_prompt, ctx), None))


EMBEDDING_PROVIDERS = ("openai", "openai_compatible", "gemini", "mistral")


def parse_prompt(ctx, e, path, v):
    o = Obj(e, path, v, ("model", "system", "template", "max_tokens", "temperature"))
    model = o.get("model", c_str())
    if model is not None:
        ctx.check_model(e, o.p("model"), model)
    template = o.get("template", c_str(ctl=True, max_len=100_000))
    variables: list[str] = []
    if template is not None:
        for m in _TEMPLATE_VAR.finditer(template):
            var = m.group(1).strip()
            if not _IDENT.match(var):
                e.add(o.p("template"), f"malformed placeholder {m.group(0)!r}: use "
                                       "{{name}} (letters, digits, _)")
            elif var not in variables:
                variables.append(var)
    return S.Prompt(model=model, template=template,
                    system=o.get("system", c_str(ctl=True, max_len=100_000), None),
                    variables=variables,
                    max_tokens=o.get("max_tokens", c_int(gt=0), None),
                    temperature=o.get("temperature", c_num(lo=0.0, hi=2.0), None))
