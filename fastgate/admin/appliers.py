"""How an apply reaches the processes that serve traffic: all of them, or none.

An applier's ``prepare(config, document)`` builds and warms the new snapshot beside the
running one in every serving process and returns a transaction; ``commit(version)`` swaps it
in everywhere, ``abort()`` drops it everywhere. A process that cannot build it fails the
prepare, and the whole apply is aborted.

* ``LocalApplier``: the gateway process itself (no ``--workers``).
* ``WorkersApplier``: every worker of ``--workers N`` over the private channel
  (fastgate.server.channel); ``reconcile`` brings a worker that serves another version (one
  started later, or one that missed a commit) to the current one.
"""
from __future__ import annotations

import asyncio
import logging

from fastgate.server import channel

log = logging.getLogger("fastgate.admin")

__all__ = ["ApplyFailed", "LocalApplier", "WorkersApplier"]

PREPARE_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 5.0


class ApplyFailed(Exception):
    def __init__(self, errors):
        super().__init__("; ".join(errors))
        self.errors = list(errors)


class LocalApplier:
    def __init__(self, gateway):
        self.gw = gateway

    async def prepare(self, config, document, base_dir, source):
        try:
            prepared = await self.gw.prepare_config(config)
        except Exception as exc:
            log.exception("apply: the config could not be built")
            raise ApplyFailed([f"cannot build the config: {exc}"]) from None
        return _LocalTxn(self.gw, prepared)

    def adopt(self, version: int, digest: str) -> None:
        self.gw.metrics.config_version = version

    async def usage(self) -> list[dict]:
        return [self.gw.metrics.drain_usage()]

    async def reconcile(self, plane) -> None:
        return None


class _LocalTxn:
    def __init__(self, gw, prepared):
        self.gw, self.prepared = gw, prepared

    async def commit(self, version: int) -> None:
        if not self.gw.commit_config(self.prepared, version):
            log.warning("apply: draining, the new config was not swapped in")

    async def abort(self) -> None:
        self.gw.abort_config(self.prepared)


class WorkersApplier:
    def __init__(self, rundir: str):
        self.rundir = rundir

    async def prepare(self, config, document, base_dir, source, paths=None):
        paths = channel.worker_sockets(self.rundir) if paths is None else paths
        msg = {"op": "prepare", "document": document, "base_dir": base_dir, "source": source}
        results = await asyncio.gather(*(_Remote.open(p, msg) for p in paths),
                                       return_exceptions=True)
        remotes = [r for r in results if isinstance(r, _Remote)]
        errors = []
        for path, r in zip(paths, results):
            if isinstance(r, ApplyFailed):
                errors += r.errors
            elif isinstance(r, BaseException):
                errors.append(f"worker {_wid(path)}: {r or type(r).__name__}")
        txn = _WorkersTxn(remotes)
        if errors:
            await txn.abort()
            raise ApplyFailed(errors)
        return txn

    def adopt(self, version: int, digest: str) -> None:
        return None   # workers are told by reconcile()

    async def usage(self) -> list[dict]:
        results = await asyncio.gather(
            *(channel.call(p, {"op": "usage"}, CALL_TIMEOUT_S)
              for p in channel.worker_sockets(self.rundir)), return_exceptions=True)
        return [r for r in results if isinstance(r, dict)]

    async def reconcile(self, plane) -> None:
        """Every worker serving another version than ``plane``'s gets the current one."""
        for path in channel.worker_sockets(self.rundir):
            try:
                st = await channel.call(path, {"op": "status"}, CALL_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError, ValueError):
                continue      # gone, or not up yet: the next round sees it
            if st is None or st.get("version") == plane.version:
                continue
            if st.get("digest") == plane.digest:
                await channel.call(path, {"op": "adopt", "version": plane.version,
                                          "digest": plane.digest}, CALL_TIMEOUT_S)
                continue
            log.warning("worker %s serves version %s; bringing it to %d", _wid(path),
                        st.get("version"), plane.version)
            try:
                txn = await self.prepare(None, plane.document, plane.base_dir, plane.source,
                                         paths=[path])
            except ApplyFailed as exc:
                log.error("worker %s cannot build version %d: %s", _wid(path), plane.version,
                          "; ".join(exc.errors))
                continue
            await txn.commit(plane.version)


class _Remote:
    def __init__(self, path, reader, writer):
        self.path, self.reader, self.writer = path, reader, writer

    @classmethod
    async def open(cls, path, msg):
        reader, writer = await asyncio.open_unix_connection(path, limit=channel.MAX_FRAME)
        try:
            await channel.send(writer, msg)
            answer = await asyncio.wait_for(channel.recv(reader), PREPARE_TIMEOUT_S)
        except BaseException:
            writer.close()
            raise
        if answer is None or not answer.get("ok"):
            writer.close()
            raise ApplyFailed((answer or {}).get("errors")
                              or [f"worker {_wid(path)}: closed during prepare"])
        return cls(path, reader, writer)

    async def decide(self, msg) -> bool:
        try:
            await channel.send(self.writer, msg)
            if msg["op"] != "commit":
                return True
            answer = await asyncio.wait_for(channel.recv(self.reader), CALL_TIMEOUT_S)
            return bool(answer and answer.get("ok"))
        except (OSError, asyncio.TimeoutError, ValueError):
            return False
        finally:
            self.writer.close()


class _WorkersTxn:
    def __init__(self, remotes):
        self.remotes = remotes

    async def commit(self, version: int) -> None:
        oks = await asyncio.gather(*(r.decide({"op": "commit", "version": version})
                                     for r in self.remotes))
        for r, ok in zip(self.remotes, oks):
            if not ok:   # it died in between: its replacement starts from the current one
                log.error("worker %s did not confirm version %d", _wid(r.path), version)

    async def abort(self) -> None:
        await asyncio.gather(*(r.decide({"op": "abort"}) for r in self.remotes))


def _wid(path: str) -> str:
    import os
    return os.path.basename(path)[1:-5]
