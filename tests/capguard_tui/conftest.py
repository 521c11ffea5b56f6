"""Fixtures for the console tests (helpers.py has the how)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import LoadedConfig
from engine.guard import Guard
from tests.capguard_tui.helpers import copy_config, make_guard


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real config or state."""
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("CAPGUARD_CONFIG", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    return copy_config(tmp_path)


@pytest.fixture
def guard(tmp_path: Path, loaded: LoadedConfig) -> Iterator[Guard]:
    g = make_guard(tmp_path, loaded)
    yield g
    g.journal.close()
