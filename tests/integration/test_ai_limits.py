"""Token rate limits and budgets of AI routes across two real instances sharing a real
redis-server, driven by the official OpenAI SDK; spend and usage survive a restart."""
from __future__ import annotations

import hashlib
import time

import httpx
import openai
import pytest

from tests.helpers.fake_llm import FakeLLM
from tests.helpers.gateway import GatewayProc, free_port
from tests.policies.test_rate_limit_servers import redis_server  # noqa: F401

ADMIN = "admin-token-for-ai-limits"
KEYS = {"tok": "key-of-the-token-limited-app", "bud": "key-of-the-budgeted-app"}
MSGS = [{"role": "user", "content": "hello there gateway"}]   # 3 words in, "echo: ..." 4 out


def _hash(t):
    return "sha256:" + hashlib.sha256(t.encode()).hexdigest()


def _config(llm, redis_url, admin_port):
    return {
        "listeners": [{"bind": "127.0.0.1:0"}], "drain_timeout_s": 1,
        "admin": {"bind": f"127.0.0.1:{admin_port}", "token": ADMIN},
        "redis": {"url": redis_url, "timeout_ms": 200},
        "logging": {"access_log": "off"},
        "auth": {"keys": {"type": "api_key", "bearer": True}},
        "consumers": [{"name": "tok-app", "api_keys": [_hash(KEYS["tok"])]},
                      {"name": "bud-app", "api_keys": [_hash(KEYS["bud"])]}],
        "ai": {"providers": {"oa": {"type": "openai", "base_url": llm.base_url("openai"),
                                    "api_key": "sk-x"}},
               "models": [{"name": "gpt", "provider": "oa", "model": "gpt-4o-mini",
                           "price": {"input_per_1k": 1.0, "output_per_1k": 1.0}}]},
        "routes": [
            {"name": "tokens", "paths": ["/tok/v1/chat/completions"],
             "auth": {"using": ["keys"]}, "ai": {"endpoint": "chat"},
             "rate_limits": [{"limit": 70, "per": "hour", "unit": "tokens",
                              "by": "consumer", "scope": "cluster"}]},
            {"name": "budget", "paths": ["/bud/v1/chat/completions"],
             "auth": {"using": ["keys"]}, "ai": {"endpoint": "chat"},
             "budget": {"usd": 0.05, "per": "day", "by": "consumer"}},
        ],
    }


def _start_two(llm, redis, tmp_path):
    ports = [free_port(), free_port()]
    gws = []
    for i, p in enumerate(ports):
        home = tmp_path / f"instance{i}"         # each its own state_dir, as in production
        home.mkdir(exist_ok=True)
        g = GatewayProc(_config(llm, redis.url, p), home, name="gw")
        gws.append(g)
    for g in gws:
        g.wait_ready()
    return gws, ports


def _clients(gws, prefix, key):
    return [openai.OpenAI(base_url=f"{g.url}/{prefix}/v1", api_key=key, max_retries=0,
                          timeout=10) for g in gws]


def _send(client):
    try:
        client.chat.completions.create(model="gpt", messages=MSGS, max_tokens=8)
        return 200
    except openai.APIStatusError as e:
        return e.status_code


@pytest.mark.timeout(120)
def test_token_limit_and_budget_shared_by_two_instances(redis_server, tmp_path):  # noqa: F811
    with FakeLLM() as llm:
        gws, admin_ports = _start_two(llm, redis_server, tmp_path)
        try:
            # Token limit: 70 tokens an hour, shared. Each answer uses 7 (3 in, 4 out); the
            # reservation (prompt estimate + max_tokens) is taken back at settlement.
            tok = _clients(gws, "tok", KEYS["tok"])
            codes = []
            for i in range(24):
                codes.append(_send(tok[i % 2]))
                time.sleep(0.03)
            admitted = codes.count(200)
            assert set(codes) <= {200, 429}
            assert 7 <= admitted <= 12, codes          # 70 / 7 = 10, give or take leases
            assert codes[-4:] == [429] * 4
            r = httpx.post(f"{gws[0].url}/tok/v1/chat/completions", json={
                "model": "gpt", "messages": MSGS}, headers={
                "authorization": f"Bearer {KEYS['tok']}"})
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limited"

            # Budget: $0.05 a day; each answer costs (3 + 4) / 1000 * $1 = $0.007.
            bud = _clients(gws, "bud", KEYS["bud"])
            codes = []
            for i in range(16):
                codes.append(_send(bud[i % 2]))
                time.sleep(0.3)          # past the instances' refresh of the shared spend
            admitted = codes.count(200)
            assert set(codes) <= {200, 402}
            assert 7 <= admitted <= 9, codes           # 0.05 / 0.007 = 7.1
            assert codes[-3:] == [402] * 3
            r = httpx.post(f"{gws[1].url}/bud/v1/chat/completions", json={
                "model": "gpt", "messages": MSGS}, headers={
                "authorization": f"Bearer {KEYS['bud']}"})
            assert r.status_code == 402 and r.json()["error"]["code"] == "payment_required"
            assert int(r.headers["retry-after"]) >= 1

            # usage per consumer and model, summed across the instances
            def usage():
                rows = httpx.get(f"http://127.0.0.1:{admin_ports[0]}/usage", headers={
                    "authorization": f"Bearer {ADMIN}"}).json()["usage"]
                return {r["consumer"]: r for r in rows if r.get("model") == "gpt"}
            assert FakeLLM.wait_for(lambda: usage().get("bud-app", {}).get(
                "output_tokens") == 4 * admitted, timeout=6), usage()
            before = usage()["bud-app"]
        finally:
            for g in gws:
                g.stop()

        # Both instances restart: the spend (and the usage) are in Redis.
        gws, admin_ports = _start_two(llm, redis_server, tmp_path)
        try:
            bud = _clients(gws, "bud", KEYS["bud"])
            assert [_send(c) for c in bud] == [402, 402]
            rows = httpx.get(f"http://127.0.0.1:{admin_ports[1]}/usage", headers={
                "authorization": f"Bearer {ADMIN}"}).json()["usage"]
            after = [r for r in rows if r["consumer"] == "bud-app" and r.get("model") == "gpt"]
            assert after and after[0]["output_tokens"] >= before["output_tokens"]
        finally:
            for g in gws:
                g.stop()
