"""Run a workbench image with runc, as a kubelet would: pulled by digest, unpacked, locked down.

`container_spec(...)` is pure: it turns the runtime config umoci derived from the image (its user,
environment, working directory) into the one the tests run: no capabilities, no new privileges,
a read-only root, a fresh /tmp, the hosts file a runtime provides, and a refusal to start as root
when `run_as_non_root` says so (kubelet's `runAsNonRoot` check, made before anything starts).
`Runtime` does the I/O: skopeo pulls by digest (only from the internal registry: the build's
policy.json and registries.conf), umoci unpacks once per digest, runc runs and is always cleaned up.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class NonRootError(RuntimeError):
    """The container would run as root, and its config says it must not (nothing started)."""


@dataclass(frozen=True)
class Mount:
    """A host folder (bind) or a tmpfs (source None) in the container."""

    destination: str
    source: str | None = None
    read_only: bool = False
    owner: tuple[int, int] | None = None  # tmpfs only: uid, gid of its root

    def to_oci(self) -> dict:
        if self.source is None:
            options = ["nosuid", "nodev", "mode=1777" if self.owner is None else "mode=0755"]
            if self.owner is not None:
                options += [f"uid={self.owner[0]}", f"gid={self.owner[1]}"]
            return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs",
                    "options": options}
        options = ["rbind", "nosuid", "nodev", "ro" if self.read_only else "rw"]
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": options}


@dataclass(frozen=True)
class RunOptions:
    """What the test asks of one container run."""

    args: tuple[str, ...]
    user: tuple[int, int] | None = None  # None: the image's USER
    run_as_non_root: bool = True
    hostname: str = "notebook"
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    capabilities: tuple[str, ...] = ()


def container_spec(image_spec: dict, rootfs: str, hosts_file: str, options: RunOptions) -> dict:
    """The OCI runtime config of one run, from the config umoci wrote for the image.

    Raises:
        NonRootError: the effective uid is 0 and `options.run_as_non_root` is set.
    """
    spec = copy.deepcopy(image_spec)
    process = spec["process"]
    if options.user is not None:
        process["user"] = {"uid": options.user[0], "gid": options.user[1]}
    if options.run_as_non_root and int(process["user"].get("uid", 0)) == 0:
        raise NonRootError("the container would run as uid 0 and runAsNonRoot is set; "
                           "the image must name a non-root USER")
    process["args"] = list(options.args)
    process["terminal"] = False
    process["noNewPrivileges"] = True
    caps = list(options.capabilities)
    process["capabilities"] = {k: list(caps) for k in
                               ("bounding", "effective", "inheritable", "permitted", "ambient")}
    env = [e for e in process.get("env", []) if e.split("=", 1)[0] not in options.env]
    process["env"] = env + [f"{k}={v}" for k, v in options.env.items()]
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["hostname"] = options.hostname
    mounts = [m for m in spec.get("mounts", []) if m["destination"] != "/tmp"]
    mounts.append(Mount("/tmp").to_oci())
    mounts.append(Mount("/etc/hosts", hosts_file, read_only=True).to_oci())
    mounts += [m.to_oci() for m in options.mounts]
    spec["mounts"] = mounts
    return spec


def hosts_file_text(hostname: str) -> str:
    """What a runtime puts in /etc/hosts (kubelet writes the pod's name the same way)."""
    return f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.0.1\t{hostname}\n"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Runtime:
    """Pull, unpack and run images with runc; `close()` removes every container it started."""

    def __init__(self, work: Path, unpack_cache: Path, policy: Path, registries_conf: Path):
        self.work = work
        self.unpack_cache = unpack_cache
        self.policy = policy
        self.registries_conf = registries_conf
        self.state = work / "runc"
        self.started: list[str] = []

    def _env(self) -> dict[str, str]:
        import os
        return {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf)}

    def pull(self, reference: str) -> subprocess.CompletedProcess:
        """skopeo copy docker://REFERENCE into an OCI layout (the policy decides what may come)."""
        layout = self.work / f"pull-{uuid.uuid4().hex[:8]}"
        return subprocess.run(
            ["skopeo", "--policy", str(self.policy), "copy", "--quiet", "--src-tls-verify=false",
             f"docker://{reference}", f"oci:{layout}:image"],
            capture_output=True, text=True, timeout=900, env=self._env())

    def unpack(self, reference: str) -> Path:
        """The unpacked bundle of an image pinned by digest (cached per digest, never changed)."""
        digest = reference.rsplit("@", 1)[1].replace(":", "-")
        bundle = self.unpack_cache / digest
        if (bundle / ".complete").exists():
            return bundle
        shutil.rmtree(bundle, ignore_errors=True)
        layout = self.work / f"layout-{digest}"
        pulled = subprocess.run(
            ["skopeo", "--policy", str(self.policy), "copy", "--quiet", "--src-tls-verify=false",
             f"docker://{reference}", f"oci:{layout}:image"],
            capture_output=True, text=True, timeout=900, env=self._env())
        assert pulled.returncode == 0, pulled.stderr[-2000:]
        self.unpack_cache.mkdir(parents=True, exist_ok=True)
        unpacked = subprocess.run(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)],
                                  capture_output=True, text=True, timeout=1800)
        assert unpacked.returncode == 0, unpacked.stderr[-2000:]
        shutil.rmtree(layout, ignore_errors=True)
        (bundle / ".complete").touch()
        return bundle

    def run(self, reference: str, options: RunOptions, timeout: int = 600) -> Result:
        """Run one container to its end; it is deleted whatever happens.

        Raises:
            NonRootError: before anything starts (see `container_spec`).
        """
        bundle = self.unpack(reference)
        image_spec = json.loads((bundle / "config.json").read_text())
        name = f"wb-{uuid.uuid4().hex[:10]}"
        run_dir = self.work / name
        run_dir.mkdir(parents=True)
        hosts = run_dir / "hosts"
        hosts.write_text(hosts_file_text(options.hostname))
        spec = container_spec(image_spec, str(bundle / "rootfs"), str(hosts), options)
        (run_dir / "config.json").write_text(json.dumps(spec, indent=1))
        self.started.append(name)
        try:
            done = subprocess.run(["runc", "--root", str(self.state), "run", "--bundle",
                                   str(run_dir), name],
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
            return Result(done.returncode, done.stdout, done.stderr)
        except subprocess.TimeoutExpired as exc:
            return Result(124, str(exc.stdout or ""), f"timed out after {timeout}s")
        finally:
            self._delete(name)

    def _delete(self, name: str) -> None:
        subprocess.run(["runc", "--root", str(self.state), "kill", name, "KILL"],
                       capture_output=True, timeout=30)
        subprocess.run(["runc", "--root", str(self.state), "delete", "--force", name],
                       capture_output=True, timeout=60)
        if name in self.started:
            self.started.remove(name)

    def running(self) -> list[str]:
        listed = subprocess.run(["runc", "--root", str(self.state), "list", "--quiet"],
                                capture_output=True, text=True, timeout=30)
        return [line for line in listed.stdout.split() if line]

    def close(self) -> None:
        for name in list(self.started) + self.running():
            self._delete(name)
