"""Fixtures shared by the integration tests: the current CRD installed, and the image's runtime
for the tests that run the operator as in its pod."""

from __future__ import annotations

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
def runtime_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's runtime: the wheel built and installed as the Containerfile does."""
    work = tmp_path_factory.mktemp("image")
    return incluster.install_runtime(incluster.build_wheel(work), work / "venv")
