"""The control plane's durable state in ``admin.state_dir``: the audit log and the applied
config versions, in one SQLite file (standard library; WAL journal, ``synchronous=FULL`` so
every commit is fsynced before an apply answers).

* ``audit`` is append-only: triggers refuse UPDATE and DELETE. An entry's id is the time in
  microseconds, made strictly increasing per instance, so entries of several instances (shared
  through Redis) interleave in time order and ``since=ID`` means "after that one".
* ``versions`` holds each applied document (before ``${VAR}`` substitution: no resolved
  secret is ever written here) with its digest; the newest row is the version in service.
* ``unshared`` lists own audit entries not yet copied to Redis (it was unreachable).

Every method is blocking and guarded by one lock: callers on an event loop run them with
``asyncio.to_thread``.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import datetime, timezone

import orjson

__all__ = ["Store", "AuditEntry", "rfc3339"]

FILENAME = "fastgate-state.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    version INTEGER,
    diff TEXT NOT NULL,
    instance TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    document TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unshared (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS usage_requests (
    day TEXT NOT NULL, consumer TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (day, consumer, route)
);
CREATE TABLE IF NOT EXISTS usage_ai (
    consumer TEXT NOT NULL, model TEXT NOT NULL, input INTEGER NOT NULL,
    output INTEGER NOT NULL, cost REAL NOT NULL, PRIMARY KEY (consumer, model)
);
"""


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class AuditEntry(dict):
    """``{"id", "at", "actor", "action", "version", "diff"}`` (+ ``instance``)."""


class Store:
    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, FILENAME)
        if not os.path.exists(self.path):   # who changed what is for the operators only
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT MAX(id) FROM audit").fetchone()
        self._last_id = row[0] or 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- versions ---------------------------------------------------------------------------
    def latest(self):
        """(version, digest, document) in service when last stopped, or None."""
        with self._lock:
            row = self._db.execute("SELECT version, digest, document FROM versions "
                                   "ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return row[0], row[1], orjson.loads(row[2])

    def record(self, version: int, digest: str, document: dict | None, entry: dict | None,
               *, unshared: bool = False) -> AuditEntry | None:
        """One transaction: the applied version (when ``document``) and its audit entry."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if document is not None:
                    db.execute("INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?)",
                               (version, digest, orjson.dumps(document).decode(),
                                rfc3339(_now_us())))
                out = None
                if entry is not None:
                    out = self._append(entry)
                    if unshared:
                        db.execute("INSERT INTO unshared VALUES (?)", (out["id"],))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    # -- audit ------------------------------------------------------------------------------
    def _append(self, entry: dict) -> AuditEntry:
        us = max(_now_us(), self._last_id + 1)
        self._last_id = us
        e = AuditEntry(id=us, at=rfc3339(us), actor=entry["actor"], action=entry["action"],
                       version=entry.get("version"), diff=entry.get("diff") or [],
                       instance=entry["instance"])
        self._db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (e["id"], e["at"], e["actor"], e["action"], e["version"],
                          orjson.dumps(e["diff"]).decode(), e["instance"]))
        return e

    def append(self, entry: dict, *, unshared: bool = False) -> AuditEntry:
        return self.record(0, "", None, entry, unshared=unshared)

    def mirror(self, entries: list[dict]) -> int:
        """Copy entries of other instances (from Redis); ids already present are skipped."""
        n = 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for e in entries:
                    cur = db.execute("INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     (int(e["id"]), e["at"], e["actor"], e["action"],
                                      e.get("version"), orjson.dumps(e.get("diff") or []).decode(),
                                      e.get("instance", "")))
                    n += cur.rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            row = db.execute("SELECT MAX(id) FROM audit").fetchone()
            self._last_id = max(self._last_id, row[0] or 0)
        return n

    def entries(self, since: int = 0, limit: int = 100) -> list[AuditEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, actor, action, version, diff, instance FROM audit "
                "WHERE id > ? ORDER BY id LIMIT ?", (since, limit)).fetchall()
        return [_entry(r) for r in rows]

    def unshared(self) -> list[AuditEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT a.id, a.at, a.actor, a.action, a.version, a.diff, a.instance "
                "FROM audit a JOIN unshared u ON u.id = a.id ORDER BY a.id").fetchall()
        return [_entry(r) for r in rows]

    def mark_shared(self, ids) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM unshared WHERE id = ?", [(i,) for i in ids])


    # -- usage ------------------------------------------------------------------------------
    def add_usage(self, requests, ai) -> None:
        """Add counts: requests as (day, consumer, route, n), ai as (consumer, model,
        input, output, cost)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO usage_requests VALUES (?, ?, ?, ?) ON CONFLICT (day, consumer, "
                    "route) DO UPDATE SET n = n + excluded.n", requests)
                db.executemany(
                    "INSERT INTO usage_ai VALUES (?, ?, ?, ?, ?) ON CONFLICT (consumer, model) "
                    "DO UPDATE SET input = input + excluded.input, output = output + "
                    "excluded.output, cost = cost + excluded.cost", ai)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def usage(self):
        with self._lock:
            req = self._db.execute("SELECT day, consumer, route, n FROM usage_requests "
                                   "ORDER BY day, consumer, route").fetchall()
            ai = self._db.execute("SELECT consumer, model, input, output, cost FROM usage_ai "
                                  "ORDER BY consumer, model").fetchall()
        return req, ai


def _entry(row) -> AuditEntry:
    return AuditEntry(id=row[0], at=row[1], actor=row[2], action=row[3], version=row[4],
                      diff=orjson.loads(row[5]), instance=row[6])


def _now_us() -> int:
    return time.time_ns() // 1000
