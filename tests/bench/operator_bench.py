"""`nox -s bench`: the operator against the real local control plane, measured.

For each N it creates N DittoServers (memory stores, no DittoFS pods needed) in a fresh
namespace and reports:
- create -> ConfigReady, StorageReady and NetworkReady each turned True: p50/p95/max;
- API requests the operator made per DittoServer, by verb (its rest_client_requests_total);
- requests per minute at steady state with nothing changing, by verb (target 0: pods are
  watched, not polled; the writes among them in parentheses);
- an operator restart with nothing changed: requests until converged, writes (target 0), time;
- the operator process's peak RSS and CPU seconds (from /proc);
- where the work went: reconciles per DittoServer by controller, their mean wait in the queue,
  the CPU seconds of the control plane (etcd, kube-apiserver, kube-controller-manager, which
  share the machine) and the load average, since other work on the machine skews every time.
It prints tables and writes docs/performance.md. It asserts nothing: numbers are for reading.

    python -m tests.bench.operator_bench [--sizes 10,100,1000] [--steady-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from dittofs_controller.kube.client import KubeClient, connect
from dittofs_controller.kube.resources import DITTOSERVERS, NAMESPACES
from tests.support.crds import install_crd
from tests.support.process import OperatorProcess, eventually
from tests.testbed import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "performance.md"
MEASURED = ("ConfigReady", "StorageReady", "NetworkReady")
READING_HEADING = "## Reading of this run"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")
# DittoServers created one at a time once the N have settled: the wait a user sees for one
# `kubectl apply` on an operator that already runs N servers.
ONE_MORE = 5


def dittoserver(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": DITTOSERVERS.api_version,
        "kind": DITTOSERVERS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "metadataStores": [{"name": "meta", "type": "memory"}],
            "localBlockStores": [{"name": "blocks", "type": "memory"}],
            "shares": [{"name": "/export", "metadataStore": "meta", "localBlockStore": "blocks"}],
            "controlPlane": {"database": {"type": "sqlite"}},
            "expose": {"nfs": {"type": "ClusterIP"}, "smb": {"type": "ClusterIP"}},
        },
    }


def true_now(server: dict[str, Any]) -> set[str]:
    """The measured conditions True for the current generation."""
    generation = server["metadata"].get("generation")
    return {
        c["type"]
        for c in (server.get("status") or {}).get("conditions") or ()
        if c.get("type") in MEASURED
        and c.get("observedGeneration") == generation
        and c.get("status") == "True"
    }


@attrs.define
class ProcessStats:
    pid: int

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_cpu_seconds() -> float:
    """CPU seconds used so far by this process's descendants that are not Python (etcd,
    kube-apiserver, kube-controller-manager: the ControlPlane's children)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
        if not name.startswith("python"):
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    mine: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    return sum(seconds for pid, seconds in cpu.items() if pid in mine)


def scrape(operator: OperatorProcess, metric: str, label: str) -> dict[str, float]:
    """One counter of the operator's metrics, summed by one label."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line.rsplit(" ", 1)
            key = labels.split(f'{label}="', 1)[1].split('"', 1)[0]
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def requests_by_verb(operator: OperatorProcess) -> dict[str, float]:
    """The operator's API request counters, summed over status codes."""
    return scrape(operator, "rest_client_requests_total", "method")


async def watch_ready(kube: KubeClient, namespace: str, ready: dict[str, float]) -> None:
    """Record when each DittoServer has shown every measured condition True: the time the last
    of them first turned True. Not the time all are True at once: with no volume provisioner
    here, StorageReady turns False once claims stay Pending past their grace period (120 s),
    which at N = 1000 comes before the last NetworkReady.

    A watch, not polling: listing N DittoServers ten times a second would load the API server
    the operator is measured against (megabytes per list at N = 1000)."""
    seen: dict[str, set[str]] = {}
    path = DITTOSERVERS.path(namespace)
    listed = await kube.request("GET", path)
    version = listed["metadata"]["resourceVersion"]
    while True:
        query = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async for event in kube.stream_lines(
            path, query={**query, "timeoutSeconds": 300}, timeout=timeout
        ):
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            name = obj["metadata"].get("name")
            if event["type"] not in ("ADDED", "MODIFIED") or name in ready:
                continue
            seen.setdefault(name, set()).update(true_now(obj))
            if len(seen[name]) == len(MEASURED):
                ready[name] = time.monotonic()


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {verb: after.get(verb, 0.0) - before.get(verb, 0.0) for verb in after}


def writes(counts: dict[str, float]) -> float:
    return sum(counts.get(verb, 0.0) for verb in WRITE_VERBS)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@attrs.define
class Row:
    n: int
    p50: float
    p95: float
    max: float
    per_server: dict[str, float]
    steady_per_minute: dict[str, float]  # by verb
    restart_requests: dict[str, float]
    restart_seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    one_more_p50: float
    one_more_max: float
    # Where the work went, create -> settled.
    reconciles_per_server: dict[str, float]
    queue_wait_seconds: dict[str, float]
    control_plane_cpu_seconds: float
    load_average: tuple[float, float]  # 1-minute load at the start and at the end


def start_operator(cp: ControlPlane, namespace: str, log: Path) -> OperatorProcess:
    return OperatorProcess(
        "dittofs_controller",
        [
            "run",
            f"--kubeconfig={cp.kubeconfig_path}",
            f"--namespaces={namespace}",
            "--no-leader-elect",
            "--log-level=info",
            "--workers=4",
        ],
        log,
    )


async def quiet(
    operator: OperatorProcess,
    settle: float = 3.0,
    timeout: float = 300,
    verbs: tuple[str, ...] | None = None,
) -> None:
    """Wait until the operator made no API request (of `verbs`, if given) for `settle` s."""

    def counts() -> dict[str, float]:
        totals = requests_by_verb(operator)
        return {verb: totals.get(verb, 0.0) for verb in verbs} if verbs else totals

    last, since = counts(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = counts()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return


@contextlib.asynccontextmanager
async def namespace_for(kube: KubeClient, n: int) -> AsyncIterator[str]:
    name = f"bench-{n}-{int(time.time())}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    try:
        yield name
    finally:
        await kube.delete(NAMESPACES, name)


async def measure(
    cp: ControlPlane, kube: KubeClient, n: int, steady_seconds: float, work: Path
) -> Row:
    async with namespace_for(kube, n) as namespace:
        operator = start_operator(cp, namespace, work / f"operator-{n}.log")
        try:
            await operator.wait_for_log("starting workers", timeout=60)
            stats = ProcessStats(operator.process.pid)
            before = requests_by_verb(operator)
            control_plane_before, load_before = control_plane_cpu_seconds(), os.getloadavg()[0]
            created: dict[str, float] = {}
            ready: dict[str, float] = {}
            watcher = asyncio.create_task(watch_ready(kube, namespace, ready))
            try:
                await asyncio.sleep(0.5)  # the watch is open before the first create
                for index in range(n):
                    name = f"s{index:04d}"
                    created[name] = time.monotonic()
                    await kube.create(DITTOSERVERS, dittoserver(namespace, name), namespace)
                await eventually(
                    lambda: len(ready) == n or watcher.done(),
                    60 + 4 * n,
                    f"{n} DittoServers ready",
                    operator,
                )
                # Settled: no write for a while. Reads go on: the server reconciler looks at
                # each pod while it is not ready (less often as it ages), and no pod runs here.
                await quiet(operator, verbs=WRITE_VERBS)
                per_server = {
                    verb: count / n
                    for verb, count in delta(requests_by_verb(operator), before).items()
                }
                reconciles = scrape(operator, "controller_runtime_reconcile_total", "controller")
                waits = scrape(operator, "workqueue_queue_duration_seconds_sum", "name")
                waited = scrape(operator, "workqueue_queue_duration_seconds_count", "name")
                control_plane = control_plane_cpu_seconds() - control_plane_before
                load = (load_before, os.getloadavg()[0])
                latencies = [ready[name] - created[name] for name in created]

                steady_before = requests_by_verb(operator)
                await asyncio.sleep(steady_seconds)
                steady_requests = delta(requests_by_verb(operator), steady_before)
                steady = {
                    verb: count * 60 / steady_seconds for verb, count in steady_requests.items()
                }
                peak_rss, cpu = stats.peak_rss_mib(), stats.cpu_seconds()

                one_more = []
                for index in range(ONE_MORE):
                    name = f"one-more-{index}"
                    created[name] = time.monotonic()
                    await kube.create(DITTOSERVERS, dittoserver(namespace, name), namespace)
                    await eventually(
                        lambda name=name: name in ready or watcher.done(),
                        120,
                        f"{name} ready",
                        operator,
                    )
                    if watcher.done():
                        break  # the finally block raises what ended the watch
                    one_more.append(ready[name] - created[name])
                await quiet(operator, verbs=WRITE_VERBS)  # so the restart finds nothing to do
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher  # raises what ended the watch early, if anything did
        finally:
            operator.stop()

        restarted = start_operator(cp, namespace, work / f"operator-{n}-restart.log")
        try:
            started = time.monotonic()
            await restarted.wait_for_log("starting workers", timeout=60)
            await quiet(restarted, timeout=120)
            restart_seconds = time.monotonic() - started - 3.0  # minus the settle window
            restart_requests = requests_by_verb(restarted)
        finally:
            restarted.stop()
    return Row(
        n,
        statistics.median(latencies),
        percentile(latencies, 0.95),
        max(latencies),
        per_server,
        steady,
        restart_requests,
        restart_seconds,
        peak_rss,
        cpu,
        statistics.median(one_more),
        max(one_more),
        {name: count / n for name, count in sorted(reconciles.items())},
        {name: waits[name] / waited[name] for name in sorted(waits) if waited.get(name)},
        control_plane,
        load,
    )


def table(rows: list[Row]) -> str:
    def verbs(counts: dict[str, float], digits: int) -> str:
        return ", ".join(
            f"{verb} {value:.{digits}f}" for verb, value in sorted(counts.items()) if value
        )

    lines = [
        "| N | create→ready p50 | p95 | max | requests per DittoServer "
        "| steady requests/min (writes) "
        "| restart: requests (writes) | restart time | peak RSS | CPU "
        f"| one more, settled: p50 (max of {ONE_MORE}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n} | {r.p50:.2f} s | {r.p95:.2f} s | {r.max:.2f} s | {verbs(r.per_server, 1)} "
            f"| {verbs(r.steady_per_minute, 1) or '0'} ({writes(r.steady_per_minute):.1f}) "
            f"| {verbs(r.restart_requests, 0)} "
            f"({writes(r.restart_requests):.0f}) | {r.restart_seconds:.1f} s "
            f"| {r.peak_rss_mib:.0f} MiB | {r.cpu_seconds:.1f} s "
            f"| {r.one_more_p50:.2f} s ({r.one_more_max:.2f} s) |"
        )
    return "\n".join(lines)


def work_table(rows: list[Row]) -> str:
    """Where the work went: reconciles per DittoServer and mean queue wait, by controller."""
    controllers = sorted({name for r in rows for name in r.reconciles_per_server})
    lines = [
        "| N | load (start→end) | control plane CPU | "
        + " | ".join(f"{name}: reconciles/server, wait" for name in controllers)
        + " |",
        "|---|---|---|" + "---|" * len(controllers),
    ]
    for r in rows:
        cells = [
            f"{r.reconciles_per_server.get(name, 0):.1f}, {r.queue_wait_seconds.get(name, 0):.2f} s"
            for name in controllers
        ]
        lines.append(
            f"| {r.n} | {r.load_average[0]:.1f}→{r.load_average[1]:.1f} "
            f"| {r.control_plane_cpu_seconds:.0f} s | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def report(rows: list[Row], command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return f"""# Performance

Measured by `{command}` on {datetime.date.today().isoformat()} ({machine}), against the real
local control plane (etcd, kube-apiserver and kube-controller-manager on the same machine), with
memory-store DittoServers and no DittoFS pods. "Ready" means ConfigReady, StorageReady and
NetworkReady have each turned True for the current generation (the time of the last of them).
The N DittoServers are created at once, as fast as the API server takes them; "one more" are
{ONE_MORE} more created one at a time once the N have settled.

{table(rows)}

Where the work went, from create to settled (no write for 3 s): reconciles per DittoServer and
mean wait in the work queue, by controller; CPU seconds of etcd + kube-apiserver +
kube-controller-manager; the machine's 1-minute load average.

{work_table(rows)}

Raw numbers: `docs/performance.json`.
"""


def kept_reading() -> str:
    """The hand-written reading that follows the tables in the current report, kept as it is
    (a new run asks for it to be read again)."""
    current = REPORT.read_text() if REPORT.exists() else ""
    start = current.find(READING_HEADING)
    return "\n" + current[start:] if start >= 0 else ""


async def main_async(sizes: list[int], steady_seconds: float, work: Path) -> None:
    with ControlPlane() as cp:
        kube = await connect(str(cp.kubeconfig_path), None)
        try:
            await install_crd(kube)
            rows = []
            for n in sizes:
                print(f"[bench] N={n} ...", file=sys.stderr, flush=True)
                rows.append(await measure(cp, kube, n, steady_seconds, work))
                print(
                    table(rows[-1:]), work_table(rows[-1:]), sep="\n", file=sys.stderr, flush=True
                )
        finally:
            await kube.close()
    command = " ".join(["nox -s bench --", *sys.argv[1:]])
    print(table(rows), work_table(rows), sep="\n\n")
    REPORT.write_text(report(rows, command) + kept_reading())
    REPORT.with_suffix(".json").write_text(
        json.dumps([attrs.asdict(r) for r in rows], indent=2) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.operator_bench")
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(os.environ.get("BENCH_WORK_DIR", "/tmp/dittofs-bench"))
    work.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async([int(s) for s in args.sizes.split(",")], args.steady_seconds, work))


if __name__ == "__main__":
    main()
