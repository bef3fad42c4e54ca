"""Active health checks through the real gateway."""
from __future__ import annotations

import asyncio
import threading

import httpx

from tests.helpers.util import wait_for
from tests.helpers.gateway import free_port, simple_config
from tests.integration.test_observability import TOKEN, scrape, value


class ToggleServer:
    """Answers `GET /health` with 200 or 503 per `.healthy`, anything else with its name."""

    def __init__(self, name):
        self.name = name.encode()
        self.healthy = True
        self.hits = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handler(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    path = head.split(b" ")[1]
                    if path == b"/health":
                        status = b"200 OK" if self.healthy else b"503 Service Unavailable"
                        body = b"health"
                    else:
                        self.hits += 1
                        status, body = b"200 OK", self.name
                    writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_unhealthy_target_leaves_rotation_and_comes_back(gateway_factory):
    a, b = ToggleServer("a"), ToggleServer("b")
    try:
        admin_port = free_port()
        cfg = simple_config(a.port)
        cfg["admin"] = {"bind": f"127.0.0.1:{admin_port}", "token": TOKEN}
        cfg["upstreams"]["app"].update(
            targets=[{"url": f"http://127.0.0.1:{a.port}"}, {"url": f"http://127.0.0.1:{b.port}"}],
            health_check={"path": "/health", "interval_s": 0.1, "timeout_s": 0.1,
                          "healthy_after": 2, "unhealthy_after": 2})
        gw = gateway_factory(cfg)
        b.healthy = False
        label_b = f"127.0.0.1:{b.port}"
        assert wait_for(lambda: value(scrape(admin_port), "fastgate_upstream_healthy",
                                  upstream="app", target=label_b) == 0)
        b.hits = 0
        with httpx.Client() as c:
            assert {c.get(gw.url + "/x").text for _ in range(10)} == {"a"}
        assert b.hits == 0
        assert value(scrape(admin_port), "fastgate_upstream_healthy", upstream="app",
                     target=f"127.0.0.1:{a.port}") == 1
        b.healthy = True
        assert wait_for(lambda: value(scrape(admin_port), "fastgate_upstream_healthy",
                                  upstream="app", target=label_b) == 1)
        with httpx.Client() as c:
            assert {c.get(gw.url + "/x").text for _ in range(10)} == {"a", "b"}
    finally:
        a.stop()
        b.stop()


def test_no_healthy_target_answers_503(gateway_factory):
    a = ToggleServer("a")
    try:
        cfg = simple_config(a.port)
        cfg["upstreams"]["app"]["health_check"] = {
            "path": "/health", "interval_s": 0.1, "timeout_s": 0.1, "healthy_after": 1, "unhealthy_after": 1}
        gw = gateway_factory(cfg)
        assert httpx.get(gw.url + "/x").text == "a"
        a.healthy = False
        assert wait_for(lambda: httpx.get(gw.url + "/x").status_code == 503)
        r = httpx.get(gw.url + "/x")
        assert r.json()["error"]["code"] == "no_healthy_upstream"
        a.healthy = True
        assert wait_for(lambda: httpx.get(gw.url + "/x").status_code == 200)
    finally:
        a.stop()
