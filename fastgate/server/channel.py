"""The private channel between an instance's processes (unix sockets in the run directory).

Frames are a 4-byte big-endian length and an orjson object. Each worker serves ``w<ID>.sock``:

* ``{"op": "metrics"}``  -> its counter snapshot (the admin process sums them at scrape time);
* ``{"op": "status"}``   -> ``{"version", "digest"}`` of the config it serves;
* ``{"op": "usage"}``    -> the usage counted since the last ask (and counting restarts);
* ``{"op": "prepare", "document", "base_dir", "source"}`` -> ``{"ok": true}`` once
  the document is validated, compiled and warmed beside the running snapshot (or ``{"ok":
  false, "errors": [...]}``); the same connection then carries ``{"op": "commit", "version"}``
  (swap, ``{"ok": true}``) or ``{"op": "abort"}``. A connection that closes, or stays silent past
  ``DECIDE_TIMEOUT_S``, aborts: a control process killed mid-apply leaves the old config;
* ``{"op": "adopt", "version", "digest"}`` -> takes the version number for the config it
  already serves when the digests match.

The admin process serves ``admin.sock``: ``{"op": "current"}`` answers the document and
version in service, which a worker started later (a replacement) builds its first snapshot
from, so it never serves an older config than its siblings.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct

import orjson

log = logging.getLogger("fastgate.channel")

__all__ = ["send", "recv", "call", "serve", "serve_worker", "gather_snapshots",
           "fetch_current", "worker_sockets", "ADMIN_SOCKET"]

MAX_FRAME = 64 * 1024 * 1024
DECIDE_TIMEOUT_S = 60.0
ADMIN_SOCKET = "admin.sock"
_LEN = struct.Struct(">I")


async def send(writer, obj) -> None:
    data = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    writer.write(_LEN.pack(len(data)) + data)
    await writer.drain()


async def recv(reader):
    """The next frame, or None at end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"channel frame of {n} bytes")
    return orjson.loads(await reader.readexactly(n))


async def call(path: str, obj, timeout: float):
    """One request, one answer."""
    async def go():
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FRAME)
        try:
            await send(writer, obj)
            return await recv(reader)
        finally:
            writer.close()
    return await asyncio.wait_for(go(), timeout)


async def serve(path: str, handle):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return await asyncio.start_unix_server(handle, path, limit=MAX_FRAME)


def worker_sockets(rundir: str) -> list[str]:
    try:
        names = sorted(os.listdir(rundir))
    except FileNotFoundError:
        return []
    return [os.path.join(rundir, n) for n in names if n.startswith("w") and n.endswith(".sock")]


async def gather_snapshots(rundir: str, timeout: float = 2.0) -> list:
    results = await asyncio.gather(
        *(call(p, {"op": "metrics"}, timeout) for p in worker_sockets(rundir)),
        return_exceptions=True)
    return [r for r in results if isinstance(r, dict)]


async def fetch_current(rundir: str, timeout: float = 5.0):
    """The admin process's ``current`` answer, or None when there is no admin process (yet)."""
    path = os.path.join(rundir, ADMIN_SOCKET)
    if not os.path.exists(path):
        return None
    try:
        return await call(path, {"op": "current"}, timeout)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        log.warning("could not ask the admin process for the current config: %s", exc)
        return None


# --- the worker's side ----------------------------------------------------------------------

async def serve_worker(gw, path: str):
    async def handle(reader, writer):
        try:
            msg = await recv(reader)
            if msg is None:
                return
            op = msg.get("op")
            if op == "metrics":
                await send(writer, gw.metrics.snapshot())
            elif op == "usage":
                await send(writer, gw.metrics.drain_usage())
            elif op == "status":
                await send(writer, {"version": gw.metrics.config_version,
                                    "digest": gw.config_digest()})
            elif op == "adopt":
                ok = msg.get("digest") == gw.config_digest()
                if ok:
                    gw.metrics.config_version = int(msg["version"])
                await send(writer, {"ok": ok})
            elif op == "prepare":
                await _prepare(gw, msg, reader, writer)
            else:
                await send(writer, {"ok": False, "errors": [f"unknown op {op!r}"]})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("control channel request failed")
        finally:
            writer.close()
    return await serve(path, handle)


async def _prepare(gw, msg, reader, writer):
    from fastgate.config import ConfigError, validate
    try:
        config = validate(document=msg["document"], base_dir=msg.get("base_dir"),
                          source=msg.get("source") or "<config>")
        prepared = await gw.prepare_config(config)
    except ConfigError as exc:
        await send(writer, {"ok": False, "errors": list(exc.errors)})
        return
    except Exception as exc:
        log.exception("apply: this worker could not build the config")
        await send(writer, {"ok": False, "errors": [f"worker {gw.worker_id}: {exc}"]})
        return
    committed = False
    try:
        await send(writer, {"ok": True})
        try:
            decision = await asyncio.wait_for(recv(reader), DECIDE_TIMEOUT_S)
        except asyncio.TimeoutError:
            decision = None
        if decision is not None and decision.get("op") == "commit":
            committed = gw.commit_config(prepared, int(decision["version"]))
            await send(writer, {"ok": committed})
    finally:
        if not committed:
            gw.abort_config(prepared)
