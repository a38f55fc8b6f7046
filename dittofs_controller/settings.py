"""Typed, validated operator settings.

Every setting is declared once, as an attrs field whose metadata carries its flag, environment
variable and help text; that single table drives the argparse flags, the environment parsing and
``--help``, so the three can never drift apart. Precedence: flag > environment > default.

Defaults that depend on where the operator runs (kubeconfig, lease namespace, identity, OTLP
endpoint) are computed when ``Settings`` is built, from the standard files and variables.
"""

import argparse
import ipaddress
import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import attrs

ENV_PREFIX = "DITTOFS_CONTROLLER_"
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# client-go's JitterFactor: a retry may come up to 1.2 x retry_period late, and must still land
# before the renew deadline (runtime/leader.py enforces the same bound).
LEADER_ELECTION_JITTER = 1.2

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "console"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
DittoFSApiAccess = Literal["auto", "service", "port-forward", "pod"]
DITTOFS_API_ACCESSES: tuple[DittoFSApiAccess, ...] = get_args(DittoFSApiAccess)

_METADATA_KEY = "dittofs_controller.option"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the flag and env var to fix."""


@attrs.frozen
class Option:
    """One row of the settings table: how a field is spelled on the command line and in env."""

    flag: str
    env: str
    help: str
    parse: Callable[[str], object]
    default: str
    metavar: str | None
    switch: bool

    @property
    def names(self) -> str:
        return f"{self.flag} / {self.env}"


def _option(attribute: "attrs.Attribute[Any]") -> Option:
    option: Option = attribute.metadata[_METADATA_KEY]
    return option


def _setting(
    *,
    flag: str,
    help: str,
    default: object = attrs.NOTHING,
    factory: Callable[[], object] | None = None,
    default_help: str | None = None,
    parse: Callable[[str], object] | None = None,
    validator: Validator | None = None,
    metavar: str | None = None,
) -> Any:
    """Declare a field together with its flag, env var (derived from the flag) and help."""
    switch = isinstance(default, bool)
    if parse is None:
        parse = _parse_bool if switch else _parse_str
    env = ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")
    option = Option(flag, env, help, parse, default_help or _describe(default), metavar, switch)
    return attrs.field(
        default=attrs.Factory(factory) if factory is not None else default,
        validator=validator,
        metadata={_METADATA_KEY: option},
    )


def _describe(default: object) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


# Parsers turn one raw string (flag argument or env value) into a typed value.


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _parse_lower(raw: str) -> str:
    return raw.strip().lower()


def _parse_int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _parse_seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number of seconds, got {raw!r}")
    return value


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# Validators run on every construction, so Settings built in code are checked too.


def _at_least(minimum: int) -> Validator:
    def check(_: object, attribute: "attrs.Attribute[Any]", value: float) -> None:
        if value < minimum:
            raise SettingsError(
                f"{_option(attribute).names}: must be at least {minimum}, got {value:g}"
            )

    return check


def _positive(_: object, attribute: "attrs.Attribute[Any]", value: float) -> None:
    if not value > 0:
        raise SettingsError(f"{_option(attribute).names}: must be positive, got {value:g}")


def _port(_: object, attribute: "attrs.Attribute[Any]", value: int) -> None:
    if not 1 <= value <= 65535:
        raise SettingsError(f"{_option(attribute).names}: must be a port in 1-65535, got {value}")


def _one_of(choices: tuple[str, ...]) -> Validator:
    def check(_: object, attribute: "attrs.Attribute[Any]", value: str) -> None:
        if value not in choices:
            raise SettingsError(
                f"{_option(attribute).names}: must be one of {', '.join(choices)}, got {value!r}"
            )

    return check


def _matches(pattern: re.Pattern[str], what: str) -> Validator:
    def check(_: object, attribute: "attrs.Attribute[Any]", value: str | Iterable[str]) -> None:
        for item in [value] if isinstance(value, str) else value:
            if not pattern.fullmatch(item):
                raise SettingsError(f"{_option(attribute).names}: {item!r} is not a valid {what}")

    return check


def _not_empty(_: object, attribute: "attrs.Attribute[Any]", value: str) -> None:
    if not value:
        raise SettingsError(f"{_option(attribute).names}: must not be empty")


def _bind_address(_: object, attribute: "attrs.Attribute[Any]", value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(
            f"{_option(attribute).names}: expected an IP address, got {value!r}"
        ) from None


def _optional_bind_address(
    instance: object, attribute: "attrs.Attribute[Any]", value: str | None
) -> None:
    if value is not None:
        _bind_address(instance, attribute, value)


def _http_url(_: object, attribute: "attrs.Attribute[Any]", value: str | None) -> None:
    if value is None:
        return
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SettingsError(f"{_option(attribute).names}: expected an http(s) URL, got {value!r}")


# Defaults that depend on the environment the operator runs in.


def _default_kubeconfig() -> str | None:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    try:
        home_config = Path.home() / ".kube" / "config"
    except RuntimeError:  # no HOME and no passwd entry, as for an arbitrary UID in a container
        return None
    return str(home_config) if home_config.is_file() else None


def _default_lease_namespace() -> str:
    try:
        namespace = SERVICEACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        namespace = ""
    return namespace or os.environ.get("POD_NAMESPACE") or "default"


def _default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _default_otlp_endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


@attrs.frozen(kw_only=True)
class LeaderElectionSettings:
    """Lease-based leader election, with client-go's timing semantics."""

    enabled: bool = _setting(
        flag="--leader-elect",
        default=True,
        help="Elect a leader so only one replica reconciles at a time.",
    )
    lease_name: str = _setting(
        flag="--leader-elect-lease-name",
        metavar="NAME",
        default="dittofs-controller",
        validator=_matches(_DNS_SUBDOMAIN, "Lease name"),
        help="Name of the coordination.k8s.io Lease used for leader election.",
    )
    lease_namespace: str = _setting(
        flag="--leader-elect-namespace",
        metavar="NAMESPACE",
        factory=_default_lease_namespace,
        default_help="the pod's namespace (service account file, else $POD_NAMESPACE), "
        "else 'default'",
        validator=_matches(_DNS_LABEL, "namespace name"),
        help="Namespace of the leader election Lease.",
    )
    identity: str = _setting(
        flag="--leader-elect-identity",
        metavar="IDENTITY",
        factory=_default_identity,
        default_help="hostname plus a random suffix",
        validator=_not_empty,
        help="Holder identity written into the Lease; unique per replica.",
    )
    lease_duration: float = _setting(
        flag="--leader-elect-lease-duration",
        default=15.0,
        parse=_parse_seconds,
        metavar="SECONDS",
        help="How long standbys wait after the last renewal before taking over.",
    )
    renew_deadline: float = _setting(
        flag="--leader-elect-renew-deadline",
        default=10.0,
        parse=_parse_seconds,
        metavar="SECONDS",
        help="How long the leader keeps retrying a renewal before giving up leadership.",
    )
    retry_period: float = _setting(
        flag="--leader-elect-retry-period",
        default=2.0,
        parse=_parse_seconds,
        metavar="SECONDS",
        help="Interval between acquire/renew attempts.",
    )

    def __attrs_post_init__(self) -> None:
        jittered_retry = self.retry_period * LEADER_ELECTION_JITTER
        if not self.lease_duration > self.renew_deadline > jittered_retry > 0:
            raise SettingsError(
                "leader election timings must satisfy lease duration > renew deadline > "
                f"{LEADER_ELECTION_JITTER} x retry period > 0 (--leader-elect-lease-duration, "
                "--leader-elect-renew-deadline, --leader-elect-retry-period); got "
                f"{self.lease_duration:g} > {self.renew_deadline:g} > "
                f"{LEADER_ELECTION_JITTER} x {self.retry_period:g}"
            )


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the operator process can be configured with."""

    kubeconfig: str | None = _setting(
        flag="--kubeconfig",
        factory=_default_kubeconfig,
        parse=_parse_optional_str,
        metavar="PATH",
        default_help="$KUBECONFIG, else ~/.kube/config when present, else in-cluster config",
        help="Kubeconfig file to connect with; an empty value forces in-cluster config.",
    )
    context: str | None = _setting(
        flag="--context",
        default=None,
        parse=_parse_optional_str,
        default_help="the kubeconfig's current context",
        help="Kubeconfig context to use.",
    )
    namespaces: tuple[str, ...] = _setting(
        flag="--namespaces",
        default=(),
        parse=_parse_list,
        validator=_matches(_DNS_LABEL, "namespace name"),
        metavar="NS[,NS...]",
        default_help="all namespaces",
        help="Comma-separated namespaces to watch.",
    )
    workers: int = _setting(
        flag="--workers",
        default=2,
        parse=_parse_int,
        validator=_at_least(1),
        metavar="N",
        help="Concurrent reconciles per controller.",
    )
    reconcile_timeout: float = _setting(
        flag="--reconcile-timeout",
        default=60.0,
        parse=_parse_seconds,
        validator=_positive,
        metavar="SECONDS",
        help="A reconcile taking longer is cancelled and retried with backoff.",
    )
    log_level: LogLevel = _setting(  # noqa: RUF009 - _setting returns an attrs.field
        flag="--log-level",
        default="info",
        parse=_parse_lower,
        validator=_one_of(LOG_LEVELS),
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="Minimum level of the operator's own logs (libraries log warnings and up).",
    )
    log_format: LogFormat = _setting(  # noqa: RUF009 - _setting returns an attrs.field
        flag="--log-format",
        default="json",
        parse=_parse_lower,
        validator=_one_of(LOG_FORMATS),
        metavar="{" + ",".join(LOG_FORMATS) + "}",
        help="json: one JSON object per line; console: human-readable lines.",
    )
    metrics_port: int = _setting(
        flag="--metrics-port",
        default=8080,
        parse=_parse_int,
        validator=_port,
        metavar="PORT",
        help="Port serving Prometheus /metrics (may equal --health-port to share one server).",
    )
    health_port: int = _setting(
        flag="--health-port",
        default=8081,
        parse=_parse_int,
        validator=_port,
        metavar="PORT",
        help="Port serving the /healthz and /readyz probes.",
    )
    bind_address: str = _setting(
        flag="--bind-address",
        default="0.0.0.0",
        validator=_bind_address,
        metavar="IP",
        help="Address the health server listens on, and the metrics server unless "
        "--metrics-bind-address says otherwise.",
    )
    metrics_bind_address: str | None = _setting(
        flag="--metrics-bind-address",
        default=None,
        parse=_parse_optional_str,
        validator=_optional_bind_address,
        metavar="IP",
        default_help="the value of --bind-address",
        help="Address the metrics server listens on, e.g. 127.0.0.1 to keep /metrics off the "
        "network (scraped by a sidecar or through kubectl port-forward) while the probes stay "
        "on --bind-address. With --metrics-port equal to --health-port both share one server, "
        "so the two addresses must then be equal.",
    )
    otlp_endpoint: str | None = _setting(
        flag="--otlp-endpoint",
        factory=_default_otlp_endpoint,
        parse=_parse_optional_str,
        validator=_http_url,
        metavar="URL",
        default_help="$OTEL_EXPORTER_OTLP_ENDPOINT, else unset (tracing off)",
        help="OTLP/HTTP collector base URL, e.g. http://otel-collector:4318; enables tracing.",
    )
    shutdown_grace: float = _setting(
        flag="--shutdown-grace",
        default=30.0,
        parse=_parse_seconds,
        validator=_at_least(0),
        metavar="SECONDS",
        help="On SIGTERM, how long in-flight reconciles may take to finish.",
    )
    cache_sync_timeout: float = _setting(
        flag="--cache-sync-timeout",
        default=120.0,
        parse=_parse_seconds,
        validator=_positive,
        metavar="SECONDS",
        help="How long the leader waits for its caches to sync before it exits 1, naming the "
        "resources whose list fails and why (a missing RBAC permission, say).",
    )
    watch_timeout: float = _setting(
        flag="--watch-timeout",
        default=300.0,
        parse=_parse_seconds,
        validator=_at_least(1),
        metavar="SECONDS",
        help="Base server-side watch timeout; each watch jitters it to spread reconnects.",
    )
    dittofs_api_access: DittoFSApiAccess = _setting(  # noqa: RUF009 - an attrs.field
        flag="--dittofs-api-access",
        default="auto",
        parse=_parse_lower,
        validator=_one_of(DITTOFS_API_ACCESSES),
        metavar="{" + ",".join(DITTOFS_API_ACCESSES) + "}",
        help="How the operator reaches each DittoFS REST API: service = the API Service's "
        "cluster DNS name (in a pod); port-forward = through the API server's pods/portforward "
        "like kubectl port-forward, with the kubeconfig's credentials (out of the cluster; the "
        "user needs get and create on pods/portforward); pod = the DittoFS pod's IP (needs a "
        "route to the pod network); auto = service when the operator runs in a pod "
        "($KUBERNETES_SERVICE_HOST set, no kubeconfig), port-forward otherwise. The API "
        "server's service proxy is no way in: it drops the Authorization header DittoFS needs.",
    )
    leader_election: LeaderElectionSettings = attrs.field(factory=LeaderElectionSettings)

    def __attrs_post_init__(self) -> None:
        if self.metrics_port == self.health_port and self.metrics_address != self.bind_address:
            raise SettingsError(
                "--metrics-bind-address / DITTOFS_CONTROLLER_METRICS_BIND_ADDRESS: "
                f"{self.metrics_address!r} differs from --bind-address {self.bind_address!r}, "
                f"but --metrics-port and --health-port are both {self.metrics_port}, so /metrics "
                "and the probes share one server on one address; use distinct ports"
            )

    @property
    def metrics_address(self) -> str:
        """Where /metrics listens: --metrics-bind-address, else --bind-address."""
        return self.metrics_bind_address or self.bind_address


def setting_options(cls: type[Any] = Settings) -> Iterator[tuple[str, Option]]:
    """Yield (dotted field path, option) for every setting, nested groups included."""
    for field in attrs.fields(cls):
        if isinstance(field.type, type) and attrs.has(field.type):
            for path, option in setting_options(field.type):
                yield f"{field.name}.{path}", option
        else:
            yield field.name, _option(field)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting, documenting its env var and default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, option in setting_options():
        group_name = path.rpartition(".")[0].replace("_", " ") or "settings"
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        text = f"{option.help} [env: {option.env}; default: {option.default}]"
        text = text.replace("%", "%%")
        if option.switch:
            groups[group_name].add_argument(
                option.flag,
                dest=path,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            groups[group_name].add_argument(
                option.flag,
                dest=path,
                type=_argparse_type(option.parse),
                metavar=option.metavar,
                default=argparse.SUPPRESS,
                help=text,
            )


def _argparse_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Adapt a parser so argparse shows its message instead of a generic 'invalid value'."""

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Build Settings from parsed flags, then env vars (empty ones count as unset), then defaults.

    Raises SettingsError naming the offending flag/env var.
    """
    given = vars(args)
    values: dict[str, object] = {}
    for path, option in setting_options():
        if path in given:
            values[path] = given[path]
        elif raw := environ.get(option.env, "").strip():
            try:
                values[path] = option.parse(raw)
            except ValueError as error:
                raise SettingsError(f"{option.env}: {error}") from None
    built: Settings = _build(Settings, values, "")
    return built


def _build(cls: type[Any], values: Mapping[str, object], prefix: str) -> Any:
    kwargs: dict[str, object] = {}
    for field in attrs.fields(cls):
        path = prefix + field.name
        if isinstance(field.type, type) and attrs.has(field.type):
            kwargs[field.name] = _build(field.type, values, path + ".")
        elif path in values:
            kwargs[field.name] = values[path]
    return cls(**kwargs)
