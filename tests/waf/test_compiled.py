"""The WAF's compiled phases (fastgate/_core/wafcore.pyx) answer exactly as the policy's
Python methods: every request of the OWASP CRS corpus and of the benign corpus is decided
both ways, head then body, on the same policy, from fresh contexts, in block and monitor
mode: the same answer (let through or refused) and the same access-log fields. A route with exclusions, a body whose head
already matched in monitor mode, and an engine error take the Python methods. (A route
runs what ``phase_callable`` gives, as fastgate.config.compile builds it.)"""
from __future__ import annotations

import asyncio
import os

import pytest

from fastgate._core.http import HttpError, RequestParser
from fastgate._core.state import BodyPhaseFn, PhaseFn
from fastgate._core.wafcore import WafAccess, WafBody
from fastgate.config.compile import phase_callable
from fastgate.policies.base import Reject
from tests.helpers.heads import HeadRecorder as _Heads
from tests.waf import benign, corpus


def _head(method, target, headers):
    """The RequestHead the gateway's parser makes of the request (None when it refuses it:
    the gateway answers 400 before any policy runs)."""
    if not any(n == b"host" for n, _ in headers):
        headers = [(b"host", b"api.test")] + list(headers)
    raw = method + b" " + target + b" HTTP/1.1\r\n" + b"".join(
        n + b": " + v + b"\r\n" for n, v in headers
        if n not in (b"content-length", b"transfer-encoding")) + b"\r\n"
    rec = _Heads()
    try:
        RequestParser(rec).feed(raw)
    except (HttpError, ValueError):
        return None
    return rec.heads[0] if rec.heads else None


def _ctx(head):
    from fastgate.server.context import RequestContext

    class Ctx(RequestContext):
        finished = False        # (the gateway's exchange: whether its client left,
        path = None             # and the normalised path)

    ctx = Ctx()
    ctx.head = head
    ctx.route_name = "api"
    ctx.client_ip = "10.0.0.1"
    return ctx


def _policy(mode="block", **waf):
    from fastgate.config import parse_config
    from fastgate.observe.metrics import Metrics
    from fastgate.policies import waf as waf_policy
    from fastgate.server.services import Services, SharedState
    config = parse_config({"listeners": [{"bind": "127.0.0.1:0"}], "routes": [
        {"name": "api", "paths": ["/*"], "respond": {"status": 200},
         "waf": dict({"mode": mode}, **waf)}]})
    services = Services(SharedState(config), config)
    services.metrics = Metrics()
    return waf_policy.build(config.routes[0], services)


def _settle(r):
    """What a phase's answer comes to: None or a Reject, at once or (a judgement that went
    on over later loop turns: whether it does depends on time, not on the request) when it
    is done."""
    if r is None or isinstance(r, Reject):
        return r
    return asyncio.run(r)


def _decide(access, body_phase, head, body):
    ctx = _ctx(head)
    out = [_settle(access(ctx))]
    if body_phase is not None and body is not None and not out[0]:
        out.append(_settle(body_phase(ctx, body)))
    return out, dict(ctx.log_fields or {})


def _requests():
    reqs = []
    if os.path.exists(corpus.CORPUS):
        reqs += [corpus.build_request(c) for c in corpus.load_cases()]
    reqs += benign.requests(600, seed=11)
    return reqs


@pytest.fixture(scope="module")
def requests():
    return _requests()


@pytest.mark.parametrize("mode", ["block", "monitor"])
def test_compiled_phases_answer_as_the_methods(requests, mode):
    policy = _policy(mode)
    fast_access = phase_callable(policy, "access")
    fast_body = phase_callable(policy, "request_body")
    assert isinstance(fast_access, WafAccess) and isinstance(fast_access, PhaseFn)
    assert isinstance(fast_body, WafBody) and isinstance(fast_body, BodyPhaseFn)
    decided = refused = 0
    for method, target, headers, body, _ct in requests:
        head = _head(method, target, headers)
        if head is None:
            continue
        py = _decide(policy.access, policy.request_body, head, body)
        c = _decide(fast_access, fast_body, head, body)
        assert c == py, (method, target[:120], body[:120] if body else None)
        decided += 1
        refused += bool(py[1])
    # the corpus is really decided both ways, attacks included
    assert decided > 4000 and refused > 1000, (decided, refused)


def test_exclusions_and_monitor_matches_take_the_methods():
    policy = _policy("monitor", exclude={"paths": ["/skip/*"]})
    fast_access = phase_callable(policy, "access")
    ctx = _ctx(_head(b"GET", b"/skip/x?id=1%27%20or%201=1--", []))
    assert fast_access(ctx) is None and ctx.log_fields is None       # excluded path
    policy = _policy("monitor")
    fast_access = phase_callable(policy, "access")
    fast_body = phase_callable(policy, "request_body")
    ctx = _ctx(_head(b"POST", b"/x?id=1%27%20or%201=1--", [(b"content-type", b"application/json")]))
    assert _settle(fast_access(ctx)) is None and ctx.log_fields["waf_rule"] == "sqli"
    # the head matched (monitor): the body is not judged again, as the method does
    assert fast_body(ctx, b'{"q": "<script>alert(1)</script>"}') is None
    assert ctx.log_fields["waf_part"].startswith("args:")


def test_an_engine_error_fails_closed_on_the_compiled_path(monkeypatch):
    policy = _policy("block")
    fast_access = phase_callable(policy, "access")

    def broken(*a, **k):
        raise RuntimeError("boom")

    # the precise stage breaks on a flagged head: refused (fail closed), as start() answers
    monkeypatch.setattr(type(policy.engine), "_precise", broken)
    ctx = _ctx(_head(b"GET", b"/x?id=1%27%20or%201=1--", []))
    r = fast_access(ctx)
    assert isinstance(r, Reject) and r.code == "waf_blocked"
    assert ctx.log_fields["waf_rule"] == "waf_error"
