"""Where a test tenant's pods and storage go on the real node, as a cluster operator sets it.

- ``route_to_node``: the namespace's pods go to the real node without touching what users
  submit: its node selector and default tolerations, which the ``PodNodeSelector`` and
  ``PodTolerationRestriction`` admission plugins read from the namespace's annotations.
- ``local_volume``: a static ``local`` PersistentVolume on the node's disk, reserved for one
  claim (the node's stand-in for an operator's ReadWriteMany storage class).
- ``shared_volume``: a static ReadWriteMany PersistentVolume that every real node mounts at the
  same folder: the stand-in for NFS or CephFS when the nodes are machines of their own. Here
  all nodes share the host's file system, so a ``local`` volume whose node affinity is the
  label every real node carries (not one node's name) is a folder each node sees alike; unlike
  ``hostPath``, the kubelet gives a ``local`` volume the pod's ``fsGroup``, as an NFS or CephFS
  CSI driver does, so the notebook's files are the workers' too. An operator uses an NFS or
  CephFS (or a cloud file store's) storage class instead, whose volumes any node can mount.
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


def shared_volume(name: str, path: Path, namespace: str, claim: str,
                  capacity: str = "10Gi") -> dict[str, Any]:
    """A ReadWriteMany PersistentVolume of folder `path`, on every real node, bound only to
    `namespace`/`claim` (see the module doc)."""
    key, value = cfg.NODE_LABEL
    return _local(name, path, namespace, claim, ["ReadWriteMany"], capacity,
                  {"key": key, "operator": "In", "values": [value]})


def local_volume(name: str, path: Path, node: str, namespace: str, claim: str,
                 modes: list[str], capacity: str = "10Gi") -> dict[str, Any]:
    """A PersistentVolume for folder `path` of `node`, bound only to `namespace`/`claim`."""
    return _local(name, path, namespace, claim, modes, capacity,
                  {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]})


def _local(name: str, path: Path, namespace: str, claim: str, modes: list[str], capacity: str,
           on: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": capacity}, "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [on]}]}},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
