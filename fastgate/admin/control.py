"""The control plane: the one path by which the config in service changes.

Three things change it -- ``PUT /config``, a SIGHUP after the file was edited, and (with
``redis``) an apply made on another instance -- and all three go through ``_apply`` under one
lock:

1. the document is validated exactly as `fastgate check` does (``validate``);
2. every serving process builds and warms it beside the running snapshot (the applier's
   prepare: all or none);
3. with ``redis``, the shared sections are published with a compare-and-set on the version
   (another instance's apply in between: 412, nothing changes);
4. the config file is replaced atomically (temp file, fsync, rename, fsync of the directory),
   then the version and its audit entry are committed to SQLite (fsynced);
5. every process swaps its snapshot in.

A kill -9 anywhere leaves the old or the new document on disk: before 4 the file is old and
no process swapped; after it the file is new and a restart (or the admin process's
replacement, which reconciles the workers) serves it. The version in service comes from
SQLite when the file's digest matches the newest row there; a file edited while the
instance was down becomes a new version (audited as ``load``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

from fastgate.config import ConfigError, validate
from fastgate.config.source import SourceProblem, decode, format_path, substitute

from . import documents as D
from .appliers import ApplyFailed
from .identity import Identities, scope_violations
from .store import Store

log = logging.getLogger("fastgate.admin")

__all__ = ["ControlPlane", "ApplyError"]

RECONCILE_S = 1.0


class ApplyError(Exception):
    """An apply refused: the HTTP status and the error lines."""

    def __init__(self, status: int, errors, headers=()):
        super().__init__("; ".join(errors))
        self.status = status
        self.errors = list(errors)
        self.headers = headers


class ControlPlane:
    def __init__(self, config, config_path, applier, *, on_reload=None):
        self.config = config
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.base_dir = os.path.dirname(self.config_path) if self.config_path else os.getcwd()
        self.source = self.config_path or "<config>"
        self.applier = applier
        self.on_reload = on_reload          # called with (ok: bool) after a SIGHUP attempt
        self.document = config.raw
        self.digest = D.digest(self.document)
        self.version = 0
        self.identities = Identities(config.admin, config.teams)
        admin = config.admin
        if admin is not None and admin.state_dir:
            self.state_dir = admin.state_dir
        elif self.config_path is not None:
            self.state_dir = self.base_dir
        else:   # a config given as an object (embedding, tests): nothing to keep it beside
            import tempfile
            self.state_dir = tempfile.mkdtemp(prefix="fastgate-state-")
        self.store = None
        self.fanout = None
        self.usage = None
        self.instance = None
        self.failure = None                 # the last version this instance could not apply
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    # -- life -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the state, settle the version in service, join the deployment (Redis)."""
        self.store = await asyncio.to_thread(Store, self.state_dir)
        self.instance = await asyncio.to_thread(_instance_id, self.state_dir)
        latest = await asyncio.to_thread(self.store.latest)
        if latest is not None and latest[1] == self.digest:
            self.version = latest[0]
        else:
            self.version = (latest[0] if latest else 0) + 1
            before = latest[2] if latest else {}
            await asyncio.to_thread(self.store.record, self.version, self.digest, self.document,
                                    self._entry("file", "load", self.version,
                                                D.diff(before, self.document) if latest else []),
                                    unshared=self.config.redis is not None)
        self.applier.adopt(self.version, self.digest)
        if self.config.redis is not None:
            from .fanout import ConfigFanout
            self.fanout = ConfigFanout(self.config.redis, self)
            await self.fanout.start()     # takes a newer shared config before we serve
        await self.applier.reconcile(self)
        from .usage import UsageLedger
        self.usage = UsageLedger(self)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._reconcile_loop()))
        self._tasks.append(loop.create_task(self.usage.run()))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.fanout is not None:
            await self.fanout.close()
        if self.store is not None:
            self.store.close()

    async def _reconcile_loop(self):
        while True:
            await asyncio.sleep(RECONCILE_S)
            try:
                async with self._lock:
                    await self.applier.reconcile(self)
            except Exception:
                log.exception("reconciling the workers failed")

    # -- reads ------------------------------------------------------------------------------
    def etag(self) -> bytes:
        return b'"%d"' % self.version

    async def shown(self) -> dict:
        """GET /config: the document, redacted, with the versions of this instance and of the
        others (with redis) under ``x-fastgate``."""
        doc = D.redact(self.document)
        me = self.status()
        instances = [me]
        if self.fanout is not None:
            instances = await self.fanout.instances(me)
        doc[D.STATUS_KEY] = {"version": self.version, "instance": self.instance,
                             "instances": instances}
        return doc

    def status(self) -> dict:
        st = {"instance": self.instance, "version": self.version}
        if self.failure is not None:
            st["failed"] = self.failure
        return st

    async def audit(self, since: int, limit: int) -> list:
        if self.fanout is not None:
            await self.fanout.mirror_quietly()
        return await asyncio.to_thread(self.store.entries, since, limit)

    # -- changes ----------------------------------------------------------------------------
    async def put(self, body: bytes, actor, if_match: bytes | None) -> int:
        """PUT /config; returns the version in service afterwards or raises ApplyError."""
        try:
            tree, problems = decode(body, "<request body>")
            # bounded before anything walks it: alias bombs and runaway depth stop here
            substitute(tree, {}, [], "<request body>")
        except SourceProblem as exc:
            raise ApplyError(400, exc.errors) from None
        if not isinstance(tree, dict):
            raise ApplyError(400, ["<request body>: the top level must be a mapping"])
        tree.pop(D.STATUS_KEY, None)
        async with self._lock:
            if if_match is not None and not _matches(if_match, self.version):
                raise ApplyError(412, [f"If-Match: the config is at version {self.version}"],
                                 [(b"etag", self.etag())])
            tree = D.unredact(tree, self.document)
            fixed = [f"{k}: changing it needs a restart of this instance"
                     for k in ("listeners", "admin") if tree.get(k) != self.document.get(k)]
            if fixed:
                raise ApplyError(400, fixed)
            beyond = scope_violations(actor, self.document, tree)
            if beyond:
                raise ApplyError(403, [f"{p}: not within the teams of {actor.name}"
                                       for p in beyond])
            if problems:
                raise ApplyError(400, [f"{format_path(p, '<request body>')}: {m}"
                                       for p, m in problems])
            try:
                config = validate(document=tree, base_dir=self.base_dir, source=self.source)
            except ConfigError as exc:
                raise ApplyError(400, exc.errors) from None
            if D.digest(tree) == self.digest:
                return self.version
            return await self._apply(config, tree, actor=actor.name, action="put")

    async def change(self, actor: str, action: str, mutate):
        """A change made by the admin API itself (subscriptions): ``mutate(document)`` edits a
        copy of the running document (raising ApplyError to refuse) and returns the answer;
        the result goes through the same validation and apply as a PUT."""
        import copy
        async with self._lock:
            tree = copy.deepcopy(self.document)
            answer = mutate(tree)
            try:
                config = validate(document=tree, base_dir=self.base_dir, source=self.source)
            except ConfigError as exc:
                raise ApplyError(400, exc.errors) from None
            await self._apply(config, tree, actor=actor, action=action)
            return answer

    async def reload_file(self) -> bool:
        """SIGHUP: apply the file when it changed; an invalid file keeps the running config
        and every error is logged."""
        from fastgate.server.app import read_config_for_reload
        config = await asyncio.to_thread(read_config_for_reload, self.config_path)
        if config is None:
            self._reloaded(False)
            return False
        async with self._lock:
            if D.digest(config.raw) == self.digest:
                log.warning("config reloaded: the file is unchanged (version %d)", self.version)
                self._reloaded(True)
                return True
            try:
                await self._apply(config, config.raw, actor="file", action="reload",
                                  write_file=False)
            except ApplyError as exc:
                for line in exc.errors:
                    log.error("reload rejected: %s", line)
                self._reloaded(False)
                return False
        return True     # counted by every process that swapped it in

    def _reloaded(self, ok):
        if self.on_reload is not None:
            self.on_reload(ok)

    async def adopt_shared(self, version: int, shared: dict, origin: str) -> None:
        """Fan-out: the deployment is at ``version`` with these shared sections."""
        async with self._lock:
            if version <= self.version and D.digest(shared) == D.digest(D.split(self.document)[0]):
                return
            tree = D.merge(self.document, shared)
            if D.digest(tree) == self.digest:
                self.version = version
                self.applier.adopt(version, self.digest)
                await asyncio.to_thread(self.store.record, version, self.digest, tree, None)
                await self.applier.reconcile(self)
                return
            try:
                config = validate(document=tree, base_dir=self.base_dir, source=self.source)
                await self._apply(config, tree, actor=origin, action="sync", version=version)
                self.failure = None
            except (ConfigError, ApplyError) as exc:
                errors = exc.errors
                log.error("version %d from %s cannot be applied here; keeping version %d: %s",
                          version, origin, self.version, "; ".join(errors))
                self.failure = {"version": version, "errors": errors}
                entry = self._entry(origin, "apply_failed", version,
                                    [{"path": "", "op": "error", "new": e} for e in errors])
                saved = await asyncio.to_thread(self.store.append, entry, unshared=True)
                await self.fanout.share(saved)

    async def _apply(self, config, tree, *, actor, action, version=None, write_file=True):
        """Steps 2-5 of the module docstring; the caller holds the lock."""
        try:
            txn = await self.applier.prepare(config, tree, self.base_dir, self.source)
        except ApplyFailed as exc:
            raise ApplyError(500, ["not applied, nothing changed: " + e for e in exc.errors])
        try:
            if version is None:
                if self.fanout is not None:
                    version = await self.fanout.publish(self.version, D.split(tree)[0], actor)
                else:
                    version = self.version + 1
        except BaseException:
            await txn.abort()
            raise
        diff = D.diff(self.document, tree)
        try:
            if write_file and self.config_path is not None:
                await asyncio.to_thread(_replace_file, self.config_path,
                                        D.dump(tree, self.config_path))
        except OSError as exc:
            if self.fanout is None:
                await txn.abort()
                raise ApplyError(500, [f"{self.config_path}: cannot write: {exc}; "
                                       "nothing changed"]) from None
            # The deployment has it already; serve it, the file catches up on the next one.
            log.error("%s: cannot write the applied config: %s", self.config_path, exc)
        entry = None
        if action != "sync":
            entry = self._entry(actor, action, version, diff)
        saved = await asyncio.to_thread(self.store.record, version, D.digest(tree), tree, entry,
                                        unshared=self.fanout is not None and entry is not None)
        await txn.commit(version)
        self.config, self.document, self.digest, self.version = config, tree, D.digest(tree), version
        self.identities = Identities(config.admin, config.teams)
        log.warning("config version %d in service (%s by %s)", version, action, actor)
        if self.fanout is not None:
            if saved is not None:
                await self.fanout.share(saved)
            await self.fanout.report_quietly()
        return version

    def _entry(self, actor, action, version, diff) -> dict:
        return {"actor": actor, "action": action, "version": version, "diff": diff,
                "instance": self.instance}


def _matches(if_match: bytes, version: int) -> bool:
    tags = [t.strip() for t in if_match.split(b",")]
    return b"*" in tags or (b'"%d"' % version) in tags or (b'W/"%d"' % version) in tags


def _replace_file(path: str, data: bytes) -> None:
    """Atomic replace: readers (and a restart) see the old file or the new one."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _instance_id(state_dir: str) -> str:
    """This instance's name in audit entries and GET /config: host name and a random part,
    kept in the state dir so it survives restarts."""
    path = os.path.join(state_dir, "instance-id")
    try:
        with open(path) as f:
            name = f.read().strip()
        if name:
            return name
    except FileNotFoundError:
        pass
    name = f"{socket.gethostname()}-{secrets.token_hex(3)}"
    _replace_file(path, name.encode() + b"\n")
    return name
