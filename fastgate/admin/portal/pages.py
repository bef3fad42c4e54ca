"""The portal's HTML, rendered on the server. Every value from the config, a request or a
record goes through ``esc``; pages carry no inline script or style (the CSP forbids both)."""
from __future__ import annotations

from html import escape

__all__ = ["esc", "page", "login", "catalog", "subscriptions", "key_once", "usage", "audit",
           "message"]


def esc(v) -> str:
    return escape("" if v is None else str(v), quote=True)


def page(title: str, body: str, actor=None, here: str = "", csrf: str = "") -> bytes:
    nav = ""
    if actor is not None:
        links = [("/portal/", "APIs"), ("/portal/subscriptions", "Subscriptions"),
                 ("/portal/usage", "Usage")]
        if actor.role == "admin":
            links.append(("/portal/audit", "Audit log"))
        nav = "<nav>" + "".join(
            f'<a href="{h}"{" class=here" if h == here else ""}>{t}</a>' for h, t in links
        ) + "</nav>"
        nav += (f'<span class="who">{esc(actor.name)} ({esc(actor.role)})</span>'
                f'<form class="inline" method="post" action="/portal/logout">'
                f'{_csrf(csrf)}<button class="secondary" id="logout">Sign out</button></form>')
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} - FastGate portal</title>"
        "<link rel=stylesheet href=/portal/static/portal.css>"
        "<script src=/portal/static/portal.js defer></script></head><body>"
        f"<header><span class=brand>FastGate</span>{nav}</header>"
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>").encode()


def _csrf(token: str) -> str:
    return f'<input type=hidden name=csrf value="{esc(token)}">'


def message(text: str, error: bool = False) -> str:
    return f'<div class="flash{" error" if error else ""}" role=status>{esc(text)}</div>'


def login(pre_token: str, error: str | None = None) -> bytes:
    body = (message(error, True) if error else "") + (
        '<div class=card><form method=post action="/portal/login">'
        f'{_csrf(pre_token)}<p><label>Admin token<br>'
        '<input type=password name=token id=token autocomplete=off required size=48>'
        '</label></p><button id=sign-in>Sign in</button></form></div>')
    return page("Sign in", body)


def catalog(apis, consumers, actor, csrf, flash="") -> bytes:
    cards = []
    for a in apis:
        lc = a["lifecycle"]
        badges = f'<span class="badge {esc(lc["state"])}">{esc(lc["state"])}</span>'
        if a["visibility"] == "internal":
            badges += '<span class="badge internal">internal</span>'
        extra = []
        if lc.get("sunset"):
            extra.append(f"Sunset {esc(lc['sunset'])}")
        if lc.get("successor"):
            extra.append(f"successor {esc(lc['successor'])}")
        sub = a["subscription"]
        extra.append(("subscription required" if sub["required"] else "open to its consumers")
                     + f", approval {esc(sub['approval'])}")
        docs = (f' <a href="{esc(a["docs_url"])}" rel="noopener noreferrer">Docs</a>'
                if a.get("docs_url") else "")
        options = "".join(f"<option>{esc(c)}</option>" for c in consumers)
        search = " ".join(str(x or "") for x in (a["route"], a["description"], a["owner"],
                                                 lc["state"], *a["paths"])).lower()
        cards.append(
            f'<div class=card data-search="{esc(search)}" id="api-{esc(a["route"])}">'
            f'<h2>{esc(a["route"])}{badges}</h2>'
            f'<p>{esc(a["description"] or "")}{docs}</p>'
            f'<p class=muted>Team {esc(a["owner"] or "-")} &middot; '
            f'{esc(" ".join(a["paths"]))} &middot; {"; ".join(extra)}</p>'
            f'<form method=post action="/portal/subscribe">{_csrf(csrf)}'
            f'<input type=hidden name=route value="{esc(a["route"])}">'
            f'<label>Consumer <select name=consumer>{options}</select></label> '
            f'<button class=subscribe>Request access</button></form></div>')
    body = (flash + '<input type=search id=q placeholder="Search APIs by name, team, path" '
            'aria-label="Search APIs">' + ("".join(cards) or "<p>No APIs are published.</p>"))
    return page("APIs", body, actor, "/portal/", csrf)


def subscriptions(rows, actor, csrf, may_decide, flash="") -> bytes:
    lines = []
    for s in rows:
        actions = []
        if s["state"] == "pending" and may_decide(s):
            for verb in ("approve", "reject"):
                actions.append(
                    f'<form class=inline method=post action="/portal/subscriptions/'
                    f'{esc(s["id"])}/{verb}">{_csrf(csrf)}<button class="{verb}'
                    f'{" secondary" if verb == "reject" else ""}">{verb.title()}</button></form>')
        if s["state"] in ("pending", "approved"):
            actions.append(
                f'<form class=inline method=post data-confirm="Revoke {esc(s["id"])}? Its key '
                f'stops working at once." action="/portal/subscriptions/{esc(s["id"])}/revoke">'
                f'{_csrf(csrf)}<button class="danger revoke">Revoke</button></form>')
        key = (f'<code>{esc(s["key_hint"])}&hellip;</code>' if s.get("key_hint") and
               s["state"] == "approved" else "")
        lines.append(
            f'<tr id="sub-{esc(s["id"])}"><td>{esc(s["id"])}</td><td>{esc(s["consumer"])}</td>'
            f'<td>{esc(s["route"])}</td><td><span class="badge {esc(s["state"])}">'
            f'{esc(s["state"])}</span></td><td>{key}</td><td>{esc(s.get("requested_by"))}</td>'
            f'<td>{" ".join(actions)}</td></tr>')
    table = ("<table><thead><tr><th>Id</th><th>Consumer</th><th>API</th><th>State</th>"
             "<th>Key</th><th>Requested by</th><th></th></tr></thead><tbody>"
             + "".join(lines) + "</tbody></table>") if lines else "<p>No subscriptions yet.</p>"
    return page("Subscriptions", flash + table, actor, "/portal/subscriptions", csrf)


def key_once(sub, key, actor, csrf) -> bytes:
    body = (message(f"Subscription {sub['id']} of {sub['consumer']} to {sub['route']} is "
                    "approved. This is the only time its API key is shown: store it now.")
            + f'<div class=card><p class=key id=api-key>{esc(key)}</p>'
            '<button class=secondary id=copy-key type=button>Copy</button></div>'
            '<p><a href="/portal/subscriptions">Back to subscriptions</a></p>')
    return page("Your API key", body, actor, "", csrf)


def usage(report, actor, csrf) -> bytes:
    per = {}
    for r in report["requests"]:
        per[r["consumer"]] = per.get(r["consumer"], 0) + r["requests"]
    chart = ""
    if per:
        top = max(per.values())
        rows = sorted(per.items(), key=lambda kv: -kv[1])[:20]
        h = 24 * len(rows) + 10
        bars = "".join(
            f'<text x="0" y="{24 * i + 17}">{esc(c)}</text>'
            f'<rect x="160" y="{24 * i + 4}" height="16" width="{max(2, int(400 * n / top))}">'
            f'<title>{esc(c)}: {n}</title></rect>'
            f'<text x="{170 + int(400 * n / top)}" y="{24 * i + 17}">{n}</text>'
            for i, (c, n) in enumerate(rows))
        chart = (f'<div class=card><h2>Requests per consumer</h2><svg class=chart id=usage-chart '
                 f'role=img aria-label="Requests per consumer" width="640" height="{h}">'
                 f'{bars}</svg></div>')
    req_rows = "".join(f"<tr><td>{esc(r['day'])}</td><td>{esc(r['consumer'])}</td>"
                       f"<td>{esc(r['route'])}</td><td>{r['requests']}</td></tr>"
                       for r in report["requests"])
    ai_rows = "".join(f"<tr><td>{esc(u['consumer'])}</td><td>{esc(u['model'])}</td>"
                      f"<td>{u['input_tokens']}</td><td>{u['output_tokens']}</td>"
                      f"<td>{u['cost_usd']:.6f}</td></tr>" for u in report["usage"])
    body = (chart + "<div class=card><h2>Requests</h2><table id=usage-requests><thead><tr>"
            "<th>Day (UTC)</th><th>Consumer</th><th>API</th><th>Requests</th></tr></thead>"
            f"<tbody>{req_rows}</tbody></table></div>"
            "<div class=card><h2>AI tokens and cost</h2><table><thead><tr><th>Consumer</th>"
            "<th>Model</th><th>Input</th><th>Output</th><th>Cost (USD)</th></tr></thead>"
            f"<tbody>{ai_rows}</tbody></table></div>")
    return page("Usage", body, actor, "/portal/usage", csrf)


def audit(entries, actor, csrf) -> bytes:
    rows = "".join(
        f"<tr><td>{esc(e['at'])}</td><td>{esc(e['actor'])}</td><td>{esc(e['action'])}</td>"
        f"<td>{esc(e['version'])}</td><td>{esc(', '.join(d.get('path', '') for d in e['diff']))}"
        f"</td></tr>" for e in reversed(entries))
    body = ("<table id=audit><thead><tr><th>At</th><th>Actor</th><th>Action</th><th>Version"
            f"</th><th>Changed</th></tr></thead><tbody>{rows}</tbody></table>")
    return page("Audit log", body, actor, "/portal/audit", csrf)
