"""The built images started for real with runc, as the notebook platform starts them: pulled by
digest from the internal registry, non-root with a fixed uid, no capabilities, no new privileges,
a read-only root. The CPU image then does what a notebook needs: the single-user server, Paddle
and VisualDL, the magic loaded by default, and a two-rank job trained by the local engine."""

from __future__ import annotations

import json
import os

import pytest

from tests.images import oci_runtime
from tests.images.oci_runtime import Mount, NonRootError, RunOptions

# The notebook's home, as the pod's volume provides it (the image's root is read-only).
HOME = Mount("/home/jovyan", owner=(1000, 100))
LOCKDOWN = ("id -u; id -g; grep CapEff /proc/self/status; "
            "touch /etc/x 2>/dev/null && echo wrote-etc; "
            "su -c id root </dev/null >/dev/null 2>&1 && echo became-root; "
            "command -v sudo || echo no-sudo")


@pytest.mark.parametrize(("name", "uid", "gid"),
                         [("cpu", 1000, 100), ("hub", 1000, 1000), ("proxy", 65534, 65534)])
def test_runs_as_its_fixed_uid_without_privileges(runtime, built_images, name, uid, gid) -> None:
    result = runtime.run(built_images[name], RunOptions(args=("sh", "-c", LOCKDOWN)))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("\n")
    assert lines[:3] == [str(uid), str(gid), "CapEff:\t0000000000000000"], result.stdout
    assert "wrote-etc" not in result.stdout and "became-root" not in result.stdout
    assert "no-sudo" in result.stdout


@pytest.mark.parametrize("name", ["cpu", "hub", "proxy"])
def test_refuses_to_start_as_root_when_run_as_non_root(runtime, built_images, name) -> None:
    before = runtime.running()
    with pytest.raises(NonRootError):
        runtime.run(built_images[name], RunOptions(args=("id",), user=(0, 0)))
    assert runtime.running() == before


def test_the_run_as_non_root_check_reads_the_image_user() -> None:
    image = {"process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "env": []}, "mounts": []}
    with pytest.raises(NonRootError):
        oci_runtime.container_spec(image, "/rootfs", "/hosts", RunOptions(args=("id",)))
    spec = oci_runtime.container_spec(image, "/rootfs", "/hosts",
                                      RunOptions(args=("id",), run_as_non_root=False))
    assert spec["process"]["user"]["uid"] == 0 and spec["process"]["capabilities"]["bounding"] == []


def test_the_notebook_server_starts_its_help(runtime, built_images) -> None:
    result = runtime.run(built_images["cpu"],
                         RunOptions(args=("jupyterhub-singleuser", "--help-all"), mounts=(HOME,)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--JupyterHubSingleUser." in result.stdout


def test_paddle_visualdl_and_the_magic_load(runtime, built_images) -> None:
    code = ("import json, paddle, visualdl; from visualdl import LogWriter\n"
            "w = LogWriter(logdir='/tmp/vdl'); w.add_scalar('loss', 0.5, 1); w.close()\n"
            "print(json.dumps({'paddle': paddle.__version__, "
            "'sum': float(paddle.to_tensor([1.0, 2.0]).sum())}))")
    result = runtime.run(built_images["cpu"], RunOptions(args=("python", "-c", code),
                                                         mounts=(HOME,)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["sum"] == 3.0
    magic = runtime.run(built_images["cpu"], RunOptions(args=(
        "ipython", "--no-banner", "-c", "print(sorted(get_ipython().extension_manager.loaded))"),
        mounts=(HOME,)))
    assert magic.returncode == 0, magic.stderr[-3000:]
    assert "launcher_magic" in magic.stdout


def test_a_two_rank_job_trains_inside_the_container(runtime, built_images, tmp_path) -> None:
    from tests.launcher_magic.support import TRAIN_CELL

    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 1000, 100)
    script = home / "train.ipy"
    script.write_text("%%paddle_launch --nodes 2 --name dp\n" + TRAIN_CELL)
    os.chown(script, 1000, 100)
    result = runtime.run(built_images["cpu"], RunOptions(
        args=("ipython", "--no-banner", "--colors=NoColor", "/home/jovyan/train.ipy"),
        mounts=(Mount("/home/jovyan", str(home)),), env={"STEPS": "8"}), timeout=1200)
    jobs = sorted((home / "jobs").iterdir()) if (home / "jobs").is_dir() else []
    assert len(jobs) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    status = json.loads((jobs[0] / "status.json").read_text())
    assert status["state"] == "Succeeded", (status, result.stdout[-2000:])
    assert [r["state"] for r in status["ranks"]] == ["Succeeded", "Succeeded"]
    logs = [(jobs[0] / f"logs/attempt-0/node-{n}/workerlog.0").read_text() for n in (0, 1)]
    assert "done world=2 rank=0" in logs[0] and "done world=2 rank=1" in logs[1]
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_hub_image_holds_the_hub_and_its_plugins(runtime, built_images) -> None:
    # The Zero to JupyterHub chart's hub config switches tornado to its curl client (pycurl).
    code = ("import jupyterhub, kubespawner, oauthenticator, jupyterhub_idle_culler, hub_config; "
            "from tornado.httpclient import AsyncHTTPClient; "
            "AsyncHTTPClient.configure('tornado.curl_httpclient.CurlAsyncHTTPClient'); "
            "print(type(AsyncHTTPClient()).__name__); print(jupyterhub.__version__)")
    result = runtime.run(built_images["hub"], RunOptions(args=("python", "-c", code)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-2:] == ["CurlAsyncHTTPClient", "6.1.1"]
    hub = runtime.run(built_images["hub"], RunOptions(args=("jupyterhub", "--help")))
    assert hub.returncode == 0, hub.stderr[-2000:]


def test_the_proxy_image_runs_configurable_http_proxy(runtime, built_images) -> None:
    # By name, from PATH, as the Zero to JupyterHub chart's proxy container starts it.
    result = runtime.run(built_images["proxy"], RunOptions(
        args=("configurable-http-proxy", "--version")))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "4.6.3"


def test_the_locked_packages_are_consistent_in_the_image(runtime, built_images) -> None:
    for name in ("cpu", "hub"):
        checked = runtime.run(built_images[name], RunOptions(args=("python", "-m", "pip", "check")))
        assert checked.returncode == 0, (name, checked.stdout[-2000:])
