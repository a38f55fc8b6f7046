"""Every sample in samples/, deployed by the operator and used through NFS and SMB for real.

Each sample runs as written except where it points outside the testbed: the S3 endpoint,
bucket and keys, and the PostgreSQL credentials become local ones, and LoadBalancer Services
get an address from a stand-in. Files written over NFSv3 are read over SMB and back, listed
over NFSv4 and SMB, renamed and deleted; S3 samples' contents must land in the bucket, and
PostgreSQL samples' state in the databases the spec names.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import parse
from dittofs_controller.kube.client import KubeClient
from dittofs_controller.operator.database.build import databases
from tests.e2e.conftest import (
    SAMPLES,
    SAMPLES_DIR,
    Deployment,
    Timings,
    documents,
    eventually,
    localize,
    needs,
    pod_network,
    sample_server,
)
from tests.support.clients import ClientError
from tests.support.percona import PerconaPlayer, playing_percona
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.s3 import S3Endpoint, running_s3
from tests.testbed.devserver import local_clients
from tests.testbed.node import Node


@dataclass
class Local:
    """The local stand-ins a sample needs (None where it needs none)."""

    s3: S3Endpoint | None = None
    postgres: PostgresServer | None = None
    percona: PerconaPlayer | None = None


@pytest.fixture
async def local(
    request: pytest.FixtureRequest, kube: KubeClient, namespace: str, node: Node
) -> AsyncIterator[Local]:
    """Only what the test's sample needs: an S3 endpoint, PostgreSQL, the Percona player."""
    wanted = needs(request.node.callspec.params["sample"])
    found = Local()
    async with contextlib.AsyncExitStack() as stack:
        if "s3" in wanted:
            found.s3 = stack.enter_context(running_s3(node.address))
        if wanted & {"postgres", "percona"}:
            found.postgres = await stack.enter_async_context(
                running_postgres(node.address, pod_network(node))
            )
        if "percona" in wanted:
            assert found.postgres is not None
            found.percona = await stack.enter_async_context(
                playing_percona(kube, namespace, found.postgres)
            )
        yield found


@pytest.mark.parametrize("sample", SAMPLES, ids=[path.stem for path in SAMPLES])
async def test_sample_serves_files_over_nfs_and_smb(
    sample: Path, local: Local, deployment: Deployment, timings: Timings
) -> None:
    if local.percona is not None:
        deployment.diagnostics.append(local.percona)
    docs = await localize(documents(sample), local.s3, local.postgres)
    name = await deployment.create(docs)
    server = await deployment.wait_ready(name)
    timings.mark("ready")
    await exercise(deployment, name, server, sample, local, timings)


async def exercise(
    deployment: Deployment,
    name: str,
    server: dict[str, Any],
    sample: Path,
    local: Local,
    timings: Timings,
) -> None:
    """NFS and SMB round trips on /export, then the S3 objects and PostgreSQL tables."""
    spec = parse(v1alpha1.DittoServerSpec, server["spec"])
    scratch = deployment.scratch
    nfs = await deployment.nfs(name)
    smb = await deployment.smb(name)

    # NFSv3 write -> SMB read; SMB write -> NFSv3 read.
    hello = f"hello from NFS to {name}\n"
    await nfs.write("/hello.txt", hello, scratch)
    big = "".join(f"line {i:06d} of a file larger than one block write\n" for i in range(40000))
    await nfs.write("/big.txt", big, scratch)
    assert await smb.read("hello.txt", scratch) == hello, f"SMB sees another hello.txt ({smb})"
    await smb.put("from-smb.txt", "written over SMB\n", scratch)
    assert await nfs.read("/from-smb.txt") == "written over SMB\n"
    assert await nfs.read("/big.txt") == big
    # NFSv4 reads: the right bytes, or libnfs's known refusal (Nfs.read_v4), nothing else.
    assert await nfs.read_v4("/hello.txt") in (hello, None), f"NFSv4 read of {nfs}/hello.txt"
    timings.mark("read-write")

    # Listings agree.
    expected = {"hello.txt", "big.txt", "from-smb.txt"}
    assert set(await nfs.listing()) == expected, f"NFSv4 listing of {nfs}"
    assert set(await smb.listing()) == expected, f"SMB listing of {smb}"

    # Rename and delete (over SMB; libnfs has no tools for them), seen over NFS.
    await smb.rename("hello.txt", "renamed.txt")
    await smb.delete("from-smb.txt")
    expected = {"renamed.txt", "big.txt"}
    assert set(await nfs.listing()) == expected, "NFSv4 after SMB rename and delete"
    assert set(await smb.listing()) == expected, "SMB after rename and delete"
    assert await nfs.read("/renamed.txt") == hello
    timings.mark("rename-delete")

    if local.s3 is not None:
        prefix = sample_server(sample)["spec"]["remoteBlockStores"][0]["s3"].get("prefix", "")
        # The contents, not just some marker: at least big.txt's bytes under the prefix.
        await local.s3.wait_for_objects(prefix, min_bytes=len(big), timeout=90)
        timings.mark("s3-objects")
    if local.postgres is not None:
        # The control plane's and each postgres metadata store's tables are where the spec says.
        for database in databases(spec):
            tables = await local.postgres.tables(database)
            assert tables, f"DittoFS created no table in database {database}"


async def test_a_sample_share_is_written_by_its_user_only_and_has_no_smb_guests(
    deployment: Deployment, timings: Timings
) -> None:
    """The samples' access rules, as clients meet them: alice (UID 1000) writes; root (squashed)
    and UIDs of no user only read; SMB refuses anonymous and unknown logins until the spec
    turns guests on, and then a guest gets what defaultPermission allows (read), no more."""
    sample = SAMPLES_DIR / "memory-memory.yaml"
    name = await deployment.create(local_clients(documents(sample)))
    await deployment.wait_ready(name)
    scratch = deployment.scratch
    alice_nfs, alice_smb = await deployment.nfs(name), await deployment.smb(name)
    assert (alice_nfs.uid, alice_smb.user) == (1000, "alice")
    await alice_nfs.write("/alice.txt", "alice's\n", scratch)
    await alice_smb.put("alice-smb.txt", "alice's, over SMB\n", scratch)
    timings.mark("alice-writes")

    # Root, squashed to the anonymous identity, and a UID of no user: the share lets them
    # read (what the files' modes allow: they list the share) and write nothing.
    for uid in (0, 4242):
        other = replace(alice_nfs, uid=uid, gid=uid)
        assert set(await other.listing()) == {"alice.txt", "alice-smb.txt"}, f"UID {uid}"
        with pytest.raises(ClientError):
            await other.write(f"/by-{uid}.txt", "not allowed\n", scratch)
    assert set(await alice_nfs.listing()) == {"alice.txt", "alice-smb.txt"}
    timings.mark("others-read-only")

    anonymous = replace(alice_smb, user="", password="")
    stranger = replace(alice_smb, user="mallory", password="guess")
    wrong = replace(alice_smb, password="not-her-password")
    for refused in (anonymous, stranger, wrong):
        assert await refused.login_error() == "NT_STATUS_LOGON_FAILURE", refused.user
    timings.mark("smb-logins-refused")

    await deployment.patch(name, {"adapters": {"smb": {"guest": True}}})
    await deployment.wait_ready(name)
    # DittoFS takes the setting from its settings watcher, within its poll interval.
    await eventually("an anonymous SMB login with guests on", anonymous.login_error, 30)
    assert set(await anonymous.listing()) == {"alice.txt", "alice-smb.txt"}
    with pytest.raises(ClientError):
        await anonymous.put("guest.txt", "not allowed\n", scratch)
    timings.mark("guest-reads")
