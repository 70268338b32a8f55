"""The cluster's APIs and the labels its controllers set, as both sides of the workbench name them.

The notebook side submits and reads these objects (`launcher_magic.engines.cluster`); the hub
side lets notebooks do so and holds them to the tenant's rules (`hub_config.cluster_policy`:
Role rules, quota counts, admission policies, Kueue objects). Each API group, version and label
is spelled here once.

- `Api`: one kind of object the API server serves (group, version, plural, kind).
- The job APIs (`PADDLEJOB`, `TRAINJOB`) and what they are made of or queued by (`JOBSET`,
  Kueue's `LOCALQUEUE`, `WORKLOAD`, ...), with the labels their controllers put on pods.
- The workbench's Paddle `ClusterTrainingRuntime` (deploy/k8s/trainer/paddle-runtime.yaml): its
  name and its copies, one per `--max-restarts` value (`runtime_name`, `runtime_names`), since
  JobSet's restart limit is immutable and a TrainJob cannot patch it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Api:
    """One kind of object of the API server."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """What an object's `apiVersion` says: `group/version`, or `version` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """`plural.group` (`plural` for the core group), as `count/<resource>` quotas name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


# -- job APIs -----------------------------------------------------------------------------------
# Kubeflow training-operator v1.
PADDLEJOB = Api("kubeflow.org", "v1", "paddlejobs", "PaddleJob")
# Labels the training-operator puts on a PaddleJob's pods.
PADDLEJOB_NAME_LABEL = "training.kubeflow.org/job-name"
PADDLEJOB_REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"

# Kubeflow Trainer v2 and the JobSet it makes of each TrainJob.
TRAINJOB = Api("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
TRAINING_RUNTIME = Api("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes",
                       "ClusterTrainingRuntime")
TRAINER_CONTROLLER = "trainer.kubeflow.org/trainjob-controller"  # a TrainJob's `managedBy`
JOBSET = Api("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet")
# Labels JobSet (and the Job controller under it) put on a JobSet's pods.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

# -- Kueue --------------------------------------------------------------------------------------
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
LOCALQUEUE = Api(KUEUE_GROUP, KUEUE_VERSION, "localqueues", "LocalQueue")
CLUSTERQUEUE = Api(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", "ClusterQueue")
RESOURCE_FLAVOR = Api(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors", "ResourceFlavor")
WORKLOAD = Api(KUEUE_GROUP, KUEUE_VERSION, "workloads", "Workload")
# Kueue's visibility API (aggregated): a LocalQueue's pending workloads, in Kueue's order.
VISIBILITY_GROUP, VISIBILITY_VERSION = "visibility.kueue.x-k8s.io", "v1beta2"
PENDING_WORKLOADS = "localqueues/pendingworkloads"
QUEUE_LABEL = f"{KUEUE_GROUP}/queue-name"
PRIORITY_LABEL = f"{KUEUE_GROUP}/priority-class"
# The LocalQueue `workbench apply` makes in a queued tenant's namespace; queued jobs name it.
LOCAL_QUEUE = "workbench"

# -- the workbench's Paddle runtime --------------------------------------------------------------
RUNTIME = "paddle-workbench"  # metadata.name in deploy/k8s/trainer/paddle-runtime.yaml
# The largest `--max-restarts` with a runtime copy of its own.
MAX_RESTARTS_LIMIT = 10


def runtime_name(base: str, max_restarts: int) -> str:
    """The copy of runtime `base` whose JobSet restarts a failed job at most `max_restarts`
    times."""
    return f"{base}-restarts-{max_restarts}"


def runtime_names(base: str = RUNTIME) -> tuple[str, ...]:
    """The shipped runtime and every copy of it, in order: the runtimes a TrainJob may name."""
    return (base, *(runtime_name(base, n) for n in range(MAX_RESTARTS_LIMIT + 1)))


def pending_workloads_path(namespace: str, queue: str) -> str:
    """The visibility API's pending workloads of LocalQueue `queue` in `namespace`."""
    return (f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSION}/namespaces/{namespace}/localqueues/"
            f"{queue}/pendingworkloads")
