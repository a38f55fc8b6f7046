"""A minimal operator on the real runtime, for tests of the runtime itself.

For every ConfigMap labelled `echo.dittofs.io/source=true` it server-side applies an owned
ConfigMap `<name>-echo` carrying the same data and the identity of the replica that wrote it.
A `delay` key makes the reconcile sleep first, so tests can catch it in flight.

Run: python -m tests.support.echo_operator [every dittofs-controller run flag]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import attrs

from dittofs_controller.kube.client import KubeClient
from dittofs_controller.kube.resources import CONFIGMAPS, ObjectKey
from dittofs_controller.logs import configure_logging
from dittofs_controller.runtime import manager
from dittofs_controller.runtime.controller import DONE, Controller, Result
from dittofs_controller.runtime.informer import ResourceCache
from dittofs_controller.settings import add_arguments, load_settings

SOURCE_LABEL = "echo.dittofs.io/source"
WRITER_ANNOTATION = "echo.dittofs.io/written-by"


@attrs.define
class EchoReconciler:
    client: KubeClient
    sources: ResourceCache
    identity: str

    async def reconcile(self, key: ObjectKey) -> Result:
        source = self.sources.get(key)
        if source is None:
            return DONE
        data = dict(source.get("data") or {})
        await asyncio.sleep(float(data.get("delay", "0")))
        meta = source["metadata"]
        echo = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{key.name}-echo",
                "namespace": key.namespace,
                "annotations": {WRITER_ANNOTATION: self.identity},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "data": data,
        }
        await self.client.apply(CONFIGMAPS, echo, field_manager="echo-operator")
        return DONE


def main() -> int:
    parser = argparse.ArgumentParser(prog="echo-operator")
    add_arguments(parser)
    settings = load_settings(parser.parse_args(), os.environ)
    configure_logging(settings.log_level, settings.log_format)

    def setup(mgr: manager.Manager) -> None:
        sources = mgr.cache(CONFIGMAPS, label_selector=f"{SOURCE_LABEL}=true")
        reconciler = EchoReconciler(mgr.client, sources, settings.leader_election.identity)
        mgr.add(Controller("echo", reconciler, workers=settings.workers).watch(sources))

    return asyncio.run(manager.run(settings, setup))


if __name__ == "__main__":
    sys.exit(main())
