"""The Services users dial, end to end: a Service broken by hand breaks the mount until the
operator restores it, and a NodePort server is reached at the node's address.

Clients go where users go (status.endpoints, through kube-proxy); a wrong selector, targetPort
or port here would fail these tests, not ship.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from dittofs_controller.kube.resources import SERVICES
from dittofs_controller.operator import names
from tests.e2e.conftest import (
    SAMPLES_DIR,
    Deployment,
    Timings,
    documents,
    eventually,
    localize,
)
from tests.integration.operator.conftest import RunningOperator, StartOperator
from tests.support import clients
from tests.support.clients import Nfs, Smb
from tests.testbed.devserver import LOCAL_CLIENTS, PLACEHOLDER_CLIENTS

Obj = dict[str, Any]
NAME = "memory-memory"
SAMPLE = SAMPLES_DIR / f"{NAME}.yaml"


async def nfs_broken(nfs: Nfs) -> str | None:
    return "still serves" if await nfs.reachable() is None else None


async def smb_broken(smb: Smb) -> str | None:
    return "still serves" if await smb.login_error() is None else None


@pytest.mark.parametrize(
    ("protocol", "breakage"),
    [
        ("nfs", {"selector": {"app.kubernetes.io/name": "nobody"}}),
        ("smb", {"ports": [{"name": "smb", "port": 445, "targetPort": 12999}]}),
    ],
    ids=["nfs-selector", "smb-target-port"],
)
async def test_a_service_broken_by_hand_breaks_clients_until_the_operator_restores_it(
    deployment: Deployment,
    operator: RunningOperator,
    start_operator: StartOperator,
    timings: Timings,
    protocol: str,
    breakage: Obj,
) -> None:
    await deployment.create(await localize(documents(SAMPLE), None, None))
    await deployment.wait_ready(NAME)
    nfs, smb = await deployment.nfs(NAME), await deployment.smb(NAME)
    await nfs.write("/before.txt", "written before\n", deployment.scratch)
    assert await smb.login_error() is None
    timings.mark("ready")

    # With the operator stopped, the hand edit stays: clients must notice it.
    assert await operator.shutdown() == 0
    service = names.service(NAME, protocol)
    await deployment.kube.merge_patch(SERVICES, service, {"spec": breakage}, deployment.namespace)
    if protocol == "nfs":
        await eventually(
            "NFS still mounts through a Service with no endpoints", lambda: nfs_broken(nfs), 30
        )
    else:
        await eventually(
            "SMB still logs in through the wrong targetPort", lambda: smb_broken(smb), 30
        )
    timings.mark("broken")

    await start_operator()
    await eventually("the NFS mount through the restored Service", nfs.reachable, 60)
    await eventually("the SMB login through the restored Service", smb.login_error, 60)
    assert await nfs.read("/before.txt") == "written before\n"
    assert await smb.read("before.txt", deployment.scratch) == "written before\n"
    timings.mark("restored")


async def test_node_port_servers_are_reached_at_the_node_address(
    deployment: Deployment, timings: Timings
) -> None:
    docs = documents(SAMPLE)
    server = next(doc for doc in docs if doc["kind"] == "DittoServer")
    # A NodePort is open to whoever reaches a node: allowAllSources says so knowingly.
    open_port = {"type": "NodePort", "allowAllSources": True}
    server["spec"]["expose"] = {"nfs": open_port, "smb": open_port}
    await deployment.create(docs)
    ready = await deployment.wait_ready(NAME)
    endpoints = ready["status"]["endpoints"]
    assert endpoints["nfs"].startswith("<node-ip>:"), endpoints
    nfs, smb = await deployment.nfs(NAME), await deployment.smb(NAME)
    assert nfs.host == smb.host == deployment.node.address
    assert nfs.port >= 30000 and smb.port >= 30000
    await nfs.write("/np.txt", "through the node port\n", deployment.scratch)
    assert await smb.read("np.txt", deployment.scratch) == "through the node port\n"
    timings.mark("served")


async def test_load_balancers_admit_only_their_source_ranges(
    deployment: Deployment, timings: Timings
) -> None:
    """The sample as written admits only its placeholder network: this machine's clients are
    dropped at the load-balancer address until the spec names their network."""
    docs = documents(SAMPLE)
    await deployment.create(docs)
    ready = await deployment.wait_ready(NAME)
    host, port = ready["status"]["endpoints"]["nfs"].rsplit(":", 1)
    services = ready["spec"]["expose"]
    assert services["nfs"]["loadBalancerSourceRanges"] == [PLACEHOLDER_CLIENTS]
    url = clients.Nfs(host, "/export", int(port)).url(version=4)
    for attempt in range(3):  # kube-proxy drops the packets: each try waits out its timeout
        with contextlib.suppress(clients.ClientError):  # timed out: nothing answered
            code, text = await clients.run("nfs-ls", url, timeout=10)
            assert code != 0, f"try {attempt}: NFS served a source outside its ranges: {text}"
    timings.mark("refused")

    allowed = {"loadBalancerSourceRanges": [LOCAL_CLIENTS]}
    await deployment.patch(NAME, {"expose": {"nfs": allowed, "smb": allowed}})
    await deployment.wait_ready(NAME)
    nfs = await deployment.nfs(NAME)
    await eventually("NFS from the admitted network", nfs.reachable, 60)
    timings.mark("admitted")
