"""API management on the admin API: ``/catalog``, ``/subscriptions``, ``/usage``.

Subscriptions are records in the config document (top-level ``subscriptions``, see
fastgate.policies.subscription.config): requesting, approving, rejecting and revoking one is a
config change through ``ControlPlane.change``, so it is validated, applied to every worker
at once, written back, audited and fanned out like a PUT. An approved subscription's key is
generated here, returned in that one answer, and kept only as its hash.

Who may do what (on top of the roles of fastgate.admin.identity):
* anyone signed in may request a subscription (self-service; with ``approval: auto`` the key
  comes back at once) and read the catalog and usage;
* approving and rejecting: an admin, or an operator of the team owning the route;
* revoking: those, and whoever requested it;
* listing: admins see all, operators their teams' routes and their own requests, viewers
  their own requests.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone

import orjson

__all__ = ["dispatch", "catalog", "new_api_key"]

_ONE = re.compile(r"/subscriptions/([A-Za-z0-9._\-@+:]{1,128})(/approve|/reject)?")
_FIELDS = ("id", "consumer", "route", "state", "requested_by", "decided_by", "requested_at",
           "decided_at")


def new_api_key() -> tuple[str, str]:
    """(key, "sha256:<hex>"): 256 bits from the OS, prefixed so leaked keys are recognisable."""
    key = "fgk_" + secrets.token_urlsafe(32)
    return key, "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def catalog(config) -> list[dict]:
    out = []
    for r in config.routes:
        lc = r.lifecycle
        sub = r.subscription
        out.append({
            "route": r.name, "description": r.description, "owner": r.owner,
            "lifecycle": {"state": lc.state if lc else "published",
                          "sunset": lc.sunset_raw if lc else None,
                          "successor": lc.successor if lc else None},
            "docs_url": r.docs_url, "visibility": r.visibility,
            "subscription": {"required": bool(sub and sub.required),
                             "approval": sub.approval if sub else "manual"},
            "paths": list(r.paths), "methods": list(r.methods),
        })
    return out


def owner_of(config, route_name):
    for r in config.routes:
        if r.name == route_name:
            return r
    return None


def may_decide(actor, route) -> bool:
    return actor.role == "admin" or (actor.role == "operator" and route is not None
                                     and route.owner in actor.teams)


def visible(actor, config, sub) -> bool:
    if actor.role == "admin" or sub.get("requested_by") == actor.name:
        return True
    return may_decide(actor, owner_of(config, sub.get("route")))


def public(sub: dict) -> dict:
    return {k: sub.get(k) for k in _FIELDS}


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


# --- the operations (each runs inside ControlPlane.change, on a copy of the document) -----

def request(plane, actor, consumer, route_name):
    config = plane.config
    route = owner_of(config, route_name)
    if route is None:
        raise Refused(404, f"no route {route_name!r}")
    if not any(c.name == consumer for c in config.consumers):
        raise Refused(400, f"no consumer {consumer!r}")
    auto = route.subscription is not None and route.subscription.approval == "auto"

    def mutate(doc):
        subs = doc.setdefault("subscriptions", [])
        for s in subs:
            if s.get("consumer") == consumer and s.get("route") == route_name \
                    and s.get("state") in ("pending", "approved"):
                raise Refused(409, f"{consumer} already has subscription {s['id']} "
                                   f"({s['state']}) to {route_name}")
        sub = {"id": "sub-" + secrets.token_hex(6), "consumer": consumer, "route": route_name,
               "state": "pending", "requested_by": actor.name, "requested_at": _now()}
        answer = None
        if auto:
            key, key_hash = new_api_key()
            sub.update(state="approved", key_hash=key_hash, key_hint=key[:8],
                       decided_by="auto", decided_at=sub["requested_at"])
            answer = key
        subs.append(sub)
        return sub, answer
    return mutate, "subscription.request"


def decide(plane, actor, sid, verdict):
    def mutate(doc):
        sub = _find(doc, sid)
        if not visible(actor, plane.config, sub):
            raise Refused(404, f"no subscription {sid!r}")
        if verdict in ("approve", "reject"):
            if not may_decide(actor, owner_of(plane.config, sub.get("route"))):
                raise Refused(403, f"{actor.name} does not operate the team owning "
                                   f"{sub.get('route')}")
            if sub.get("state") != "pending":
                raise Refused(409, f"subscription {sid} is {sub.get('state')}, not pending")
        elif sub.get("state") in ("rejected", "revoked"):
            return sub, None        # revoking twice changes nothing
        answer = None
        if verdict == "approve":
            answer, key_hash = new_api_key()
            sub.update(state="approved", key_hash=key_hash, key_hint=answer[:8])
        else:
            sub["state"] = "rejected" if verdict == "reject" else "revoked"
        sub.update(decided_by=actor.name, decided_at=_now())
        return sub, answer
    return mutate, f"subscription.{verdict}"


def _find(doc, sid):
    for s in doc.get("subscriptions") or ():
        if isinstance(s, dict) and s.get("id") == sid:
            return s
    raise Refused(404, f"no subscription {sid!r}")


# --- HTTP ---------------------------------------------------------------------------------

async def dispatch(server, req):
    """The answer (status, headers, body) for an API-management path, or None."""
    from .control import ApplyError
    from .server import _allow, _HttpError, _json
    plane, actor, path, method = server.control, req.actor, req.path, req.method
    if plane is None:
        raise _HttpError(501, f"{path} is not implemented without the control plane")
    if path == "/catalog":
        _allow(method, ("GET", "HEAD"))
        return _json(200, {"apis": catalog(plane.config)})
    if path == "/usage":
        _allow(method, ("GET", "HEAD"))
        return _json(200, await plane.usage.report())
    try:
        if path == "/subscriptions":
            _allow(method, ("GET", "HEAD", "POST"))
            if method != "POST":
                state = _query_state(req.query)
                subs = [public(s) for s in plane.document.get("subscriptions") or ()
                        if isinstance(s, dict) and visible(actor, plane.config, s)
                        and (state is None or s.get("state") == state)]
                return _json(200, {"subscriptions": subs})
            consumer, route = _body(req.body, ("consumer", "route"))
            mutate, action = request(plane, actor, consumer, route)
            sub, key = await plane.change(actor.name, action, mutate)
            return _json(201, dict(public(sub), **({"api_key": key} if key else {})))
        m = _ONE.fullmatch(path)
        if m is None:
            return None
        sid, verb = m.group(1), (m.group(2) or "")[1:]
        if verb:
            _allow(method, ("POST",))
        else:
            _allow(method, ("GET", "HEAD", "DELETE"))
            if method != "DELETE":
                for s in plane.document.get("subscriptions") or ():
                    if isinstance(s, dict) and s.get("id") == sid \
                            and visible(actor, plane.config, s):
                        return _json(200, public(s))
                raise Refused(404, f"no subscription {sid!r}")
        mutate, action = decide(plane, actor, sid, verb or "revoke")
        sub, key = await plane.change(actor.name, action, mutate)
        return _json(200, dict(public(sub), **({"api_key": key} if key else {})))
    except Refused as err:
        raise _HttpError(err.status, err.message) from None
    except ApplyError as err:
        return _json(err.status, {"errors": err.errors}, err.headers)


def _query_state(query: str):
    from urllib.parse import parse_qs

    from fastgate.policies.subscription.config import STATES

    from .server import _HttpError
    values = parse_qs(query).get("state")
    if not values:
        return None
    if len(values) > 1 or values[0] not in STATES:
        raise _HttpError(400, f"state must be one of {', '.join(STATES)}")
    return values[0]


def _body(raw: bytes, names):
    try:
        doc = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        raise Refused(400, "the body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise Refused(400, "the body must be a JSON object")
    out = []
    for n in names:
        v = doc.get(n)
        if not isinstance(v, str) or not v:
            raise Refused(400, f"{n}: a non-empty string is required")
        out.append(v)
    return out
