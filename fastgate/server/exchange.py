"""One request and its answer (routing, the policy phases, the target, the log phase):
compiled, in fastgate/_core/conn_exchange.pxi. Kept as an import path."""
from fastgate._core.conn import PENDING_BODY_LIMIT, Exchange  # noqa: F401
