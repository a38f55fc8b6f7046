"""Build the DittoServer CustomResourceDefinition from the v1alpha1 model.

Regenerate the committed file after any change to the model:

    python -m dittofs_controller.api.crd > crd/dittoservers.dittofs.io.yaml
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dittofs_controller.api import v1alpha1
from dittofs_controller.api.schema import openapi_schema

PLURAL = "dittoservers"
SINGULAR = "dittoserver"
# `dfs` is the DittoFS binary's name and `ditto` the authors' Go operator's short name: either
# would make `kubectl get` ambiguous or surprising beside them.
SHORT_NAMES = ["dittosrv"]
# `kubectl get dittofs` lists every DittoServer (and whatever later kinds join the category).
CATEGORIES = ["dittofs"]
NAME = f"{PLURAL}.{v1alpha1.GROUP}"
REGENERATE = "python -m dittofs_controller.api.crd > crd/dittoservers.dittofs.io.yaml"

_HEADER = f"# GENERATED from dittofs_controller/api/v1alpha1.py; do not edit.\n# {REGENERATE}\n"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Status of the Ready condition.",
    },
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "One-word summary of the server's state.",
    },
    {
        "name": "NFS",
        "type": "string",
        "jsonPath": ".status.endpoints.nfs",
        "description": "NFS address.",
    },
    {
        "name": "SMB",
        "type": "string",
        "jsonPath": ".status.endpoints.smb",
        "description": "SMB address.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why the server is or is not Ready (the Ready condition's reason).",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def openapi_v3_schema() -> dict[str, Any]:
    """The version's schema: the model's, with metadata as the API server requires it."""
    schema = openapi_schema(v1alpha1.DittoServer)
    # The API server owns ObjectMeta's schema; a CRD may only say it is an object.
    schema["properties"]["metadata"] = {"type": "object"}
    return {"description": (v1alpha1.DittoServer.__doc__ or "").strip(), **schema}


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict, ready for `kubectl apply` or a create call."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAME},
        "spec": {
            "group": v1alpha1.GROUP,
            "names": {
                "kind": v1alpha1.KIND,
                "listKind": f"{v1alpha1.KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_v3_schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block-style YAML whose long descriptions stay readable and diffs stay small."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def crd_yaml() -> str:
    """The CRD as the YAML document committed in crd/."""
    body = yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return _HEADER + body


if __name__ == "__main__":
    sys.stdout.write(crd_yaml())
