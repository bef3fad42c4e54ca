"""Plugins that exercise each phase of the FastGate core, for its integration tests."""
import asyncio
import hashlib
import json

from fastgate.plugin import Respond


class BodyProbe:
    """request_body: sees the whole buffered body; refuses one containing a marker; tells
    the upstream what it saw; may replace the body."""

    def request_body(self, req, body):
        if b"forbidden" in body:
            return Respond(403, "refused by body-probe")
        req.headers["X-Body-Seen"] = "%d:%s" % (len(body), hashlib.sha256(body).hexdigest())
        if body.startswith(b"replace-me"):
            req.body = b"replaced"
        return None


class Upper:
    """response_body: upper-cases every chunk as it passes, counting the calls."""

    def __init__(self, config):
        self.calls = 0

    def response_body(self, req, resp, data, last):
        return data.upper()


class SseRewrite:
    """response_body over an SSE stream: each complete event's data is rewritten as soon as
    the event is complete; a partial event is held back until its end arrives."""

    def __init__(self, config):
        self.prefix = config.get("prefix", "seen:").encode()

    def response_body(self, req, resp, data, last):
        buf = req.state.get("sse", b"") + data
        out = []
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            out.append(event.replace(b"data: ", b"data: " + self.prefix, 1) + b"\n\n")
        req.state["sse"] = buf
        if last and buf:
            out.append(buf)
        return b"".join(out)


class LogProbe:
    """log: appends one JSON line per request (final status, bytes, route) to a file."""

    def __init__(self, config):
        self.path = config["path"]

    def log(self, req, resp):
        with open(self.path, "a") as f:
            f.write(json.dumps({"route": req.route, "status": resp.status,
                                "request_id": req.request_id,
                                "bytes_received": req.bytes_received,
                                "bytes_sent": resp.bytes_sent,
                                "seen": resp.headers.get("x-probe")}) + "\n")


class FailIn:
    """Raises in the phase its config names."""

    def __init__(self, config):
        self.phase = config["phase"]
        if self.phase == "init":
            raise RuntimeError("fail-in init")

    def access(self, req):
        if self.phase == "access":
            raise RuntimeError("fail-in access")

    def response(self, req, resp):
        if self.phase == "response":
            raise RuntimeError("fail-in response")

    def response_body(self, req, resp, data, last):
        if self.phase == "response_body":
            raise RuntimeError("fail-in response_body")
        return data


class SlowAccess:
    """An async access hook (it waits, then decides)."""

    async def access(self, req):
        await asyncio.sleep(0.01)
        if req.headers.get("x-deny") == "1":
            return Respond(429, "slow no")
        req.headers["X-Slow"] = "waited"

    async def response(self, req, resp):
        await asyncio.sleep(0.01)
        resp.headers["X-Slow-Response"] = "waited"


class HeaderEdit:
    """Sets, replaces and deletes request and response headers."""

    def access(self, req):
        req.headers["X-Added"] = "1"
        if "x-remove-me" in req.headers:
            del req.headers["X-Remove-Me"]
        req.headers["User-Agent"] = "header-edit"

    def response(self, req, resp):
        resp.headers["X-Probe"] = "yes"
        if "x-drop-me" in resp.headers:
            del resp.headers["x-drop-me"]


class ChunkGuard:
    """request_chunk: refuses a body as soon as a chunk carries a marker."""

    def request_chunk(self, req, data, last):
        if b"evil" in data:
            return Respond(403, "refused mid-stream")
        return None
