"""Per-request state handed to policies, targets and the log phase: ``RequestContext``,
compiled with the exchange (which *is* the context of its request) in
fastgate/_core/conn_context.pxi, where its fields are listed. Code that drives a policy
directly (tests, benchmarks) builds a bare RequestContext."""
from fastgate._core.conn import RequestContext  # noqa: F401
