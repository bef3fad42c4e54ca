"""`routes[].waf`: request inspection (sqli, xss, path traversal, command injection).

Only the config exists so far (config.py); the handler has not landed, so the key is refused
by fastgate.config.UNSUPPORTED. When it lands: ``build(route_cfg, services)`` here, this
module's name moved from ``fastgate.policies.PENDING`` into ``REGISTRY``, and the entry
removed from UNSUPPORTED.
"""
