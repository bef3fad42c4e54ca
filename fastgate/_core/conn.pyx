# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled connection: everything one proxied request crosses, as C.

One module (so the references between these objects are typed and their calls go through
vtables), read in six files:

    conn_context.pxi   RequestContext: what policies read and set (``ctx``)
    conn_response.pxi  ResponseSide: response head and body phases, framing, local answers,
                       the end of an exchange (log phase, the connection's next request)
    conn_exchange.pxi  Exchange: routing, access and request-body phases, the target
    conn_client.pxi    ClientConnection: bytes, framing, flow control, deadlines,
                       pipelining, tunnels, malformed-input answers
    conn_socket.pxi    RawSocket, RawListener, SocketPoller: plain-TCP client sockets owned
                       here (epoll, accept4, recv, send), with asyncio's transport interface
    conn_upstream.pxi  UpstreamTarget and UpstreamCall (the ``upstream`` target's
                       per-request call: head, pick, connect, relay, retries, tunnels)
    conn_pool.pxi      UpstreamConnection, TargetPool (keep-alive), PoolRegistry

The request path and the contracts between these pieces are in docs/internals.md; the
Python modules that used to hold them (fastgate/server/connection.py, exchange.py,
response.py, context.py, fastgate/targets/upstream.py, fastgate/upstream/pool.py) import
them from here. Policies, plugins and other targets stay Python: the exchange calls them
only where a route has them.
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

import asyncio
import logging
import re
import ssl as _ssl
import time

from fastgate._core.http cimport (ParserHandler, RequestHead, ResponseHead, RequestParser,
                                  ResponseParser, _find)
from fastgate._core.http import HttpError
from fastgate._core.router import MATCH, METHOD_NOT_ALLOWED, normalize_path
from fastgate._core.writer cimport header_lines, join_head
from fastgate._core.ids cimport request_id_b_from, traceparent_b_from
from fastgate._core.stats cimport count_usage, request_done
from fastgate._core.lists cimport drop_last, list_with_room, push
from fastgate.policies.base import Reject, Respond
from fastgate.server.responses import (CONTINUE_100, ERROR_CODES, STATUS_LINES, build_response,
                                       error_body, status_line)

log = logging.getLogger("fastgate")
cdef dict _STATUS_LINES = STATUS_LINES

_monotonic = time.monotonic
_time = time.time


cdef inline double _mono() noexcept nogil:
    """time.monotonic() (the same clock), without a Python call and a float per reading."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline double _wall() noexcept nogil:
    """time.time() (the same clock)."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9

# Reasons a connection's reading is paused (bits: each resume clears only its own)
cdef enum:
    _P_UPSTREAM_FULL = 1
cdef enum:
    _P_WAITING = 2
cdef enum:
    _P_PIPELINE = 4
P_UPSTREAM_FULL = _P_UPSTREAM_FULL   # the peer (upstream) transport is over its high-water mark
P_WAITING = _P_WAITING               # an awaitable policy, a connect or a full pending queue
P_PIPELINE = _P_PIPELINE             # too many pipelined bytes buffered behind the request

# A response's pieces up to this size in all are joined and written with one write()
cdef enum:
    _JOIN_MAX = 4096

# Connection states
cdef enum:
    _S_IDLE = 0      # waiting for (the rest of) a request head
cdef enum:
    _S_ACTIVE = 1    # a request is in progress
cdef enum:
    _S_TUNNEL = 2    # upgraded: raw bytes both ways
cdef enum:
    _S_CLOSED = 3
S_IDLE = _S_IDLE
S_ACTIVE = _S_ACTIVE
S_TUNNEL = _S_TUNNEL
S_CLOSED = _S_CLOSED

# Deadline kinds (checked by the gateway's periodic sweep: no timer object per request)
cdef enum:
    _D_NONE = 0
cdef enum:
    _D_HEADER = 1
cdef enum:
    _D_KEEPALIVE = 2
cdef enum:
    _D_BODY = 3
cdef enum:
    _D_LINGER = 4    # after a closing answer: discard input briefly so the client reads it
D_NONE = _D_NONE
D_HEADER = _D_HEADER
D_KEEPALIVE = _D_KEEPALIVE
D_BODY = _D_BODY
D_LINGER = _D_LINGER

PIPELINE_BUFFER_LIMIT = 256 * 1024
PENDING_BODY_LIMIT = 256 * 1024
DISCARD_BODY_LIMIT = 1024 * 1024   # unread body swallowed to keep a connection after a local answer
LINGER_S = 2.0
# A keep-alive connection idle this long gives its request parser back (the sweep drops
# it; the next byte makes a new one): 10,000 idle connections then hold no parser state.
PARSER_IDLE_S = 1.0

# Client addresses, shared by the connections that come from the same one (a load
# balancer's, a NAT's): the text and its bytes once per address, not once per connection.
cdef dict _PEER_IPS = {}
cdef enum:
    _PEER_IPS_MAX = 4096

include "conn_context.pxi"
include "conn_response.pxi"
include "conn_exchange.pxi"
include "conn_client.pxi"
include "conn_socket.pxi"
include "conn_upstream.pxi"
include "conn_pool.pxi"
