"""The chart's Grafana dashboard: every query names series the operator exports, with labels
those series carry and values they take; promtool parses every query; the chart ships the JSON
unchanged in a ConfigMap for Grafana's sidecar when asked, and nothing otherwise."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from dittofs_controller.operator import conditions
from dittofs_controller.operator.metrics import HEALTH_VALUES
from dittofs_controller.runtime.metrics import RECONCILE_RESULTS
from tests.support.exported import exported_series
from tests.support.incluster import CHART, find, render_chart
from tests.testbed import binaries

# The first run builds helm and promtool when missing (minutes on a cold Go cache).
pytestmark = (
    []
    if binaries.is_built("helm") and binaries.is_built("promtool")
    else [pytest.mark.timeout(1800)]
)

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
KEY = "dittofs-operator.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Prometheus attaches these to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})
# The values a query may compare these labels with: the ones the operator exports.
LABEL_VALUES = {
    "phase": set(conditions.PHASES),
    "status": set(conditions.STATUSES),
    "health": set(HEALTH_VALUES),
    "result": set(RECONCILE_RESULTS),
    "condition": {
        conditions.CONFIG_READY,
        conditions.STORAGE_READY,
        conditions.DATABASE_READY,
        conditions.NETWORK_READY,
        conditions.AVAILABLE,
        conditions.PROGRESSING,
        conditions.SERVER_CONFIGURED,
        conditions.READY,
    },
}
CUMULATIVE = ("_total", "_bucket", "_sum", "_count")  # only meaningful through rate()
RATES = {"rate", "irate", "increase"}
GROUPING = {"by", "without"}
MATCHING = {"on", "ignoring", "group_left", "group_right"}
OPERATOR_WORDS = {"and", "or", "unless", "bool", "offset", "atan2"}

STRING = r'"(?:[^"\\]|\\.)*"'
TOKEN = re.compile(
    rf"""(?P<space>\s+)
    |(?P<string>{STRING})
    |(?P<range>\[[^\]]*\])
    |(?P<selector>\{{(?:{STRING}|[^}}"])*\}})
    |(?P<number>\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<punct>[(),])
    |(?P<op>==|!=|>=|<=|[-+*/%^<>])""",
    re.VERBOSE,
)
MATCHER = re.compile(rf"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({STRING})\s*(?:,|$)")
LABEL_VALUES_QUERY = re.compile(r"label_values\((.+),\s*(\w+)\)")

Doc = dict[str, Any]


@attrs.frozen
class Token:
    kind: str
    text: str


@attrs.frozen
class Metric:
    """A series a query selects: its name, its selector's matchers, its position."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]
    at: int
    rated: bool  # the argument of rate(), irate() or increase()


def tokens(expr: str) -> list[Token]:
    found, position = [], 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        assert match, f"cannot read {expr[position:]!r} in {expr!r}"
        assert match.lastgroup is not None
        if match.lastgroup != "space":
            found.append(Token(match.lastgroup, match.group()))
        position = match.end()
    return found


def matchers(selector: str) -> tuple[tuple[str, str, str], ...]:
    body, found, position = selector[1:-1], [], 0
    while body[position:].strip():
        match = MATCHER.match(body, position)
        assert match, f"cannot read the matchers of {selector}"
        label, op, value = match.groups()
        found.append((label, op, json.loads(value)))
        position = match.end()
    return tuple(found)


def matching_paren(toks: list[Token], at: int, step: int) -> int:
    """The index of the parenthesis closing (step 1) or opening (step -1) the one at `at`."""
    depth = 0
    for index in range(at, len(toks) if step > 0 else -1, step):
        depth += {"(": 1, ")": -1}.get(toks[index].text, 0) * step
        if depth == 0:
            return index
    raise AssertionError(f"unbalanced parentheses in {' '.join(t.text for t in toks)}")


def label_list(toks: list[Token], opening: int) -> tuple[list[str], int]:
    """The label names of `(a, b)` starting at `opening`, and the index of its `)`."""
    closing = matching_paren(toks, opening, 1)
    names = [tok.text for tok in toks[opening + 1 : closing] if tok.kind == "ident"]
    return names, closing


@attrs.frozen
class Query:
    expr: str
    metrics: tuple[Metric, ...]
    # (by|without, labels, the metrics aggregated)
    groupings: tuple[tuple[str, tuple[str, ...], tuple[Metric, ...]], ...]
    matching: tuple[str, ...]  # labels of on/ignoring/group_left/group_right

    @classmethod
    def parse(cls, expr: str) -> Query:
        toks = tokens(expr)
        metrics: list[Metric] = []
        clauses: list[tuple[str, list[str], tuple[int, int]]] = []
        matching: list[str] = []
        label_names: set[int] = set()  # indices of the tokens in label lists
        for index, tok in enumerate(toks):
            after = toks[index + 1] if index + 1 < len(toks) else None
            if tok.kind == "selector":
                assert index and toks[index - 1].kind == "ident", f"selector without a name: {expr}"
            if tok.kind != "ident" or index in label_names:
                continue
            if tok.text in GROUPING | MATCHING:
                assert after is not None and after.text == "(", f"{tok.text} without labels: {expr}"
                names, closing = label_list(toks, index + 1)
                label_names.update(range(index + 1, closing))
                if tok.text in MATCHING:
                    matching.extend(names)
                elif closing + 1 < len(toks) and toks[closing + 1].text == "(":  # sum by (l) (x)
                    end = matching_paren(toks, closing + 1, 1)
                    clauses.append((tok.text, names, (closing + 1, end)))
                else:  # sum (x) by (l)
                    assert toks[index - 1].text == ")", f"{tok.text} of what? {expr}"
                    clauses.append((tok.text, names, (matching_paren(toks, index - 1, -1), index)))
            elif tok.text in OPERATOR_WORDS or (after is not None and after.text == "("):
                continue  # an operator, a function or an aggregation
            elif after is not None and after.kind == "ident" and after.text in GROUPING:
                continue  # an aggregation: sum by (...)
            else:
                selector = after.text if after is not None and after.kind == "selector" else "{}"
                call = toks[index - 2].text if index >= 2 else ""
                rated = call in RATES and toks[index - 1].text == "("
                metrics.append(Metric(tok.text, matchers(selector), index, rated))
        groupings = tuple(
            (word, tuple(names), tuple(m for m in metrics if start < m.at < end))
            for word, names, (start, end) in clauses
        )
        return cls(expr, tuple(metrics), groupings, tuple(matching))


def problems(
    query: Query, series: dict[str, frozenset[str]], *, plotted: bool = True
) -> Iterator[str]:
    """What `query` gets wrong about the exported series. A `plotted` query takes cumulative
    series (counters, histograms) through rate(), irate() or increase() only, gauges never."""
    for metric in query.metrics:
        if metric.name not in series:
            yield f"{metric.name} is not exported"
            continue
        if plotted and metric.rated != metric.name.endswith(CUMULATIVE):
            yield f"{metric.name} {'in' if metric.rated else 'outside'} rate()"
        labels = series[metric.name] | TARGET_LABELS
        for label, op, value in metric.matchers:
            if label not in labels:
                yield f"{metric.name} has no label {label}"
            elif op in ("=", "!=") and label in LABEL_VALUES and value not in LABEL_VALUES[label]:
                yield f"{metric.name}: {label} is never {value!r}"
    for word, names, metrics in query.groupings:
        assert metrics, f"{word} ({', '.join(names)}) aggregates no series: {query.expr}"
        for metric in metrics:
            labels = series.get(metric.name, frozenset()) | TARGET_LABELS
            yield from (
                f"{word} {n}: {metric.name} has no label {n}" for n in names if n not in labels
            )
            if metric.name.endswith("_bucket") and word == "by" and "le" not in names:
                yield f"by ({', '.join(names)}) drops the le of {metric.name}"
    for name in query.matching:
        for metric in query.metrics:
            if name not in series.get(metric.name, frozenset()) | TARGET_LABELS:
                yield f"on/ignoring {name}: {metric.name} has no label {name}"


def dashboard() -> Doc:
    loaded: Doc = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: Doc) -> list[Doc]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels") or ())
    return found


def targets(board: Doc) -> list[tuple[Doc, Doc]]:
    return [(panel, target) for panel in panels(board) for target in panel.get("targets") or ()]


def variable_queries(board: Doc) -> list[tuple[str, str]]:
    """(name, query) of each query variable; Grafana stores the query as text or in a dict."""
    found = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((variable["name"], query["query"] if isinstance(query, dict) else query))
    return found


# -- the queries ---------------------------------------------------------------------------


def test_every_query_names_exported_series_with_their_labels_and_values() -> None:
    series = exported_series()
    board = dashboard()
    found = [
        f"panel {panel['id']} ({panel['title']}) {target['refId']}: {problem}"
        for panel, target in targets(board)
        for problem in problems(Query.parse(target["expr"]), series)
    ]
    assert found == []
    named = {metric.name for _, t in targets(board) for metric in Query.parse(t["expr"]).metrics}
    assert len(named) >= 20, sorted(named)  # the parser found the queries' series


def test_every_legend_names_a_label_of_its_series() -> None:
    series = exported_series()
    for panel, target in targets(dashboard()):
        query = Query.parse(target["expr"])
        labels = TARGET_LABELS.union(*(series.get(m.name, ()) for m in query.metrics))
        for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert name in labels, f"panel {panel['id']} ({panel['title']}): legend {name}"


def test_every_variable_queries_an_exported_series_and_label() -> None:
    series = exported_series()
    queries = variable_queries(dashboard())
    assert {name for name, _ in queries} >= {"namespace", "server"}
    for name, text in queries:
        match = LABEL_VALUES_QUERY.fullmatch(text)
        assert match, f"variable {name}: {text}"
        selector, label = match.groups()
        query = Query.parse(selector)
        assert len(query.metrics) == 1, f"variable {name}: {text}"
        assert list(problems(query, series, plotted=False)) == [], f"variable {name}: {text}"
        assert label in series[query.metrics[0].name] | TARGET_LABELS, f"variable {name}: {text}"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query as a recording rule, Grafana's $__rate_interval given a value; the other
    variables appear only inside label matchers' strings."""
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}:{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "5m"),
        }
        for panel, target in targets(dashboard())
    ]
    rule_file = tmp_path / "dashboard-rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    command = [str(binaries.executable("promtool", "promtool")), "check", "rules", str(rule_file)]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_wrong_name_label_or_value_is_caught() -> None:
    """The checks above can fail: one mistake of each kind."""
    series = exported_series()

    def caught(expr: str) -> list[str]:
        return list(problems(Query.parse(expr), series))

    assert caught('sum by (name) (rate(workqueue_adds_total{job=~"$job"}[5m]))') == []
    assert caught("dittofs_server_phases") == ["dittofs_server_phases is not exported"]
    assert caught("sum(rate(dittofs_server_api_errors[5m]))")  # the _total left out
    assert caught('dittofs_server_phase{server="a"}') == [
        "dittofs_server_phase has no label server"
    ]
    assert caught('dittofs_server_condition{status="true"}')  # statuses are True/False/Unknown
    assert caught("max by (pod) (leader_election_master_status)")
    assert caught("histogram_quantile(0.9, sum by (name) (rate(workqueue_depth_bucket[5m])))")
    assert caught(
        "histogram_quantile(0.9, sum by (name) (rate(workqueue_work_duration_seconds_bucket[5m])))"
    ) == ["by (name) drops the le of workqueue_work_duration_seconds_bucket"]
    assert caught("sum(controller_runtime_reconcile_total)")  # a counter needs rate()
    assert caught("rate(workqueue_depth[5m])")  # a gauge does not
    assert caught('sum(rate(dittofs_server_phase{phase="Running"}[5m])) or vector(0)')
    assert caught(
        "max by (name) (leader_election_master_status) and on (phase) dittofs_server_phase"
    )


# -- the dashboard's shape -------------------------------------------------------------------


def test_every_panel_reads_the_chosen_data_source() -> None:
    board = dashboard()
    (chooser,) = (v for v in board["templating"]["list"] if v["name"] == "datasource")
    assert (chooser["type"], chooser["query"]) == ("datasource", "prometheus")
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['id']} ({panel['title']}) has no query"
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} covers {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels(board):
        refs = [target["refId"] for target in panel.get("targets") or ()]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_is_importable_as_is() -> None:
    """No id of one Grafana's database, a fixed uid (links survive reinstalls), a schema
    version current Grafanas load without migrating much."""
    board = dashboard()
    assert board.get("id") is None
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert board["schemaVersion"] >= 39
    assert "__inputs" not in board  # no import-time prompt: the datasource variable chooses


# -- the chart -----------------------------------------------------------------------------


def test_the_chart_ships_the_dashboard_when_asked() -> None:
    assert not find(render_chart(), "ConfigMap")
    (configmap,) = find(render_chart({"grafanaDashboard": {"enabled": True}}), "ConfigMap")
    assert configmap["data"] == {KEY: DASHBOARD.read_text()}  # byte for byte
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "dittofs-system"
    assert "annotations" not in configmap["metadata"]


def test_the_sidecar_label_namespace_and_folder_can_be_chosen() -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "labels": {"grafana_dashboard": None, "dashboards": "dittofs"},
            "annotations": {"grafana_folder": "DittoFS"},
        }
    }
    (configmap,) = find(render_chart(values), "ConfigMap")
    meta = configmap["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["dashboards"] == "dittofs" and "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {"grafana_folder": "DittoFS"}
    assert json.loads(configmap["data"][KEY]) == dashboard()
