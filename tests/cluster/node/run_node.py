"""Start the test control plane and the real node by hand, and print start-up figures.

    sudo PATH=$PATH:/usr/local/go/bin .venv/bin/python tests/cluster/node/run_node.py [--pods N]
         [--keep]

Builds what is missing (deploy/controlplane/build.sh, deploy/node/build.sh), starts the plane and
the node in a fresh folder under /tmp, starts N test-server pods one after another (image
cached: imported at node start) and prints how long the node and each pod took to start. With
``--keep`` it then prints the admin kubeconfig and waits for Ctrl-C; either way it stops the
node and the plane, cleans the host up as the test fixture does and removes the folder.
"""

from __future__ import annotations

import argparse
import shutil
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=3, help="test pods to time (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()

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
    node = real_node.RealNode(node_build, work / "node", plane)
    try:
        began = time.monotonic()
        plane.start()
        print(f"control plane started in {time.monotonic() - began:.1f}s")
        node.start()
        print(f"node {node.name} started in {node.start_seconds:.1f}s (containerd, image "
              "import, CoreDNS, kubelet, kube-proxy, Ready, kube-router)")
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
            print(f"kubeconfig: {plane.kubeconfig}\nnode logs: {node.layout.work / 'logs'}\n"
                  "Ctrl-C stops the node and the plane")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            node.stop()
            print("node stopped; nothing left behind")
        finally:
            plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
