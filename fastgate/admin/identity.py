"""Who is calling the admin API, and what they may do.

``admin.token`` has every right (actor ``admin``). ``admin.users`` carry a ``token_hash``
(``sha256:<hex>``, as `fastgate hash-key` prints) and a role:

* ``viewer``   reads: config (redacted), audit, catalog, subscriptions, usage, metrics, portal;
* ``operator`` reads, and changes the routes and consumers of their teams (``teams.T.members``;
  a route belongs to its ``owner`` team, a consumer to the teams among its ``groups``) and
  their subscriptions;
* ``admin``    everything.

The presented token is hashed once and compared with every candidate in constant time, all of
them, so neither the answer nor its timing tells which users exist.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .documents import named_items

__all__ = ["Actor", "Identities", "ADMIN", "scope_violations"]

READ, WRITE = "read", "write"


@dataclass(frozen=True)
class Actor:
    name: str
    role: str                    # viewer | operator | admin
    teams: frozenset = frozenset()

    def may(self, right: str) -> bool:
        if self.role == "admin":
            return True
        if right == READ:
            return True
        return self.role == "operator" and right == WRITE


ADMIN = Actor("admin", "admin")


class Identities:
    def __init__(self, admin, teams):
        self._token = admin.token.encode("utf-8") if admin is not None and admin.token else None
        self._users = []
        for u in (admin.users if admin is not None else ()):
            member_of = frozenset(t.name for t in teams.values() if u.name in t.members)
            digest = bytes.fromhex(u.token_hash.split(":", 1)[1])
            self._users.append((digest, Actor(u.name, u.role, member_of)))

    def by_name(self, name: str) -> Actor | None:
        """The actor of that name as the running config has it (portal sessions)."""
        if name == ADMIN.name and self._token is not None:
            return ADMIN
        for _, actor in self._users:
            if actor.name == name:
                return actor
        return None

    def authenticate(self, credential: bytes) -> Actor | None:
        """The actor whose token ``credential`` is, or None."""
        found = None
        if self._token is not None and hmac.compare_digest(credential, self._token):
            found = ADMIN
        presented = hashlib.sha256(credential).digest()
        for digest, actor in self._users:     # no early exit: same work for every token
            if hmac.compare_digest(presented, digest) and found is None:
                found = actor
        return found


# --- an operator's reach --------------------------------------------------------------------

def _route_teams(route) -> set:
    owner = route.get("owner") if isinstance(route, dict) else None
    return {owner} if isinstance(owner, str) else set()


def _consumer_teams(consumer) -> set:
    groups = consumer.get("groups") if isinstance(consumer, dict) else None
    return {g for g in groups if isinstance(g, str)} if isinstance(groups, list) else set()


_SCOPED = {"routes": _route_teams, "consumers": _consumer_teams}


def scope_violations(actor: Actor, old: dict, new: dict) -> list[str]:
    """What a change from ``old`` to ``new`` touches beyond ``actor``'s reach (empty: all of
    it is theirs). An operator may add, change and remove routes owned by one of their
    teams and consumers in one of their teams' groups -- before and after the change."""
    if actor.role == "admin":
        return []
    if actor.role != "operator":
        return ["the viewer role changes nothing"]
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        if key not in _SCOPED and old.get(key) != new.get(key):
            out.append(key)
    for section, teams_of in _SCOPED.items():
        before, after = old.get(section) or [], new.get(section) or []
        if before == after:
            continue
        o, n = named_items(before), named_items(after)
        if len(o) != len(before) or len(n) != len(after):
            out.append(f"{section}: items without a name cannot be attributed to a team")
            continue
        for name in list(o) + [k for k in n if k not in o]:
            if o.get(name) == n.get(name):
                continue
            for item in (o.get(name), n.get(name)):
                if item is not None and not (teams_of(item) & actor.teams):
                    out.append(f"{section}[{name}]")
                    break
            else:
                changed = n.get(name)
                if section == "routes" and changed is not None and (
                        name not in o or o[name].get("paths") != changed.get("paths")):
                    out += _claims_others(name, changed, n, actor)
    return out


def _claims_others(name, route, routes: dict, actor) -> list[str]:
    """A route of one team must not take requests another team's route answers today: an
    operator may not add a path (on any host, for any method) that overlaps one of theirs."""
    out = []
    for other_name, other in routes.items():
        if other_name == name or (_route_teams(other) & actor.teams):
            continue
        for mine in route.get("paths") or ():
            if any(_overlap(mine, theirs) for theirs in other.get("paths") or ()):
                out.append(f"routes[{name}].paths: {mine!r} overlaps routes[{other_name}], "
                           "which is another team's")
                break
    return out


def _overlap(a, b) -> bool:
    """Could one request path match both route patterns ("/x", "/x/{id}", "/x/*")?"""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    sa, sb = a.split("/")[1:], b.split("/")[1:]
    for i in range(max(len(sa), len(sb))):
        x = sa[i] if i < len(sa) else None
        y = sb[i] if i < len(sb) else None
        if x == "*" or y == "*":
            return True     # a prefix: everything below it (and the prefix itself)
        if x is None or y is None:
            return False
        if x != y and not (x.startswith("{") or y.startswith("{")):
            return False
    return True
