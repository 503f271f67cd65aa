"""Unit tests run in this process: one that starts the local runtime (whose function instances
are processes) fails, naming where it belongs."""

import pytest


@pytest.fixture(autouse=True)
def _no_runtime(monkeypatch):
    from infra.local.runtime import LocalRuntime

    def refuse(self, *args, **kwargs):
        pytest.fail("this test starts the local runtime and its worker processes: it belongs in tests/functional/")

    monkeypatch.setattr(LocalRuntime, "start", refuse)
