"""Generate the chart's README from its values.yaml and values.schema.json.

Each value's description is the comment block directly above its key in values.yaml (the
convention is spelled out at the top of that file), its type comes from the schema and its
default from values.yaml. Values and schema must agree key for key. A development tool, so it
lives with the tests rather than in the operator package; tests/unit/test_chart_values.py checks
the committed README and the convention. Regenerate the README after changing either file:

    python -m tests.support.chartdocs > deploy/helm/dittofs-operator/README.md
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator, Mapping, Set
from pathlib import Path
from typing import Any

import attrs
import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "dittofs-operator"
REGENERATE = "python -m tests.support.chartdocs > deploy/helm/dittofs-operator/README.md"
# Helm passes a parent chart's `global` values to every subchart: the schema must admit them,
# though this chart reads none.
SCHEMA_ONLY = {"global"}
Schema = Mapping[str, Any]


@attrs.frozen
class Value:
    """One key of values.yaml. A structured one (an object whose keys the schema lists) is
    documented key by key below it and has no default of its own."""

    path: str
    kind: str
    default: Any
    structured: bool
    description: str
    example: Any
    has_example: bool
    types: frozenset[str]


@attrs.frozen
class Comment:
    """The comment block above a key: prose, then optionally an example value."""

    description: str
    example: Any
    has_example: bool
    lines: int
    problems: tuple[str, ...]


def _resolve(node: Schema, root: Schema) -> Schema:
    while "$ref" in node:
        node = root["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return node


def json_types(node: Schema, root: Schema) -> set[str]:
    """The JSON types a schema node admits ("integer" also counts as a "number")."""
    node = _resolve(node, root)
    found: set[str] = set()
    for alternative in [*node.get("anyOf", ()), *node.get("oneOf", ())]:
        found |= json_types(alternative, root)
    declared = node.get("type")
    if declared:
        found |= {declared} if isinstance(declared, str) else set(declared)
    constants = [*node.get("enum", ()), *([node["const"]] if "const" in node else [])]
    return found | {json_type(constant) for constant in constants}


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def admits(types: Set[str], value: Any) -> bool:
    actual = json_type(value)
    return actual in types or (actual == "integer" and "number" in types)


def kind(node: Schema, root: Schema) -> str:
    """The type in words, as the README shows it."""
    node = _resolve(node, root)
    if "enum" in node:
        return "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    alternatives = node.get("anyOf") or node.get("oneOf")
    if alternatives:
        return " or ".join(dict.fromkeys(kind(alt, root) for alt in alternatives))
    if "const" in node:
        return json_type(node["const"])
    if node.get("type") == "array":
        items = node.get("items")
        return f"list of {kind(items, root)}" if items else "list"
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return f"map of {kind(node['additionalProperties'], root)}"
    return str(node.get("type", "any"))


def comment_above(lines: list[str], line: int, column: int) -> Comment:
    """The description of the key at (line, column): the `#` lines right above it."""
    block: list[str] = []
    problems: list[str] = []
    i = line - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].index("#") != column:
            problems.append(f"line {i + 1}: indent the description like its key")
        block.insert(0, lines[i].lstrip()[1:])
        i -= 1
    prose: list[str] = []
    example: list[str] = []
    for number, text in enumerate(block, start=line - len(block) + 1):
        if text.startswith("  "):
            example.append(text[1:])
        elif text.startswith(" ") and not example:
            prose.append(text[1:])
        else:
            problems.append(f"line {number}: a description is `# ` prose, then an example")
    value = None
    try:
        value = yaml.safe_load(textwrap.dedent("\n".join(example))) if example else None
    except yaml.YAMLError as error:
        problems.append(f"line {line}: the example is not YAML: {error}")
    return Comment(" ".join(prose), value, bool(example), len(block), tuple(problems))


def _trailing_comment(lines: list[str], key: yaml.Node, value: yaml.Node) -> bool:
    """A comment after the key or its value on the key's line."""
    line = key.end_mark.line
    rest = lines[line][key.end_mark.column :]
    if value.start_mark.line == line:
        rest = lines[line][value.end_mark.column :] if value.end_mark.line == line else ""
    return "#" in rest


def _header_end(lines: list[str]) -> int:
    """The first line after the file's leading comment block (the only free-standing one)."""
    end = 0
    while end < len(lines) and lines[end].lstrip().startswith("#"):
        end += 1
    return end


@attrs.frozen
class Chart:
    """The chart's values.yaml (as text: its comments matter) and values.schema.json."""

    values_text: str
    schema: Schema

    @classmethod
    def load(cls, chart: Path) -> Chart:
        return cls(
            (chart / "values.yaml").read_text(),
            json.loads((chart / "values.schema.json").read_text()),
        )

    def walk(self) -> Iterator[Value | str]:
        """Every key of values.yaml in file order, and a problem (a string) for everything that
        breaks the comment convention or disagrees with the schema."""
        lines = self.values_text.splitlines()
        document = yaml.compose(self.values_text)
        values = yaml.safe_load(self.values_text)
        described: set[int] = set(range(_header_end(lines)))
        yield from self._mapping(document, values, self.schema, "", lines, described)
        for number, line in enumerate(lines):
            if line.lstrip().startswith("#") and number not in described:
                yield f"line {number + 1}: a comment that is no key's description: {line.strip()}"

    def _mapping(
        self,
        node: yaml.MappingNode,
        values: Mapping[str, Any],
        schema: Schema,
        prefix: str,
        lines: list[str],
        described: set[int],
    ) -> Iterator[Value | str]:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            where = prefix.removesuffix(".") or "the top level"
            yield f"{where}: the schema must refuse unknown keys there"
        exempt = set() if prefix else SCHEMA_ONLY
        for name in sorted(set(properties) - set(values) - exempt):
            yield f"{prefix}{name}: in values.schema.json but not in values.yaml"
        for key, child in node.value:
            name = key.value
            path = prefix + name
            line, column = key.start_mark.line, key.start_mark.column
            comment = comment_above(lines, line, column)
            described.update(range(line - comment.lines, line))
            yield from (f"{path}: {problem}" for problem in comment.problems)
            if not comment.description:
                yield f"{path}: no description (a `# ` comment right above the key)"
            if _trailing_comment(lines, key, child):
                yield f"{path}: a comment after the value; move it above the key"
            if name not in properties:
                yield f"{path}: not in values.schema.json"
                continue
            node_schema = _resolve(properties[name], self.schema)
            value = values[name]
            types = json_types(node_schema, self.schema)
            if not admits(types, value):
                yield f"{path}: values.yaml has {json_type(value)}, the schema {sorted(types)}"
            structured = isinstance(value, dict) and "properties" in node_schema
            yield Value(
                path=path,
                kind=kind(node_schema, self.schema),
                default=None if structured else value,
                structured=structured,
                description=comment.description,
                example=comment.example,
                has_example=comment.has_example,
                types=frozenset(types),
            )
            if structured:
                yield from self._mapping(child, value, node_schema, f"{path}.", lines, described)

    def values(self) -> list[Value]:
        return [entry for entry in self.walk() if isinstance(entry, Value)]

    def problems(self) -> list[str]:
        return [entry for entry in self.walk() if isinstance(entry, str)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(value: Any) -> str:
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def _row(value: Value) -> str:
    default = "" if value.structured else _code(value.default)
    description = value.description
    if value.has_example:
        description += f" {_code(value.example)}"
    return f"| `{value.path}` | {_cell(value.kind)} | {_cell(default)} | {_cell(description)} |"


INSTALL = """\
## Installing

The chart is not published in a Helm repository: install it from a clone of
[the repository](../../..), with the commands below run from its root. It needs Kubernetes
`{kube_version}` and runs the image `{repository}:<appVersion>`: build and push it as
[docs/install.md](../../../docs/install.md#the-image) describes, and set `image.repository` to
your registry.

<!-- check: run -->
```sh
helm install dittofs-operator deploy/helm/dittofs-operator \\
  --namespace dittofs-system --create-namespace
```

Helm never upgrades the CRD in `crds/`: apply it first on every upgrade.

<!-- check: run -->
```sh
kubectl apply --server-side --force-conflicts -f deploy/helm/dittofs-operator/crds/
helm upgrade dittofs-operator deploy/helm/dittofs-operator --namespace dittofs-system \\
  --reuse-values
```

[docs/install.md](../../../docs/install.md) goes further: values files, the namespace-scoped
mode, metrics, alerts and the dashboard, uninstalling and what stays, plain manifests.
"""

VALUES = """\
## Values

Every key of [values.yaml](values.yaml), whose comments are the descriptions here, with its
type from [values.schema.json](values.schema.json). The schema refuses unknown keys and wrong
types; the templates refuse the combinations it cannot express (several replicas without
leader election, leader timings out of order, a ServiceMonitor the NetworkPolicy would keep
out...). An object whose keys are listed has no default of its own: its keys follow it.
Numbers with a fraction need a values file or `--set-json` (`--set` passes `0.5` as a string).
"""


def readme(chart: Chart, metadata: Mapping[str, Any]) -> str:
    """The README of the chart described by Chart.yaml's `metadata`."""
    repository = yaml.safe_load(chart.values_text)["image"]["repository"]
    lines = [
        f"# {metadata['name']}",
        "",
        f"<!-- GENERATED from values.yaml and values.schema.json by `{REGENERATE}`; "
        "do not edit. -->",
        "",
        f"{metadata['description']} Chart version {metadata['version']}, operator version "
        f"{metadata['appVersion']}.",
        "",
        INSTALL.format(kube_version=metadata["kubeVersion"], repository=repository),
        VALUES,
        "| Key | Type | Default | Description |",
        "| --- | --- | --- | --- |",
        *(_row(value) for value in chart.values()),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    chart = Chart.load(CHART)
    problems = chart.problems()
    if problems:
        sys.stderr.write("values.yaml breaks the convention:\n" + "\n".join(problems) + "\n")
        return 1
    sys.stdout.write(readme(chart, yaml.safe_load((CHART / "Chart.yaml").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
