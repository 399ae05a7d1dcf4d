"""Shared fixtures."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real third-party sample footage, see its README.md); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def rig():
    """The Allegro-on-Panda rig at 128 px (MUJOCO_GL is set by the test modules that use it)."""
    from dexwm.sim.rig import Rig

    r = Rig("allegro", size=128)
    yield r
    r.close()
