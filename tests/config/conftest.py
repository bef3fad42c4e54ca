import pytest

from fastgate.config import UNSUPPORTED


@pytest.fixture
def all_supported():
    """Empty the UNSUPPORTED set in place for one test (the loader reads the same object)."""
    saved = set(UNSUPPORTED)
    UNSUPPORTED.clear()
    try:
        yield
    finally:
        UNSUPPORTED.clear()
        UNSUPPORTED.update(saved)


# The feature gate as it stood when these tests were written: tests of the gate's reporting
# pin it, so that features landing (and leaving the set) do not change what they check.
GATE_FOR_TESTS = {
    "routes[].waf", "routes[].cors", "routes[].transform", "routes[].ip",
    "routes[].lifecycle", "routes[].budget", "routes[].ai", "ai", "routes[].auth", "auth",
    "routes[].rate_limits", "admin", "consumers", "listeners[].tls",
    "upstreams.*.health_check", "redis",
}


@pytest.fixture
def pinned_gate():
    saved = set(UNSUPPORTED)
    UNSUPPORTED.clear()
    UNSUPPORTED.update(GATE_FOR_TESTS)
    try:
        yield
    finally:
        UNSUPPORTED.clear()
        UNSUPPORTED.update(saved)
