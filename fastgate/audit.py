"""`fastgate audit` and the security part of `fastgate check`.

Findings are (severity, "KEY.PATH: message") with severity high, medium or low:
* high   -- forbidden by a standard or unusable (weak HMAC secrets, TLS below 1.2, plaintext
            keys, TLS files that do not load): `check` treats these as errors.
* medium -- weak or risky but sometimes intended (certificate checks off towards an upstream,
            the admin API reachable from the network without TLS in front, short admin token).
* low    -- worth a look (traffic listeners on non-loopback addresses without TLS).
"""
from __future__ import annotations

from fastgate.config.loader import is_loopback_host
from fastgate.policies.auth.audit import findings as auth_findings
from fastgate.server.tls import tls_errors

SEVERITIES = ("high", "medium", "low")
MIN_ADMIN_TOKEN = 16


def findings(config) -> list[tuple[str, str]]:
    out = list(auth_findings(config))
    out += [("high", line) for line in tls_errors(config)]
    admin = config.admin
    if admin is not None:
        if not is_loopback_host(admin.host):
            out.append(("medium", f"admin.bind: the admin API listens on {admin.bind}, beyond "
                                  "this host, without TLS; keep it on loopback or a private network"))
        if admin.token is not None and len(admin.token) < MIN_ADMIN_TOKEN:
            out.append(("medium", f"admin.token: shorter than {MIN_ADMIN_TOKEN} characters"))
    for name, up in config.upstreams.items():
        if not up.tls_verify and any(t.scheme == "https" for t in up.targets):
            out.append(("medium", f"upstreams.{name}.tls_verify: upstream certificates are not "
                                  "checked (a man in the middle sees the traffic)"))
    for i, lst in enumerate(config.listeners):
        if lst.tls is None and not is_loopback_host(lst.host):
            out.append(("low", f"listeners[{i}].bind: plain HTTP on {lst.bind}; terminate TLS "
                               "here or in front of the gateway"))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: order[f[0]])


def check_errors(config) -> list[str]:
    """What `check`/`run` refuse on top of the loader's errors: the high findings."""
    return [line for sev, line in findings(config) if sev == "high"]
