"""The short CI pass of the soak (tests/soak.py; long runs: ./dev.sh soak [MINUTES])."""
from tests import soak


def test_soak_short_pass():
    assert soak.main(["--seconds", "45", "--warmup", "25", "--rate", "300"]) == 0
