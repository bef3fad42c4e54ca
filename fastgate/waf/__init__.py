"""FastGate's WAF inspection engine (SPEC ``routes[].waf``; the policy wiring lives in
fastgate/policies/waf/).

    from fastgate.waf import Engine
    engine = Engine(rules=("sqli", "xss", "path_traversal", "command_injection"),
                    exclude_args=(), exclude_headers=())
    m = engine.inspect(method, raw_target, headers, body, content_type)  # None or Match(rule, part)

Build one Engine per route config (it compiles a Hyperscan database); ``inspect`` is
synchronous, never raises, and is not re-entrant across threads (one scratch per Engine).
The engine is imported on first use (``fastgate.waf.Engine``): a gateway without a WAF
route never loads Hyperscan.
"""
__all__ = ("Engine", "Match", "RULES", "DEFAULT_RULES")


def __getattr__(name):
    if name in __all__:
        from fastgate.waf import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'fastgate.waf' has no attribute {name!r}")
