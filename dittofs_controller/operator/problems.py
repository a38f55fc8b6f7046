"""The one exception sub-reconcilers raise to report a known failure as a condition."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dittofs_controller.kube.client import ApiError
from dittofs_controller.runtime.controller import ExpectedError

# How often a condition that waits on something no watch reports is looked at again: an object
# of another owner holding a name or a port the DittoServer needs (the operator caches only
# what it labels, so that object's deletion brings no event).
UNWATCHED_RECHECK = 30.0


class Problem(ExpectedError):
    """A known failure that becomes a False condition with `reason`.

    retry=True: transient (API unreachable...), retried with per-key backoff.
    retry=False: waits for a change (a Secret appearing, the spec being fixed), which the
    watches deliver; `requeue_after` adds a slow safety poll for things nobody watches.
    """

    def __init__(
        self, reason: str, message: str, *, retry: bool = False, requeue_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry = retry
        self.requeue_after = requeue_after


# How the OwnerReferencesPermissionEnforcement admission plugin words its refusals (setting
# blockOwnerDeletion; changing an existing object's ownerReferences).
OWNER_REFERENCE_DENIALS = (
    "cannot set blockOwnerDeletion",
    "cannot set an ownerRef on a resource you can't delete",
)


def owner_reference_problem(error: ApiError) -> Problem | None:
    """The plugin's refusal as a Problem that names the chart value granting what it checks,
    or None for any other error. RBAC refusals look alike, hence the wording test."""
    if error.status != 403 or not any(denial in str(error) for denial in OWNER_REFERENCE_DENIALS):
        return None
    return Problem(
        "OwnerReferencesForbidden",
        f"{error}: this cluster runs the OwnerReferencesPermissionEnforcement admission "
        "plugin; install the operator's chart with rbac.ownerReferencesPermissionEnforcement="
        "true, which grants what it checks",
        retry=True,
    )


@contextlib.contextmanager
def owner_references_explained() -> Iterator[None]:
    """Turn the plugin's refusal into its Problem; other errors pass through as they are."""
    try:
        yield
    except ApiError as error:
        if (problem := owner_reference_problem(error)) is None:
            raise
        raise problem from error


@contextlib.contextmanager
def api_problem(reason: str, what: str) -> Iterator[None]:
    """Report an API answer users must act on as a Problem naming `what` was being done.

    400/422: the API server rejects the object we built from the spec (e.g. an invalid
    toleration): wait for a spec change. 401/403/404: missing permissions or a namespace in
    deletion: retry with backoff, visibly. Anything else (409, 429, 5xx) is transient and is
    re-raised as is: retried with backoff without flipping a condition.
    """
    try:
        yield
    except ApiError as error:
        if owner_references := owner_reference_problem(error):
            raise owner_references from error
        if error.status in (400, 422):
            raise Problem(reason, f"{what}: {error}") from error
        if error.status in (401, 403, 404):
            raise Problem(reason, f"{what}: {error}", retry=True) from error
        raise
