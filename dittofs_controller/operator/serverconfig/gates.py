"""When there is a server to configure: the conditions of the workload reconciler that a pass
waits for (pure: no I/O)."""

from __future__ import annotations

from dittofs_controller.operator import conditions
from dittofs_controller.operator.children import Obj
from dittofs_controller.operator.conditions import Outcome
from dittofs_controller.operator.serverconfig.model import Spec


def waiting(why: str) -> Outcome:
    return Outcome.unknown("WaitingForServer", f"waiting for the DittoFS pod: {why}")


def judged(server: Obj) -> bool:
    """Whether the server reconciler has published Available for the current generation.

    Until it has, the serverconfig reconciler publishes nothing: a verdict for a generation whose
    pod template may still change would flap ServerConfigured (and Ready) on every edit.
    """
    available = conditions.find(server, conditions.AVAILABLE)
    generation = server["metadata"].get("generation", 0)
    return available is not None and available.get("observedGeneration") == generation


def waiting_for_server(server: Obj, spec: Spec) -> Outcome | None:
    """Unknown while there is no server of this generation to talk to; None once there is.

    Available alone is not enough: it stays True while a pod of the previous template serves,
    and that pod lacks the volumes a new store of this generation lives on.
    """
    if spec.replicas == 0:
        return Outcome.unknown(
            "ServerStopped", "spec.replicas is 0: the server is stopped, its state is kept"
        )
    # The messages name the condition that says why instead of quoting it: quoted, every
    # change of Available while the pod starts would rewrite this condition (and Ready) too.
    available = conditions.find(server, conditions.AVAILABLE) or {}
    if available.get("status") != "True":
        return waiting("it is not available yet (see condition Available)")
    progressing = conditions.find(server, conditions.PROGRESSING) or {}
    generation = server["metadata"].get("generation", 0)
    if progressing.get("observedGeneration") == generation and progressing.get("status") == "True":
        return waiting(
            "the pod template of this generation to roll out (see condition Progressing)"
        )
    return None
