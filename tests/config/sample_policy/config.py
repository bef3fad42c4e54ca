"""Config of the sample policy: a top-level `greetings` table and `routes[].greeting` naming
one of its entries (a cross reference through the load context)."""
from __future__ import annotations

from dataclasses import dataclass

from fastgate.config.check import Obj, c_map, c_str
from fastgate.config.sections import RouteKey, TopKey

__all__ = ("Greeting",)


@dataclass(frozen=True, slots=True)
class Greeting:
    text: str
    loud: bool = False


def parse_greetings(ctx, e, path, v):
    return c_map(c_str(), c_str())(e, path, v)


def parse_greeting(ctx, e, path, v):
    o = Obj(e, path, v, ("use", "loud"))
    use = o.get("use", c_str())
    known = ctx.sections.get("greetings") or {}
    if use is not None and use not in known:
        e.add(o.p("use"), f"unknown greeting {use!r}")
        return None
    return Greeting(text=known.get(use, ""), loud=o.d.get("loud") is True)


SECTIONS = (TopKey("greetings", parse_greetings, default={}),
            RouteKey("greeting", parse_greeting))
