"""The one exception sub-reconcilers raise to report a known failure as a condition."""

from __future__ import annotations


class Problem(Exception):
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
