"""Config of `routes[].lifecycle` (handler: fastgate.policies.lifecycle).

Lifecycle(state: "published"|"deprecated"|"retired", sunset: datetime|None (aware, UTC),
          sunset_raw: str|None, successor: str|None, deprecated_at: datetime|None)
  sunset / deprecated_at: RFC 3339 date-times with a time zone; successor: a path (no
  {params}) or an http(s) URL.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from fastgate.config.check import Obj, c_str, tname
from fastgate.config.sections import RouteKey
from fastgate.config.values import c_rewrite, c_url

__all__ = ("Lifecycle", "parse_lifecycle", "c_datetime", "c_successor")


@dataclass(frozen=True, slots=True)
class Lifecycle:
    state: str = "published"
    sunset: _dt.datetime | None = None
    sunset_raw: str | None = None
    successor: str | None = None
    deprecated_at: _dt.datetime | None = None


def c_datetime(e, path, v):
    if not isinstance(v, str):
        e.add(path, f"expected an RFC 3339 date-time like \"2027-06-30T00:00:00Z\", got {tname(v)}")
        return None
    try:
        d = _dt.datetime.fromisoformat(v)
    except ValueError:
        d = None
    if d is None or "T" not in v.upper():
        e.add(path, f"expected an RFC 3339 date-time like \"2027-06-30T00:00:00Z\", got {v!r}")
        return None
    if d.tzinfo is None:
        e.add(path, f"needs a time zone (Z or +hh:mm): {v!r}")
        return None
    return d.astimezone(_dt.timezone.utc)


def c_successor(e, path, v):
    if isinstance(v, str) and v.startswith("/"):
        return c_rewrite(e, path, v) if "{" not in v else (
            e.add(path, "must be a path or URL without {params}"))
    if isinstance(v, str) and "://" in v:
        return c_url()(e, path, v)
    e.add(path, f"expected a path starting with '/' or an http(s) URL, got {v!r}")
    return None


def parse_lifecycle(ctx, e, path, v):
    o = Obj(e, path, v, ("state", "sunset", "successor", "deprecated_at"))
    state = o.get("state", c_str(("published", "deprecated", "retired")), "published")
    successor = o.get("successor", c_successor, None)
    return Lifecycle(state=state, sunset=o.get("sunset", c_datetime, None),
                     sunset_raw=o.d.get("sunset") if o.has("sunset") else None,
                     successor=successor,
                     deprecated_at=o.get("deprecated_at", c_datetime, None))


SECTIONS = (RouteKey("lifecycle", parse_lifecycle),)
