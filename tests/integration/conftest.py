"""Fixtures shared by the tests that run the operator as in its pod."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import incluster


@pytest.fixture(scope="session")
def runtime_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's runtime: the wheel built and installed as the Containerfile does."""
    work = tmp_path_factory.mktemp("image")
    return incluster.install_runtime(incluster.build_wheel(work), work / "venv")
