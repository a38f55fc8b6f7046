"""docs/troubleshooting.md explains every condition reason the operator can set, under the
condition it belongs to, and no reason the code no longer sets.

The reasons are read from the source (dittofs_controller/operator/**): the reason argument of
every Outcome, Problem, api_problem, Verdict, Issue, Event and REST attempt, and the reason
tables (`*_ORDER`). A reason built at run time must be listed in DYNAMIC with what it expands to.
A reason can also travel through variables (returned by a helper, say) where that scan does not
see it, so every other CamelCase string literal of the operator counts as a reason too, unless
NOT_REASONS says what else it is.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from dittofs_controller.kube.resources import (
    INGRESSES,
    NETWORKPOLICIES,
    SERVICE_MONITORS,
    SERVICES,
)
from dittofs_controller.operator import conditions
from dittofs_controller.operator.config import ConfigReconciler
from dittofs_controller.operator.database.reconciler import DatabaseReconciler
from dittofs_controller.operator.network.reconciler import NetworkReconciler
from dittofs_controller.operator.serverconfig.reconciler import ServerConfigReconciler
from dittofs_controller.operator.storage.reconciler import StorageReconciler
from dittofs_controller.operator.workload import WorkloadReconciler

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "dittofs_controller/operator"
DOC = ROOT / "docs/troubleshooting.md"

# Callable name -> position of its reason argument.
REASON_ARGUMENT = {
    "true": 0,  # Outcome.true / false / unknown
    "false": 0,
    "unknown": 0,
    "Outcome": 1,
    "Problem": 0,
    "api_problem": 0,
    "Issue": 0,
    "Verdict": 1,
    "_attempt": 0,  # serverconfig: one REST change, its refusal reported under this reason
    "record": 2,  # EventRecorder.record(obj, type, reason, ...)
}
# Reasons made at run time: the network reconciler reports an API refusal as `<Kind>Rejected`
# for each kind it writes.
DYNAMIC = {
    ("network/reconciler.py", "f'{resource.kind}Rejected'"): {
        f"{resource.kind}Rejected"
        for resource in (SERVICES, INGRESSES, NETWORKPOLICIES, SERVICE_MONITORS)
    }
}
# Where a reason is set -> the conditions it can appear in (the workload package writes two).
CONDITIONS = {
    "config": {ConfigReconciler.condition},
    "storage": {StorageReconciler.condition},
    "database": {DatabaseReconciler.condition},
    "network": {NetworkReconciler.condition},
    "workload": {WorkloadReconciler.condition, conditions.PROGRESSING},
    "serverconfig": {ServerConfigReconciler.condition},
    "summary.py": {conditions.READY},
}
STATUSES = {"True", "False", "Unknown"}
# CamelCase string literals of operator/** that are not condition reasons.
NOT_REASONS = frozenset(
    {
        # Kubernetes kinds and the values of their fields
        "ConfigMap", "Secret", "Service", "Ingress", "NetworkPolicy", "StatefulSet",
        "PersistentVolumeClaim", "Event", "Opaque", "ClusterIP", "NodePort", "LoadBalancer",
        "Prefix", "Parallel", "RollingUpdate", "RuntimeDefault", "OnRootMismatch",
        "WaitForFirstConsumer", "Pending", "Lost", "Infeasible",
        "FileSystemResizePending", "ContainerCreating", "PodInitializing", "PodScheduled",
        "Succeeded", "Normal", "Warning",
        # condition types and statuses, phases, Event actions, spec values, exported names
        "ConfigReady", "StorageReady", "DatabaseReady", "NetworkReady", "Available",
        "Progressing", "ServerConfigured", "Degraded", "Failed", "Summarise", "Delete",
        "ConfigReconciler", "WorkloadReconciler", "ServerConfigReconciler",
        # units of the sizes DittoFS prints (serverconfig/payloads.py)
        "KiB", "MiB", "GiB", "TiB",
        # status.uploadDrain: outcomes and causes
        "Drained", "TimedOut", "Stop", "Restart", "Deletion",
    }
)  # fmt: skip


def code_reasons() -> dict[str, set[str]]:
    """Every reason the operator can set -> the files (relative to operator/) setting it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(OPERATOR.rglob("*.py")):
        where = path.relative_to(OPERATOR).as_posix()
        tree = ast.parse(path.read_text())
        constants = {}
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            if not isinstance(target, ast.Name):
                continue
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                constants[target.id] = value.value
            if target.id.endswith("_ORDER") and value is not None:
                for item in ast.walk(value):
                    if isinstance(item, ast.Constant) and re.fullmatch(
                        r"[A-Z]\w+", str(item.value)
                    ):
                        found[str(item.value)].add(where)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in REASON_ARGUMENT or len(node.args) <= REASON_ARGUMENT[name]:
                continue
            if name in ("true", "false", "unknown") and not (
                isinstance(func, ast.Attribute) and ast.unparse(func.value) == "Outcome"
            ):
                continue
            argument = node.args[REASON_ARGUMENT[name]]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found[argument.value].add(where)
            elif isinstance(argument, ast.Name) and argument.id in constants:
                found[constants[argument.id]].add(where)
            elif isinstance(argument, ast.JoinedStr):
                expansion = DYNAMIC.get((where, ast.unparse(argument)))
                assert expansion, f"{where}: reason {ast.unparse(argument)} is not in DYNAMIC"
                for reason in expansion:
                    found[reason].add(where)
    for status in STATUSES:
        found.pop(status, None)
    return found


def camel_literals() -> dict[str, set[str]]:
    """CamelCase string constants of operator/** (f-string parts aside) -> the files."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(OPERATOR.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parts = {
            id(value)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for value in node.values
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in parts
                and re.fullmatch(r"[A-Z][a-z][A-Za-z0-9]*", node.value)
            ):
                found[node.value].add(path.relative_to(OPERATOR).as_posix())
    return found


def all_reasons() -> dict[str, set[str]]:
    """Reasons -> where they are set: where the scan saw them, else where the literal is."""
    found = code_reasons()
    for literal, files in camel_literals().items():
        if literal not in NOT_REASONS | STATUSES | set(found):
            found[literal] = files
    return found


def documented() -> dict[str, set[str]]:
    """Reason -> the condition sections (`## Type`) whose `### `Reason`` explains it."""
    found: dict[str, set[str]] = defaultdict(set)
    section = ""
    for line in DOC.read_text().splitlines():
        if heading := re.fullmatch(r"## (\w+)", line):
            section = heading[1]
        elif reason := re.fullmatch(r"### `(\w+)`", line):
            found[reason[1]].add(section)
    return found


def test_the_reason_scan_finds_what_it_should() -> None:
    """Guards the scanner itself: a few reasons from each way of setting one."""
    reasons = code_reasons()
    assert {"Rendered", "ClaimPending", "InvalidSpec", "SecretNotFound", "StoreInUse"} <= set(
        reasons
    )
    assert {"ServiceRejected", "ServiceMonitorSkipped", "WaitingForServer"} <= set(reasons)
    assert len(reasons) >= 60


def test_every_condition_type_has_a_section() -> None:
    sections = set(re.findall(r"^## (\w+)$", DOC.read_text(), re.MULTILINE))
    types = {
        value
        for name, value in vars(conditions).items()
        if name.isupper() and isinstance(value, str)
    }
    assert types <= sections, f"no section for {sorted(types - sections)}"


def test_not_reasons_is_current() -> None:
    assert not NOT_REASONS & set(code_reasons()), "a reason is listed in NOT_REASONS"
    stale = NOT_REASONS - set(camel_literals())
    assert not stale, f"NOT_REASONS lists strings the operator no longer has: {sorted(stale)}"


def test_every_reason_is_explained_under_its_condition() -> None:
    doc = documented()
    missing = sorted(set(all_reasons()) - set(doc))
    assert not missing, (
        f"docs/troubleshooting.md does not explain: {missing} (if one is no condition reason, "
        "add it to NOT_REASONS in this test)"
    )
    misplaced = []
    for reason, files in all_reasons().items():
        for where in files:
            owner = CONDITIONS.get(where.split("/")[0])
            if owner and not owner & doc[reason]:
                misplaced.append(f"{reason} (set in {where}) belongs under {sorted(owner)}")
    assert not misplaced, misplaced


def test_no_reason_is_explained_that_the_code_cannot_set() -> None:
    stale = sorted(set(documented()) - set(all_reasons()))
    assert not stale, f"docs/troubleshooting.md explains reasons nothing sets: {stale}"
