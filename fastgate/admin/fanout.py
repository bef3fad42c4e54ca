"""Config fan-out through Redis (or Redis Cluster): every instance of a deployment serves the
same shared sections at the same version.

Keys share one hash tag, so the scripts below touch one cluster slot:

* ``{fastgate-cp}:version``   the deployment's version;
* ``{fastgate-cp}:doc``       its shared sections (JSON), with who applied it where;
* ``{fastgate-cp}:audit``     every instance's audit entries (sorted set, score = id);
* ``{fastgate-cp}:instances`` each instance's version and last failure (hash).

An apply publishes with a compare-and-set on the version (``publish``), then announces the
version on the channel ``fastgate-cp:config``. Every instance listens; on a message, on
(re)connect and every ``HEARTBEAT_S`` it compares versions (``sync``): a newer deployment
version is applied here, and a deployment that knows less than this instance (Redis was
restarted empty) is seeded from it, so nothing that was missed is lost.

Redis down: the running config keeps serving; an apply answers 503 (it could not reach the
other instances); the listener reconnects with backoff and catches up.
"""
from __future__ import annotations

import asyncio
import logging
import time

import orjson

from . import documents as D

log = logging.getLogger("fastgate.admin")

__all__ = ["ConfigFanout"]

TAG = "{fastgate-cp}"
VERSION, DOC, AUDIT, INSTANCES = (f"{TAG}:version", f"{TAG}:doc", f"{TAG}:audit",
                                  f"{TAG}:instances")
CHANNEL = "fastgate-cp:config"
HEARTBEAT_S = 5.0
BACKOFF_S = (0.1, 2.0)

# KEYS: version, doc. ARGV: expected version, doc. A deployment version above the expected
# one means another instance applied first: refused with that version. Below it (an empty
# Redis after a restart) the apply goes on from ours.
_PUBLISH = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[1])
if cur > expected then return {0, cur} end
redis.call('SET', KEYS[1], expected + 1)
redis.call('SET', KEYS[2], ARGV[2])
return {1, expected + 1}
"""
# KEYS: version, doc. ARGV: our version, our doc. Only ever moves the version forward.
_SEED = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


class ConfigFanout:
    def __init__(self, cfg, plane):
        self.cfg = cfg
        self.plane = plane
        self.timeout_s = max(cfg.connect_timeout_ms / 1000.0, 0.5)
        self.client = self._client()
        self._publish = self.client.register_script(_PUBLISH)
        self._seed = self.client.register_script(_SEED)
        self._task = None
        self._mirrored = 0
        self._down_logged = False

    def _client(self, node=None):
        common = dict(socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s)
        from redis.asyncio import Redis
        if node is not None:
            return Redis(host=node[0], port=node[1], **common)
        if self.cfg.cluster_nodes:
            from redis.asyncio.cluster import ClusterNode, RedisCluster
            return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self.cfg.cluster_nodes],
                                **common)
        return Redis.from_url(self.cfg.url, **common)

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s * 3):
                await self.sync()
        except Exception as exc:
            self._down(exc, "at start; serving the local config until it answers")
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.client.aclose()
        except Exception:
            pass

    def _down(self, exc, when):
        if not self._down_logged:
            log.error("config fan-out: redis unreachable %s (%s)", when, exc)
            self._down_logged = True

    # -- listening --------------------------------------------------------------------------
    async def _listen(self):
        backoff = BACKOFF_S[0]
        nodes = list(self.cfg.cluster_nodes or [None])
        turn = 0
        while True:
            node = nodes[turn % len(nodes)]
            sub = self._client(node) if node is not None else self.client
            pubsub = sub.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                await self.sync()    # what was published while we were away
                if self._down_logged:
                    log.warning("config fan-out: redis reachable again (version %d)",
                                self.plane.version)
                    self._down_logged = False
                backoff = BACKOFF_S[0]
                while True:
                    await pubsub.get_message(ignore_subscribe_messages=True,
                                             timeout=HEARTBEAT_S)
                    await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc, "(retrying)")
                turn += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
            finally:
                try:
                    await pubsub.aclose()
                    if sub is not self.client:
                        await sub.aclose()
                except Exception:
                    pass

    async def sync(self) -> None:
        """Bring this instance and the deployment to the newer of the two versions."""
        plane = self.plane
        version, doc = await self.client.mget(VERSION, DOC)
        version = int(version or 0)
        if version > plane.version and doc:
            meta = orjson.loads(doc)
            await plane.adopt_shared(version, meta["shared"], meta.get("actor") or "fanout")
        elif version == plane.version and doc:
            meta = orjson.loads(doc)
            if D.digest(meta["shared"]) != D.digest(D.split(plane.document)[0]):
                # same number, other content (applied here while cut off): the deployment wins
                await plane.adopt_shared(version, meta["shared"], meta.get("actor") or "fanout")
        elif version < plane.version:
            seeded = await self._seed(keys=[VERSION, DOC], args=[
                plane.version, self._doc(D.split(plane.document)[0], "seed")])
            if seeded:
                log.warning("config fan-out: redis had version %d; seeded it with ours (%d)",
                            version, plane.version)
                await self.client.publish(CHANNEL, plane.version)
        await self._push_unshared()
        await self._mirror()
        await self.report()

    # -- applying ---------------------------------------------------------------------------
    async def publish(self, expected: int, shared: dict, actor: str) -> int:
        from .control import ApplyError
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                ok, version = await self._publish(keys=[VERSION, DOC],
                                                  args=[expected, self._doc(shared, actor)])
        except Exception as exc:
            raise ApplyError(503, [f"redis: unreachable ({exc or type(exc).__name__}); the "
                                   "other instances cannot be told, nothing changed"]) from None
        if not ok:
            raise ApplyError(412, [f"another instance applied version {version} meanwhile; "
                                   "nothing changed"], [(b"etag", b'"%d"' % int(version))])
        try:
            await self.client.publish(CHANNEL, int(version))
        except Exception as exc:   # the others catch up at their next heartbeat
            log.error("config fan-out: announcing version %s failed: %s", version, exc)
        return int(version)

    def _doc(self, shared, actor) -> bytes:
        return orjson.dumps({"shared": shared, "actor": actor,
                             "instance": self.plane.instance, "at": time.time()},
                            option=orjson.OPT_NON_STR_KEYS)

    # -- audit and status -------------------------------------------------------------------
    async def share(self, entry) -> None:
        """Copy an own audit entry to the deployment's log (later, if Redis is down)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.zadd(AUDIT, {orjson.dumps(dict(entry)): entry["id"]})
            await asyncio.to_thread(self.plane.store.mark_shared, [entry["id"]])
        except Exception as exc:
            self._down(exc, "(the audit entry is shared when it answers)")

    async def _push_unshared(self) -> None:
        pending = await asyncio.to_thread(self.plane.store.unshared)
        if pending:
            await self.client.zadd(AUDIT, {orjson.dumps(dict(e)): e["id"] for e in pending})
            await asyncio.to_thread(self.plane.store.mark_shared, [e["id"] for e in pending])

    async def _mirror(self) -> None:
        while True:
            rows = await self.client.zrangebyscore(AUDIT, f"({self._mirrored}", "+inf",
                                                   start=0, num=500)
            if not rows:
                return
            entries = [orjson.loads(r) for r in rows]
            await asyncio.to_thread(self.plane.store.mirror, entries)
            self._mirrored = max(int(e["id"]) for e in entries)

    async def mirror_quietly(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._mirror()
        except Exception as exc:
            self._down(exc, "(the audit log shows this instance's copy)")

    async def report(self) -> None:
        st = dict(self.plane.status(), seen=time.time())
        await self.client.hset(INSTANCES, self.plane.instance, orjson.dumps(st))

    async def report_quietly(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.report()
        except Exception:
            pass

    async def instances(self, me: dict) -> list:
        try:
            async with asyncio.timeout(self.timeout_s):
                rows = await self.client.hgetall(INSTANCES)
        except Exception:
            return [me]
        out = {}
        for name, raw in rows.items():
            try:
                out[name.decode()] = orjson.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
        out[me["instance"]] = dict(me, seen=time.time())
        return [out[k] for k in sorted(out)]
