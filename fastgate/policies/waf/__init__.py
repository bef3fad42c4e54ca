"""`routes[].waf`: the web application firewall (engine: fastgate.waf).

Two phases:

* access: the request line and every header (the path raw and decoded, query argument
  names and values, header and cookie values) are inspected before anything else of the
  request is read, so an attack in the URL or a header is refused before its body arrives;
* request body: up to ``inspect_body_bytes`` of the body (form, JSON keys and string values,
  text parts of multipart, other text), once it is all here (the route buffers the body up
  to its ``max_body_bytes`` for this: the upstream never sees a body that was not inspected).

A match in ``mode: block`` answers 403 ``waf_blocked`` and the request never reaches the
upstream; in ``mode: monitor`` it is forwarded. Either way ``fastgate_waf_blocked_total
{route,rule}`` counts it and the access-log line gets ``waf_rule``, ``waf_part`` (where it
matched, e.g. ``args:id``, ``headers:user-agent``, ``body:json:user.name``) and
``waf_action``: never the matched value. ``exclude`` tunes it the way CRS users do:
argument and header names never inspected, and paths (exact or a trailing ``/*`` prefix)
not inspected at all.

A request the precise stage cannot finish judging within its byte budget (32 KiB of
flagged windows) is blocked in ``mode: block`` (fail closed: padding is no way around it)
and passed in ``mode: monitor``. A judgement that takes longer than 0.8 ms goes on in the
next turns of the event loop, 0.8 ms at a time, while that connection waits (reading
paused): the loop is never held 1 ms, and the verdict never depends on the machine's load.

The engine (a compiled Hyperscan database and the detectors) is kept across reloads while
the route's settings are unchanged.
"""
from __future__ import annotations

import asyncio
import logging

from fastgate.policies.base import Reject
from fastgate.waf.verdict import Match

log = logging.getLogger("fastgate.waf")

_BLOCKED = Reject(403, "waf_blocked", "request blocked by the web application firewall")


class _Engine:
    """What the process state keeps: the engine (nothing to close)."""

    __slots__ = ("engine",)

    def __init__(self, cfg):
        # imported with the first route that has a WAF: Hyperscan stays out of the rest
        from fastgate.waf import Engine
        self.engine = Engine(rules=tuple(cfg.rules), exclude_args=tuple(cfg.exclude_args),
                             exclude_headers=tuple(cfg.exclude_headers),
                             inspect_body_bytes=cfg.inspect_body_bytes or 1,
                             # Fail closed: a request the precise stage could not finish
                             # judging within its byte budget is blocked, so padding a body
                             # is no way around the WAF (time is no limit: a judgement
                             # that runs past 0.9 ms goes on in the next loop turns).
                             on_budget="block" if cfg.mode == "block" else "pass")


class WafPolicy:
    name = "waf"
    __slots__ = ("engine", "block", "route_name", "metrics", "exact", "prefixes",
                 "body_bytes", "compiled")

    def __init__(self, route_name, cfg, engine, metrics):
        self.engine = engine
        self.block = cfg.mode == "block"
        self.route_name = route_name
        self.metrics = metrics
        self.exact = frozenset(p.encode() for p in cfg.exclude_paths if not p.endswith("/*"))
        self.prefixes = tuple(p[:-1].encode() for p in cfg.exclude_paths if p.endswith("/*"))
        self.body_bytes = cfg.inspect_body_bytes
        # The fast path in C (fastgate._core.wafcore): a request the scan finds clean
        # crosses no Python frame here; a flagged one comes back to flagged_head/_body.
        self.compiled = self._compile()

    def _compile(self):
        from fastgate._core.wafcore import WafAccess
        return {"access": WafAccess(self)}

    def _excluded(self, ctx) -> bool:
        path = ctx.path if ctx.path else ctx.head.path
        if path in self.exact:
            return True
        for p in self.prefixes:
            if path.startswith(p) or path == p[:-1]:
                return True
        return False

    def _verdict(self, ctx, m):
        """The policy's answer to the engine's: None, a Reject, or an awaitable that
        finishes a judgement still under way (``Judgement``) a slice per loop turn, the
        connection's reading paused meanwhile."""
        if m is None:
            return None
        if m.__class__ is not Match:
            return self._later(ctx, m)      # a Judgement
        return self._matched(ctx, m)

    async def _later(self, ctx, job):
        m = job
        while m is not None and m.__class__ is not Match:
            await asyncio.sleep(0)      # let the loop serve everyone else between slices
            if ctx.finished:
                return None             # the client went away: nothing left to judge for
            m = job.resume()
        if m is None:
            return None
        return self._matched(ctx, m)

    def _matched(self, ctx, m):
        metrics = self.metrics
        if metrics is not None:
            metrics.waf_blocked(self.route_name, m.rule)
        fields = ctx.log_fields
        if fields is None:
            fields = ctx.log_fields = {}
        fields["waf_rule"] = m.rule
        fields["waf_part"] = m.part
        fields["waf_action"] = "block" if self.block else "monitor"
        if self.block:
            return _BLOCKED
        log.info("waf (monitor) route %s: rule %s matched in %s (request %s)",
                 self.route_name, m.rule, m.part, ctx.request_id)
        return None

    def access(self, ctx):
        if (self.prefixes or self.exact) and self._excluded(ctx):
            return None
        head = ctx.head
        target = head.path + b"?" + head.query if head.query else head.path
        return self._verdict(ctx, self.engine.start(head.method, target, head.headers, None, None))

    def flagged_head(self, ctx, target):
        """``access`` for a head the compiled fast path flagged: the precise stage."""
        return self._verdict(ctx, self.engine.judge(target, ctx.head.headers, None, None))


class WafBodyPolicy(WafPolicy):
    """The same, with body inspection (``inspect_body_bytes`` > 0): the route buffers
    bodies for it."""

    __slots__ = ()

    def request_body(self, ctx, body):
        if not body:
            return None
        if ctx.log_fields is not None and "waf_rule" in ctx.log_fields:
            return None             # monitor mode: the head already matched
        if (self.prefixes or self.exact) and self._excluded(ctx):
            return None
        head = ctx.head
        return self._verdict(ctx, self.engine.start(head.method, b"/", (), body[:self.body_bytes],
                                                    head.get(b"content-type")))

    def flagged_body(self, ctx, body):
        """``request_body`` for a body the compiled fast path flagged: the precise stage."""
        return self._verdict(ctx, self.engine.judge(b"/", [], body, ctx.head.get(b"content-type")))

    def _compile(self):
        from fastgate._core.wafcore import WafAccess, WafBody
        return {"access": WafAccess(self), "request_body": WafBody(self)}


def build(route_cfg, services):
    cfg = getattr(route_cfg, "waf", None)
    if cfg is None:
        return None
    settings = (tuple(cfg.rules), tuple(cfg.exclude_args), tuple(cfg.exclude_headers),
                cfg.inspect_body_bytes, cfg.mode)
    kept = services.keep("waf_engine", settings, settings, lambda: _Engine(cfg))
    cls = WafBodyPolicy if cfg.inspect_body_bytes > 0 else WafPolicy
    return cls(route_cfg.name, cfg, kept.engine, services.metrics)


__all__ = ["WafBodyPolicy", "WafPolicy", "build"]
