"""The response side of an exchange: compiled, in fastgate/_core/conn_response.pxi.

Kept as the import path of the pause reasons targets use (``P_WAITING``: an awaitable, a
connect or a full pending queue; ``P_UPSTREAM_FULL``: the peer transport is over its
high-water mark)."""
from fastgate._core.conn import (  # noqa: F401
    DISCARD_BODY_LIMIT, P_UPSTREAM_FULL, P_WAITING, ResponseSide,
)
