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
