"""Which API refusals become which Problems (problems.py)."""

from __future__ import annotations

import pytest

from dittofs_controller.kube.client import ApiError
from dittofs_controller.operator.problems import (
    Problem,
    api_problem,
    owner_reference_problem,
    owner_references_explained,
)

# The OwnerReferencesPermissionEnforcement plugin's words, as the API server sends them.
BLOCK_OWNER_DELETION = ApiError(
    403,
    "Forbidden",
    'configmaps "files-config" is forbidden: cannot set blockOwnerDeletion if an '
    "ownerReference refers to a resource you can't set finalizers on: , <nil>",
)
OWNER_REF_CHANGE = ApiError(
    403,
    "Forbidden",
    'persistentvolumeclaims "files-controlplane" is forbidden: cannot set an ownerRef on a '
    "resource you can't delete: , <nil>",
)
RBAC = ApiError(
    403,
    "Forbidden",
    'secrets is forbidden: User "system:serviceaccount:ops:dfo" cannot create resource '
    '"secrets" in API group "" in the namespace "team"',
)


@pytest.mark.parametrize("error", [BLOCK_OWNER_DELETION, OWNER_REF_CHANGE])
def test_the_plugins_refusals_name_the_chart_value(error: ApiError) -> None:
    problem = owner_reference_problem(error)
    assert problem is not None
    assert (problem.reason, problem.retry) == ("OwnerReferencesForbidden", True)
    assert error.message in problem.message  # the refusal is quoted
    assert "rbac.ownerReferencesPermissionEnforcement=true" in problem.message


@pytest.mark.parametrize(
    "error",
    [RBAC, ApiError(422, "Invalid", "cannot set blockOwnerDeletion"), ApiError(404, "", "")],
)
def test_other_errors_are_not_blamed_on_the_plugin(error: ApiError) -> None:
    assert owner_reference_problem(error) is None
    with pytest.raises(ApiError), owner_references_explained():
        raise error


def test_both_ways_of_reporting_an_api_error_explain_the_plugin() -> None:
    with (
        pytest.raises(Problem, match="OwnerReferencesPermissionEnforcement"),
        owner_references_explained(),
    ):
        raise OWNER_REF_CHANGE
    with pytest.raises(Problem) as raised, api_problem("ServiceRejected", "Service files-nfs"):
        raise BLOCK_OWNER_DELETION
    assert raised.value.reason == "OwnerReferencesForbidden"
    with pytest.raises(Problem) as raised, api_problem("ServiceRejected", "Service files-nfs"):
        raise RBAC
    assert (raised.value.reason, raised.value.retry) == ("ServiceRejected", True)
