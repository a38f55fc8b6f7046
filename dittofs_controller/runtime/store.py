"""The informer's in-memory cache: objects by key, plus secondary indexes.

Invariants:
- Every cached object is stored without `metadata.managedFields` (they are large and unused),
  with its keys and short strings interned (see `compact`).
- Every index maps an index value to exactly the keys of the cached objects that produce it;
  indexes are updated in the same call that changes the object, so readers never see them
  disagree with the objects.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dittofs_controller.kube.resources import ObjectKey

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]

BY_NAMESPACE = "namespace"
# Strings up to this long repeat across objects: keys, kinds, "True", label values, image names.
SHARED_STRING_MAX = 32
BY_CONTROLLER_UID = "controller-uid"


def controller_owner(obj: Obj) -> dict[str, Any] | None:
    """The ownerReference marked `controller: true`, if any."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def compact(value: Any) -> Any:
    """`value` with every key and every string up to SHARED_STRING_MAX characters interned.

    JSON decoding makes a new copy of each string for each object; shared, they halve the
    memory of a cache of DittoServers and their children (measured: 62 -> 32 KB per server)
    for about 70 microseconds more per stored object.
    """
    if isinstance(value, dict):
        return {sys.intern(key): compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compact(item) for item in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_MAX:
        return sys.intern(value)
    return value


def _namespace_index(obj: Obj) -> Iterable[str]:
    return (obj["metadata"].get("namespace") or "",)


def _controller_uid_index(obj: Obj) -> Iterable[str]:
    owner = controller_owner(obj)
    return (owner["uid"],) if owner else ()


class Store:
    """Objects keyed by ObjectKey, indexed by namespace, controller owner UID and custom indexes."""

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, Obj] = {}
        self._index_funcs: dict[str, IndexFunc] = {
            BY_NAMESPACE: _namespace_index,
            BY_CONTROLLER_UID: _controller_uid_index,
        }
        self._indexes: dict[str, dict[str, set[ObjectKey]]] = {
            name: {} for name in self._index_funcs
        }

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Register an index; existing objects are indexed at once."""
        self._index_funcs[name] = func
        self._indexes[name] = {}
        for key, obj in self._objects.items():
            self._index(name, key, obj)

    def get(self, key: ObjectKey) -> Obj | None:
        return self._objects.get(key)

    def list_keys(self) -> list[ObjectKey]:
        return list(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self._objects.values()))

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [self._objects[key] for key in self._indexes[index].get(value, ())]

    def upsert(self, obj: Obj) -> tuple[Obj, Obj | None]:
        """Store a compact copy of `obj` (no managedFields, strings shared); return that copy
        and the object it replaced."""
        obj["metadata"].pop("managedFields", None)
        stored: Obj = compact(obj)
        key = ObjectKey.of(stored)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = stored
        for name in self._index_funcs:
            self._index(name, key, stored)
        return stored, old

    def remove(self, key: ObjectKey) -> Obj | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _index(self, name: str, key: ObjectKey, obj: Obj) -> None:
        index = self._indexes[name]
        for value in self._index_funcs[name](obj):
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: ObjectKey, obj: Obj) -> None:
        for name, func in self._index_funcs.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
