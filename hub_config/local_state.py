"""The state folder of `workbench up`: the hub's alone, with a tenants file the hub can trust.

- `check_state_place`: the folder, its files and the folders above it are owned by whoever
  runs the hub (or root), and no other account may write to a folder on the way;
- `secure_state`: the folder 0700 and its files 0600, owned by whoever runs the hub; the
  database, cookie secret, users file and login file are nobody else's business.
- `default_tenants` (pure) and `choose_tenants_file`: with no tenants file, one is written into
  the state folder and named on the terminal, never the shipped example used silently.
- `TenantsMirror`: the hub reads a copy of the operator's tenants file that only ever holds a
  valid version. A broken edit while the hub runs is reported and the last good version stays
  in force, so logins keep working instead of failing with a server error.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hub_config.tenants import TenantsFileError, load_tenants

STATE_MODE = 0o700
FILE_MODE = 0o600
DEFAULT_TENANT = "local"
DEFAULT_GROUP = "workbench-users"
DEFAULT_ADMIN_GROUP = "workbench-admins"
GIB = 1024 ** 3
# The copy of the operator's tenants file that the hub reads (see TenantsMirror).
TENANTS_IN_USE = "tenants.in-use.yaml"


class UnsafeStateFolder(ValueError):
    """The state folder sits where another account could replace or read the hub's state."""


def trusted_owners() -> set[int]:
    """Who may own the state folder and the folders above it: root, this account, and, as root
    under sudo, the account that ran sudo (a checkout in one's own home)."""
    owners = {0, os.geteuid()}
    sudo_uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo_uid.isdigit():
        owners.add(int(sudo_uid))
    return owners


def check_state_place(state: Path) -> None:
    """Refuse a state folder another account could take: one owned by someone else, or below a
    folder that someone else owns or may write to (sticky folders such as /tmp aside, where
    nobody may rename what is not theirs). `state` is resolved (no link on the way); it may not
    exist yet. Also refuses files in it that are someone else's.

    Raises:
        UnsafeStateFolder: naming the folder or file and its owner.
    """
    owners = trusted_owners()
    for path in [state, *state.parents]:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in owners:
            raise UnsafeStateFolder(
                f"{path} is owned by uid {info.st_uid}, who could replace the hub's state (its "
                f"cookie secret, its users) in {state}; use a state folder that only you or root "
                "own, e.g. --state-dir /var/lib/paddle-workbench")
        if path != state and mode & 0o022 and not mode & stat.S_ISVTX:
            raise UnsafeStateFolder(
                f"{path} may be written by other accounts (mode {mode:04o}), who could replace "
                f"{state} and the hub's state in it; use a state folder below folders only you "
                "or root may write to")
    if state.is_dir():
        for item in state.iterdir():
            if item.lstat().st_uid not in owners:
                raise UnsafeStateFolder(
                    f"{item} is owned by uid {item.lstat().st_uid}, not by the account that runs "
                    "the hub; remove it, or start from an empty state folder")


def secure_state(state: Path) -> list[Path]:
    """Make `state` mode 0700 and each file directly in it 0600; returns what was changed.

    Folders inside (the homes of earlier versions) are left as they are: the state folder's own
    mode already keeps everyone else out of them.
    """
    changed = []
    for path, mode in [(state, STATE_MODE),
                       *((p, FILE_MODE) for p in state.iterdir() if p.is_file() and not p.is_symlink())]:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
            changed.append(path)
    return changed


def default_tenants(cpus: int, memory_bytes: int, image: str) -> dict[str, Any]:
    """A tenants file with one tenant for this machine: every user in group `workbench-users`,
    one CPU profile allowed the machine's CPUs and half its memory per server."""
    cpus = max(1, cpus)
    memory = max(1, memory_bytes // 2 // GIB)
    return {"tenants": [{
        "name": DEFAULT_TENANT,
        "groups": [DEFAULT_GROUP],
        "admin_groups": [DEFAULT_ADMIN_GROUP],
        "namespace": f"wb-{DEFAULT_TENANT}",
        "quota": {"gpus": 0, "cpu": str(cpus), "memory": f"{memory}Gi", "pods": 20, "jobs": 10},
        "profiles": [{
            "name": "cpu",
            "description": f"{cpus} CPU, {memory} GiB",
            "cpu": {"guarantee": min(0.5, cpus), "limit": cpus},
            "memory": {"guarantee": "512Mi", "limit": f"{memory}Gi"},
        }],
        "images": [{"name": "PaddlePaddle CPU", "image": image}],
        "job_limits": {"max_nodes": 2, "max_gpus_per_node": 0, "max_runtime": 86400},
        "idle": {"server_timeout": 3600, "max_age": 0},
    }]}


def machine_size() -> tuple[int, int]:
    """This machine's CPUs and memory in bytes."""
    return os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class TenantsChoice:
    """Which tenants file `workbench up` uses, and what to tell the operator about it."""

    path: Path
    note: str | None = None


def choose_tenants_file(state: Path, given: str | None, example: Path,
                        in_use: str = TENANTS_IN_USE) -> TenantsChoice:
    """`--tenants FILE`, else `<state>/tenants.yaml`, else a new `<state>/tenants.yaml`.

    The new file is a copy of the tenants the hub last ran with (`<state>/<in_use>`, from an
    earlier `--tenants`); else, where the state folder has users already (made while earlier
    versions used the shipped example silently), a copy of the example, so they keep their
    tenants; else a one-tenant default for this machine. The note says which.
    """
    if given:
        return TenantsChoice(Path(given).resolve())
    own = state / "tenants.yaml"
    if own.exists():
        return TenantsChoice(own)
    source, why = state / in_use, "the tenants the hub last ran with"
    if not source.exists() and (state / "users.yaml").exists():
        source, why = example, "the example the earlier users were made with"
    if source.exists():
        _write_atomic(own, source.read_text(encoding="utf-8"))
        return TenantsChoice(own, f"No tenants file given: copied {why} to {own}; edit it, "
                                  "or pass --tenants FILE.")
    image = load_tenants(example).tenants[-1].images[0].image
    cpus, memory = machine_size()
    _write_atomic(own, "# One tenant for this machine, written by `workbench up`; edit freely.\n"
                  + yaml.safe_dump(default_tenants(cpus, memory, image), sort_keys=False))
    return TenantsChoice(own, f"No tenants file: wrote a one-tenant default to {own} (tenant "
                              f"{DEFAULT_TENANT!r}, group {DEFAULT_GROUP!r}); edit it, or pass "
                              "--tenants FILE.")


def _write_atomic(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class TenantsMirror:
    """Keeps `copy` (what the hub reads) equal to the last valid version of `source`.

    `sync()` is cheap when nothing changed (one stat). The copy is written atomically, mode 0600,
    from the very bytes that were validated.
    """

    _MISSING = (-1, -1)

    def __init__(self, source: Path, copy: Path,
                 load: Callable[[Path], Any] = load_tenants):
        self.source, self.copy, self._load = source, copy, load
        self._seen: tuple[int, int] | None = None
        self._good = False

    def sync(self) -> str | None:
        """Copy `source` if it changed and is valid. Returns None, or, once per broken version,
        the error that kept the last good copy in force. Before any good version was copied a
        broken file raises TenantsFileError instead: there is nothing to keep."""
        try:
            info = self.source.stat()
            key = (info.st_mtime_ns, info.st_size)
        except OSError:
            key = self._MISSING
        if key == self._seen:
            return None
        self._seen = key
        fd, temp = tempfile.mkstemp(prefix=f".{self.copy.name}.", suffix=".tmp",
                                    dir=self.copy.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(self.source.read_bytes())
            self._load(Path(temp))
            os.replace(temp, self.copy)
            self._good = True
            return None
        except (TenantsFileError, OSError) as err:
            message = str(err).replace(temp, str(self.source))
            if not self._good:
                raise TenantsFileError(message) from None
            return f"{message}; the hub keeps the last valid version"
        finally:
            Path(temp).unlink(missing_ok=True)
