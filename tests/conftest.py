"""Shared fixtures: the sample plant, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantwatch.plant.load import Plant, load_plant

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLANT = ROOT / "examples" / "plant"


@pytest.fixture(autouse=True)
def _state_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test's own $XDG_STATE_HOME: `plantwatch up` without --db keeps its store there, never in the real home."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture(scope="session")
def plant() -> Plant:
    return load_plant(EXAMPLE_PLANT)
