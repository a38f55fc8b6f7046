"""The release pipeline (.github/workflows/release.yaml) and the chart it packages.

The workflow itself runs only on GitHub; what can be checked here is: the chart packaging script
with the real helm (the packaged chart's default image is the release's image, and a tag that is
not the operator's version is refused), and that the workflows pin every action to a release
commit, build both architectures and push where the chart's default image points.
(`nox -s lint` runs actionlint on the workflows.)
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

import dittofs_controller
from tests.support.docchecks import release_defaults
from tests.support.incluster import CHART, HELM_BUILD_TIMEOUT, helm
from tests.testbed import binaries

pytestmark = [] if binaries.is_built("helm") else [pytest.mark.timeout(HELM_BUILD_TIMEOUT)]

REPO = Path(__file__).resolve().parents[2]
PACKAGE_CHART = REPO / "deploy" / "package-chart.sh"
WORKFLOWS = REPO / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yaml"
MIRROR = "registry.example.com/platform/dittofs-operator"
# `owner/action@<commit> # vX.Y.Z`: a full commit SHA, and the release it is.
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def package_chart(
    version: str, repository: str, destination: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{helm().parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(PACKAGE_CHART), version, repository, str(destination)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rendered_image(chart: Path) -> str:
    command = [str(helm()), "template", "release", str(chart), "--show-only"]
    rendered = subprocess.run(
        [*command, "templates/deployment.yaml"], capture_output=True, text=True, check=True
    )
    deployment = yaml.safe_load(rendered.stdout)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def test_the_packaged_chart_runs_the_releases_image(tmp_path: Path) -> None:
    version = dittofs_controller.__version__
    values_before = (CHART / "values.yaml").read_text()
    result = package_chart(version, MIRROR, tmp_path)
    assert result.returncode == 0, result.stderr
    archive = tmp_path / f"dittofs-operator-{version}.tgz"
    with tarfile.open(archive) as packaged:
        member = packaged.extractfile("dittofs-operator/Chart.yaml")
        assert member is not None
        chart = yaml.safe_load(member.read())
    assert (chart["version"], chart["appVersion"]) == (version, version)
    assert rendered_image(archive) == f"{MIRROR}:{version}"
    assert (CHART / "values.yaml").read_text() == values_before, "the source chart was changed"


def test_a_tag_that_is_not_the_operators_version_is_refused(tmp_path: Path) -> None:
    result = package_chart("99.0.0", MIRROR, tmp_path)
    assert result.returncode == 1
    assert f"release 99.0.0 is not the operator's version {dittofs_controller.__version__}" in (
        result.stderr
    )
    assert not list(tmp_path.iterdir())


def workflow(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def steps(path: Path) -> list[dict[str, Any]]:
    return [step for job in workflow(path)["jobs"].values() for step in job["steps"]]


def step_using(path: Path, action: str) -> dict[str, Any]:
    (step,) = [s for s in steps(path) if s.get("uses", "").startswith(f"{action}@")]
    return step


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_release_commit(path: Path) -> None:
    lines = [line.strip() for line in path.read_text().splitlines()]
    uses = [line.removeprefix("- ").removeprefix("uses: ") for line in lines if "uses: " in line]
    assert uses, f"{path.name} uses no action"
    unpinned = [use for use in uses if not PINNED.match(use)]
    assert not unpinned, f"pin to a full commit SHA with `# vX.Y.Z` after it: {unpinned}"


def test_the_release_builds_both_architectures_with_the_tests_helm() -> None:
    build = step_using(RELEASE, "docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["file"] == "Containerfile" and build["push"] is True
    assert step_using(RELEASE, "Azure/setup-helm")["with"]["version"] == binaries.version("helm")


def test_the_release_pushes_where_the_chart_points_by_default() -> None:
    """Without repository variables, the image goes to values.yaml's image.repository (and the
    chart where docchecks.released_chart says, which the docs' oci:// references must match)."""
    where = release_defaults()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"{where['REGISTRY']}/{where['IMAGE_REPOSITORY']}" == values["image"]["repository"]
