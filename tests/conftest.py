"""Shared fixtures: where the real data lives, and small run folders."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout (CI lays a copy there), or $TORCHTUTOR_SHARED_DATA."""
    override = os.environ.get("TORCHTUTOR_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        # CI always has ../shared/data; a missing copy is a setup fault, not a reason to skip.
        pytest.fail(f"real test data not found at {path} (set TORCHTUTOR_SHARED_DATA)")
    return path
