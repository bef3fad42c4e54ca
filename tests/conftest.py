import pytest

from tests.helpers.gateway import GatewayProc, simple_config
from tests.helpers.upstream import UpstreamServer


@pytest.fixture
def upstream():
    server = UpstreamServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway_factory(tmp_path):
    started = []

    def start(config, *, workers=None, n_listeners=1, env=None, name=None):
        gw = GatewayProc(config, tmp_path, workers=workers, env=env, name=name or f"gw{len(started)}")
        started.append(gw)
        gw.wait_ready(n_listeners)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


@pytest.fixture
def gateway(upstream, gateway_factory):
    """The gateway proxying every path to the test upstream."""
    return gateway_factory(simple_config(upstream.port))
