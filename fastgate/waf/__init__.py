"""FastGate's WAF inspection engine (SPEC ``routes[].waf``; the policy wiring lives in
fastgate/policies/waf/).

    from fastgate.waf import Engine
    engine = Engine(rules=("sqli", "xss", "path_traversal", "command_injection"),
                    exclude_args=(), exclude_headers=())
    m = engine.inspect(method, raw_target, headers, body, content_type)  # None or Match(rule, part)

Build one Engine per route config (it compiles a Hyperscan database); ``inspect`` is
synchronous, never raises, and is not re-entrant across threads (one scratch per Engine).
"""
from fastgate.waf.engine import DEFAULT_RULES, RULES, Engine, Match

__all__ = ("Engine", "Match", "RULES", "DEFAULT_RULES")
