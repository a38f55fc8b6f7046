"""The chart's values are documented and typed: the README is generated from values.yaml (every
key described by the comment above it), values.yaml and values.schema.json agree key for key,
and helm refuses a wrong type or an unknown key anywhere. (helm lint runs in
test_deploy_render.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import chartdocs
from tests.support.chartdocs import Chart
from tests.support.incluster import HELM_BUILD_TIMEOUT, ChartError, find, render_chart
from tests.testbed import binaries

pytestmark = [] if binaries.is_built("helm") else [pytest.mark.timeout(HELM_BUILD_TIMEOUT)]

README = chartdocs.CHART / "README.md"


@pytest.fixture(scope="module")
def chart() -> Chart:
    return Chart.load(chartdocs.CHART)


def test_the_chart_readme_is_current(chart: Chart) -> None:
    metadata = yaml.safe_load((chartdocs.CHART / "Chart.yaml").read_text())
    assert README.read_text() == chartdocs.readme(chart, metadata), (
        f"deploy/helm/dittofs-operator/README.md is stale; regenerate it with:\n"
        f"  {chartdocs.REGENERATE}"
    )


def test_every_value_is_described_and_typed_by_the_schema(chart: Chart) -> None:
    problems = chart.problems()
    assert not problems, "\n".join(problems)
    assert all(value.description for value in chart.values())


def test_the_readme_lists_every_key_with_its_type_and_default(chart: Chart) -> None:
    rows = {
        line.split(" | ")[0].removeprefix("| ").strip("`"): line.split(" | ")[1:3]
        for line in README.read_text().splitlines()
        if line.startswith("| `")
    }
    paths = [value.path for value in chart.values()]
    assert list(rows) == paths and len(paths) == len(set(paths))
    assert rows["workers"] == ["integer", "`2`"]
    assert rows["logLevel"] == ["one of `debug`, `info`, `warning`, `error`", '`"info"`']
    assert rows["grafanaDashboard.labels"] == ["map of string", '`{"grafana_dashboard": "1"}`']
    assert rows["metrics.serviceMonitor"] == ["object", ""]


def _with(path: str, value: Any, into: dict[str, Any]) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    level = into
    for name in parents:
        level = level.setdefault(name, {})
    level[leaf] = value
    return into


def _refusal(values: dict[str, Any]) -> str:
    with pytest.raises(ChartError) as refused:
        render_chart(values)
    return str(refused.value)


def test_the_schema_refuses_a_wrong_type_for_every_value(chart: Chart) -> None:
    """One render with every value of the wrong type: helm names each of them."""
    leaves = [value for value in chart.values() if not value.structured]
    wrong: dict[str, Any] = {}
    for value in leaves:
        bad = next(c for c in (7, "x", True) if not chartdocs.admits(value.types, c))
        _with(value.path, bad, wrong)
    refusal = _refusal(wrong)
    unchecked = [v.path for v in leaves if f"at '/{v.path.replace('.', '/')}'" not in refusal]
    assert not unchecked, f"the schema accepts a wrong type for {unchecked}:\n{refusal}"


def test_the_schema_refuses_an_unknown_key_at_every_level(chart: Chart) -> None:
    levels = ["", *(value.path for value in chart.values() if value.structured)]
    typos: dict[str, Any] = {}
    for level in levels:
        _with(f"{level}.typo" if level else "typo", 1, typos)
    refusal = _refusal(typos)
    for level in levels:
        pointer = "/" + level.replace(".", "/") if level else ""
        assert f"at '{pointer}': additional properties 'typo' not allowed" in refusal, level


def test_the_examples_in_values_yaml_are_valid_values(chart: Chart) -> None:
    examples: dict[str, Any] = {}
    for value in chart.values():
        if value.has_example:
            _with(value.path, value.example, examples)
    assert set(examples) >= {"imagePullSecrets", "networkPolicy", "extraEnv"}
    docs = render_chart(examples)
    (deployment,) = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == examples["imagePullSecrets"]
    (policy,) = find(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][1]["from"] == examples["networkPolicy"]["metricsFrom"]


# The checker itself, on small values files: each breach of the convention is reported.
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": {"type": "object"},
        "port": {"type": "integer"},
        "image": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"tag": {"type": "string"}},
        },
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
GOOD = """\
# A header.

# The port.
port: 8080
# The image.
image:
  # Its tag:
  #   v1
  tag: ""
# Labels.
labels: {}
"""


def problems(values_text: str, schema: dict[str, Any] = SCHEMA) -> list[str]:
    return Chart(values_text, schema).problems()


def test_a_file_that_follows_the_convention_passes() -> None:
    chart = Chart(GOOD, SCHEMA)
    assert chart.problems() == []
    tag = chart.values()[2]
    assert (tag.path, tag.kind, tag.description, tag.example) == (
        "image.tag",
        "string",
        "Its tag:",
        "v1",
    )


@pytest.mark.parametrize(
    ("values_text", "problem"),
    [
        (GOOD.replace("# The port.\n", ""), "port: no description"),
        (GOOD.replace("# The port.\n", "# The port.\n\n"), "line 3: a comment that is no key's"),
        (GOOD.replace("port: 8080", "port: 8080 # TCP"), "port: a comment after the value"),
        (GOOD.replace("image:", "image: # ours"), "image: a comment after the value"),
        (GOOD.replace("  # Its tag:", "# Its tag:"), "image.tag: line 7: indent the description"),
        (GOOD.replace("#   v1", "#   v1\n  # more prose"), "a description is `# ` prose"),
        (GOOD.replace("port: 8080", "port: high"), "port: values.yaml has string"),
        (GOOD.replace("#   v1", "#   [v1"), "the example is not YAML"),
        (GOOD + "# Extra.\nextra: 1\n", "extra: not in values.schema.json"),
        (GOOD.replace("# Labels.\nlabels: {}\n", ""), "labels: in values.schema.json but not"),
    ],
)
def test_each_breach_of_the_convention_is_reported(values_text: str, problem: str) -> None:
    found = problems(values_text)
    assert any(problem in line for line in found), found


def test_an_object_that_lets_unknown_keys_through_is_reported() -> None:
    schema = json.loads(json.dumps(SCHEMA))
    del schema["properties"]["image"]["additionalProperties"]
    assert problems(GOOD, schema) == ["image: the schema must refuse unknown keys there"]


def test_the_generator_refuses_to_write_a_readme_with_holes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "values.yaml").write_text(GOOD.replace("# The port.\n", ""))
    (tmp_path / "values.schema.json").write_text(json.dumps(SCHEMA))
    monkeypatch.setattr(chartdocs, "CHART", tmp_path)
    assert chartdocs.main() == 1
    assert "port: no description" in capsys.readouterr().err
