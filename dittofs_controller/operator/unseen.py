"""Status applies the cache has not shown yet, so a pass does not make the same one twice.

A child's watch event queues a reconciler again at once, often before the DittoServer's own
watch event brings back the status that reconciler just applied. Judged from that stale copy,
the condition still differs: without this record the pass would apply it again and record its
Event again (two "Exposed" Events for one Service change, say).

A record holds only while the cached DittoServer is still the version the write started from.
Once the cache moves on it is the truth again, whoever wrote last: an edit by someone else is
not hidden. resourceVersions are compared for equality only, as the API asks.

The other way round, a pass that finds the stale copy already saying what it wants must still
write when its own last write said otherwise (`wrote_otherwise`): that write may land after
the copy, and nothing would queue the pass again once it shows (a reconciler is not woken by
its own status).
"""

from __future__ import annotations

import hashlib
import json

from dittofs_controller.kube.resources import ObjectKey
from dittofs_controller.operator.children import Obj


def _fingerprint(patch: Obj) -> str:
    """The status patch without the conditions' lastTransitionTime, which a pass judging from
    a stale copy stamps anew."""
    status = dict(patch.get("status") or {})
    status["conditions"] = [
        {k: v for k, v in entry.items() if k != "lastTransitionTime"}
        for entry in status.get("conditions") or ()
    ]
    text = json.dumps(status, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class UnseenWrites:
    """Per DittoServer and field manager: the last status patch and the version it was based on.

    Invariants: at most one record per (DittoServer, field manager); `already_applied` never
    answers True once the cached resourceVersion differs from the recorded one (and drops that
    record); `forget` drops every record of a DittoServer.
    """

    def __init__(self) -> None:
        self._records: dict[ObjectKey, dict[str, tuple[str, str]]] = {}

    def already_applied(self, server: Obj, manager: str, patch: Obj) -> bool:
        """Whether `manager` applied this very patch to the version of `server` still cached."""
        key = ObjectKey.of(server)
        records = self._records.get(key, {})
        found = records.get(manager)
        if found is None:
            return False
        version = server["metadata"].get("resourceVersion", "")
        if found[0] != version:
            del records[manager]
            return False
        return found[1] == _fingerprint(patch)

    def wrote_otherwise(self, server: Obj, manager: str, patch: Obj) -> bool:
        """Whether the last patch `manager` applied to this DittoServer differs from `patch`,
        whatever the cache shows: that write may still be on its way (behind another manager's,
        so no resourceVersion tells), and would then undo a cached status equal to `patch`."""
        found = self._records.get(ObjectKey.of(server), {}).get(manager)
        return found is not None and found[1] != _fingerprint(patch)

    def record(self, server: Obj, manager: str, patch: Obj) -> None:
        version = server["metadata"].get("resourceVersion", "")
        self._records.setdefault(ObjectKey.of(server), {})[manager] = (
            version,
            _fingerprint(patch),
        )

    def forget(self, key: ObjectKey) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return sum(len(records) for records in self._records.values())
