"""Where a test tenant's pods and storage go on the real node, as a cluster operator sets it.

- ``route_to_node``: the namespace's pods go to the real node without touching what users
  submit: its node selector and default tolerations, which the ``PodNodeSelector`` and
  ``PodTolerationRestriction`` admission plugins read from the namespace's annotations.
- ``local_volume``: a static ``local`` PersistentVolume on the node's disk, reserved for one
  claim (the node's stand-in for an operator's ReadWriteMany storage class).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import node_config as cfg

STORAGE_CLASS = "workbench-node-local"


def route_to_node(core, namespace: str) -> None:
    """Annotate `namespace` so that its pods land on the real node and tolerate its taint."""
    key, value = cfg.NODE_LABEL
    taint = cfg.NODE_TAINT
    core.patch_namespace(namespace, {"metadata": {"annotations": {
        "scheduler.alpha.kubernetes.io/node-selector": f"{key}={value}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([{
            "key": taint["key"], "operator": "Equal", "value": taint["value"],
            "effect": taint["effect"]}])}}})


def local_volume(name: str, path: Path, node: str, namespace: str, claim: str,
                 modes: list[str], capacity: str = "10Gi") -> dict[str, Any]:
    """A PersistentVolume for folder `path` of `node`, bound only to `namespace`/`claim`."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": capacity}, "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
