"""The PaddleJob kind's pure parts and the cluster engine's shared ones: PaddleJob manifests,
the `--env` Secret, quota preflight, status mapping, what a refusal says."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import LaunchOptions, SpecError, build_spec
from launcher_magic.core.status import JobState, RankState
from launcher_magic.engines.cluster.api import policy_refusal, webhook_refusal
from launcher_magic.engines.cluster.objects import (
    ClusterSettings,
    env_secret,
    env_secret_name,
    owned_by,
    with_rank_records,
)
from launcher_magic.engines.cluster.paddlejob import (
    build_paddlejob,
    exits_from_events,
    status_from_paddlejob,
)
from launcher_magic.engines.cluster.quota import check_quota
from workbench_contract.cluster import PADDLEJOB
from workbench_contract.environment import NotebookContext, Storage
from workbench_contract.pod_security import restricted_security_contexts

CRD = Path(__file__).parents[2] / "deploy" / "k8s" / "crds" / "kubeflow.org_paddlejobs.yaml"
HUB_ENV = {"PADDLE_WORKBENCH_TENANT": "vision", "PADDLE_WORKBENCH_NAMESPACE": "wb-vision",
           "PADDLE_WORKBENCH_USER": "ada@example.org", "PADDLE_WORKBENCH_ENGINE": "paddlejob",
           "PADDLE_WORKBENCH_IMAGE": "reg.example/nb@sha256:" + "c" * 64,
           "PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS": "86400"}
CLUSTER = ClusterSettings(namespace="wb-vision", image=HUB_ENV["PADDLE_WORKBENCH_IMAGE"],
                          storage=Storage("claim-ada", "/home/jovyan"))


def _job(**options):
    spec = build_spec(LaunchOptions(**{"nodes": 2, "gpus": 1, **options}), "train()", NotebookContext.from_env(HUB_ENV),
                      suffix="a1b2c3")
    job = JobDir(Path("/home/jovyan/jobs") / spec.job_id)
    return spec, job, build_paddlejob(spec, job, CLUSTER)


def test_paddlejob_is_collective_with_the_job_contract():
    spec, job, manifest = _job(max_restarts=2, cpu="4", memory="16Gi", env=("LR=0.1",))
    assert manifest["metadata"] == {
        "name": "job-a1b2c3", "namespace": "wb-vision",
        "labels": {"workbench.paddle.org/job": "job-a1b2c3",
                   "workbench.paddle.org/component": "job-worker",
                   "workbench.paddle.org/tenant": "vision",
                   "workbench.paddle.org/user": "ada-example.org"}}
    worker = manifest["spec"]["paddleReplicaSpecs"]["Worker"]
    assert set(manifest["spec"]["paddleReplicaSpecs"]) == {"Worker"}  # no Master: collective
    assert worker["replicas"] == 2 and worker["restartPolicy"] == "ExitCode"
    run_policy = manifest["spec"]["runPolicy"]
    assert run_policy["activeDeadlineSeconds"] == 86400  # the tenant's maximum runtime
    assert run_policy["backoffLimit"] == 2  # --max-restarts
    assert run_policy["cleanPodPolicy"] == "Running" and run_policy["ttlSecondsAfterFinished"] > 0

    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "paddle" and container["image"] == CLUSTER.image
    argv = container["command"]
    assert argv[1:3] == ["-m", "paddle.distributed.launch"]
    assert argv[-1] == str(job.main_path)
    assert argv[argv.index("--rank") + 1] == "$(PADDLE_WORKBENCH_NODE_RANK)"
    assert argv[argv.index("--devices") + 1] == "0"
    env = {e["name"]: e for e in container["env"]}
    assert not {"PADDLE_MASTER", "PADDLE_NNODES", "PADDLE_JOB_ID"} & set(env)  # the operator's
    assert env["PADDLE_WORKBENCH_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['training.kubeflow.org/replica-index']")
    # --env values live in the job's Secret, not in the PaddleJob colleagues may read.
    assert env["LR"] == {"name": "LR", "valueFrom": {"secretKeyRef": {
        "name": "ada-example-org.job-a1b2c3-env", "key": "LR"}}}
    assert "0.1" not in repr(manifest)
    assert env["PADDLE_WORKBENCH_JOB_DIR"]["value"] == str(job.path)
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi",
                                                "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    # The user's storage at the notebook's path: the job directory is the same in every pod.
    assert container["volumeMounts"] == [{"name": "home", "mountPath": "/home/jovyan"}]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "claim-ada"}
    assert container["workingDir"] == str(job.path)
    assert pod["tolerations"][0] == GPU_TOLERATION
    assert pod["automountServiceAccountToken"] is False


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _lost_node(seconds: int) -> list[dict]:
    """The tolerations that bound how long a pod stays on a lost node (NoExecute: evicted)."""
    return [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": seconds},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": seconds}]


def test_a_jobs_workers_spread_over_machines_and_leave_a_lost_one_soon():
    """Two nodes: the workers prefer two machines (one free machine still runs the job, so
    ScheduleAnyway), counting only this job's pods; a worker on a machine that stops answering
    is evicted after the tenant's seconds, not Kubernetes' 300."""
    spec, _, manifest = _job()
    pod = manifest["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"workbench.paddle.org/job": "job-a1b2c3"}}}]
    assert pod["tolerations"] == [GPU_TOLERATION, *_lost_node(30)]
    spec_one = replace(spec, nodes=1)
    one = build_paddlejob(spec_one, JobDir(Path("/j") / spec.job_id),
                          replace(CLUSTER, node_loss_toleration=0))
    pod = one["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod  # one pod: nothing to spread
    assert pod["tolerations"] == [GPU_TOLERATION, *_lost_node(0)]


def test_env_values_go_into_a_secret_of_the_user_that_the_job_owns():
    spec, _, manifest = _job(env=("API_KEY=s3cret", "LR=0.1"))
    secret = env_secret(spec, CLUSTER.namespace)
    assert secret["metadata"] == {"name": "ada-example-org.job-a1b2c3-env",
                                  "namespace": "wb-vision",
                                  "labels": manifest["metadata"]["labels"]}
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"API_KEY": "s3cret", "LR": "0.1"}
    (container,) = manifest["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {k: {"name": secret["metadata"]["name"], "key": k} for k in ("API_KEY", "LR")}
    assert "s3cret" not in repr(manifest)
    # No --env, no Secret.
    assert env_secret(_job()[0], CLUSTER.namespace) is None
    created = {**manifest, "metadata": {**manifest["metadata"], "uid": "u-1"}}
    assert owned_by(created) == {"metadata": {"ownerReferences": [{
        "apiVersion": "kubeflow.org/v1", "kind": "PaddleJob", "name": "job-a1b2c3",
        "uid": "u-1"}]}}


def test_apolicy_refusal_reaches_the_user_as_its_rule():
    said = ("paddlejobs.kubeflow.org \"job-a1\" is forbidden: ValidatingAdmissionPolicy "
            "'workbench-vision-paddlejobs' with binding 'workbench-vision-paddlejobs' denied "
            "request: workbench rule nodes: the job asks for 50 nodes")
    assert policy_refusal(SimpleNamespace(body=json.dumps({"message": said}))) == (
        "workbench rule nodes: the job asks for 50 nodes")
    rbac = 'User "x" cannot create resource "paddlejobs"'
    assert policy_refusal(SimpleNamespace(body=json.dumps({"message": rbac}))) == ""
    assert policy_refusal(SimpleNamespace(body="<html>")) == ""
    assert policy_refusal(SimpleNamespace(body=None)) == ""


def test_awebhook_refusal_reaches_the_user_with_what_the_webhook_said():
    """A validating webhook answers 403 by default: the user sees its words, not "RBAC"."""
    said = ('admission webhook "validate.trainjob.trainer.kubeflow.org" denied the request: '
            'spec.runtimeRef: Not found: "paddle-workbench"')
    assert webhook_refusal(SimpleNamespace(body=json.dumps({"message": said}))) == said
    rbac = 'User "x" cannot create resource "trainjobs"'
    assert webhook_refusal(SimpleNamespace(body=json.dumps({"message": rbac}))) == ""
    assert webhook_refusal(SimpleNamespace(body=None)) == ""


@pytest.mark.parametrize("user, name", [
    ("ada", "ada.job-a1b2c3-env"),  # the hub's label-safe name: the policy's `<user>.` prefix
    ("Ada_Lovelace@x.org", "ada-lovelace-x-org.job-a1b2c3-env"),  # still a valid Secret name
    ("", "job-a1b2c3-env"),
], ids=["hub-user", "raw-name", "no-user"])
def test_env_secret_name_starts_with_the_user(user, name):
    spec, _, _ = _job()
    assert env_secret_name(replace(spec, user=user)) == name


def test_paddlejob_pods_are_pod_security_restricted():
    _, _, manifest = _job()
    pod = manifest["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["privileged"] is False
    # The same contexts as notebook pods: one builder for both.
    assert (pod["securityContext"], container["securityContext"]) == \
        restricted_security_contexts(CLUSTER.uid, CLUSTER.gid)
    assert all("hostPath" not in v for v in pod.get("volumes", []))


@pytest.mark.parametrize("options", [{}, {"gpus": 0, "nproc_per_node": 4}, {"max_restarts": 5}],
                         ids=["gpu", "cpu", "restarts"])
def test_paddlejob_validates_against_the_v190_crd_schema(options):
    _, _, manifest = _job(**options)
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    jsonschema.validate(manifest, schema)
    broken = {**manifest, "spec": {**manifest["spec"], "runPolicy": {"backoffLimit": "many"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def _quota(hard, used, name="compute"):
    return {"metadata": {"name": name}, "status": {"hard": hard, "used": used}}


def test_quota_preflight_refuses_what_cannot_fit():
    spec, _, _ = _job(gpus=4)  # 2 nodes x 4 GPUs
    check_quota(spec, PADDLEJOB, [_quota({"requests.nvidia.com/gpu": "8"},
                                         {"requests.nvidia.com/gpu": "0"})])
    with pytest.raises(SpecError, match=r"needs 8 GPUs \(2 nodes x 4\).*'compute'.*"
                                        r"requests.nvidia.com/gpu=8 with 2 in use"):
        check_quota(spec, PADDLEJOB, [_quota({"requests.nvidia.com/gpu": "8"},
                                  {"requests.nvidia.com/gpu": "2"})])
    with pytest.raises(SpecError, match="1 more PaddleJob"):
        check_quota(spec, PADDLEJOB, [_quota({"count/paddlejobs.kubeflow.org": "3"},
                                  {"count/paddlejobs.kubeflow.org": "3"})])
    spec_mem, _, _ = _job(gpus=0, memory="48Gi")
    with pytest.raises(SpecError, match="2 x 48Gi memory"):
        check_quota(spec_mem, PADDLEJOB, [_quota({"requests.memory": "64Gi"},
                                                 {"requests.memory": "0"})])


def _pod(index, phase, code=None, restarts=0, machine=None):
    state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
    return {"metadata": {"labels": {"training.kubeflow.org/replica-index": str(index)}},
            "spec": {"nodeName": machine} if machine else {},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "paddle", "state": state, "restartCount": restarts}]}}


def _paddlejob(*conditions):
    return {"status": {"startTime": "2026-11-26T10:00:00Z", "conditions": [
        {"type": t, "status": "True", "lastTransitionTime": f"2026-11-26T10:00:0{i}Z",
         "message": f"job is {t}"} for i, t in enumerate(conditions)]}}


def test_status_follows_the_latest_condition_and_the_pods():
    spec, _, _ = _job()
    assert status_from_paddlejob(spec, None, []).state == JobState.PENDING
    running = status_from_paddlejob(spec, _paddlejob("Created", "Running"),
                                  [_pod(0, "Running"), _pod(1, "Running")])
    assert running.state == JobState.RUNNING and running.message == "job is Running"
    same_second = _paddlejob("Created", "Running")
    for condition in same_second["status"]["conditions"]:
        condition["lastTransitionTime"] = "2026-11-26T10:00:00Z"
    assert status_from_paddlejob(spec, same_second, []).state == JobState.RUNNING
    assert [n.state for n in running.nodes] == [RankState.RUNNING, RankState.RUNNING]
    failed = status_from_paddlejob(spec, _paddlejob("Created", "Running", "Failed"),
                                 [_pod(0, "Running"), _pod(1, "Failed", code=1, restarts=2)])
    assert failed.state == JobState.FAILED and failed.failed_rank == 1
    assert failed.nodes[1].exit_code == 1 and failed.restarts == 2
    assert failed.finished_at is not None
    # Each rank is on the machine its worker pod was scheduled to; an unscheduled one, none.
    spec_two = replace(spec, resources=replace(spec.resources, nproc_per_node=2))
    placed = status_from_paddlejob(spec_two, _paddlejob("Created"),
                                   [_pod(0, "Running", machine="gpu-a"), _pod(1, "Pending")])
    assert [(n.node, n.host) for n in placed.nodes] == [(0, "gpu-a"), (1, None)]
    assert [(r.rank, r.host) for r in placed.ranks] == [
        (0, "gpu-a"), (1, "gpu-a"), (2, None), (3, None)]
    done = status_from_paddlejob(spec, _paddlejob("Created", "Running", "Succeeded"),
                               [_pod(0, "Succeeded", 0), _pod(1, "Succeeded", 0)])
    assert done.state == JobState.SUCCEEDED
    assert [r.state for r in done.ranks] == [RankState.SUCCEEDED, RankState.SUCCEEDED]


def test_a_ranks_own_record_keeps_the_machine_its_pod_is_on(tmp_path):
    """Where the job directory is shared, a rank's record is more precise about its state; the
    machine still comes from the pod, which the record cannot know."""
    spec, _, _ = _job()
    status = status_from_paddlejob(spec, _paddlejob("Created", "Running"), [
        _pod(0, "Running", machine="gpu-a"), _pod(1, "Running", machine="gpu-b")])
    job = JobDir(tmp_path / spec.job_id)
    job.rank_record(0, 1).parent.mkdir(parents=True)
    job.rank_record(0, 1).write_text(json.dumps({"rank": 1, "state": "Failed", "exit_code": 3}))
    ranks = with_rank_records(status, job, 0).ranks
    assert [(r.state, r.exit_code, r.host) for r in ranks] == [
        (RankState.RUNNING, None, "gpu-a"), (RankState.FAILED, 3, "gpu-b")]


def test_exit_codes_come_from_the_operators_events_when_pods_are_gone():
    spec, _, _ = _job()
    events = [
        {"reason": "ExitedWithCode", "lastTimestamp": "2026-11-26T10:00:05Z",
         "message": "Pod: wb-vision.job-a1b2c3-worker-1 exited with code 1"},
        {"reason": "ExitedWithCode", "lastTimestamp": "2026-11-26T10:00:06Z",
         "message": "Pod: wb-vision.job-a1b2c3-worker-0 exited with code 137"},
        {"reason": "SuccessfulCreateService", "message": "Created service: job-a1b2c3-worker-0"},
        {"reason": "ExitedWithCode",
         "message": "Pod: wb-vision.other-job-worker-0 exited with code 2"},
        {"reason": "SuccessfulCreatePod", "count": 1, "message": "Created pod: job-a1b2c3-worker-0"},
        {"reason": "SuccessfulCreatePod", "count": 3, "message": "Created pod: job-a1b2c3-worker-1"},
        {"reason": "PaddleJobRestarting", "count": 2,
         "message": "job job-a1b2c3 is restarting because Worker replica(s) failed."},
    ]
    assert exits_from_events(spec.job_id, events) == {1: 1, 0: 137}
    failed = status_from_paddlejob(spec, _paddlejob("Created", "Running", "Failed"), [], events)
    assert failed.failed_rank == 1  # worker 1 exited first
    assert [n.exit_code for n in failed.nodes] == [137, 1]
    assert failed.restarts == 2


def test_a_restart_of_every_worker_counts_once():
    """A lost machine takes the collective down with it: the operator makes every worker again.
    That is one restart of the job (as JobSet's restart of a TrainJob is), not one per worker."""
    spec, _, _ = _job()
    made = [{"reason": "SuccessfulCreatePod", "message": f"Created pod: job-a1b2c3-worker-{i}"}
            for i in (0, 1)]
    status = status_from_paddlejob(spec, _paddlejob("Created", "Running"),
                                   [_pod(0, "Running"), _pod(1, "Running")], made + made)
    assert status.restarts == 1
    assert status_from_paddlejob(spec, _paddlejob("Created", "Running"),
                                 [_pod(0, "Running"), _pod(1, "Running")], made).restarts == 0


def test_an_unreachable_api_server_is_a_clear_error(tmp_path, monkeypatch):
    from launcher_magic.engines import EngineError, load_engine

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    engine = load_engine("paddlejob", kubeconfig=str(kubeconfig))
    spec, _, _ = _job()
    with pytest.raises(EngineError, match="the cluster is unreachable, try again in a minute "
                                          r"\(no answer from the Kubernetes API server at "
                                          "http://127.0.0.1:9"):
        engine.preflight(spec)


def test_a_worker_evicted_from_a_lost_machine_says_so():
    spec, _, _ = _job()
    lost = _pod(1, "Running", machine="gpu-b")
    lost["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                     "reason": "DeletionByTaintManager",
                                     "lastTransitionTime": "2026-11-26T10:05:00Z"}]
    status = status_from_paddlejob(spec, _paddlejob("Created", "Running"),
                                   [_pod(0, "Running", machine="gpu-a"), lost])
    assert status.state == JobState.RESTARTING
    assert status.message.startswith("node 1 lost its machine gpu-b at ")
