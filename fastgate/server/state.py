"""Process state that outlives one config: Redis clients with their leases, authenticators
with their key sets, caches and IdP connections (later: AI usage, the management store).

Policies never create such objects themselves; at compile time they ask for them by kind,
name and settings (``keep``), and get the running object back when the settings are
unchanged, or a new one. A config change goes through one path, at start and on every reload:

    build = services.begin(config)     # nothing running is touched
    snap = compile_snapshot(config, build, pools)   # policies call build.keep(...)
    await build.warm()                 # connect, fetch, load scripts: bounded, never raises
    gateway.snapshot = snap            # the swap
    build.commit(drain_s)              # what the new config no longer uses is closed after
                                       # the drain period (requests in flight still hold it)

and when anything before the swap fails, ``build.abort()`` closes only what that build
created: the running snapshot and its state are exactly as they were.

Objects may define ``async warm()`` (bounded by their own timeouts; failures are logged and
leave the object in its documented fail mode) and ``close()`` (sync or async).
"""
from __future__ import annotations

import asyncio
import inspect
import logging

log = logging.getLogger("fastgate")


def _close(obj) -> None:
    """Close one object now; an async close runs as a task when a loop is running."""
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        result = close()
    except Exception:  # noqa: BLE001 - closing must not take anything else down
        log.exception("closing %r failed", obj)
        return
    if inspect.isawaitable(result):
        try:
            asyncio.get_running_loop().create_task(result)
        except RuntimeError:
            asyncio.run(result)


class ProcessState:
    """The objects the running snapshot uses, keyed by (kind, name), with their settings."""

    def __init__(self):
        self.live: dict[tuple, tuple] = {}     # (kind, name) -> (settings, object)
        self.retiring: list = []               # replaced, closed after the drain period

    def get(self, kind: str, name=None):
        entry = self.live.get((kind, name))
        return entry[1] if entry is not None else None

    def retire(self, objects, delay: float) -> None:
        """Close ``objects`` after ``delay`` seconds (at once when no loop runs)."""
        if not objects:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for obj in objects:
                _close(obj)
            return
        self.retiring.extend(objects)

        def close_them():
            for obj in objects:
                if obj in self.retiring:
                    self.retiring.remove(obj)
                    _close(obj)
        loop.call_later(delay, close_them)

    async def close(self) -> None:
        """Process shutdown: close everything, live and retiring, awaiting async closes."""
        objects = [obj for _, obj in self.live.values()] + self.retiring
        self.live = {}
        self.retiring = []
        for obj in objects:
            close = getattr(obj, "close", None)
            if close is None:
                continue
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001
                log.exception("closing %r failed", obj)


class Build:
    """What policies see as ``services`` while one config compiles: the process's shared
    parts (metrics, access log, local buckets) plus ``keep`` and ``memo``."""

    __slots__ = ("services", "config", "objects", "created", "_memo", "committed")

    def __init__(self, services, config):
        self.services = services
        self.config = config
        self.objects: dict[tuple, tuple] = {}
        self.created: list = []
        self._memo: dict = {}
        self.committed = False

    # what compile-time code reads from services
    @property
    def metrics(self):
        return self.services.metrics

    @property
    def access_log(self):
        return self.services.access_log

    @property
    def local_buckets(self):
        return self.services.local_buckets

    @local_buckets.setter
    def local_buckets(self, table):
        self.services.local_buckets = table

    @property
    def shared(self):
        return self.services.shared

    def keep(self, kind: str, name, settings, factory):
        """The object for (kind, name) with these settings: the running one when its
        settings are equal, else ``factory()`` (no I/O in it: ``warm`` does that)."""
        key = (kind, name)
        entry = self.objects.get(key)
        if entry is None:
            live = self.services.state.live.get(key)
            if live is not None and live[0] == settings:
                entry = live
            else:
                entry = (settings, factory())
                self.created.append(entry[1])
            self.objects[key] = entry
        elif entry[0] != settings:
            raise ValueError(f"{kind} {name!r} asked for with two different settings")
        return entry[1]

    def memo(self, key, factory):
        """One value per build (e.g. consumer maps shared by every route's auth policy)."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = factory()
            return value

    async def warm(self) -> None:
        """Warm what this build created (the kept objects are warm already)."""
        waits = [obj.warm() for obj in self.created if hasattr(obj, "warm")]
        if waits:
            for result in await asyncio.gather(*waits, return_exceptions=True):
                if isinstance(result, BaseException):
                    log.error("warming failed: %r", result)

    def commit(self, drain_s: float = 0.0) -> None:
        """After the swap: this build's objects are the live ones; the rest retire."""
        state = self.services.state
        old = state.live
        state.live = dict(self.objects)
        kept = {id(obj) for _, obj in self.objects.values()}
        state.retire([obj for _, obj in old.values() if id(obj) not in kept], drain_s)
        self.committed = True

    def abort(self) -> None:
        """The build will not be used: close what it created, touch nothing running."""
        live = {id(obj) for _, obj in self.services.state.live.values()}
        for obj in self.created:
            if id(obj) not in live:
                _close(obj)
        self.created = []
