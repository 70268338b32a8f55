"""Each cluster job's own NetworkPolicy: its pods reach each other, and no other job's.

A NetworkPolicy cannot say "pods with the same value of a label", so a tenant-wide policy could
only let every job pod of a tenant reach every other (and a colleague's job could rewire the
unauthenticated rendezvous of yours). Instead the cluster engine creates, with each job, one
policy of exactly this shape, named as the job and selecting its pods by the job label and the
owner's user label, that lets them reach each other; the tenant's default deny does the rest.
The tenant's admission policy lets a user's account create only this shape, for itself
(`hub_config.cluster_policy`), and the job rules bind a job's pod labels to the job's own name
and owner, so no pod joins another user's job (not even one of another kind, and so maybe of the
same name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench_contract.labels import LABEL_JOB, LABEL_USER

API_VERSION, KIND = "networking.k8s.io/v1", "NetworkPolicy"


def job_network_policy(job_id: str, namespace: str,
                       labels: Mapping[str, str]) -> dict[str, Any]:
    """The NetworkPolicy of job `job_id` (named as the job, labelled `labels`: the job's own,
    whose user label, if any, it selects by too)."""
    selector = {LABEL_JOB: job_id}
    if LABEL_USER in labels:
        selector[LABEL_USER] = labels[LABEL_USER]
    same_job = {"podSelector": {"matchLabels": dict(selector)}}
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": job_id, "namespace": namespace, "labels": dict(labels)},
        "spec": {"podSelector": {"matchLabels": dict(selector)},
                 "policyTypes": ["Ingress", "Egress"],
                 "ingress": [{"from": [same_job]}],
                 "egress": [{"to": [same_job]}]},
    }
