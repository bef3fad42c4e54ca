"""Observability: metrics aggregation and Prometheus rendering (metrics), the JSON access log
(access_log), request ids and W3C trace context (ids)."""
