"""Test-wide guards: the scripted LLM by default, no real network, MetaGPT's root in a temp dir."""

import os
import socket
import tempfile

import pytest

os.environ.setdefault("TROUPE_LLM", "fake")  # the suite's explicit choice (make test sets it too)
os.environ.setdefault("METAGPT_PROJECT_ROOT", os.path.join(tempfile.gettempdir(), "troupe-test-metagpt"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import infra.testing  # noqa: E402

infra.testing.install()  # `fake` is the scripted LLM for in-process functions too

HERE = os.path.dirname(os.path.abspath(__file__))
EVENTS = os.path.join(HERE, "events")
ALLOW_NETWORK = os.environ.get("TROUPE_TEST_ALLOW_NETWORK") == "1"

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        if host not in ("127.0.0.1", "localhost", "::1") and not ALLOW_NETWORK:
            raise OSError(f"tests may not reach {host}: set TROUPE_TEST_ALLOW_NETWORK=1 to opt in")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect


def load_event(name: str) -> bytes:
    with open(os.path.join(EVENTS, name), "rb") as f:
        return f.read()


@pytest.fixture
def harness(tmp_path):
    from infra.testing.harness import Harness

    return Harness(str(tmp_path / "data"))
