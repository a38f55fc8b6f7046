"""The docs-command convention without a cluster: every block is classified, the parser splits
commands as bash would, and the static checkers accept what the operator really publishes and
refuse what it does not. (tests/integration/test_docs_commands.py runs the blocks.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import docchecks
from tests.support.doccommands import (
    REPO,
    SUBSTITUTION,
    Command,
    DocError,
    DocFacts,
    blocks,
    commands,
    markdown_files,
    problems,
    script,
)
from tests.testbed import binaries


@pytest.mark.parametrize(
    "path", markdown_files(), ids=[str(p.relative_to(REPO)) for p in markdown_files()]
)
def test_every_block_of_the_docs_is_classified(path: Path) -> None:
    found = [problem for block in blocks(path) for problem in problems(block)]
    assert not found, "\n".join(found)


def test_the_docs_index_links_every_page() -> None:
    index = (REPO / "docs" / "README.md").read_text()
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md") if p.name != "README.md")
    assert [page for page in pages if f"]({page})" not in index] == []


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_directives_classify_the_next_block_only(tmp_path: Path) -> None:
    page = write(
        tmp_path,
        "<!-- check: run -->\n\n```sh\nkubectl get pods\n```\n\n"
        "```sh\nhelm list\n```\n\n```text\nkubectl in a plain block\n```\n"
        "<!-- check: fragment samples/memory-memory.yaml -->\n```yaml\nspec: {}\n```\n"
        "<!-- check: dance -->\n```bash\ntrue\n```\n",
    )
    found = blocks(page)
    assert [(b.lang, b.mode, b.args) for b in found] == [
        ("sh", "run", ()),
        ("sh", None, ()),
        ("text", None, ()),
        ("yaml", "fragment", ("samples/memory-memory.yaml",)),
        ("bash", "dance", ()),
    ]
    assert [bool(problems(b)) for b in found] == [False, True, True, False, True]


def test_windows_blocks_can_only_be_checked(tmp_path: Path) -> None:
    (block,) = blocks(write(tmp_path, "<!-- check: run -->\n```powershell\nnet use\n```\n"))
    assert problems(block)


def test_console_blocks_run_only_their_prompted_lines(tmp_path: Path) -> None:
    text = "<!-- check: run -->\n```console\n$ kubectl get ds \\\n  -A\nNAME READY\n$ true\n```\n"
    (block,) = blocks(write(tmp_path, text))
    assert script(block) == "kubectl get ds \\\n  -A\ntrue\n"


def test_commands_are_split_like_bash() -> None:
    text = (
        "# a comment\n"
        "IP=$(kubectl get svc x -o jsonpath='{.spec.clusterIP}')\n"
        'sudo mount -t nfs -o vers=3 "$IP:/export" /mnt \\\n  && echo done | tee log\n'
        "FOO=bar pytest tests/unit  # trailing comment\n"
    )
    assert commands(text) == [
        Command(("kubectl", "get", "svc", "x", "-o", "jsonpath={.spec.clusterIP}")),
        Command((), (("IP", SUBSTITUTION),)),
        Command(("mount", "-t", "nfs", "-o", "vers=3", "$IP:/export", "/mnt")),
        Command(("echo", "done")),
        Command(("tee", "log")),
        Command(("pytest", "tests/unit"), (("FOO", "bar"),)),
    ]
    assert commands("net use Z: \\\\HOST\\export /user:alice\n", windows=True) == [
        Command(("net", "use", "Z:", "\\\\HOST\\export", "/user:alice"))
    ]
    with pytest.raises(DocError):
        commands("cat <<EOF\nx\nEOF\n")


def refuse_to_run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    raise AssertionError(f"a static check ran {argv}")


def check(line: str, *, windows: bool = False, facts: DocFacts | None = None) -> list[str]:
    checks = docchecks.Checks(refuse_to_run, facts or DocFacts())
    return [p for c in commands(line, windows=windows) for p in checks.check(c, windows=windows)]


@pytest.mark.parametrize(
    "line",
    [
        "sudo mount -t nfs -o vers=4.1,port=2049 HOST:/export /mnt/dittofs",
        "sudo mount -t nfs -o vers=3,port=2049,mountport=2049,nolock HOST:/export /mnt",
        "sudo mount -t cifs //HOST/export /mnt -o username=alice,vers=3.1.1",
        "sudo mount_nfs -o vers=3,port=2049,mountport=2049,nolocks HOST:/export ~/d",
        "mount_smbfs //alice@HOST/export ~/dittofs",
        "open smb://alice@HOST/export",
        "scw k8s cluster create name=x pools.0.name=p pools.0.node-type=DEV1-M pools.0.size=1 -w",
        "scw lb ip create zone=fr-par-1 -o json | jq -r .id",
        "python3 -m pip install nox && python3 -m nox -s dev",
        "python -m nox -s tests -- tests/unit",
        "DITTOFS_TEST_KUBECONFIG=.testbed/kubeconfig pytest tests/integration",
        "python -m dittofs_controller run --namespaces a,b --log-format console",
        "podman build -f Containerfile -t ghcr.io/dittofs/dittofs-operator:0.1.0 .",
        "docker buildx build -f Containerfile -t rg.fr-par.scw.cloud/ns/dittofs-operator:0.1.0 .",
        "docker buildx imagetools create --tag rg.fr-par.scw.cloud/ns/dittofs:v0.29.0 "
        "marmos91c/dittofs:v0.29.0",
        "scw registry namespace create name=dittofs-demo region=fr-par is-public=false",
        "curl https://dittofs.example.com/health",
    ],
)
def test_static_checks_accept_what_the_operator_publishes(line: str) -> None:
    assert check(line) == []


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("sudo mount -t nfs -o vers=4.1,port=12049 HOST:/export /mnt", "port 12049"),
        ("sudo mount -t nfs -o vers=3,port=2049 HOST:/export /mnt", "NFSv3 mounts need"),
        ("sudo mount -t nfs -o vers=4.1 HOST:/data /mnt", "share /data"),
        ("sudo mount -t nfs -o vers=2 HOST:/export /mnt", "NFS version"),
        ("sudo mount -t cifs //HOST/export /mnt -o vers=1.0", "SMB dialect"),
        ("mount_nfs -o vers=3 HOST:/export ~/d", "needs port="),
        ("scw k8s cluster create nmae=x", "unknown argument nmae"),
        ("scw k8s clusters list", "not a known scw command"),
        ("python3 -m nox -s devv", "no nox session"),
        ("python -m dittofs_controller run --no-such-flag", "rejected"),
        ("DITTOFS_CONTROLLER_NO_SUCH=1 python -m dittofs_controller version", "environment"),
        ("podman build -t ghcr.io/dittofs/dittofs-operator:9.9.9 .", "the chart runs"),
        ("docker push registry.example.com/x/operator:0.1.0", "the chart runs"),
        ("docker pull marmos91c/dittofs:v0.28.0", "the operator runs"),
        ("scw registry namespace create nmae=x", "unknown argument nmae"),
        ("curl https://dittofs.example.com/api/v1/shares", "without login"),
        ("rsync -a a b", "no checker"),
    ],
)
def test_static_checks_refuse_drift(line: str, why: str) -> None:
    found = check(line)
    assert any(why in problem for problem in found), found


def dfsctl_runner(home: Path) -> docchecks.Runner:
    """The real dfsctl, with no login, as the docs test's sandbox runs it."""
    dfsctl = binaries.ensure("dfs") / "dfsctl"

    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        assert argv[0] == "dfsctl", argv
        env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home), "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [str(dfsctl), *argv[1:]], env=env, capture_output=True, text=True, timeout=timeout
        )

    return run


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("dfsctl share snapshot create /export --name before-upgrade", None),
        ("dfsctl share snapshot restore /export 1234abcd --yes --force", None),
        ("dfsctl login --server http://127.0.0.1:8080 --username admin --password p", None),
        ("dfsctl share snapshot create", "accepts 1 arg"),
        ("dfsctl share snapshot create /export --nme x", "unknown flag: --nme"),
        ("dfsctl shares list", 'unknown command "shares"'),
        ("dfsctl share snapshots list /export", "Manage shares"),  # help, exit 0
    ],
)
def test_dfsctl_commands_are_parsed_by_dfsctl(line: str, why: str | None, tmp_path: Path) -> None:
    checks = docchecks.Checks(dfsctl_runner(tmp_path), DocFacts())
    found = [problem for c in commands(line) for problem in checks.check(c)]
    if why is None:
        assert found == []
    else:
        assert len(found) == 1 and why in found[0], found


def helm_runner(home: Path) -> docchecks.Runner:
    """The real helm, offline: the checker only has it parse flags (`--help`)."""
    helm = binaries.executable("helm", "helm")

    def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        assert argv[0] == "helm" and argv[-1] == "--help", argv
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [str(helm), *argv[1:]], env=env, capture_output=True, text=True, timeout=timeout
        )

    return run


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"helm install x {docchecks.released_chart()} --version 0.1.0 --namespace n", None),
        (f"helm upgrade x {docchecks.released_chart()} --version 0.0.9", "(this release)"),
        (f"helm install x {docchecks.released_chart()}", "(this release)"),
        ("helm install x oci://registry.example.com/charts/other --version 1.0.0", "unpinned"),
    ],
)
def test_oci_charts_are_this_release_or_pinned(line: str, why: str | None, tmp_path: Path) -> None:
    checks = docchecks.Checks(helm_runner(tmp_path), DocFacts())
    found = [problem for c in commands(line) for problem in checks.check(c)]
    if why is None:
        assert found == []
    else:
        assert len(found) == 1 and why in found[0], found


def test_node_ports_a_page_declares_are_allowed() -> None:
    line = "sudo mount -t nfs -o vers=4.1,port=32049 HOST:/export /mnt"
    assert check(line)
    assert check(line, facts=DocFacts(ports={32049})) == []


def test_windows_clients_use_declared_shares() -> None:
    assert check("net use Z: \\\\HOST\\export /user:alice", windows=True) == []
    assert check("mount -o anon,nolock \\\\HOST\\export Z:", windows=True) == []
    assert check("net use Z: \\\\HOST\\nope", windows=True)


def test_jsonpaths_and_conditions_of_dittoservers_follow_the_crd() -> None:
    assert docchecks.jsonpath_problem("{.status.endpoints.mountHint}") is None
    assert docchecks.jsonpath_problem("{.status.conditions[?(@.type=='Ready')].reason}") is None
    assert docchecks.jsonpath_problem("{.status.endpoint.nfs}")
    ranged = '{range .status.conditions[*]}{.type}={.status}{"\\n"}{end}'
    assert docchecks.jsonpath_problem(ranged) is None
    assert docchecks.jsonpath_problem(ranged.replace(".status}", ".state}"))
    checks = docchecks.Checks(refuse_to_run, DocFacts())
    assert checks._kubectl_semantics(["wait", "--for=condition=Healthy", "dittoserver/x"])
    assert not checks._kubectl_semantics(["wait", "--for=condition=Ready", "dittoserver/x"])


def test_external_kinds_need_their_required_fields() -> None:
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}}
    assert docchecks.external_problems(pool) == ["IPAddressPool: spec.addresses is required"]
    assert docchecks.external_problems({"apiVersion": "x/v1", "kind": "Y"})


# What each kind of store is called in docs/samples.md's table.
METADATA_WORDS = {"memory": "memory", "badger": "Badger", "postgres": "PostgreSQL"}
CONTENTS_WORDS = {"memory": "memory", "filesystem": "volume", "s3": "S3"}
CONTROL_PLANE_WORDS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def test_the_samples_page_describes_every_sample_as_it_is() -> None:
    """docs/samples.md has a table row and a section per sample file, and the row's store
    columns say what the file really configures."""
    page = (REPO / "docs" / "samples.md").read_text()
    rows = {
        match[1]: [cell.strip() for cell in match[2].split("|")]
        for match in re.finditer(r"^\| \[([\w-]+)\.yaml\]\([^)]*\) \|(.*)\|$", page, re.M)
    }
    for sample in sorted((REPO / "samples").glob("*.yaml")):
        server = next(
            d for d in yaml.safe_load_all(sample.read_text()) if d and d["kind"] == "DittoServer"
        )
        spec = server["spec"]
        assert sample.stem in rows, f"no table row for {sample.name}"
        assert re.search(rf"^#+ .*{sample.stem}", page, re.M), f"no section for {sample.name}"
        metadata, contents, control_plane = rows[sample.stem][:3]
        assert METADATA_WORDS[spec["metadataStores"][0]["type"]] in metadata, sample.name
        stores = [s["type"] for s in spec.get("remoteBlockStores", [])] or [
            s["type"] for s in spec["localBlockStores"]
        ]
        assert CONTENTS_WORDS[stores[0]] in contents, sample.name
        database = spec.get("controlPlane", {}).get("database", {}).get("type", "sqlite")
        assert CONTROL_PLANE_WORDS[database] in control_plane, sample.name
