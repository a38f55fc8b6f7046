"""Fixtures shared by the integration tests: the current CRD installed, and the image's runtime
for the tests that run the operator as in its pod."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dittofs_controller.kube.client import KubeClient
from tests.support import incluster
from tests.support.crds import install_crd


@pytest.fixture
async def dittoservers(kube: KubeClient) -> KubeClient:
    """The cluster with the current CRD installed and served (idempotent server-side apply)."""
    await install_crd(kube)
    return kube


@pytest.fixture(scope="session")
def runtime_python() -> Iterator[Path]:
    """The image's runtime: the wheel built and installed as the Containerfile does, on the
    image's interpreter, where the image's user can read it (pytest's temporary directories
    are root's alone)."""
    work = Path(tempfile.mkdtemp(prefix="dittofs-image-"))
    work.chmod(0o755)
    try:
        wheel = incluster.build_wheel(work)
        yield incluster.install_runtime(wheel, work / "venv", incluster.IMAGE_PYTHON)
    finally:
        shutil.rmtree(work)
