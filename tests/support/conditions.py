"""A DittoServer status made of conditions, for tests of code that reads them."""

from __future__ import annotations

from typing import Any

# Condition type -> (status, reason, observedGeneration)
Reported = tuple[str, str, int]


def status_of(**conditions: Reported) -> dict[str, Any]:
    """`status` holding one condition per keyword, its message "<type> says"."""
    return {
        "conditions": [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": f"{kind} says",
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            for kind, (status, reason, generation) in conditions.items()
        ]
    }
