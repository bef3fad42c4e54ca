"""`cors:` cross-origin resource sharing (the Fetch standard's CORS protocol).

* Preflight (OPTIONS with Origin and Access-Control-Request-Method): answered here with 204
  and the Allow-* headers when the origin and method are allowed, 403 otherwise. It runs
  before authentication (browsers send preflights without credentials) and the core routes
  a preflight by the method it asks about, so a route limited to GET still answers it.
* Actual requests from an allowed Origin: Access-Control-Allow-Origin (+ Credentials,
  Expose-Headers) and `Vary: Origin` on the response. Other origins get no CORS headers and
  the browser withholds the response; the request itself is not refused (CORS is not an
  access control for non-browser clients).
"""
from __future__ import annotations

from fastgate._core.router import MATCH, METHOD_NOT_ALLOWED
from fastgate.policies.base import Reject, Respond

DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_DENIED = Reject(403, "forbidden", "CORS preflight refused for this origin or method")


def reroute(snapshot, head, path, kind):
    """A preflight for a method the route does not serve (a GET-only route asked about
    GET): route it by the method it asks about, to a route that has CORS."""
    if kind != METHOD_NOT_ALLOWED or head.method != b"OPTIONS":
        return None
    asked = head.get(b"access-control-request-method")
    if asked is None:
        return None
    found = snapshot.router.match(asked, head.host, path)
    if found[0] == MATCH and found[1].cfg.cors is not None:
        return found
    return None


class CorsPolicy:
    reroute = staticmethod(reroute)
    __slots__ = ("any_origin", "origins", "methods", "allow_methods", "allow_headers",
                 "expose", "credentials", "max_age")

    def __init__(self, cors, route_methods):
        self.any_origin = "*" in cors.origins
        self.origins = frozenset(o.encode() for o in cors.origins if o != "*")
        methods = cors.methods or route_methods or DEFAULT_METHODS
        self.methods = frozenset(m.encode() for m in methods)
        self.allow_methods = ", ".join(methods).encode()
        self.allow_headers = ", ".join(cors.headers).encode() if cors.headers else None
        self.expose = ", ".join(cors.expose_headers).encode() if cors.expose_headers else None
        self.credentials = cors.credentials
        self.max_age = str(int(cors.max_age_s)).encode()

    def _origin_value(self, origin: bytes):
        if origin in self.origins:
            return origin
        if self.any_origin:
            # "*" may not be combined with credentials: echo the origin then.
            return origin if self.credentials else b"*"
        return None

    def access(self, ctx):
        head = ctx.head
        origin = head.get(b"origin")
        if origin is None:
            return None
        allowed = self._origin_value(origin)
        if head.method == b"OPTIONS":
            asked = head.get(b"access-control-request-method")
            if asked is not None:
                if allowed is None or asked not in self.methods:
                    return _DENIED
                headers = [(b"access-control-allow-origin", allowed), (b"vary", b"Origin"),
                           (b"access-control-allow-methods", self.allow_methods),
                           (b"access-control-max-age", self.max_age)]
                if self.allow_headers is not None:
                    headers.append((b"access-control-allow-headers", self.allow_headers))
                if self.credentials:
                    headers.append((b"access-control-allow-credentials", b"true"))
                return Respond(204, headers)
        if allowed is not None:
            out = ctx.response_headers
            out.append((b"access-control-allow-origin", allowed))
            out.append((b"vary", b"Origin"))
            if self.credentials:
                out.append((b"access-control-allow-credentials", b"true"))
            if self.expose is not None:
                out.append((b"access-control-expose-headers", self.expose))
        return None


def build(route_cfg, services):
    if route_cfg.cors is None:
        return None
    return CorsPolicy(route_cfg.cors, route_cfg.methods)
