"""Request ids and W3C trace-context (traceparent) for every proxied request: compiled, in
fastgate/_core/ids.pyx (random hex from a pool filled by one ``os.urandom`` call per 256
ids, discarded in a forked child). Kept as the import path."""
from fastgate._core.ids import (  # noqa: F401
    new_request_id, new_span_id, new_trace_id, request_id_from, trace_id_of, traceparent_from,
)

__all__ = ["request_id_from", "traceparent_from", "new_request_id", "new_trace_id", "new_span_id"]
