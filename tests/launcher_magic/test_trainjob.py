"""The TrainJob kind's pure parts: the TrainJob manifest, its status, the queue and quota.

The manifest's fit with the real Trainer CRDs, webhooks and controllers is tested on the control
plane (tests/cluster/test_trainjob_engine.py); here it is checked as data, against the runtime
file it must fit (deploy/k8s/trainer/paddle-runtime.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import LaunchOptions, SpecError, build_spec
from launcher_magic.core.status import JobState, RankState
from launcher_magic.engines.cluster import kueue
from launcher_magic.engines.cluster.objects import ClusterSettings, job_network
from launcher_magic.engines.cluster.paddlejob import build_paddlejob
from launcher_magic.engines.cluster.quota import check_quota
from launcher_magic.engines.cluster.trainjob import (
    PATCH_MANAGER,
    TrainJobAdapter,
    build_trainjob,
    status_from_trainjob,
    usage_from_trainjob,
)
from workbench_contract.cluster import (
    JOBSET_NAME_LABEL,
    MAX_RESTARTS_LIMIT,
    QUEUE_LABEL,
    RESTART_ATTEMPT_LABEL,
    RUNTIME,
    TRAINJOB,
    pending_workloads_path,
)
from workbench_contract.environment import NotebookContext, Storage
from workbench_contract.pod_security import restricted_security_contexts

RUNTIME_FILE = Path(__file__).parents[2] / "deploy" / "k8s" / "trainer" / "paddle-runtime.yaml"
HUB_ENV = {"PADDLE_WORKBENCH_TENANT": "vision", "PADDLE_WORKBENCH_NAMESPACE": "wb-vision",
           "PADDLE_WORKBENCH_USER": "ada@example.org", "PADDLE_WORKBENCH_ENGINE": "trainjob",
           "PADDLE_WORKBENCH_IMAGE": "reg.example/nb@sha256:" + "c" * 64,
           "PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS": "86400"}
CLUSTER = ClusterSettings(namespace="wb-vision", image=HUB_ENV["PADDLE_WORKBENCH_IMAGE"],
                          storage=Storage("claim-ada", "/home/jovyan"), uid=2345, gid=100,
                          node_selector={"nvidia.com/gpu.product": "NVIDIA-H100"})


def _spec(**options):
    return build_spec(LaunchOptions(**{"nodes": 2, "gpus": 1, **options}), "train()",
                      NotebookContext.from_env(HUB_ENV), suffix="a1b2c3")


def _job(queue: str = "", **options):
    spec = _spec(**options)
    job = JobDir(Path("/home/jovyan/jobs") / spec.job_id)
    return spec, job, build_trainjob(spec, job, CLUSTER, queue=queue)


def _pod_patch(manifest):
    (patch,) = manifest["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return patch, rjob["template"]["spec"]["template"]


def test_trainjob_names_the_paddle_runtime_and_carries_the_job_contract():
    spec, job, manifest = _job(cpu="4", memory="16Gi", env=("LR=0.1",))
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert manifest["metadata"]["name"] == spec.job_id
    assert manifest["metadata"]["labels"]["workbench.paddle.org/user"] == "ada-example.org"
    assert manifest["spec"]["runtimeRef"] == {"name": f"{RUNTIME}-restarts-0",
                                              "apiGroup": "trainer.kubeflow.org",
                                              "kind": "ClusterTrainingRuntime"}
    assert manifest["spec"]["activeDeadlineSeconds"] == 86400
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["image"] == CLUSTER.image
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "4", "memory": "16Gi",
                                                     "nvidia.com/gpu": "1"}
    assert trainer["args"] == [
        "--log_dir", f"{job.path}/logs/attempt-$(PADDLE_WORKBENCH_ATTEMPT)/"
                     "node-$(PADDLE_WORKBENCH_NODE_RANK)",
        "--nproc_per_node", "1", "--devices", "0", str(job.main_path)]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["PADDLE_NNODES"]["value"] == "2"
    assert env["PADDLE_WORKBENCH_JOB_DIR"]["value"] == str(job.path)
    # The user's value is read from the job's Secret, never written into the TrainJob.
    assert env["LR"] == {"name": "LR", "valueFrom": {"secretKeyRef": {
        "name": "ada-example-org.job-a1b2c3-env", "key": "LR"}}}
    assert "0.1" not in yaml.safe_dump(manifest)
    # What the runtime sets for every node is not repeated here.
    assert not {"PADDLE_MASTER", "PADDLE_JOB_ID", "PADDLE_WORKBENCH_NODE_RANK",
                "PADDLE_WORKBENCH_ATTEMPT"} & set(env)
    assert "suspend" not in manifest["spec"] and QUEUE_LABEL not in manifest["metadata"]["labels"]


def test_the_runtime_patch_gives_the_pods_the_users_identity_storage_and_placement():
    _, _, manifest = _job()
    patch, pod = _pod_patch(manifest)
    assert patch["manager"] == PATCH_MANAGER
    assert pod["metadata"]["labels"] == manifest["metadata"]["labels"]
    pod_security, container_security = restricted_security_contexts(2345, 100)
    assert pod["spec"]["securityContext"] == pod_security
    (container,) = pod["spec"]["containers"]
    assert container == {"name": "node", "securityContext": container_security,
                         "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}
    assert pod["spec"]["volumes"] == [{"name": "home",
                                       "persistentVolumeClaim": {"claimName": "claim-ada"}}]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    lost = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 30} for taint in ("not-ready", "unreachable")]
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, *lost]


# The pod spec fields a runtime patch may set: Trainer v2.3.0's PodSpecPatch
# (pkg/apis/trainer/v1alpha1/trainjob_types.go). The API server drops any other field, or
# refuses it under strict field validation (tests/cluster/test_trainjob_engine.py).
POD_SPEC_PATCH_FIELDS = {"serviceAccountName", "volumes", "initContainers", "containers",
                         "imagePullSecrets", "securityContext", "nodeSelector", "affinity",
                         "tolerations", "schedulingGates", "terminationGracePeriodSeconds"}


def test_the_patch_sets_only_what_trainer_lets_a_patch_set():
    _, _, manifest = _job(cpu="4", env=("LR=0.1",))
    _, pod = _pod_patch(manifest)
    assert set(pod["spec"]) <= POD_SPEC_PATCH_FIELDS
    assert "topologySpreadConstraints" not in pod["spec"]  # the runtime's, below


def test_the_runtime_spreads_each_jobs_nodes_over_machines():
    """A TrainJob cannot patch topologySpreadConstraints, so the shipped runtime spreads every
    job's pods: those of the same JobSet and restart attempt (matchLabelKeys: the pod's own
    values), as a preference, so a user with one free machine still runs."""
    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    (spread,) = rjob["template"]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["matchLabelKeys"] == [JOBSET_NAME_LABEL, RESTART_ATTEMPT_LABEL]
    # Every pod of the runtime's one replicated job; the API server refuses a key that is both
    # in the selector and in matchLabelKeys.
    assert spread["labelSelector"] == {"matchLabels": {
        "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"]}}
    assert not set(spread["labelSelector"]["matchLabels"]) & set(spread["matchLabelKeys"])


def test_the_patch_fits_the_runtime_it_patches():
    """Trainer refuses a patch of a replicated job or container the runtime does not have, and
    env in a patch of the `node` container: the shipped runtime is what the builder targets."""
    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    assert runtime["metadata"]["name"] == RUNTIME
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "paddle"
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    (container,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
    _, _, manifest = _job()
    patch, pod = _pod_patch(manifest)
    (patched_rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert patched_rjob["name"] == rjob["name"]
    assert [c["name"] for c in pod["spec"]["containers"]] == [container["name"]]
    assert "env" not in pod["spec"]["containers"][0]
    # The runtime: launch with the master at node 0, rank = completion index, whole-job restarts.
    assert container["command"] == ["python", "-m", "launcher_magic.training.node_launch"]
    runtime_env = {e["name"]: e for e in container["env"]}
    assert runtime_env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert runtime_env["PADDLE_MASTER"]["value"].startswith("$(PADDLE_JOB_ID)-node-0-0.")
    assert "job-completion-index" in str(runtime_env["PADDLE_WORKBENCH_NODE_RANK"])
    policy = runtime["spec"]["template"]["spec"]["failurePolicy"]
    assert policy["restartStrategy"] == "Recreate"
    assert 0 <= policy["maxRestarts"] <= MAX_RESTARTS_LIMIT
    codes = rjob["template"]["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
    assert codes == list(range(1, 128))  # the code's failures; 128+ (killed) restart
    assert rjob["template"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_more_restarts_than_any_runtime_allows_is_refused_before_anything_is_made():
    from launcher_magic.engines import load_engine

    with pytest.raises(SpecError, match=f"use at most {MAX_RESTARTS_LIMIT}"):
        load_engine("trainjob").preflight(_spec(max_restarts=MAX_RESTARTS_LIMIT + 1))
    _, _, manifest = _job(max_restarts=2)
    assert manifest["spec"]["runtimeRef"]["name"] == f"{RUNTIME}-restarts-2"
    TrainJobAdapter().check(_spec(max_restarts=MAX_RESTARTS_LIMIT))


def test_a_queued_trainjob_carries_its_queue_and_starts_suspended():
    _, _, manifest = _job(queue="workbench")
    assert manifest["metadata"]["labels"][QUEUE_LABEL] == "workbench"
    assert manifest["spec"]["suspend"] is True


def _pod(index: int, phase: str, attempt: int = 0, code: int | None = None,
         machine: str | None = None):
    state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": str(index),
                                    "jobset.sigs.k8s.io/restart-attempt": str(attempt)}},
            "spec": {"nodeName": machine} if machine else {},
            "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z",
                       "containerStatuses": [{"name": "node", "state": state}]}}


def _trainjob(*conditions, suspend=False):
    return {"metadata": {"labels": {}}, "spec": {"suspend": suspend},
            "status": {"conditions": [
                {"type": t, "status": "True", "message": m,
                 "lastTransitionTime": "2026-01-01T00:10:00Z"} for t, m in conditions]}}


@pytest.mark.parametrize("trainjob, pods, state", [
    (_trainjob(), [], JobState.PENDING),
    (_trainjob(suspend=True), [], JobState.QUEUED),
    (_trainjob(), [_pod(0, "Running"), _pod(1, "Pending")], JobState.RUNNING),
    (_trainjob(), [_pod(0, "Succeeded", code=0), _pod(1, "Running")], JobState.RUNNING),
    (_trainjob(("Complete", "done")), [_pod(0, "Succeeded", code=0)], JobState.SUCCEEDED),
    (_trainjob(("Failed", "jobset failed")), [_pod(1, "Failed", code=1)], JobState.FAILED),
], ids=["created", "queued", "starting", "one-done", "complete", "failed"])
def test_status_follows_the_trainjob_and_its_pods(trainjob, pods, state):
    assert status_from_trainjob(_spec(), trainjob, pods).state == state


def test_a_failure_names_the_node_and_rank_and_restarts_count_attempts():
    spec = _spec(gpus=2, nproc_per_node=2)
    pods = [_pod(0, "Failed", attempt=0, code=137), _pod(0, "Running", attempt=1),
            _pod(1, "Failed", attempt=1, code=3)]
    status = status_from_trainjob(spec, _trainjob(("Failed", "jobset failed")), pods,
                                  {"status": {"restarts": 1}})
    assert status.restarts == 1
    assert status.nodes[1].state == RankState.FAILED and status.nodes[1].exit_code == 3
    assert status.nodes[0].state == RankState.RUNNING  # the node-0 pod of this attempt
    assert status.failed_rank == spec.resources.nproc_per_node
    assert status.message.startswith(f"node 1 (rank {status.failed_rank}) exited with code 3")
    assert "restart left" not in status.message  # the code failed: restarts are not the cause


def test_each_rank_is_on_the_machine_of_its_attempts_pod():
    """After a restart moved node 1 to another machine, its ranks are on the new one."""
    spec = _spec(gpus=2, nproc_per_node=2)
    pods = [_pod(0, "Running", attempt=1, machine="gpu-a"),
            _pod(1, "Failed", attempt=0, code=137, machine="gpu-lost"),
            _pod(1, "Running", attempt=1, machine="gpu-b")]
    status = status_from_trainjob(spec, _trainjob(), pods, {"status": {"restarts": 1}})
    assert [n.host for n in status.nodes] == ["gpu-a", "gpu-b"]
    assert [r.host for r in status.ranks] == ["gpu-a", "gpu-a", "gpu-b", "gpu-b"]


def test_a_killed_node_with_no_restart_left_says_so():
    spec = _spec(max_restarts=1)
    pods = [_pod(1, "Failed", attempt=0, code=137), _pod(1, "Failed", attempt=1, code=137)]
    trainjob = _trainjob(("Failed", "jobset failed"))
    trainjob["status"]["conditions"][0]["reason"] = "ReachedMaxRestarts"  # JobSet's, via Trainer
    status = status_from_trainjob(spec, trainjob, pods, {"status": {"restarts": 1}})
    assert status.state == JobState.FAILED and status.restarts == 1
    assert status.message.startswith("node 1 (rank 1) exited with code 137; jobset failed; "
                                     "no restart left: --max-restarts 1, 1 used"), status.message


def test_usage_counts_a_started_job_and_not_a_queued_one():
    _, _, manifest = _job(queue="workbench")
    manifest["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    assert usage_from_trainjob(manifest).started_at is None
    manifest["spec"]["suspend"] = False
    record = usage_from_trainjob(manifest)
    assert (record.nodes, record.gpus_per_node, record.user) == (2, 1, "ada-example.org")
    assert record.started_at is not None and record.finished_at is None


def _quota(hard, used):
    return {"metadata": {"name": "workbench-quota"}, "status": {"hard": hard, "used": used}}


def test_the_quota_preflight_warns_when_queued_and_refuses_what_can_never_fit():
    spec = _spec(nodes=1, gpus=8)
    busy = [_quota({"requests.nvidia.com/gpu": "8"}, {"requests.nvidia.com/gpu": "8"})]
    wait = check_quota(spec, TRAINJOB, busy, queued=True)
    assert wait == ("the job needs 8 GPUs (1 nodes x 8), but your tenant's quota "
                    "'workbench-quota' has requests.nvidia.com/gpu=8 with 8 in use")
    with pytest.raises(SpecError, match="wait for other jobs to finish"):
        check_quota(spec, TRAINJOB, busy, queued=False)
    with pytest.raises(SpecError, match="requests.nvidia.com/gpu=8 in all: it can never run"):
        check_quota(_spec(nodes=2, gpus=8), TRAINJOB, busy, queued=True)
    assert check_quota(spec, TRAINJOB, [_quota({"requests.nvidia.com/gpu": "8"}, {})],
                       queued=True) == ""


def _workload(uid, created, reserved=False, priority=0, queue="workbench", message="short"):
    return {"metadata": {"creationTimestamp": created,
                         "ownerReferences": [{"kind": "TrainJob", "uid": uid}]},
            "spec": {"queueName": queue, "priority": priority},
            "status": {"conditions": [{"type": "QuotaReserved",
                                       "status": "True" if reserved else "False",
                                       "message": message}]}}


def test_the_queue_message_gives_the_position_and_kueues_reason():
    mine = {"metadata": {"uid": "b", "labels": {QUEUE_LABEL: "workbench"}},
            "spec": {"suspend": True}}
    workloads = [_workload("a", "2026-01-01T00:00:01Z"),
                 _workload("b", "2026-01-01T00:00:02Z", message="8 more needed"),
                 _workload("c", "2026-01-01T00:00:00Z", reserved=True),  # admitted: not queued
                 _workload("d", "2026-01-01T00:00:03Z", priority=10),  # higher priority first
                 _workload("e", "2026-01-01T00:00:00Z", queue="other")]
    assert kueue.is_queued(mine)
    assert kueue.queue_message(mine, workloads) == (
        "position 3 of 3 in workbench; 8 more needed")


def test_the_position_comes_from_kueues_visibility_api_where_it_is_served():
    """Kueue's own order wins over the one computed here (e.g. after a preemption it may
    differ), and the reason still comes from the job's Workload."""
    mine = {"metadata": {"uid": "b", "labels": {QUEUE_LABEL: "workbench"}},
            "spec": {"suspend": True}}
    workloads = [_workload("a", "2026-01-01T00:00:01Z"),
                 _workload("b", "2026-01-01T00:00:02Z", message="8 more needed")]

    def pending(uid, position):  # a PendingWorkload as the visibility API returns it
        return {"metadata": {"name": f"trainjob-{uid}", "ownerReferences": [
                    {"kind": "TrainJob", "name": uid, "uid": uid}]},
                "localQueueName": "workbench", "positionInLocalQueue": position,
                "positionInClusterQueue": position + 3}

    summary = {"kind": "PendingWorkloadsSummary", "items": [pending("a", 1), pending("b", 0)]}
    assert kueue.queue_message(mine, workloads, summary) == (
        "position 1 of 2 in workbench; 8 more needed")
    assert kueue.queue_message(mine, workloads) == (  # not served: FIFO order here
        "position 2 of 2 in workbench; 8 more needed")
    assert kueue.queue_message(mine, workloads, {"items": [pending("a", 0)]}) == (
        "in workbench, waiting for Kueue to take the job in")
    assert pending_workloads_path("wb-vision", "workbench") == (
        "/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/wb-vision/localqueues/workbench/"
        "pendingworkloads")


def test_a_request_beyond_the_queues_maximum_capacity_is_a_refusal():
    never = _workload("a", "2026-01-01T00:00:00Z", message=(
        "couldn't assign flavors to pod set node: insufficient quota for nvidia.com/gpu in "
        "flavor gpu-nvidia-h100, previously considered podsets requests (0) + current podset "
        "request (24) > maximum capacity (16)"))
    assert "maximum capacity (16)" in kueue.never_fits(never)
    assert kueue.never_fits(_workload("a", "2026-01-01T00:00:00Z",
                                         message="8 more needed")) == ""


def test_what_the_node_launcher_needs_comes_from_the_runtime_or_the_trainjob():
    """Contract: every variable `node_launch` requires is set by the shipped runtime's container
    or by the TrainJob's trainer env that `build_trainjob` writes, and the launcher arguments
    the TrainJob carries follow the ones node_launch puts first."""
    from launcher_magic.training.node_launch import NodeLaunchError, launch

    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    (container,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
    spec, job, manifest = _job()
    trainer_env = {e["name"]: e.get("value", "") for e in manifest["spec"]["trainer"]["env"]}
    runtime_env = {e["name"]: e.get("value") or "from-the-pod" for e in container["env"]}
    # As the kubelet would have them for node 0 and node 1 (the TrainJob's env wins on a clash).
    pod_env = {**runtime_env, "PADDLE_MASTER": f"{spec.job_id}-node-0-0.{spec.job_id}:36543",
               "POD_IP": "198.18.0.7", **trainer_env}
    args = manifest["spec"]["trainer"]["args"]
    cwd, argv, env = launch({**pod_env, "PADDLE_WORKBENCH_NODE_RANK": "0"}, args,
                            python="python")
    assert cwd == str(job.path)
    assert env["PADDLE_MASTER"] == "198.18.0.7:36543"  # Paddle's launcher prefers it to --master
    assert argv[:3] == ["python", "-m", "paddle.distributed.launch"]
    assert argv[argv.index("--master") + 1] == "198.18.0.7:36543"
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[-len(args):] == args
    _, argv, _ = launch({**pod_env, "PADDLE_WORKBENCH_NODE_RANK": "1"}, args, python="python")
    assert argv[argv.index("--master") + 1] == f"{spec.job_id}-node-0-0.{spec.job_id}:36543"
    assert argv[argv.index("--rank") + 1] == "1"
    with pytest.raises(NodeLaunchError, match="PADDLE_WORKBENCH_JOB_DIR"):
        launch({k: v for k, v in pod_env.items() if k != "PADDLE_WORKBENCH_JOB_DIR"}, args)


def test_a_jobs_network_policy_joins_its_own_pods_and_no_colleagues_of_the_same_name():
    """The pods each kind makes carry what their job's NetworkPolicy selects; Bob's TrainJob
    and Ada's PaddleJob of the same name (two kinds, so both may exist) stay apart."""
    bobs = build_spec(LaunchOptions(nodes=2), "train()", NotebookContext.from_env(
        {**HUB_ENV, "PADDLE_WORKBENCH_USER": "bob@example.org"}), suffix="a1b2c3")
    bobs_pods = _pod_patch(build_trainjob(bobs, JobDir(Path("/j") / bobs.job_id), CLUSTER))[1]
    adas = _spec()
    paddlejob = build_paddlejob(adas, JobDir(Path("/j") / adas.job_id), CLUSTER)
    adas_pods = paddlejob["spec"]["paddleReplicaSpecs"]["Worker"]["template"]
    assert adas.job_id == bobs.job_id

    def selects(policy, pods) -> bool:
        chosen = policy["spec"]["podSelector"]["matchLabels"]
        return chosen.items() <= pods["metadata"]["labels"].items()

    for spec, pods, other in ((adas, adas_pods, bobs_pods), (bobs, bobs_pods, adas_pods)):
        policy = job_network(spec, CLUSTER.namespace)
        assert policy["metadata"]["name"] == spec.job_id
        assert selects(policy, pods) and not selects(policy, other)
        (ingress,) = policy["spec"]["ingress"]
        (egress,) = policy["spec"]["egress"]
        assert ingress["from"] == egress["to"] == [{"podSelector": policy["spec"]["podSelector"]}]


def _lost(pod: dict, reason: str = "DeletionByTaintManager") -> dict:
    """`pod` as Kubernetes leaves it when its node is lost: marked for deletion, with the
    condition that says why."""
    pod["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                    "reason": reason,
                                    "lastTransitionTime": "2026-01-01T00:05:00Z"}]
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    return pod


def test_a_node_whose_machine_was_lost_says_so_and_restarts():
    """The taint eviction controller's eviction (the node stopped answering) and the pod
    collector's removal (the node was taken out of service) are a lost machine; the panel says
    which node, which machine and what happens next. Another disruption is not."""
    spec = _spec(gpus=0)
    for reason in ("DeletionByTaintManager", "DeletionByPodGC"):
        pods = [_pod(0, "Running", machine="gpu-a"),
                _lost(_pod(1, "Running", machine="gpu-b"), reason)]
        status = status_from_trainjob(spec, _trainjob(), pods)
        assert status.state == JobState.RESTARTING, reason
        assert status.message.startswith("node 1 lost its machine gpu-b at "), status.message
        assert "restarts" in status.message and "checkpoint" in status.message
        assert [n.lost_at is not None for n in status.nodes] == [False, True]
    preempted = [_pod(0, "Running"), _lost(_pod(1, "Running"), "PreemptionByScheduler")]
    assert status_from_trainjob(spec, _trainjob(), preempted).state == JobState.RUNNING
    # A job that has ended stays as it ended.
    done = status_from_trainjob(spec, _trainjob(("Complete", "done")),
                                [_lost(_pod(1, "Running", machine="gpu-b"))])
    assert done.state == JobState.SUCCEEDED
