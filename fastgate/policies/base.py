"""The policy contract: what every per-route policy (auth, rate limit, transform, ...) implements.

Config is compiled once into, per route, a tuple of policy objects. On each request the core
calls, in order, ``policy.access(ctx)`` for every policy of the matched route:

* ``None``             -> continue with the next policy (the common, synchronous path)
* a ``Reject``         -> stop, answer the client with that error (JSON body per SPEC)
* a ``Respond``        -> stop, answer the client with that (non-error) response, e.g. a
                          CORS preflight
* an awaitable         -> the core pauses reading the connection, awaits it, and treats the
                          awaited result exactly like a direct return (None or Reject)

After the upstream response head arrives (or a Reject/respond answer is made) the core calls
``policy.response(ctx)`` for policies that define it; they may append to
``ctx.response_headers``. After the last byte, ``policy.log(ctx)`` (optional) runs.

A policy module exposes ``build(route_cfg, services) -> policy or None`` (None: the route does
not use it); ``services`` is the ``Services`` object of the running process (metrics,
shared tables, redis). Registering a module in ``fastgate.policies.REGISTRY`` is all it
takes to add one; the core is never edited for a new policy.
"""
from __future__ import annotations


class Reject:
    """An answer a policy gives instead of letting the request through."""

    __slots__ = ("status", "code", "message", "headers")

    def __init__(self, status: int, code: str, message: str, headers=()):
        self.status = status
        self.code = code
        self.message = message
        # sequence of (lower-case name bytes, value bytes) added to the error response
        self.headers = headers

    def __repr__(self) -> str:
        return f"Reject({self.status}, {self.code!r}, {self.message!r})"


class Respond:
    """A complete local answer a policy gives instead of forwarding (not an error)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers=(), body: bytes = b""):
        self.status = status
        self.headers = headers  # sequence of (lower-case name bytes, value bytes)
        self.body = body


class Policy:
    """Base class for documentation; policies need not inherit from it."""

    __slots__ = ()
    name = "policy"

    def access(self, ctx):
        return None
