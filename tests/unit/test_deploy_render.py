"""The Helm chart, the plain manifests and the Containerfile, checked without a cluster.

The chart must agree with the operator: the CRD it ships is the generated one, every environment
variable it sets is a real setting, its RBAC covers every API resource the code touches (from
one rules file, in both scoping modes) and its pod meets the restricted Pod Security Standard.
The plain manifests must be the chart's default rendering, the image pinned and non-root.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

import dittofs_controller
from dittofs_controller.cli import build_parser
from dittofs_controller.kube import resources
from dittofs_controller.settings import Settings, load_settings, setting_options
from tests.support.incluster import (
    CHART,
    HELM_BUILD_TIMEOUT,
    ChartError,
    containerfile_stages,
    find,
    helm,
    image_env,
    operator_roles,
    pip_install_flags,
    render_chart,
    render_chart_text,
)
from tests.testbed import binaries

# The first render builds helm when it is missing (minutes on a cold Go cache).
pytestmark = [] if binaries.is_built("helm") else [pytest.mark.timeout(HELM_BUILD_TIMEOUT)]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "dittofs_controller"
CRD_SOURCE = REPO / "crd" / "dittoservers.dittofs.io.yaml"
CRD_COPY = CHART / "crds" / CRD_SOURCE.name
RULES = CHART / "rbac" / "rules.yaml"
INSTALL = REPO / "deploy" / "manifests" / "install.yaml"
INSTALL_RELEASE = "dittofs-operator"
INSTALL_NAMESPACE = "dittofs-system"
REFRESH_INSTALL = (
    f"helm template {INSTALL_RELEASE} deploy/helm/dittofs-operator --namespace "
    f"{INSTALL_NAMESPACE} --include-crds > deploy/manifests/install.yaml"
)

# Rules granted ahead of the sub-reconciler that will use them (being written now). When the
# code starts using one, the test below says to drop it from here; whatever is still here when
# every reconciler exists is a rule to delete.
AHEAD_OF_CODE: dict[tuple[str, str], str] = {}
# Resource constants the operator's code may name without needing a rule of its own.
NO_RULE_NEEDED = {
    "LEASES": "granted by the leader-election Role (templates/rbac.yaml), limited by name",
}

Doc = dict[str, Any]


def rules_of(doc: Doc) -> list[Doc]:
    return list(doc.get("rules") or ())


def granted(rules: list[Doc]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples, ignoring resourceNames."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_env(docs: list[Doc]) -> dict[str, Any]:
    (deployment,) = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def operator_cluster_role(docs: list[Doc]) -> Doc:
    (cluster_role,) = find(operator_roles(docs), "ClusterRole")
    return cluster_role


def env_value(docs: list[Doc], name: str) -> str | None:
    item = operator_env(docs).get(name)
    return None if item is None else str(item["value"])


@pytest.fixture(scope="module")
def default() -> list[Doc]:
    return render_chart()


def test_the_chart_ships_the_generated_crd() -> None:
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"{CRD_COPY.relative_to(REPO)} differs from {CRD_SOURCE.relative_to(REPO)}; refresh it:\n"
        f"  cp {CRD_SOURCE.relative_to(REPO)} {CRD_COPY.relative_to(REPO)}"
    )


def test_the_chart_deploys_this_version_of_the_operator(default: list[Doc]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == dittofs_controller.__version__
    (deployment,) = find(default, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{dittofs_controller.__version__}")


def test_the_plain_manifests_are_the_rendered_chart() -> None:
    rendered = render_chart_text(
        release=INSTALL_RELEASE, namespace=INSTALL_NAMESPACE, include_crds=True
    )
    assert INSTALL.read_text() == rendered, (
        f"deploy/manifests/install.yaml is not the chart's default rendering; refresh it:\n"
        f"  {REFRESH_INSTALL}"
    )


def test_the_plain_manifests_install_into_a_restricted_namespace() -> None:
    kustomization = yaml.safe_load((INSTALL.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["namespace.yaml", "install.yaml"]
    namespace = yaml.safe_load((INSTALL.parent / "namespace.yaml").read_text())
    assert namespace["metadata"]["name"] == INSTALL_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_environment_variable_is_an_operator_setting(default: list[Doc]) -> None:
    settings_env = {option.env for _, option in setting_options()}
    env = operator_env(default)
    unknown = {name for name in env if name.startswith("DITTOFS_CONTROLLER_")} - settings_env
    assert not unknown, f"the Deployment sets variables no setting reads: {sorted(unknown)}"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # Every value must parse as the operator would parse it.
    options = {option.env: option for _, option in setting_options()}
    for name, item in env.items():
        if name in options:
            options[name].parse(str(item["value"]))


def test_the_pod_probes_the_health_port_and_outlives_the_drain(default: list[Doc]) -> None:
    (deployment,) = find(default, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"health": 8081, "metrics": 8080}
    assert env_value(default, "DITTOFS_CONTROLLER_HEALTH_PORT") == "8081"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    grace = float(env_value(default, "DITTOFS_CONTROLLER_SHUTDOWN_GRACE") or "nan")
    assert grace == attrs.fields(Settings).shutdown_grace.default
    assert pod["terminationGracePeriodSeconds"] > grace
    assert container["args"] == ["run"] and "command" not in container


def test_the_pod_meets_the_restricted_pod_security_standard(default: list[Doc]) -> None:
    (deployment,) = find(default, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsUser"] == 65532  # the Containerfile's USER


def test_no_rule_uses_a_wildcard() -> None:
    for docs in (render_chart(), render_chart({"watchNamespaces": ["team-a"]})):
        for doc in find(docs, "ClusterRole") + find(docs, "Role"):
            for rule in rules_of(doc):
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in (rule.get(key) or ()), (doc["metadata"]["name"], rule)
                assert not rule.get("nonResourceURLs")


def test_both_scoping_modes_grant_the_same_rules(default: list[Doc]) -> None:
    source = yaml.safe_load(RULES.read_text())
    assert rules_of(operator_cluster_role(default)) == source["namespaced"] + source["cluster"]
    assert not [
        role for role in find(default, "Role") if "leader-election" not in role["metadata"]["name"]
    ]

    scoped = render_chart({"watchNamespaces": ["team-a", "team-b"]})
    assert rules_of(operator_cluster_role(scoped)) == source["cluster"], (
        "namespace-scoped mode: cluster reads only"
    )
    roles = {
        role["metadata"]["namespace"]: role
        for role in find(scoped, "Role")
        if "leader-election" not in role["metadata"]["name"]
    }
    assert sorted(roles) == ["team-a", "team-b"]
    for role in roles.values():
        assert rules_of(role) == source["namespaced"]
    bindings = {b["metadata"]["namespace"]: b for b in find(scoped, "RoleBinding")}
    assert {"team-a", "team-b"} <= set(bindings)
    for namespace in ("team-a", "team-b"):
        (subject,) = bindings[namespace]["subjects"]
        assert subject["namespace"] == "dittofs-system"
    assert env_value(scoped, "DITTOFS_CONTROLLER_NAMESPACES") == "team-a,team-b"
    assert env_value(default, "DITTOFS_CONTROLLER_NAMESPACES") is None


def test_owner_reference_enforcement_rules_come_only_with_their_value(default: list[Doc]) -> None:
    extra = yaml.safe_load(RULES.read_text())["ownerReferencesPermissionEnforcement"]
    extra_verbs = granted(extra)
    assert extra_verbs == {
        ("dittofs.io", "dittoservers/finalizers", "update"),
        ("", "secrets", "delete"),
        ("", "persistentvolumeclaims", "delete"),
        ("pgv2.percona.com", "perconapgclusters", "delete"),
    }
    assert not extra_verbs & granted(rules_of(operator_cluster_role(default)))
    value = {"rbac": {"ownerReferencesPermissionEnforcement": True}}
    everywhere = render_chart(value)
    assert extra_verbs <= granted(rules_of(operator_cluster_role(everywhere)))
    scoped = render_chart({**value, "watchNamespaces": ["team-a"]})
    (role,) = [r for r in find(scoped, "Role") if "leader-election" not in r["metadata"]["name"]]
    assert extra_verbs <= granted(rules_of(role))
    assert not extra_verbs & granted(rules_of(operator_cluster_role(scoped)))


def test_the_lease_is_the_only_one_the_operator_may_touch(default: list[Doc]) -> None:
    (role,) = [r for r in find(default, "Role") if r["metadata"]["name"].endswith("-election")]
    assert role["metadata"]["namespace"] == "dittofs-system"
    lease = env_value(default, "DITTOFS_CONTROLLER_LEADER_ELECT_LEASE_NAME")
    assert env_value(default, "DITTOFS_CONTROLLER_LEADER_ELECT_NAMESPACE") == "dittofs-system"
    by_name = [rule for rule in rules_of(role) if rule.get("resourceNames")]
    assert by_name == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        }
    ]
    without_election = render_chart({"leaderElection": {"enabled": False}})
    assert not [r for r in find(without_election, "Role") if "election" in r["metadata"]["name"]]
    assert env_value(without_election, "DITTOFS_CONTROLLER_LEADER_ELECT") == "false"


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
EDITOR_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}])
def test_people_get_dittoserver_roles_through_admin_edit_and_view(values: Doc) -> None:
    """Two ClusterRoles for people, aggregated into the built-in roles, in both scoping modes;
    they name DittoServers only (never Secrets), and the chart binds them to nobody."""
    docs = render_chart(values, release="r", namespace="ops")
    editor = find(docs, "ClusterRole", "r-dittofs-operator-ops-dittoserver-editor")
    viewer = find(docs, "ClusterRole", "r-dittofs-operator-ops-dittoserver-viewer")
    assert editor and viewer
    aggregated_into = {
        role["metadata"]["name"].rsplit("-", 1)[1]: {
            key.removeprefix(AGGREGATE)
            for key, value in role["metadata"]["labels"].items()
            if key.startswith(AGGREGATE) and value == "true"
        }
        for role in editor + viewer
    }
    assert aggregated_into == {"editor": {"admin", "edit"}, "viewer": {"view"}}
    assert granted(rules_of(editor[0])) == {
        ("dittofs.io", "dittoservers", verb) for verb in EDITOR_VERBS
    } | {("dittofs.io", "dittoservers/status", "get")}
    assert granted(rules_of(viewer[0])) == {
        ("dittofs.io", resource, verb)
        for resource in ("dittoservers", "dittoservers/status")
        for verb in ("get", "list", "watch")
    }
    assert editor[0] not in operator_roles(docs) and viewer[0] not in operator_roles(docs)
    # The chart's own selector labels, so the plain-manifest uninstall removes them too.
    assert editor[0]["metadata"]["labels"]["app.kubernetes.io/name"] == "dittofs-operator"
    without = render_chart({**values, "rbac": {"aggregateRoles": False}}, release="r")
    assert not [r for r in find(without, "ClusterRole") if "dittoserver-" in r["metadata"]["name"]]


def test_every_resource_the_code_uses_has_a_rule(default: list[Doc]) -> None:
    """A new API resource in the code needs a rule; a rule no code needs must go."""
    used = _resources_named_in_code()
    ruled = {
        (group, resource.split("/")[0])
        for group, resource, _ in granted(rules_of(operator_cluster_role(default)))
    }
    missing = {
        name: (resource.group, resource.plural)
        for name, resource in used.items()
        if name not in NO_RULE_NEEDED and (resource.group, resource.plural) not in ruled
    }
    assert not missing, f"add rules to {RULES.relative_to(REPO)} for {missing}"
    in_code = {(resource.group, resource.plural) for resource in used.values()}
    now_used = {key: why for key, why in AHEAD_OF_CODE.items() if key in in_code}
    assert not now_used, f"the code uses these now: remove them from AHEAD_OF_CODE: {now_used}"
    unused = ruled - in_code - set(AHEAD_OF_CODE)
    assert not unused, f"rules no code needs (remove them from {RULES.name}): {sorted(unused)}"


def _resources_named_in_code() -> dict[str, resources.Resource]:
    """Resource constants of kube/resources.py that the operator's code refers to by name."""
    constants = {
        name: value
        for name, value in vars(resources).items()
        if isinstance(value, resources.Resource)
    }
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, constants)) + r")\b")
    used: dict[str, resources.Resource] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "kube" / "resources.py":
            continue
        for name in pattern.findall(path.read_text()):
            used[name] = constants[name]
    return used


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"replicaCount": 2, "leaderElection": {"enabled": False}},
            "replicaCount > 1 requires leaderElection.enabled",
        ),
        (
            {"leaderElection": {"leaseDuration": 10, "renewDeadline": 10}},
            "leaseDuration > renewDeadline > 1.2 x retryPeriod",
        ),
        (
            {"leaderElection": {"renewDeadline": 2.3, "retryPeriod": 2}},
            "leaseDuration > renewDeadline > 1.2 x retryPeriod",
        ),
        ({"watchNamespace": ["a"]}, "additional properties 'watchNamespace' not allowed"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces/0"),
        ({"logLevel": "verbose"}, "logLevel"),
        ({"rbac": {"aggregateRoles": "yes"}}, "/rbac/aggregateRoles"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled requires metrics.service.enabled",
        ),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        (
            {"metrics": {"serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled with networkPolicy.enabled needs "
            "networkPolicy.metricsFrom",
        ),
        (
            {"healthPort": 9000, "metrics": {"port": 9000}},
            "networkPolicy.enabled needs a metrics.port other than healthPort",
        ),
        (
            {
                "healthPort": 9000,
                "metrics": {"port": 9000, "bindAddress": "127.0.0.1"},
                "networkPolicy": {"enabled": False},
            },
            "metrics.bindAddress needs a metrics.port other than healthPort",
        ),
        (
            {
                "metrics": {"bindAddress": "127.0.0.1", "serviceMonitor": {"enabled": True}},
                "networkPolicy": {"enabled": False},
            },
            "metrics.serviceMonitor.enabled cannot scrape metrics.bindAddress 127.0.0.1",
        ),
        ({"metrics": {"bindAddress": "localhost"}}, "/metrics/bindAddress"),
        ({"networkPolicy": {"metricsFrom": [{"namespaceSelecter": {}}]}}, "namespaceSelecter"),
        ({"networkPolicy": {"metricsFrom": [{}]}}, "/networkPolicy/metricsFrom/0"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        (
            {"extraEnv": [{"name": "DITTOFS_CONTROLLER_WORKERS", "value": "8"}]},
            "extraEnv: DITTOFS_CONTROLLER_WORKERS is set by the chart",
        ),
        (
            {"extraEnv": [{"name": "HTTPS_PROXY", "value": "a"}, {"name": "HTTPS_PROXY"}]},
            "extraEnv: HTTPS_PROXY is set by the chart or twice in extraEnv",
        ),
        ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
    ],
)
def test_invalid_values_fail_at_install_time(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ChartError, match=re.escape(message)):
        render_chart(values)


def test_several_replicas_elect_a_leader_and_keep_a_standby_through_drains() -> None:
    docs = render_chart({"replicaCount": 2})
    (deployment,) = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert env_value(docs, "DITTOFS_CONTROLLER_LEADER_ELECT") == "true"
    (budget,) = find(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize(
    "values",
    [{}, {"replicaCount": 2, "podDisruptionBudget": {"enabled": False}}],
    ids=["one replica", "disabled"],
)
def test_no_disruption_budget_that_would_block_every_drain(values: Doc) -> None:
    assert not find(render_chart(values), "PodDisruptionBudget")


def test_the_chart_refuses_a_cluster_older_than_the_crd_needs() -> None:
    with pytest.raises(ChartError, match=re.escape("chart requires kubeVersion: >=1.31.0-0")):
        render_chart(kube_version="1.30.0")
    assert find(render_chart(kube_version="1.31.0"), "Deployment")


def test_an_image_digest_pins_what_runs() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    docs = render_chart({"image": {"repository": "registry.example/dfo", "digest": digest}})
    (deployment,) = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.example/dfo:{dittofs_controller.__version__}@{digest}"


def test_extra_env_comes_after_the_chart_s_variables(default: list[Doc]) -> None:
    extra = [
        {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
        {"name": "DITTOFS_CONTROLLER_CACHE_SYNC_TIMEOUT", "value": "300"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    env = list(operator_env(render_chart({"extraEnv": extra})).values())
    assert env == [*operator_env(default).values(), *extra]


def test_values_reach_the_pod() -> None:
    docs = render_chart(
        {
            "image": {"repository": "registry.example/dfo", "tag": "1.2.3", "pullPolicy": "Always"},
            "imagePullSecrets": [{"name": "pull"}],
            "leaderElection": {"leaseDuration": 4, "renewDeadline": 3, "retryPeriod": 0.5},
            "logLevel": "debug",
            "logFormat": "console",
            "otlpEndpoint": "http://collector:4318",
            "healthPort": 9000,
            "metrics": {"port": 9000},
            "networkPolicy": {"enabled": False},  # a shared port cannot keep /metrics closed
            "shutdownGrace": 12.5,
            "podLabels": {"team": "storage", "app.kubernetes.io/name": "ignored"},
            "podAnnotations": {"a": "b"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "serviceAccount": {"name": "dfo", "annotations": {"x": "y"}},
        },
        release="r",
    )
    (deployment,) = find(docs, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example/dfo:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["spec"]["serviceAccountName"] == "dfo"
    assert find(docs, "ServiceAccount", "dfo")[0]["metadata"]["annotations"] == {"x": "y"}
    assert pod["metadata"]["labels"]["team"] == "storage"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "dittofs-operator"
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 28
    assert [port["name"] for port in container["ports"]] == ["health"]  # one shared server
    (service,) = find(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == 9000
    expected = {
        "DITTOFS_CONTROLLER_LEADER_ELECT_LEASE_DURATION": "4",
        "DITTOFS_CONTROLLER_LEADER_ELECT_RETRY_PERIOD": "0.5",
        "DITTOFS_CONTROLLER_LOG_LEVEL": "debug",
        "DITTOFS_CONTROLLER_LOG_FORMAT": "console",
        "DITTOFS_CONTROLLER_OTLP_ENDPOINT": "http://collector:4318",
        "DITTOFS_CONTROLLER_SHUTDOWN_GRACE": "12.5",
        "DITTOFS_CONTROLLER_HEALTH_PORT": "9000",
        "DITTOFS_CONTROLLER_METRICS_PORT": "9000",
    }
    assert {name: env_value(docs, name) for name in expected} == expected


PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def test_the_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render_chart(
        {
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"p": "x"}}},
            "networkPolicy": {"metricsFrom": [PROMETHEUS]},
        }
    )
    (monitor,) = find(docs, "ServiceMonitor")
    (service,) = find(docs, "Service")
    assert monitor["metadata"]["labels"]["p"] == "x"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["honorLabels"] is True  # the per-server series keep their own namespace
    assert not find(render_chart(), "ServiceMonitor")


def test_the_image_is_pinned_non_root_and_read_only_friendly() -> None:
    stages = containerfile_stages()
    assert set(stages) == {"", "builder", "runtime"}
    (base,) = [args for keyword, args in stages[""] if keyword == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=\S*python:3\.11-slim@sha256:[0-9a-f]{64}", base)
    for stage in ("builder", "runtime"):
        assert stages[stage][0] == ("FROM", f"${{PYTHON_IMAGE}} AS {stage}")
    runtime = dict(reversed(stages["runtime"]))  # the first of each keyword
    instructions = {keyword for keyword, _ in stages["runtime"]}
    assert runtime["USER"] == "65532:65532"
    assert [args for keyword, args in stages["runtime"] if keyword == "ENTRYPOINT"] == [
        '["python", "-m", "dittofs_controller"]'
    ]
    env = image_env(Path("/opt/dittofs-operator/bin/python"))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["HOME"] == "/nonexistent"
    assert env["PATH"].startswith("/opt/dittofs-operator/bin:")
    assert "--only-binary=:all:" in pip_install_flags()
    assert "apt-get" not in str(stages["runtime"]) and "COPY" not in instructions


# Every object the chart can render, for helm lint.
EVERY_OPTION = {
    "replicaCount": 2,
    "metrics": {"serviceMonitor": {"enabled": True}},
    "networkPolicy": {"metricsFrom": [{"namespaceSelector": {}}]},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}
OPTIONAL_KINDS = {"PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap"}


@pytest.mark.parametrize(
    ("values", "optional_kinds"),
    [({}, set()), ({"watchNamespaces": ["a", "b"]}, set()), (EVERY_OPTION, OPTIONAL_KINDS)],
    ids=["default", "namespace-scoped", "every optional object"],
)
def test_helm_lint_is_clean(values: Doc, optional_kinds: set[str], tmp_path: Path) -> None:
    """The chart's one `helm lint --strict` (CI runs it with the unit tests)."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [str(helm()), "lint", "--strict", str(CHART), "--values", str(values_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert optional_kinds <= {doc["kind"] for doc in render_chart(values)}


def container_ports(docs: list[Doc]) -> dict[str, int]:
    (deployment,) = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def ingress_rules(docs: list[Doc]) -> list[Doc]:
    """The operator pod's NetworkPolicy rules, checked to select exactly that pod."""
    (policy,) = find(docs, "NetworkPolicy")
    (deployment,) = find(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert selector == deployment["spec"]["selector"]["matchLabels"] | {
        "app.kubernetes.io/component": "controller"
    }
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert policy["spec"]["policyTypes"] == ["Ingress"], "egress must stay open"
    assert "egress" not in policy["spec"]
    rules: list[Doc] = policy["spec"]["ingress"]
    return rules


def test_the_network_policy_opens_the_probes_and_nothing_else_by_default(
    default: list[Doc],
) -> None:
    """On by default: the health port from anywhere (no `from`), the metrics port from no one."""
    ports = container_ports(default)
    assert ports == {"health": 8081, "metrics": 8080}
    assert ingress_rules(default) == [{"ports": [{"port": ports["health"], "protocol": "TCP"}]}]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"healthPort": 9001, "metrics": {"port": 9002, "serviceMonitor": {"enabled": True}}},
    ],
)
def test_the_network_policy_admits_metrics_from_the_listed_peers_only(values: Doc) -> None:
    peers = [PROMETHEUS, {"ipBlock": {"cidr": "10.0.0.0/8"}}]
    docs = render_chart({**values, "networkPolicy": {"metricsFrom": peers}})
    ports = container_ports(docs)
    health, metrics = ingress_rules(docs)
    assert health == {"ports": [{"port": ports["health"], "protocol": "TCP"}]}
    assert metrics == {"from": peers, "ports": [{"port": ports["metrics"], "protocol": "TCP"}]}
    # What the metrics Service (and so a ServiceMonitor) sends traffic to is the admitted port.
    (service,) = find(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == ports["metrics"]


def test_the_network_policy_can_be_left_out() -> None:
    docs = render_chart({"networkPolicy": {"enabled": False, "metricsFrom": [PROMETHEUS]}})
    assert not find(docs, "NetworkPolicy")
    assert find(docs, "Deployment")


def test_metrics_bind_address_reaches_the_operator(default: list[Doc]) -> None:
    assert env_value(default, "DITTOFS_CONTROLLER_METRICS_BIND_ADDRESS") is None
    docs = render_chart({"metrics": {"bindAddress": "127.0.0.1"}})
    assert env_value(docs, "DITTOFS_CONTROLLER_METRICS_BIND_ADDRESS") == "127.0.0.1"
    env = {name: str(item["value"]) for name, item in operator_env(docs).items() if "value" in item}
    settings = load_settings(build_parser().parse_args(["run"]), env)
    assert (settings.bind_address, settings.metrics_address) == ("0.0.0.0", "127.0.0.1")
    assert (
        env_value(
            render_chart({"metrics": {"bindAddress": "::1"}}),
            "DITTOFS_CONTROLLER_METRICS_BIND_ADDRESS",
        )
        == "::1"
    )
