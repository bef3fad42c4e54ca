"""add-tenant: put the calling consumer's name (or "anonymous") in a request header for the
upstream, and mark responses that went through it.

    routes:
      - name: orders
        paths: [/orders/*]
        upstream: orders
        auth: {using: [partner-keys]}
        plugins: [{name: add-tenant, config: {header: X-Tenant}}]
"""
from fastgate.plugin import Respond


class AddTenant:
    schema = {
        "type": "object",
        "required": ["header"],
        "additionalProperties": False,
        "properties": {
            "header": {"type": "string", "pattern": "^[A-Za-z0-9-]+$"},
            "require_consumer": {"type": "boolean"},
        },
    }

    def __init__(self, config):
        self.header = config["header"]
        self.require_consumer = config.get("require_consumer", False)

    def access(self, req):
        if req.consumer is None and self.require_consumer:
            return Respond(403, '{"error": "a known consumer is required"}',
                           {"Content-Type": "application/json"})
        req.headers[self.header] = req.consumer or "anonymous"
        return None

    def response(self, req, resp):
        resp.headers["X-Tenant-Seen"] = "1"
