"""A third job kind, made only of its own files and one registration: a Kubernetes `batch/v1`
Job in Indexed completion mode, one pod per node (what a deployment with neither Kubeflow
operator could run).

- `TOY` (here): the kind as both sides know it (`workbench_contract.jobkinds.JobKind`);
- `adapter.py`: the notebook side, what the cluster engine needs to run it;
- `admission.py`: the hub side, the kind's own admission rules.

It is registered by one entry point, `toyjob = toy_kind:TOY` in the group
`workbench.job_kinds`, which `registration(folder)` writes as an installed distribution would
have it; with that folder (and this one's parent) on the Python path, the notebook's kernel and
the operator's `workbench apply` both find the kind.
"""

from __future__ import annotations

from pathlib import Path

from workbench_contract.cluster import Api
from workbench_contract.jobkinds import ENTRY_POINT_GROUP, JobKind

TOY = JobKind(
    name="toyjob", api=Api("batch", "v1", "jobs", "Job"),
    adapter="toy_kind.adapter:IndexedJobAdapter",
    admission="toy_kind.admission:indexed_job_policies",
    description="each job a Kubernetes Indexed Job",
)


def registration(folder: Path) -> Path:
    """Write the kind's one registration (an entry point of a distribution's metadata) into
    `folder`; returns `folder`, to be put on the Python path."""
    info = folder / "toy_kind-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-kind\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{TOY.name} = toy_kind:TOY\n")
    return folder
