"""Small helpers shared by the integration tests."""
from __future__ import annotations

import asyncio
import threading
import time


def wait_for(pred, timeout=10.0, interval=0.05) -> bool:
    """Poll `pred` until it is true or `timeout` passes (never a fixed sleep in a test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False


def quietly(fn):
    """Run fn, ignoring its failure (for background clients whose outcome is not the point)."""
    try:
        fn()
    except Exception:
        pass


def proc_status_kb(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def raw_server(handler):
    """An asyncio stream server on a loopback port in its own thread: (port, stop)."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()

    def stop():
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
    return port, stop


def read_until_close(sock, bufsize: int = 65536) -> bytes:
    """Everything a peer sends on `sock` until it closes the connection."""
    chunks = []
    while True:
        d = sock.recv(bufsize)
        if not d:
            return b"".join(chunks)
        chunks.append(d)
