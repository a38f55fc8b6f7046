"""What the real kubectl shows of DittoServers on the real API server: the category and the short
name, the Reason column under `-o wide`, and `kubectl wait` passing over a Ready condition left
from an earlier generation (the check docs/troubleshooting.md relies on)."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import DITTOSERVERS
from tests.bench.operator_bench import dittoserver
from tests.testbed import binaries
from tests.testbed.controlplane import Cluster

TIMEOUT = 30.0


async def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(binaries.executable("kubernetes", "kubectl")),
        f"--kubeconfig={cluster.kubeconfig_path}",
        *args,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


async def set_ready(kube: KubeClient, server: dict[str, Any], reason: str, generation: int) -> None:
    """Write the Ready condition as the summariser would, for `generation`."""
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": reason,
        "message": "serving",
        "observedGeneration": generation,
        "lastTransitionTime": "2026-12-07T00:00:00Z",
    }
    meta = server["metadata"]
    await kube.merge_patch(
        DITTOSERVERS,
        meta["name"],
        {"status": {"conditions": [condition]}},
        meta["namespace"],
        subresource="status",
    )


async def test_the_category_and_short_name_list_dittoservers_and_wide_adds_the_reason(
    dittoservers: KubeClient, namespace: str, control_plane: Cluster
) -> None:
    server = await dittoservers.create(DITTOSERVERS, dittoserver(namespace, "files"), namespace)
    await set_ready(dittoservers, server, "Serving", 1)

    for name in ("dittofs", "dittosrv"):
        listed = await kubectl(control_plane, "get", name, "-n", namespace, "-o", "name")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split() == ["dittoserver.dittofs.io/files"], name

    narrow = await kubectl(control_plane, "get", "dittosrv", "-n", namespace)
    wide = await kubectl(control_plane, "get", "dittosrv", "-n", namespace, "-o", "wide")
    assert narrow.returncode == wide.returncode == 0, narrow.stderr + wide.stderr
    assert "REASON" not in narrow.stdout.splitlines()[0]
    header, row = wide.stdout.splitlines()
    # Empty cells print as blanks: read the column where its header starts.
    assert row[header.index("REASON") :].split()[0] == "Serving", wide.stdout


async def test_kubectl_wait_passes_over_the_ready_of_an_earlier_generation(
    dittoservers: KubeClient, namespace: str, control_plane: Cluster
) -> None:
    server = await dittoservers.create(DITTOSERVERS, dittoserver(namespace, "files"), namespace)
    await set_ready(dittoservers, server, "Serving", 1)
    wait = ("wait", "dittoserver/files", "-n", namespace, "--for=condition=Ready")
    assert (await kubectl(control_plane, *wait, "--timeout=5s")).returncode == 0

    edited = await dittoservers.get(DITTOSERVERS, "files", namespace)
    edited["spec"]["shares"][0]["readOnly"] = True
    edited = await dittoservers.replace(DITTOSERVERS, edited)
    assert edited["metadata"]["generation"] == 2
    # Ready is still True, but for generation 1: the wait must not return on it.
    stale = await kubectl(control_plane, *wait, "--timeout=3s")
    assert stale.returncode != 0, stale.stdout
    assert "timed out" in stale.stderr

    await set_ready(dittoservers, edited, "Serving", 2)
    assert (await kubectl(control_plane, *wait, "--timeout=5s")).returncode == 0
