"""A benign corpus of realistic API traffic, generated deterministically (seeded), for the WAF's
false-positive check: browser and SDK headers and cookies, JWTs, search queries full of
SQL-ish words ("select a color", "union station", "1 or 2 items"), names with apostrophes,
prose, markdown and code snippets in JSON bodies, URLs and file paths in values, emails, dates,
UUIDs, base64, forms and multipart uploads.

    python -m tests.waf.benign            # false-positive rate, and every blocked request
    requests(n=2400, seed=7)              # -> [(method, raw_target, headers, body, content_type)]
"""
from __future__ import annotations

import os
import base64
import json
import random
import sys
import uuid
from urllib.parse import quote, quote_plus

from tests.waf import benign_text as T

UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.81",
    "python-requests/2.31.0", "python-httpx/0.27.0", "okhttp/4.12.0", "axios/1.6.8", "curl/8.5.0",
    "Go-http-client/2.0", "PostmanRuntime/7.37.3", "aws-sdk-js/3.556.0 ua/2.0 os/linux#5.15 lang/js md/nodejs#20.12.2",
    "Stripe/v1 PythonBindings/9.4.0", "Dart/3.3 (dart:io)", "Java/17.0.10", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "Wget/1.21.4", "insomnia/2023.5.8", "MyApp/3.2.1 (iPhone; iOS 17.4; Scale/3.00)", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "kube-probe/1.29", "Prometheus/2.51.0", "Datadog Agent/7.52.0", "GitHub-Hookshot/4d7b3e1",
]
LANGS = ["en-US,en;q=0.9", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", "fr-FR,fr;q=0.9", "en-GB,en;q=0.8",
         "ja,en-US;q=0.9,en;q=0.8", "pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7", "es-419,es;q=0.9"]
ACCEPTS = ["application/json", "application/json, text/plain, */*", "*/*",
           "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
           "application/vnd.github+json", "application/problem+json, application/json;q=0.9"]
HOSTS = ["api.example.com", "shop.example.org:8443", "gateway.internal", "localhost:8080", "app.acme.io"]


def _b64url(rng, n):
    return base64.urlsafe_b64encode(rng.randbytes(n)).rstrip(b"=").decode()


def jwt(rng):
    header = base64.urlsafe_b64encode(json.dumps({"alg": rng.choice(["RS256", "HS256", "ES256"]),
                                                  "typ": "JWT", "kid": _b64url(rng, 6)}).encode()).rstrip(b"=")
    claims = {"sub": str(uuid.UUID(int=rng.getrandbits(128))), "iss": "https://auth.example.com/",
              "aud": ["api"], "exp": 1716000000 + rng.randint(0, 10 ** 6), "scope": "read:orders write:orders",
              "name": rng.choice(T.NAMES), "email": rng.choice(T.EMAILS)}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return f"{header.decode()}.{payload.decode()}.{_b64url(rng, 64)}"


def cookies(rng):
    c = [f"session={_b64url(rng, 24)}", f"_ga=GA1.2.{rng.randint(10**8, 10**9)}.{rng.randint(10**9, 2 * 10**9)}",
         f"theme={rng.choice(['dark', 'light', 'system'])}", f"csrftoken={rng.getrandbits(128):032x}",
         f"lang={rng.choice(['en', 'de', 'fr-CA'])}", f"cart_id={uuid.UUID(int=rng.getrandbits(128))}",
         "consent=" + quote(json.dumps({"analytics": True, "ads": False}, separators=(",", ":"))),
         f"last_search={quote(rng.choice(T.SEARCHES))}", f"AWSALB={_b64url(rng, 40)}",
         f"remember_me={rng.choice(['true', 'false'])}", f"tz={quote(rng.choice(['Europe/Berlin', 'America/New_York', 'Asia/Tokyo']))}"]
    rng.shuffle(c)
    return "; ".join(c[:rng.randint(1, 6)])


def headers(rng, body_ct=None, browser=None):
    browser = rng.random() < 0.5 if browser is None else browser
    h = [("host", rng.choice(HOSTS))]
    if browser:
        ua = rng.choice(UAS[:6])
        h += [("user-agent", ua), ("accept", rng.choice(ACCEPTS)), ("accept-language", rng.choice(LANGS)),
              ("accept-encoding", "gzip, deflate, br, zstd"),
              ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
              ("sec-ch-ua-mobile", "?0"), ("sec-ch-ua-platform", rng.choice(['"Windows"', '"macOS"', '"Linux"'])),
              ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty"),
              ("referer", rng.choice(T.REFERERS)), ("origin", "https://app.example.com")]
        if rng.random() < 0.8:
            h.append(("cookie", cookies(rng)))
    else:
        h += [("user-agent", rng.choice(UAS)), ("accept", rng.choice(ACCEPTS[:3]))]
        if rng.random() < 0.5:
            h.append(("accept-encoding", "gzip"))
    r = rng.random()
    if r < 0.5:
        h.append(("authorization", "Bearer " + jwt(rng)))
    elif r < 0.6:
        h.append(("authorization", "Basic " + base64.b64encode(
            f"{rng.choice(T.USERNAMES)}:{_b64url(rng, 12)}".encode()).decode()))
    elif r < 0.75:
        h.append(("x-api-key", "sk_live_" + _b64url(rng, 24)))
    if rng.random() < 0.6:
        h.append(("x-request-id", str(uuid.UUID(int=rng.getrandbits(128)))))
    if rng.random() < 0.3:
        h.append(("traceparent", f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"))
    if rng.random() < 0.2:
        h.append(("if-none-match", f'W/"{rng.getrandbits(64):x}"'))
    if rng.random() < 0.2:
        h.append(("x-forwarded-for", f"203.0.113.{rng.randint(1, 254)}, 10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}"))
    if rng.random() < 0.1:
        h.append(("x-correlation-id", f"{rng.choice(T.WORDS)}-{rng.randint(1000, 9999)}"))
    if rng.random() < 0.1:
        h.append(("cache-control", rng.choice(["no-cache", "max-age=0", "no-store, no-cache, must-revalidate"])))
    if rng.random() < 0.08:
        h.append(("x-client-version", rng.choice(["web/2024.05.1", "ios/3.2.1 (build 4411)", "android/3.2.0-rc1"])))
    if rng.random() < 0.05:
        h.append(("x-github-event", rng.choice(["push", "pull_request", "issues"])))
    if body_ct:
        h.append(("content-type", body_ct))
    return h


def _query(rng):
    params = []
    for _ in range(rng.randint(0, 5)):
        k, gen = rng.choice(T.QUERY_PARAMS)
        params.append((k, gen(rng)))
    if not params:
        return ""
    enc = quote_plus if rng.random() < 0.6 else (lambda s: quote(s, safe=""))
    return "?" + "&".join(f"{quote(k, safe='[]')}={enc(v)}" for k, v in params)


def get_request(rng):
    path = rng.choice(T.PATHS)(rng)
    return ("GET", path + _query(rng), headers(rng), None, None)


def json_request(rng):
    body = rng.choice(T.JSON_BODIES)(rng)
    raw = json.dumps(body, ensure_ascii=rng.random() < 0.3).encode()
    method = rng.choice(["POST", "POST", "PUT", "PATCH"])
    ct = rng.choice(["application/json", "application/json; charset=utf-8", "application/vnd.api+json"])
    return (method, rng.choice(T.PATHS)(rng) + (_query(rng) if rng.random() < 0.3 else ""),
            headers(rng, ct), raw, ct)


def form_request(rng):
    fields = rng.choice(T.FORMS)(rng)
    raw = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in fields).encode()
    ct = "application/x-www-form-urlencoded"
    return ("POST", rng.choice(["/login", "/signup", "/contact", "/oauth/token", "/comments", "/search"]),
            headers(rng, ct, browser=True), raw, ct)


def multipart_request(rng):
    boundary = "----WebKitFormBoundary" + _b64url(rng, 12).replace("-", "x").replace("_", "y")
    parts = []
    for name, value in rng.choice(T.FORMS)(rng):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    fname = rng.choice(T.FILENAMES)
    content = rng.choice([b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
                          b"id,name,email\n1,Ann O'Neil,ann@example.com\n"])
    ctype = "text/csv" if content.startswith(b"id,") else rng.choice(["application/pdf", "image/png"])
    raw = "".join(parts).encode() + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{fname}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    ct = f"multipart/form-data; boundary={boundary}"
    return ("POST", rng.choice(["/api/v1/uploads", "/attachments", "/api/import"]), headers(rng, ct), raw, ct)


def requests(n: int = 2400, seed: int = 7):
    rng = random.Random(seed)
    out = []
    kinds = [get_request] * 40 + [json_request] * 45 + [form_request] * 10 + [multipart_request] * 5
    for _ in range(n):
        m, target, hs, body, ct = rng.choice(kinds)(rng)
        out.append((m.encode(), target.encode("utf-8"),
                    [(k.encode(), v.encode("utf-8")) for k, v in hs], body,
                    ct.encode() if ct else None))
    return out


def evaluate(engine, reqs):
    blocked = []
    for r in reqs:
        m, why = engine.explain(*r)
        if m is not None:
            blocked.append((r, m, why))
    return blocked


def main(argv=None) -> int:
    from fastgate.waf import Engine

    rules = ("sqli", "xss", "path_traversal", "command_injection")
    if argv and argv[0] == "--all":
        rules += ("rfi", "php", "java")
    engine = Engine(rules=rules, on_budget=os.environ.get("FASTGATE_WAF_ON_BUDGET", "block"))
    reqs = requests()
    blocked = evaluate(engine, reqs)
    for r, m, why in blocked:
        print(m.rule, m.part, why, r[0].decode(), r[1][:160])
        if r[3]:
            print("    body:", r[3][:300])
    print(f"benign corpus: {len(blocked)}/{len(reqs)} blocked ({100 * len(blocked) / len(reqs):.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
