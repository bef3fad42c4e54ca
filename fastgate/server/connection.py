"""The client connection (one per accepted socket): compiled, in fastgate/_core/conn_client.pxi.

Kept as the import path the rest of the gateway (and plugins) use."""
from fastgate._core.conn import (  # noqa: F401
    D_BODY, D_HEADER, D_KEEPALIVE, D_LINGER, D_NONE, LINGER_S, P_PIPELINE,
    PIPELINE_BUFFER_LIMIT, S_ACTIVE, S_CLOSED, S_IDLE, S_TUNNEL, ClientConnection,
    TlsClientConnection,
)
