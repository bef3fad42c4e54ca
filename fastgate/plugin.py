"""The public plugin API (SPEC "Plugins"): what a third-party policy package imports.

    from fastgate.plugin import Respond        # Respond(status, body=b"", headers=None)

    class AddTenant:
        schema = {...}                          # optional JSON Schema for `config`
        def __init__(self, config): ...         # once per load/reload
        def access(self, req): ...              # before the target: None, or a Respond
        def request_chunk(self, req, data, last): ...
                                                # each request body chunk as it streams
                                                # (sync): None, or a Respond that refuses it
        def request_body(self, req, body): ...  # the whole request body (bytes): None or a
                                                # Respond; ``req.body = b"..."`` replaces it
        def response(self, req, resp): ...      # the response head, before it is written
        def response_body(self, req, resp, data, last): ...
                                                # each response chunk: returns the bytes to
                                                # send instead (b"" holds it back; the last
                                                # call, last=True, may release what was held)
        def log(self, req, resp): ...           # after the last byte

Every method is optional; all but ``request_chunk`` and ``response_body`` may be ``async
def``. ``req``:
``method``, ``path``, ``query`` (str), ``headers`` (case-insensitive mapping of the request
as it goes upstream: get, set, del), ``client_ip``, ``consumer`` (name or None), ``route``
(name), ``request_id``, ``body`` (request_body only), ``state`` (a dict for the plugin's own
per-request data), ``bytes_received``. ``resp``: ``status``, ``headers`` (as
they go to the client), ``bytes_sent`` (final in ``log``). An exception in a plugin answers 500 for that request (or, once the
response is under way, ends it) and is logged; it never takes the process down.

``request_chunk``, ``request_body`` and ``response_body`` extend the SPEC's three methods
with the core's body phases: a refusal from ``request_chunk`` mid-stream drops the upstream
connection (it never sees a whole request) and closes the client's after the answer; a plugin that defines ``request_body`` makes its routes buffer the body (up to
the route's ``max_body_bytes``); one that defines ``response_body`` makes them re-frame
responses as chunked.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import MutableMapping

from fastgate.policies.base import Respond as _CoreRespond

log = logging.getLogger("fastgate.plugins")

__all__ = ["Respond", "Request", "Response", "PluginChain"]

class Respond:
    """A complete answer a plugin gives instead of forwarding the request."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body=b"", headers=None):
        self.status = int(status)
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = headers

    def to_core(self):
        hs = self.headers or {}
        items = hs.items() if hasattr(hs, "items") else hs
        return _CoreRespond(self.status, [(_b(k).lower(), _b(v)) for k, v in items], self.body)


def _b(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("latin-1")


def _s(v: bytes) -> str:
    return v.decode("latin-1")


def _check_value(name: bytes, value: bytes) -> None:
    if b"\r" in value or b"\n" in value or b"\0" in value or not name or \
            any(c in name for c in b" :\t\r\n\0"):
        raise ValueError(f"invalid header {name!r}: {value!r}")


class _HeaderView(MutableMapping):
    """Case-insensitive headers as they will leave: what arrived (minus what is dropped)
    plus what policies added (``_added``). Setting or deleting a name replaces every copy
    of it, the arrived ones through a per-request drop set (``_drop_attr`` on the ctx)."""

    __slots__ = ("ctx",)
    _drop_attr = ""

    def __init__(self, ctx):
        self.ctx = ctx

    def _arrived(self):          # [(name, value)] before the drop sets
        raise NotImplementedError

    def _route_drop(self):
        raise NotImplementedError

    def _added(self) -> list:
        raise NotImplementedError

    def _items(self):
        drop = self._route_drop()
        extra = getattr(self.ctx, self._drop_attr)
        if extra is not None:
            drop = drop | extra
        return [(k, v) for k, v in self._arrived() if k not in drop] + list(self._added())

    def __getitem__(self, name):
        key = _b(name).lower()
        for k, v in reversed(self._items()):
            if k == key:
                return _s(v)
        raise KeyError(name)

    def get_all(self, name):
        key = _b(name).lower()
        return [_s(v) for k, v in self._items() if k == key]

    def __setitem__(self, name, value):
        key = _b(name).lower()
        value = _b(value)
        _check_value(key, value)
        self.__delitem__(name, missing_ok=True)
        self._added().append((key, value))

    def __delitem__(self, name, missing_ok=False):
        ctx = self.ctx
        key = _b(name).lower()
        if not missing_ok and key not in {k for k, _ in self._items()}:
            raise KeyError(name)
        setattr(ctx, self._drop_attr, (getattr(ctx, self._drop_attr) or frozenset()) | {key})
        added = self._added()
        added[:] = [(k, v) for k, v in added if k != key]

    def __iter__(self):
        seen = []
        for k, _ in self._items():
            if k not in seen:
                seen.append(k)
        return (_s(k) for k in seen)

    def __len__(self):
        return len({k for k, _ in self._items()})


class _RequestHeaders(_HeaderView):
    """The request's headers as they will go upstream."""

    __slots__ = ()
    _drop_attr = "req_drop"

    def _arrived(self):
        return self.ctx.head.headers

    def _route_drop(self):
        return self.ctx.route.drop_request_headers

    def _added(self):
        return self.ctx.upstream_headers


class _ResponseHeaders(_HeaderView):
    """The response's headers as they will go to the client."""

    __slots__ = ("head",)
    _drop_attr = "resp_drop"

    def __init__(self, ctx, head):
        self.ctx = ctx
        self.head = head      # the target's response head, or None for a local answer

    def _arrived(self):
        return self.head.headers if self.head is not None else ()

    def _route_drop(self):
        return self.ctx.route.drop_response_headers

    def _added(self):
        return self.ctx.response_headers


class Request:
    """``req``: one request, as plugins see it."""

    __slots__ = ("_ctx", "headers", "state")

    def __init__(self, ctx):
        self._ctx = ctx
        self.headers = _RequestHeaders(ctx)
        self.state = {}     # the plugins' own per-request data (Kong's kong.ctx.plugin)

    method = property(lambda self: _s(self._ctx.head.method))
    path = property(lambda self: _s(self._ctx.head.path))
    query = property(lambda self: _s(self._ctx.head.query if self._ctx.query is None
                                     else self._ctx.query))
    client_ip = property(lambda self: self._ctx.client_ip)
    bytes_received = property(lambda self: self._ctx.bytes_in)
    consumer = property(lambda self: self._ctx.consumer)
    route = property(lambda self: self._ctx.route_name)
    request_id = property(lambda self: self._ctx.request_id)

    @property
    def body(self):
        return self._ctx.request_body

    @body.setter
    def body(self, value):
        self._ctx.request_body = value.encode() if isinstance(value, str) else bytes(value)


class Response:
    """``resp``: the answer, as plugins see it."""

    __slots__ = ("_ctx", "headers")

    def __init__(self, ctx, head):
        self._ctx = ctx
        self.headers = _ResponseHeaders(ctx, head)

    status = property(lambda self: self._ctx.status)
    bytes_sent = property(lambda self: self._ctx.bytes_out)


def _views(ctx, head=None):
    """The (req, resp) pair of one request, made on first use."""
    st = ctx.plugin_state
    if st is None:
        st = ctx.plugin_state = [Request(ctx), None]
    if head is not None or st[1] is None:
        st[1] = Response(ctx, head)
    return st[0], st[1]


def _answer(name, r):
    if isinstance(r, Respond):
        return r.to_core()
    raise TypeError(f"plugin {name!r} returned {type(r).__name__}: expected None or a "
                    f"fastgate.plugin.Respond")


class PluginChain:
    """The plugins of one route as one core policy: each phase calls them in the listed
    order, after the built-in policies of that phase. Only the phases some plugin has are
    set (compile asks ``getattr(policy, phase, None)``). Exceptions are the core's to
    handle: a failing plugin answers 500 for its request (fastgate/_core/conn_exchange.pxi)."""

    PHASES = ("access", "request_chunk", "request_body", "response", "response_body", "log")

    def __init__(self, route_name, plugins):
        self.route_name = route_name
        self.plugins = plugins          # [(name, instance)], in the route's order
        for phase in self.PHASES:
            fns = tuple((name, getattr(p, phase)) for name, p in plugins if hasattr(p, phase))
            if fns:
                setattr(self, "_" + phase + "_fns", fns)
                setattr(self, phase, getattr(self, "_" + phase))

    # access / request_body: None, a core Respond, or an awaitable of either ------------
    def _access(self, ctx):
        req, _ = _views(ctx)
        return self._run(self._access_fns, 0, (req,))

    def _request_chunk(self, ctx, data, last):
        req, _ = _views(ctx)
        for name, fn in self._request_chunk_fns:
            r = fn(req, data, last)
            if r is not None:
                return _answer(name, r)
        return None

    def _request_body(self, ctx, body):
        req, _ = _views(ctx)
        return self._run(self._request_body_fns, 0, (req, body))

    def _run(self, fns, i, args):
        for j in range(i, len(fns)):
            name, fn = fns[j]
            r = fn(*args)
            if r is None:
                continue
            if inspect.isawaitable(r):
                return self._run_async(fns, j, args, r)
            return _answer(name, r)
        return None

    async def _run_async(self, fns, j, args, first):
        r = await first
        if r is not None:
            return _answer(fns[j][0], r)
        for name, fn in fns[j + 1:]:
            r = fn(*args)
            if inspect.isawaitable(r):
                r = await r
            if r is not None:
                return _answer(name, r)
        return None

    # response head / log: side effects only (None or an awaitable) ----------------------
    def _response(self, ctx, head):
        req, resp = _views(ctx, head)
        return self._each(self._response_fns, (req, resp))

    def _log(self, ctx):
        req, resp = _views(ctx)
        r = self._each(self._log_fns, (req, resp))
        if r is not None:
            # The exchange is over: an async log hook runs on its own.
            task = asyncio.ensure_future(r)
            task.add_done_callback(self._log_done)

    def _log_done(self, task):
        if not task.cancelled() and task.exception() is not None:
            log.error("plugin log phase on route %s failed", self.route_name,
                      exc_info=task.exception())

    def _each(self, fns, args):
        for j, (_, fn) in enumerate(fns):
            r = fn(*args)
            if r is not None and inspect.isawaitable(r):
                return self._each_async(fns, j, args, r)
        return None

    async def _each_async(self, fns, j, args, first):
        await first
        for _, fn in fns[j + 1:]:
            r = fn(*args)
            if r is not None and inspect.isawaitable(r):
                await r

    # response body: sync, bytes in, bytes out ----------------------------------------
    def _response_body(self, ctx, data, last):
        req, resp = _views(ctx)
        for name, fn in self._response_body_fns:
            data = fn(req, resp, data, last)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"plugin {name!r}: response_body must return bytes")
            data = bytes(data)
        return data
