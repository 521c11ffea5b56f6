from __future__ import annotations

import os

import pytest

from engine.clock import SimClock, WallClock
from tests.engine.connectors.support import T0, NatsServer, instruments, nats_server_binary


@pytest.fixture(scope="session")
def insts():
    return instruments()


@pytest.fixture
def wall():
    return WallClock()


@pytest.fixture
def sim_clock():
    return SimClock(start=T0, paused=True)


@pytest.fixture
def nats_server(tmp_path):
    """A real nats-server with JetStream in a temp dir. Skipped where the binary is absent,
    except under CI=true, where its absence fails the test (CI installs it)."""
    binary = nats_server_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nats-server is not installed; CI must run `apt-get install -y nats-server`")
        pytest.skip("nats-server is not installed (apt-get install -y nats-server)")
    server = NatsServer(binary, tmp_path / "nats")
    server.start()
    yield server
    server.stop()
