"""The developer portal at ``/portal/`` on the admin listener.

Sign in with an admin token (``admin.token`` or one of ``admin.users``): the portal then acts
with that identity's role, through the same operations as the admin API
(fastgate.admin.apim), so every change is validated, applied, audited and fanned out.

* Sessions: a random id in an ``HttpOnly; SameSite=Strict`` cookie scoped to ``/portal/``,
  held in this process (``MAX_SESSIONS``, ``SESSION_TTL_S``); the identity is looked up again
  on every request, so a user removed from the config is signed out by the next apply.
* CSRF: every form carries the session's token (the sign-in form a pre-session token bound to
  a cookie); a POST without the right one is refused with 403.
* A strict CSP (no inline script or style, nothing from elsewhere), ``frame-ancestors
  'none'``, no referrer. Every asset is served from ``static/``.
* An API key appears once: in the page answering the approval (or an auto-approved request);
  afterwards only its first characters.
"""
from __future__ import annotations

import hmac
import os
import secrets
import time
from urllib.parse import parse_qs

from .. import apim
from . import pages

__all__ = ["Portal", "SECURITY_HEADERS"]

MAX_SESSIONS = 1000
SESSION_TTL_S = 8 * 3600
COOKIE, PRE_COOKIE = b"fg_session", b"fg_pre"
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'")
SECURITY_HEADERS = [(b"content-security-policy", CSP), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]
_HTML = (b"content-type", b"text/html; charset=utf-8")
_STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
_STATIC = {}
for _name, _type in (("portal.css", b"text/css; charset=utf-8"),
                     ("portal.js", b"text/javascript; charset=utf-8")):
    with open(os.path.join(_STATIC_DIR, _name), "rb") as _f:
        _STATIC["/portal/static/" + _name] = (_type, _f.read())
OPEN = frozenset(("/portal/", "/portal/login")) | frozenset(_STATIC)


class _Session:
    __slots__ = ("name", "csrf", "expires")

    def __init__(self, name):
        self.name = name
        self.csrf = secrets.token_urlsafe(24)
        self.expires = time.monotonic() + SESSION_TTL_S


class Portal:
    def __init__(self, server):
        self.server = server
        self.sessions: dict[str, _Session] = {}

    # -- identity -----------------------------------------------------------------------------
    def session(self, headers):
        sid = _cookie(headers, COOKIE)
        s = self.sessions.get(sid) if sid else None
        if s is None or s.expires < time.monotonic():
            if s is not None:
                del self.sessions[sid]
            return None, None
        actor = self.server.identities.by_name(s.name)
        return (actor, s) if actor is not None else (None, None)

    def _new_session(self, actor) -> str:
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions, key=lambda k: self.sessions[k].expires)
            del self.sessions[oldest]
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = _Session(actor.name)
        return sid

    # -- requests -----------------------------------------------------------------------------
    async def handle(self, req):
        path, method = req.path, req.method
        if path in _STATIC:
            ctype, data = _STATIC[path]
            return 200, [(b"content-type", ctype), *SECURITY_HEADERS], data
        actor, sess = self.session(req.headers)
        if path == "/portal/login" and method == "POST":
            return self._login(req)
        if actor is None:
            if method != "GET" or path != "/portal/":
                return _redirect(b"/portal/")
            pre = secrets.token_urlsafe(24)
            return _html(200, pages.login(pre), [(b"set-cookie", _set_cookie(PRE_COOKIE, pre))])
        if method == "POST":
            form = _form(req.body)
            if not hmac.compare_digest(form.get("csrf", "").encode(), sess.csrf.encode()):
                return _html(403, pages.page("Refused", pages.message(
                    "This form has expired; reload the page and try again.", True), actor))
            return await self._post(req, actor, sess, form)
        if method not in ("GET", "HEAD"):
            return _html(405, pages.page("Not allowed", "", actor, "", sess.csrf))
        plane = self.server.control
        if path == "/portal/":
            return _html(200, pages.catalog(self._apis(actor), self._consumers(), actor,
                                            sess.csrf))
        if path == "/portal/subscriptions":
            return _html(200, self._subscriptions(actor, sess))
        if path == "/portal/usage":
            return _html(200, pages.usage(await plane.usage.report(), actor, sess.csrf))
        if path == "/portal/audit":
            if actor.role != "admin":
                return _html(403, pages.page("Audit log", pages.message(
                    "Only admins read the audit log.", True), actor, "", sess.csrf))
            entries = await plane.audit(0, 1000)
            return _html(200, pages.audit(entries, actor, sess.csrf))
        return _html(404, pages.page("Not found", "", actor, "", sess.csrf))

    def _login(self, req):
        form = _form(req.body)
        pre = _cookie(req.headers, PRE_COOKIE)
        retry = secrets.token_urlsafe(24)
        again = [(b"set-cookie", _set_cookie(PRE_COOKIE, retry))]
        if not pre or not hmac.compare_digest(form.get("csrf", "").encode(), pre.encode()):
            return _html(403, pages.login(retry, "This form has expired; try again."), again)
        token = form.get("token", "").strip().encode()
        actor = self.server.identities.authenticate(token) if token else None
        if actor is None:
            return _html(401, pages.login(retry, "That token is not valid here."), again)
        sid = self._new_session(actor)
        return 303, [(b"location", b"/portal/"), (b"set-cookie", _set_cookie(COOKIE, sid)),
                     (b"set-cookie", _set_cookie(PRE_COOKIE, "", expire=True)),
                     *SECURITY_HEADERS], b""

    async def _post(self, req, actor, sess, form):
        from ..control import ApplyError
        plane, path = self.server.control, req.path
        if path == "/portal/logout":
            self.sessions = {k: v for k, v in self.sessions.items() if v is not sess}
            return 303, [(b"location", b"/portal/"),
                         (b"set-cookie", _set_cookie(COOKIE, "", expire=True)),
                         *SECURITY_HEADERS], b""
        try:
            if path == "/portal/subscribe":
                mutate, action = apim.request(plane, actor, form.get("consumer", ""),
                                              form.get("route", ""))
            else:
                parts = path.split("/")     # /portal/subscriptions/<id>/<verb>
                if len(parts) != 5 or parts[2] != "subscriptions" or \
                        parts[4] not in ("approve", "reject", "revoke"):
                    return _html(404, pages.page("Not found", "", actor, "", sess.csrf))
                mutate, action = apim.decide(plane, actor, parts[3], parts[4])
            sub, key = await plane.change(actor.name, action, mutate)
        except apim.Refused as err:
            return _html(err.status, self._subscriptions(actor, sess,
                                                         pages.message(err.message, True)))
        except ApplyError as err:
            return _html(err.status, self._subscriptions(actor, sess, pages.message(
                "Not applied: " + "; ".join(err.errors), True)))
        if key is not None:
            return _html(200, pages.key_once(sub, key, actor, sess.csrf))
        done = {"subscription.request": f"Requested access to {sub['route']} for "
                                        f"{sub['consumer']}: waiting for the owning team.",
                "subscription.reject": f"Rejected {sub['id']}.",
                "subscription.revoke": f"Revoked {sub['id']}: its key no longer works."}
        return _html(200, self._subscriptions(actor, sess,
                                              pages.message(done.get(action, "Done."))))

    # -- views ---------------------------------------------------------------------------------
    def _apis(self, actor):
        apis = apim.catalog(self.server.control.config)
        return [a for a in apis if a["visibility"] == "public" or actor.role == "admin"
                or (actor.role == "operator" and a["owner"] in actor.teams)]

    def _consumers(self):
        return [c.name for c in self.server.control.config.consumers]

    def _subscriptions(self, actor, sess, flash=""):
        plane = self.server.control
        rows = [dict(apim.public(s), key_hint=s.get("key_hint"))
                for s in plane.document.get("subscriptions") or ()
                if isinstance(s, dict) and apim.visible(actor, plane.config, s)]

        def may_decide(s):
            return apim.may_decide(actor, apim.owner_of(plane.config, s["route"]))
        return pages.subscriptions(rows, actor, sess.csrf, may_decide, flash)


def _html(status, body: bytes, headers=()):
    return status, [_HTML, *SECURITY_HEADERS, *headers], body


def _redirect(location: bytes):
    return 303, [(b"location", location), *SECURITY_HEADERS], b""


def _set_cookie(name: bytes, value: str, expire=False) -> bytes:
    out = name + b"=" + value.encode() + b"; Path=/portal/; HttpOnly; SameSite=Strict"
    if expire:
        out += b"; Max-Age=0"
    return out


def _cookie(headers, name: bytes):
    for value in headers.get_all(b"cookie"):
        for part in value.split(b";"):
            k, _, v = part.strip().partition(b"=")
            if k == name:
                try:
                    return v.decode("ascii")
                except UnicodeDecodeError:
                    return None
    return None


def _form(body: bytes) -> dict:
    try:
        q = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in q.items() if len(v) == 1}
