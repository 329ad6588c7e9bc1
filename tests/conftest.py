"""Shared fixtures: the sample plant, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantwatch.plant.load import Plant, load_plant

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLANT = ROOT / "examples" / "plant"


@pytest.fixture(scope="session")
def plant() -> Plant:
    return load_plant(EXAMPLE_PLANT)
