"""Upstream connections and their keep-alive pools: compiled, in
fastgate/_core/conn_upstream.pxi (``UpstreamConnection``, ``TargetPool``,
``PoolRegistry``). Kept as an import path."""
from fastgate._core.conn import (  # noqa: F401
    RESPONSE_MAX_HEADER_BYTES, RESPONSE_MAX_HEADERS, PoolRegistry, TargetPool,
    UpstreamConnection,
)
