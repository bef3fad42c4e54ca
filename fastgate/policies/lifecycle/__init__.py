"""`lifecycle: {state, sunset, successor}`: API deprecation signalling.

* deprecated: every response carries `Deprecation` (RFC 9745: `@<unix time>` when
  `deprecated_at` is known, else `true`), `Sunset` (RFC 8594 HTTP-date) when set, and
  `Link: <successor>; rel="successor-version"` when set.
* retired: 410 Gone with the same Sunset/Link headers; nothing reaches the upstream.
* published: only a planned `Sunset` (and the successor link) is announced, if configured.
"""
from __future__ import annotations

from fastgate.policies.base import Reject


class LifecyclePolicy:
    __slots__ = ("headers", "retired")

    def __init__(self, lc):
        headers = []
        if lc.state == "deprecated":
            if lc.deprecated_at is not None:
                headers.append((b"deprecation", b"@%d" % int(lc.deprecated_at.timestamp())))
            else:
                headers.append((b"deprecation", b"true"))
        if lc.sunset is not None:
            from email.utils import format_datetime   # only routes with a sunset date
            headers.append((b"sunset", format_datetime(lc.sunset, usegmt=True).encode()))
        if lc.successor:
            headers.append((b"link", b'<' + lc.successor.encode() + b'>; rel="successor-version"'))
        self.headers = tuple(headers)
        self.retired = None
        if lc.state == "retired":
            self.retired = Reject(410, "gone", "this API has been retired", self.headers)

    def access(self, ctx):
        if self.retired is not None:
            return self.retired
        ctx.response_headers.extend(self.headers)
        return None


def build(route_cfg, services):
    lc = route_cfg.lifecycle
    if lc is None:
        return None
    policy = LifecyclePolicy(lc)
    if not policy.headers and policy.retired is None:
        return None
    return policy
