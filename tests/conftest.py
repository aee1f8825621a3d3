"""Shared fixtures: the one configurable location of the shared real data.

``METAJAX_SHARED_DATA`` points at a folder holding ``omniglot/``; by default
``../shared/data`` beside the repository. Tests that need it skip with a
reason when it is absent, except under ``CI=true``, where absence fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("METAJAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if path.exists():
        return path
    reason = f"shared data not found at {path}; set METAJAX_SHARED_DATA to the folder holding omniglot/"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (skips, or fails under CI=true, when absent)."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def omniglot_dir(shared_data: Path) -> Path:
    """The folder with the real Omniglot subsets ``images_background_small{1,2}.zip``."""
    return _require(shared_data / "omniglot")
