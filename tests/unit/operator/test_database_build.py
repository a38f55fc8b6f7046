"""The desired PerconaPGCluster and what DittoFS needs from PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from dittofs_controller.api.schema import parse
from dittofs_controller.api.v1alpha1 import DittoServerSpec, Percona
from dittofs_controller.operator.children import APPLIED_HASH_ANNOTATION
from dittofs_controller.operator.database import build
from dittofs_controller.operator.database.reconciler import percona_secret_index

VALID = Path(__file__).resolve().parents[1] / "api" / "valid"
SERVER = {"metadata": {"name": "files", "namespace": "team", "uid": "u-1"}}


def sample(name: str) -> DittoServerSpec:
    return parse(DittoServerSpec, yaml.safe_load((VALID / name).read_text())["spec"])


def percona_spec(**percona: Any) -> DittoServerSpec:
    return parse(
        DittoServerSpec,
        {
            "postgres": {"percona": percona},
            "metadataStores": [{"name": "pg", "type": "postgres"}],
            "localBlockStores": [{"name": "cache", "type": "memory"}],
        },
    )


def cluster(spec: DittoServerSpec) -> dict[str, Any]:
    assert spec.postgres is not None and spec.postgres.percona is not None
    percona: Percona = spec.postgres.percona
    return build.percona_cluster(SERVER, spec, percona)


def test_postgres_is_needed_for_a_postgres_control_plane_or_metadata_store() -> None:
    assert not sample("minimal.yaml").needs_postgres()
    assert sample("percona.yaml").needs_postgres()  # both
    assert sample("percona-pg16-backups.yaml").needs_postgres()  # a metadata store only
    assert sample("external-postgres.yaml").needs_postgres()


def test_percona_is_used_only_when_postgres_is_needed_and_comes_from_percona() -> None:
    assert build.uses_percona(sample("percona.yaml"))
    assert not build.uses_percona(sample("external-postgres.yaml"))
    assert not build.uses_percona(sample("minimal.yaml"))


def test_databases_are_the_control_plane_one_and_one_per_postgres_store_each_once() -> None:
    assert build.databases(sample("percona.yaml")) == ["dittofs", "dittofs_meta"]
    assert build.databases(sample("percona-pg16-backups.yaml")) == ["dittofs_pg"]
    spec = parse(
        DittoServerSpec,
        {
            "controlPlane": {"database": {"type": "postgres"}},
            "postgres": {"percona": {}},
            "metadataStores": [
                {"name": "a-b", "type": "postgres"},
                {"name": "same", "type": "postgres", "postgres": {"database": "dittofs"}},
            ],
            "localBlockStores": [{"name": "cache", "type": "memory"}],
        },
    )
    assert build.databases(spec) == ["dittofs", "dittofs_a_b"]


def test_the_percona_sample_becomes_a_complete_cluster() -> None:
    built = cluster(sample("percona.yaml"))
    assert (built["apiVersion"], built["kind"]) == ("pgv2.percona.com/v2", "PerconaPGCluster")
    meta = built["metadata"]
    assert (meta["name"], meta["namespace"]) == ("files-pg", "team")
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "dittofs-operator"
    assert meta["labels"]["app.kubernetes.io/component"] == "database"
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert APPLIED_HASH_ANNOTATION in meta["annotations"]
    assert "finalizers" not in meta  # applied on their own (finalizer_patch)
    assert built["spec"] == {
        "crVersion": "2.8.2",
        "image": "percona/percona-distribution-postgresql:17.7-2",
        "postgresVersion": 17,
        "instances": [
            {
                "name": "instance1",
                "replicas": 3,
                "dataVolumeClaimSpec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "20Gi"}},
                    "storageClassName": "fast-ssd",
                },
            }
        ],
        "proxy": {"pgBouncer": {"replicas": 0, "image": build.PGBOUNCER_IMAGE}},
        "backups": {"enabled": False},
        "users": [
            {
                "name": "dittofs",
                "databases": ["dittofs", "dittofs_meta"],
                "grantPublicSchemaAccess": True,
            }
        ],
    }


def test_backups_copy_pgbackrest_as_given() -> None:
    built = cluster(sample("percona-pg16-backups.yaml"))
    assert built["metadata"]["name"] == "dittofs-pg16"
    assert built["spec"]["postgresVersion"] == 16
    assert built["spec"]["backups"] == {
        "enabled": True,
        "pgbackrest": {
            "image": "percona/percona-pgbackrest:2.57.0-1",
            "repos": [
                {
                    "name": "repo1",
                    "s3": {
                        "bucket": "pg-backups",
                        "endpoint": "s3.cubbit.eu",
                        "region": "eu-west-1",
                    },
                }
            ],
            "global": {"repo1-retention-full": "14"},
        },
    }


def test_backups_without_an_image_get_the_default_one() -> None:
    repos = [{"name": "repo1", "volume": {}}]
    built = cluster(percona_spec(backups={"enabled": True, "pgbackrest": {"repos": repos}}))
    assert built["spec"]["backups"]["pgbackrest"] == {
        "image": build.PGBACKREST_IMAGE,
        "repos": repos,
    }


def test_public_schema_access_is_granted_only_from_postgresql_15() -> None:
    old = cluster(
        percona_spec(postgresVersion=14, image="percona/percona-distribution-postgresql:14.19-1")
    )
    assert "grantPublicSchemaAccess" not in old["spec"]["users"][0]
    assert cluster(percona_spec(postgresVersion=15))["spec"]["users"][0]["grantPublicSchemaAccess"]


def test_any_change_of_the_desired_cluster_changes_its_stamp() -> None:
    def stamp(spec: DittoServerSpec) -> str:
        return str(cluster(spec)["metadata"]["annotations"][APPLIED_HASH_ANNOTATION])

    assert stamp(percona_spec()) == stamp(percona_spec())
    assert stamp(percona_spec()) != stamp(percona_spec(instances=2))


def test_the_delete_pvc_finalizer_follows_the_deletion_policy_alone() -> None:
    assert not build.wants_delete_pvc(sample("percona.yaml"))  # Retain by default
    deleting = copy.deepcopy(yaml.safe_load((VALID / "percona.yaml").read_text())["spec"])
    deleting["deletionPolicy"] = "Delete"
    assert build.wants_delete_pvc(parse(DittoServerSpec, deleting))

    live = {"metadata": {"name": "files-pg", "namespace": "team", "finalizers": ["x/other"]}}
    assert not build.has_delete_pvc(live)
    patch = build.finalizer_patch(live, present=True)
    assert patch["metadata"] == {
        "name": "files-pg",
        "namespace": "team",
        "finalizers": ["percona.com/delete-pvc"],
    }
    assert build.finalizer_patch(live, present=False)["metadata"]["finalizers"] == []
    live["metadata"]["finalizers"].append("percona.com/delete-pvc")
    assert build.has_delete_pvc(live)


def test_state_is_read_from_the_status() -> None:
    assert build.state({"status": {"state": "initializing"}}) == "initializing"
    assert build.state({}) is None


def test_servers_are_indexed_by_the_percona_user_secret_they_wait_for() -> None:
    server = {
        "metadata": {"name": "files", "namespace": "team"},
        "spec": yaml.safe_load((VALID / "percona.yaml").read_text())["spec"],
    }
    assert list(percona_secret_index(server)) == [
        "team/files-pg-pguser-dittofs",
        "team/files-pg-cluster-ca-cert",
    ]
    server["spec"] = yaml.safe_load((VALID / "external-postgres.yaml").read_text())["spec"]
    assert list(percona_secret_index(server)) == []
