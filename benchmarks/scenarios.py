"""Scenarios: what load to offer and what the gateway must do. Adding one is one declaration.

    Scenario("name", "Title", path="/tiny", features=("jwt_rs256",), rate=9000)

``features`` are gateway capabilities beyond plain proxying (see FEATURES). Every target maps
them onto its own config; one that cannot is reported "n/a: needs <feature>". For fastgate
the generated config goes through ``fastgate check`` first, so a scenario whose features have
not landed yet is skipped until they do.
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmarks import ai
from benchmarks.upstream import sse_body_bytes

FEATURES = {
    "jwt_rs256": "JWT (RS256) authentication, the same token on every request",
    "rate_limit": "a per-consumer/IP rate limit high enough never to trip (10,000,000/s), "
                  "state in the gateway process",
    "rate_limit_cluster": "the same limit with `scope: cluster`: state shared through a "
                          "redis-server the harness starts on loopback for the scenario",
    "metrics": "metrics collection on (fastgate: admin listener)",
    "request_id": "X-Request-ID generated, forwarded and echoed",
    "tls": "TLS on the client side (TLS 1.2 and 1.3 accepted, the client negotiates 1.3 unless "
           "--tls-version 1.2; test CA and ECDSA P-256 certificate made at harness start; "
           "keep-alive, so no handshake falls in a measurement)",
    "access_log": "one JSON access-log line per request, written to a file (nginx: "
                  "`buffer=64k`)",
    "waf": "the WAF in block mode (fastgate `waf: {mode: block}`, the four default rules, "
           "body inspection on; nginx: n/a; nginx_modsec: ModSecurity v3 + OWASP CRS, paranoia "
           "level 1, blocking at inbound anomaly score 5, request bodies inspected)",
    "ai": "OpenAI chat completions through the gateway's AI layer to the fake provider "
          "(fastgate `ai:` section + `ai: {endpoint: chat}` route; LiteLLM model_list; Portkey "
          "x-portkey-provider/custom-host headers; nginx: a plain proxy of the path, a floor)",
}
# features whose scenario needs the harness's redis-server running
REDIS_FEATURES = ("rate_limit_cluster",)

MIB = 1 << 20


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    method: str = "GET"
    path: str = "/tiny"
    headers: tuple = ()             # (name, value); "{jwt}" in a value is the bench token
    body_size: int = 0              # request body bytes (Content-Length)
    expect_body: int | None = 2     # response body bytes every answer must have
    features: tuple = ()            # keys of FEATURES
    kind: str = "load"              # "load" | "idle"
    connections: int = 64
    rate: float = 9000.0            # offered requests/s of the fixed-rate (headline) phase
    unit: str | None = None         # second cost unit: "MiB" | "event"
    units_per_request: float = 1.0
    smoke_connections: int = 4
    smoke_rate: float = 200.0
    timeout: float = 10.0           # a request without an answer by then is an error
    ttfb: bool = False              # also report time to the response head (streams)
    streaming: bool = False         # configure proxies the way their docs say for streams
    # --- AI scenarios (benchmarks/ai.py) ---
    body: bytes | None = None       # the request body itself (else body_size bytes of "x")
    content_type: str = "application/octet-stream"
    ai_chunks: int = 0              # content chunks of the fake's stream
    ai_gap_ms: float = 0.0          # ms between them
    smoke_ai_gap_ms: float | None = None  # --smoke: shorter streams fit its 0.5 s window
    markers: tuple = ()             # bytes every relayed answer must contain
    ttft_marker: bytes | None = None  # time to first token = until these bytes arrive
    pauses: bool = False            # record the longest pause between body packets per stream
    c1: bool = False                # also measure at concurrency 1 (added latency vs direct)
    stall_s: float | None = None    # a pause longer than this inside a stream is a stall

    def request_head(self, jwt_token: str | None = None, extra_headers=(),
                     path: str | None = None) -> str:
        lines = [f"{self.method} {path or self.path} HTTP/1.1", "Host: bench.local",
                 "User-Agent: fastgate-bench",
                 "Accept: " + ("application/json" if self.body is not None else "*/*")]
        for k, v in tuple(self.headers) + tuple(extra_headers):
            if "{jwt}" in v:
                if jwt_token is None:
                    raise ValueError("scenario needs a JWT token")
                v = v.replace("{jwt}", jwt_token)
            lines.append(f"{k}: {v}")
        size = self.request_body_size
        if size or self.method in ("POST", "PUT", "PATCH"):
            lines += [f"Content-Type: {self.content_type}", f"Content-Length: {size}"]
        return "\r\n".join(lines) + "\r\n\r\n"

    @property
    def request_body_size(self) -> int:
        return len(self.body) if self.body is not None else self.body_size

    def request_body(self) -> bytes | None:
        if self.body is not None:
            return self.body
        return b"x" * self.body_size if self.body_size else None

    @property
    def upstream_base(self) -> str:
        """The fake provider's base path for this scenario's stream shape (AI scenarios)."""
        return ai.upstream_path(self.ai_chunks or ai.DEFAULT_CHUNKS, self.ai_gap_ms)


SSE_EVENTS = 20
API_PATH = "/tiny?q=running+shoes&sort=-created_at&page=2&lang=en-GB"
API_BODY = (b'{"customer":{"name":"Siobhan O\'Brien","email":"siobhan@example.com"},'
            b'"items":[{"sku":"A-1042","qty":2,"note":"gift wrap, please"},'
            b'{"sku":"B-7","qty":1,"note":"the blue one if the red is sold out"}],'
            b'"shipping":{"street":"12 Harbour Lane","city":"Cork","zip":"T12 X70"},'
            b'"comment":"Please call before delivery, thanks!"}')

SCENARIOS = [
    Scenario("passthrough", "Passthrough, tiny responses"),
    # The next four are passthrough plus one thing each: their cost is read against it
    # (report.derived() prints the differences under the summary table).
    Scenario("tls", "Passthrough over TLS (keep-alive)", features=("tls",)),
    Scenario("limit_local", "Passthrough + a local rate limit that never trips",
             features=("rate_limit",)),
    Scenario("limit_cluster", "Passthrough + a cluster-scope rate limit through Redis",
             features=("rate_limit_cluster",)),
    Scenario("access_log", "Passthrough + JSON access log to a file", features=("access_log",)),
    Scenario("full_chain", "Full chain: JWT RS256 + rate limit + metrics + request ids",
             headers=(("Authorization", "Bearer {jwt}"),),
             features=("jwt_rs256", "rate_limit", "metrics", "request_id")),
    Scenario("body_1mib", "1 MiB request and 1 MiB response bodies", method="POST",
             path=f"/bytes/{MIB}", body_size=MIB, expect_body=MIB, connections=8, rate=150,
             unit="MiB", units_per_request=2.0, smoke_connections=2, smoke_rate=20, timeout=30),
    Scenario("idle_10k", "10,000 idle keep-alive connections", kind="idle", connections=10000,
             smoke_connections=200, timeout=30),
    # A realistic API request: a search query and a ~300-byte JSON body, without and with
    # the WAF (report.derived() prints what the WAF adds).
    Scenario("api_body", "POST with a realistic query and JSON body", method="POST",
             path=API_PATH, body=API_BODY, content_type="application/json"),
    Scenario("waf", "The same POST through the WAF (block mode, benign)", method="POST",
             path=API_PATH, body=API_BODY, content_type="application/json",
             features=("waf",)),
    Scenario("sse", f"SSE streams, {SSE_EVENTS} events 5 ms apart",
             path=f"/sse?n={SSE_EVENTS}&gap_ms=5", expect_body=sse_body_bytes(SSE_EVENTS),
             connections=64, rate=400, unit="event", units_per_request=SSE_EVENTS,
             smoke_rate=20, timeout=30, ttfb=True, streaming=True),
]

AI_CHUNKS = 20
AI_STREAMS = 512
AI_COMMON = dict(method="POST", path="/v1/chat/completions", content_type="application/json",
                 expect_body=None, features=("ai",), timeout=30, c1=True)
SCENARIOS += [
    Scenario("ai_chat", "AI: chat completions (non-streaming) to a fake OpenAI provider",
             body=ai.CHAT_BODY, markers=ai.CHAT_MARKERS, connections=32, rate=2000,
             smoke_rate=20, **AI_COMMON),
    Scenario("ai_stream", f"AI: streamed chat completions (SSE), {AI_CHUNKS} content chunks "
             "5 ms apart",
             body=ai.STREAM_BODY, markers=ai.STREAM_MARKERS, ttft_marker=ai.FIRST_TOKEN.encode(),
             pauses=True, ai_chunks=AI_CHUNKS, ai_gap_ms=5, connections=64, rate=400,
             smoke_rate=20, unit="chunk", units_per_request=AI_CHUNKS, ttfb=True,
             streaming=True, **AI_COMMON),
    # every connection holds a stream all the time in the closed-loop phase: 512 in flight
    Scenario("ai_stream_512", f"AI: {AI_STREAMS} concurrent streams, {AI_CHUNKS} chunks 50 ms "
             "apart (~1 s each)",
             body=ai.STREAM_BODY, markers=ai.STREAM_MARKERS, ttft_marker=ai.FIRST_TOKEN.encode(),
             pauses=True, ai_chunks=AI_CHUNKS, ai_gap_ms=50, smoke_ai_gap_ms=10,
             connections=AI_STREAMS, rate=400, smoke_connections=32, smoke_rate=20,
             unit="chunk", units_per_request=AI_CHUNKS, ttfb=True, streaming=True,
             stall_s=1.0, **dict(AI_COMMON, c1=False)),
]

BY_NAME = {s.name: s for s in SCENARIOS}
