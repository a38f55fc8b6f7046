"""A DittoServer's parsed spec, parsed once per spec rather than once per read.

Every sub-reconciler pass and every index update of a DittoServer reads its spec, and each
status write brings the object back through the cache: parsing was the operator's largest CPU
cost. The last parse of each DittoServer (by uid) is kept with the raw spec it came from and
reused while the raw spec is equal (a dict comparison, far cheaper than a parse).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import ParseError, parse

Obj = dict[str, Any]
Spec = v1alpha1.DittoServerSpec

# One entry per DittoServer; the least recently read go first once there are more.
MAX_ENTRIES = 4096

_parsed: OrderedDict[str, tuple[Obj, Spec | ParseError]] = OrderedDict()


def server_spec(server: Obj) -> Spec:
    """The DittoServer's spec as a model; raises ParseError when it is invalid."""
    raw = server.get("spec") or {}
    uid = server["metadata"].get("uid")
    if not uid:
        return parse(Spec, raw)
    cached = _parsed.get(uid)
    if cached is not None and cached[0] == raw:
        result = cached[1]
        # Keep the current object's spec, not the first one's: the replaced object can go.
        _parsed[uid] = (raw, result)
        _parsed.move_to_end(uid)
    else:
        try:
            result = parse(Spec, raw)
        except ParseError as error:
            result = error
        _parsed[uid] = (raw, result)
        if len(_parsed) > MAX_ENTRIES:
            _parsed.popitem(last=False)
    if isinstance(result, ParseError):
        raise result
    return result


def forget(server: Obj) -> None:
    """Drop the parse of a DittoServer that is gone: its uid never comes back, and keeping it
    until MAX_ENTRIES pushed it out grew the operator with every DittoServer ever deleted."""
    _parsed.pop(server["metadata"].get("uid"), None)
