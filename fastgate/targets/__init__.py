"""Targets: what a route ends in (Envoy's router filter, the last one of its chain).

Each module listed in REGISTRY exposes ``build(route_cfg, ctx)``, returning a compiled
target for the route or None when the route is not of its kind (``ctx``: the snapshot being
compiled, with ``upstreams``, and the build's ``services``). Exactly one target claims a
valid route. Adding a kind of target (the AI gateway) is one module and one line here.

A compiled target has:

* ``takes_body`` (bool): the request body goes to it (the core answers ``Expect:
  100-continue`` for it; a target that does not take the body lets the core discard it);
* ``open(exchange)``: start serving one request, after the access and request-body phases.
  It returns a call object, or None when it answered at once (``exchange.answer_local``).

A call has ``attached`` (True once it takes body chunks; before that the exchange keeps
them, see ``Exchange.take_pending``), ``body(data)``, ``body_end()``, ``cancel()`` (the
client went away or the exchange ended), ``pause_reading()`` / ``resume_reading()`` (client
backpressure), ``timed_out()`` (``conn.up_deadline`` passed) and ``flush_up()`` (see
``ClientConnection.defer_flush``). It answers through the exchange: ``send_head`` /
``send_body`` / ``flush_output`` / ``send_end``, ``target_failed``, ``start_tunnel``.
"""
from __future__ import annotations

import importlib

# "module:key": imported only once a route sets ``key`` (the AI gateway's modules stay out
# of a gateway that serves no AI route).
REGISTRY = (
    "fastgate.targets.upstream",
    "fastgate.targets.respond",
    "fastgate.ai.target:ai",
)


def load_targets():
    return tuple(_on_demand(*entry.split(":")) if ":" in entry
                 else importlib.import_module(entry).build for entry in REGISTRY)


def _on_demand(name, key):
    def build(route_cfg, ctx):
        if getattr(route_cfg, key, None) is None:
            return None
        return importlib.import_module(name).build(route_cfg, ctx)
    build.__qualname__ = f"on_demand[{name}]"
    return build
