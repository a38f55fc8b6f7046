"""Settings table, precedence (flag > env > default), validation and the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest

import dittofs_controller
import dittofs_controller.runtime
from dittofs_controller import cli, logs, operator, settings, tracing
from dittofs_controller.settings import (
    ENV_PREFIX,
    LeaderElectionSettings,
    Settings,
    SettingsError,
    load_settings,
    setting_options,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defaults must not depend on the developer's machine."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name in ("KUBECONFIG", "OTEL_EXPORTER_OTLP_ENDPOINT", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(settings, "SERVICEACCOUNT_NAMESPACE", tmp_path / "no-such-file")


def load(*argv: str, env: Mapping[str, str] | None = None) -> Settings:
    return load_settings(cli.build_parser().parse_args(argv), env or {})


def test_defaults() -> None:
    s = load()
    assert s.kubeconfig is None
    assert s.context is None
    assert s.namespaces == ()
    assert (s.workers, s.reconcile_timeout) == (2, 60.0)
    assert (s.log_level, s.log_format) == ("info", "json")
    assert (s.metrics_port, s.health_port, s.bind_address) == (8080, 8081, "0.0.0.0")
    assert (s.metrics_bind_address, s.metrics_address) == (None, "0.0.0.0")
    assert s.otlp_endpoint is None
    assert (s.shutdown_grace, s.watch_timeout) == (30.0, 300.0)
    assert s.dittofs_api_access == "auto"
    election = s.leader_election
    assert election.enabled is True
    assert (election.lease_name, election.lease_namespace) == ("dittofs-controller", "default")
    assert election.identity.startswith(socket.gethostname() + "_")
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (
        15.0,
        10.0,
        2.0,
    )


def test_defaults_match_direct_construction() -> None:
    election = LeaderElectionSettings(identity="fixed")  # the default identity is random
    assert attrs.evolve(load(), leader_election=election) == attrs.evolve(
        Settings(), leader_election=election
    )


def test_identity_is_unique_per_process_start() -> None:
    assert load().leader_election.identity != load().leader_election.identity


@pytest.mark.parametrize(
    ("argv", "env", "field", "expected"),
    [
        ((), {"WORKERS": "5"}, "workers", 5),
        (("--workers", "7"), {"WORKERS": "5"}, "workers", 7),
        (("run", "--workers", "7"), {"WORKERS": "5"}, "workers", 7),
        (("--workers", "7", "run"), {}, "workers", 7),
        ((), {"LOG_LEVEL": "DEBUG"}, "log_level", "debug"),
        (("--log-format", "console"), {"LOG_FORMAT": "json"}, "log_format", "console"),
        ((), {"NAMESPACES": " a, b,,c "}, "namespaces", ("a", "b", "c")),
        (("--namespaces", "x"), {"NAMESPACES": "a,b"}, "namespaces", ("x",)),
        ((), {"RECONCILE_TIMEOUT": "2.5"}, "reconcile_timeout", 2.5),
        ((), {"WORKERS": "  "}, "workers", 2),
        ((), {"CONTEXT": "kind"}, "context", "kind"),
        (("--bind-address", "::"), {"BIND_ADDRESS": "127.0.0.1"}, "bind_address", "::"),
        ((), {"METRICS_BIND_ADDRESS": "127.0.0.1"}, "metrics_bind_address", "127.0.0.1"),
        (
            ("--metrics-bind-address", "::1"),
            {"METRICS_BIND_ADDRESS": "127.0.0.1"},
            "metrics_bind_address",
            "::1",
        ),
        ((), {"METRICS_BIND_ADDRESS": " "}, "metrics_bind_address", None),
        ((), {"DITTOFS_API_ACCESS": "Service"}, "dittofs_api_access", "service"),
        (
            ("--dittofs-api-access", "pod"),
            {"DITTOFS_API_ACCESS": "service"},
            "dittofs_api_access",
            "pod",
        ),
        ((), {"DITTOFS_API_ACCESS": "Port-Forward"}, "dittofs_api_access", "port-forward"),
    ],
)
def test_precedence_flag_over_env_over_default(
    argv: tuple[str, ...], env: dict[str, str], field: str, expected: object
) -> None:
    prefixed = {ENV_PREFIX + name: value for name, value in env.items()}
    assert getattr(load(*argv, env=prefixed), field) == expected


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ((), {}, True),
        ((), {"DITTOFS_CONTROLLER_LEADER_ELECT": "false"}, False),
        (("--leader-elect",), {"DITTOFS_CONTROLLER_LEADER_ELECT": "off"}, True),
        (("--no-leader-elect",), {"DITTOFS_CONTROLLER_LEADER_ELECT": "1"}, False),
    ],
)
def test_leader_election_switch(argv: tuple[str, ...], env: dict[str, str], expected: bool) -> None:
    assert load(*argv, env=env).leader_election.enabled is expected


def test_nested_leader_election_settings() -> None:
    s = load(
        "--leader-elect-lease-duration",
        "30",
        "--leader-elect-namespace",
        "ops",
        env={
            "DITTOFS_CONTROLLER_LEADER_ELECT_RENEW_DEADLINE": "20",
            "DITTOFS_CONTROLLER_LEADER_ELECT_LEASE_NAME": "lease.example",
            "DITTOFS_CONTROLLER_LEADER_ELECT_IDENTITY": "pod-a",
        },
    )
    assert s.leader_election == LeaderElectionSettings(
        lease_duration=30,
        renew_deadline=20,
        lease_namespace="ops",
        lease_name="lease.example",
        identity="pod-a",
    )


def test_kubeconfig_default_prefers_env_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home_config = tmp_path / ".kube" / "config"
    home_config.parent.mkdir()
    home_config.write_text("{}")
    assert load().kubeconfig == str(home_config)
    monkeypatch.setenv("KUBECONFIG", "/etc/kubeconfig")
    assert load().kubeconfig == "/etc/kubeconfig"
    assert load(env={"DITTOFS_CONTROLLER_KUBECONFIG": "/mine"}).kubeconfig == "/mine"
    assert load("--kubeconfig", "").kubeconfig is None  # forces in-cluster config


def test_lease_namespace_default_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert load().leader_election.lease_namespace == "from-env"
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("from-file\n")
    monkeypatch.setattr(settings, "SERVICEACCOUNT_NAMESPACE", namespace_file)
    assert load().leader_election.lease_namespace == "from-file"


def test_otlp_endpoint_honours_standard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert load().otlp_endpoint == "http://collector:4318"
    ours = {"DITTOFS_CONTROLLER_OTLP_ENDPOINT": "https://other:4318"}
    assert load(env=ours).otlp_endpoint == "https://other:4318"
    assert load("--otlp-endpoint", "").otlp_endpoint is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--workers", "0"), "--workers / DITTOFS_CONTROLLER_WORKERS: must be at least 1"),
        (("--log-level", "loud"), "must be one of debug, info, warning, error"),
        (("--log-format", "xml"), "DITTOFS_CONTROLLER_LOG_FORMAT: must be one of json, console"),
        (("--metrics-port", "70000"), "--metrics-port / DITTOFS_CONTROLLER_METRICS_PORT"),
        (("--health-port", "0"), "must be a port in 1-65535, got 0"),
        (("--bind-address", "localhost"), "expected an IP address"),
        (
            ("--metrics-bind-address", "localhost"),
            "--metrics-bind-address / DITTOFS_CONTROLLER_METRICS_BIND_ADDRESS: expected an IP "
            "address, got 'localhost'",
        ),
        (
            ("--metrics-bind-address", "127.0.0.1", "--metrics-port", "8081"),
            "--metrics-port and --health-port are both 8081",
        ),
        (("--namespaces", "ok,Not_Valid"), "'Not_Valid' is not a valid namespace name"),
        (("--otlp-endpoint", "collector:4318"), "expected an http(s) URL"),
        (("--reconcile-timeout", "0"), "--reconcile-timeout / "),
        (("--shutdown-grace", "-1"), "must be at least 0"),
        (("--watch-timeout", "0.5"), "must be at least 1"),
        (("--leader-elect-identity", ""), "must not be empty"),
        (
            ("--dittofs-api-access", "proxy"),
            "must be one of auto, service, port-forward, pod, got 'proxy'",
        ),
        (("--leader-elect-renew-deadline", "15"), "lease duration > renew deadline"),
        (("--leader-elect-retry-period", "9"), "got 15 > 10 > 1.2 x 9"),
    ],
)
def test_invalid_values_name_the_setting(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(*argv)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("argv", "env", "health", "metrics"),
    [
        ((), {}, "0.0.0.0", "0.0.0.0"),
        (("--bind-address", "10.1.2.3"), {}, "10.1.2.3", "10.1.2.3"),
        (
            ("--bind-address", "10.1.2.3"),
            {"METRICS_BIND_ADDRESS": "127.0.0.1"},
            "10.1.2.3",
            "127.0.0.1",
        ),
        # A shared port is fine while both addresses agree, spelled out or not.
        (("--metrics-port", "8081", "--metrics-bind-address", "0.0.0.0"), {}, "0.0.0.0", "0.0.0.0"),
    ],
)
def test_metrics_listen_on_the_bind_address_unless_told_otherwise(
    argv: tuple[str, ...], env: dict[str, str], health: str, metrics: str
) -> None:
    prefixed = {ENV_PREFIX + name: value for name, value in env.items()}
    s = load(*argv, env=prefixed)
    assert (s.bind_address, s.metrics_address) == (health, metrics)


def test_invalid_env_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="DITTOFS_CONTROLLER_WORKERS: expected an integer"):
        load(env={"DITTOFS_CONTROLLER_WORKERS": "many"})
    with pytest.raises(SettingsError, match="DITTOFS_CONTROLLER_LEADER_ELECT: expected true"):
        load(env={"DITTOFS_CONTROLLER_LEADER_ELECT": "maybe"})
    with pytest.raises(SettingsError, match="finite"):
        load(env={"DITTOFS_CONTROLLER_SHUTDOWN_GRACE": "inf"})


def test_direct_construction_is_validated() -> None:
    with pytest.raises(SettingsError, match="--workers"):
        Settings(workers=0)
    with pytest.raises(SettingsError, match="renew deadline"):
        LeaderElectionSettings(lease_duration=5)


def test_option_table_is_consistent() -> None:
    options = dict(setting_options())
    leaf_fields = [f for f in attrs.fields(Settings) if f.name != "leader_election"]
    assert len(options) == len(leaf_fields) + len(attrs.fields(LeaderElectionSettings))
    assert len({o.flag for o in options.values()}) == len(options)
    assert len({o.env for o in options.values()}) == len(options)
    for option in options.values():
        assert option.env.startswith(ENV_PREFIX)
        assert option.help and option.default


def test_bad_flag_type_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(["--workers", "x"])
    assert raised.value.code == 2
    assert "argument --workers: expected an integer, got 'x'" in capsys.readouterr().err


def run_cli(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    environ["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "dittofs_controller", *argv],
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("--workers", "0"), {}, "dittofs-controller: error: --workers"),
        (("run",), {"DITTOFS_CONTROLLER_LOG_LEVEL": "loud"}, "DITTOFS_CONTROLLER_LOG_LEVEL"),
    ],
)
def test_cli_invalid_settings_exit_2_without_traceback(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_cli(*argv, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: dittofs-controller")


@pytest.mark.parametrize("argv", [("--help",), ("run", "--help")])
def test_cli_help_documents_every_setting(argv: tuple[str, ...]) -> None:
    result = run_cli(*argv, env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    for _, option in setting_options():
        assert option.flag in result.stdout
        assert option.env in result.stdout
    assert "default: 2]" in result.stdout  # --workers
    assert "default: $OTEL_EXPORTER_OTLP_ENDPOINT, else unset" in " ".join(result.stdout.split())


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == dittofs_controller.__version__ + "\n"


def test_cli_crd_prints_the_committed_crd() -> None:
    result = run_cli("crd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "crd" / "dittoservers.dittofs.io.yaml").read_text()


class FakeManager(types.ModuleType):
    """Stands in for dittofs_controller.runtime.manager, which tests of the CLI must not
    depend on."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("dittofs_controller.runtime.manager")
        self.exit_code = exit_code
        self.calls: list[tuple[Settings, object]] = []

    async def run(self, settings: Settings, setup: object) -> int:
        self.calls.append((settings, setup))
        return self.exit_code


@pytest.fixture
def fake_manager(monkeypatch: pytest.MonkeyPatch) -> FakeManager:
    manager = FakeManager(exit_code=3)
    monkeypatch.setitem(sys.modules, "dittofs_controller.runtime.manager", manager)
    monkeypatch.setattr(dittofs_controller.runtime, "manager", manager, raising=False)
    return manager


@pytest.fixture
def setup_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Record logging/tracing setup instead of reconfiguring this test process."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(
        logs, "configure_logging", lambda level, fmt: calls.append(("logs", (level, fmt)))
    )
    monkeypatch.setattr(
        tracing, "configure_tracing", lambda s: calls.append(("tracing", s.otlp_endpoint))
    )
    monkeypatch.setattr(tracing, "shutdown_tracing", lambda: calls.append(("shutdown", None)))
    return calls


@pytest.mark.parametrize("argv", [["--workers", "4"], ["run", "--workers", "4"]])
def test_cli_run_builds_settings_and_runs_the_operator_on_the_manager(
    argv: list[str],
    fake_manager: FakeManager,
    setup_calls: list[tuple[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DITTOFS_CONTROLLER_LOG_FORMAT", "console")
    monkeypatch.setenv("DITTOFS_CONTROLLER_OTLP_ENDPOINT", "http://collector:4318")
    assert cli.main(argv) == 3
    [(settings_used, setup_used)] = fake_manager.calls
    assert setup_used is operator.setup
    assert settings_used.workers == 4
    assert settings_used.log_format == "console"
    assert setup_calls == [
        ("logs", ("info", "console")),
        ("tracing", "http://collector:4318"),
        ("shutdown", None),
    ]
