"""Start the test control plane and real nodes by hand, and print start-up figures.

    sudo PATH=$PATH:/usr/local/go/bin .venv/bin/python tests/cluster/node/run_node.py
         [--nodes N] [--pods N] [--keep]

Builds what is missing (deploy/controlplane/build.sh, deploy/node/build.sh), starts the plane and
N nodes (default 1; the second and later ones each in a network namespace standing for a
machine of its own) in a fresh folder under /tmp, starts test-server pods one after another
(image cached: imported at node start) and prints how long each node and each pod took to
start. With ``--keep`` it then prints the admin kubeconfig and waits for Ctrl-C or SIGTERM;
either way it stops the nodes and the plane, cleans the host up as the test fixture does and
removes the folder.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[2])]

import k8s_plane  # noqa: E402
import pods  # noqa: E402
import real_node  # noqa: E402


def _pod_start_seconds(core, namespace: str, name: str) -> float:
    began = time.monotonic()
    core.create_namespaced_pod(namespace, pods.server_pod(name))

    def ready():
        pod = core.read_namespaced_pod(name, namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    real_node.wait_for(ready, 300, f"pod {name} to be Ready")
    return time.monotonic() - began


def _interrupt(signum, frame) -> None:
    """SIGTERM (what `timeout`, a service manager or a cancelled CI job sends) and SIGINT
    (Ctrl-C; ignored by default in a background job) stop the nodes and the plane cleanly."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1, help="nodes to start (default 1)")
    parser.add_argument("--pods", type=int, default=3, help="test pods to time (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    if not 1 <= args.nodes <= 8:
        parser.error("--nodes takes 1 to 8")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)

    plane_bin, error = k8s_plane.build_control_plane()
    if plane_bin is None:
        print(error, file=sys.stderr)
        return 1
    node_build, error = real_node.build_node()
    if node_build is None:
        print(error, file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="workbench-node-"))
    plane = k8s_plane.ControlPlane(plane_bin, work / "plane")
    nodes = [real_node.RealNode(node_build, work / f"node{i}", plane, index=i)
             for i in range(args.nodes)]
    started: list = []
    failed = 0
    try:
        began = time.monotonic()
        plane.start()
        print(f"control plane started in {time.monotonic() - began:.1f}s")
        for node in nodes:
            started.append(node)
            node.start()
            print(f"node {node.name} started in {node.start_seconds:.1f}s (containerd, image "
                  "import, kubelet, kube-proxy, Ready, kube-router"
                  f"{', CoreDNS' if node.first else ''})")
        from kubernetes import client

        core = client.CoreV1Api(plane.api_client())
        core.create_namespace({"metadata": {"name": "timing", "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        real_node.wait_for(lambda: core.read_namespaced_service_account("default", "timing"),
                           60, "the default service account")
        for i in range(args.pods):
            seconds = _pod_start_seconds(core, "timing", f"server-{i}")
            print(f"pod server-{i} Ready {seconds:.1f}s after create (image cached)")
        if args.keep:
            for node in nodes:
                print(f"node {node.name} logs: {node.layout.work / 'logs'}")
            print(f"kubeconfig: {plane.kubeconfig}\nCtrl-C stops the nodes and the plane")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except real_node.NodeError as exc:
        failed = 1
        print(exc, file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleaning
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for node in reversed(started):  # the first node last: it holds the machine's lock
                try:
                    node.stop()
                    print(f"node {node.name} stopped; nothing left behind")
                except real_node.NodeError as exc:
                    failed = 1
                    print(f"node {node.name}: {exc}", file=sys.stderr)
        finally:
            plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
