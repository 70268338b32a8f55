"""The local process spawner of `workbench up`: the same tenant rules, one machine.

Each user's server is a `jupyterhub-singleuser` process started by the hub. Run as root (the
default of `workbench up` on a shared machine), the hub serves every user as a system account of
their own, as The Littlest JupyterHub does (`hub_config.accounts`): `jupyter-<name>`, created at
the first spawn, with a home of mode 0700 under `homes_dir` (outside the hub's state) that starts
with the sample notebook. The server runs as that account with umask 077, so its files, jobs and
`/proc/<pid>/environ` (where its `JUPYTERHUB_API_TOKEN` lives) are its own; and in a cgroup that
enforces the chosen profile's CPU and memory limits on it and everything it starts
(`hub_config.local_limits`); the account itself can start nothing outside the server (no login, no
cron or `at` job: `hub_config.account_lockdown`). Run as a normal user, the hub serves that one
user, in their own home.

Kernels talk to the server over IPC sockets in the account's private runtime folder (mode 0700;
`<runtime_root>/<account>` with system accounts), not over TCP on 127.0.0.1: any local account
finds a TCP port's owner in /proc/net/tcp, and subscribing to a kernel's IOPub socket needs no
key (messages are signed, not encrypted), so every cell's source and output would reach them.
The server's terminals run /bin/bash themselves, as the account has no login shell.

The tenant's choice becomes the environment the magic reads (engine `local`, tenant, limits, the
account's uid/gid) and JupyterHub's CPU_LIMIT/MEM_LIMIT variables; the local engine honours the
job limits.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import Bool, Float, Integer, TraitError, Unicode, default, validate

from hub_config.accounts import (
    DEFAULT_PREFIX,
    MAX_NAME,
    Account,
    AccountError,
    access_problems,
    account_name,
    adopt_folder,
    ensure_account,
    os_user_name,
    prepare_home,
    prepare_runtime_dir,
    python_paths,
    remove_runtime_dir,
)
from hub_config.local_limits import Limits, ServerCgroup, unavailable
from hub_config.spawn_policy import Choice, SpawnRefused, choose, notebook_context, profile_slug
from hub_config.tenant_spawner import TenantSpawnerMixin, http_error
from hub_config.tenants import Tenant, parse_quantity

SAMPLE_NOTEBOOK = Path(__file__).parent / "samples" / "paddle-quickstart.ipynb"
REPO_ROOT = Path(__file__).resolve().parent.parent


_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]*$")
# A Unix socket's path has at most 107 bytes (sun_path, with its NUL). jupyter_client names a
# kernel's IPC sockets after its connection file: <runtime folder>/kernel-<uuid>-ipc-<1..5>.
MAX_SOCKET_PATH = 107
IPC_NAME = len("/kernel-") + 36 + len("-ipc-") + 2
TERMINAL_SHELL = ["/bin/bash", "-l"]


def ipc_fits(runtime_dir: Path) -> bool:
    """Whether kernels' IPC sockets in `runtime_dir` have paths short enough for Unix sockets."""
    return len(os.fsencode(runtime_dir)) + IPC_NAME <= MAX_SOCKET_PATH


def server_args(ipc: bool) -> list[str]:
    """What the single-user server is told beyond `Spawner.args`: its terminals run a shell of
    their own (not the account's login shell), and, with `ipc`, kernels use IPC sockets."""
    args = [f"--ServerApp.terminado_settings=shell_command={json.dumps(TERMINAL_SHELL)}"]
    return args + (["--KernelManager.transport=ipc"] if ipc else [])


def home_name(username: str) -> str:
    """A folder name for a hub user: the name itself when harmless, else an escaped form (the
    `{username}` of `home_template`, and the names of homes of earlier versions)."""
    if _SAFE_NAME.match(username) and ".." not in username:
        return username
    return "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}_" for c in username)


def options_form_html(tenants: tuple[Tenant, ...]) -> str:
    """The spawn form on one machine: the user's tenant profiles, nothing else.

    There is no image choice: every local server runs in the hub's own Python environment, so
    an image would change nothing here (the profile's limits do, through cgroups).
    """
    profiles = "".join(
        f'<option value="{html.escape(profile_slug(t, p))}">'
        f"{html.escape(t.name)}: {html.escape(p.name)} ({html.escape(p.description)})</option>"
        for t in tenants for p in t.profiles
    )
    return (
        '<label for="profile">Profile</label>'
        f'<select class="form-control" name="profile" id="profile">{profiles}</select>'
    )


def refused(status: int, message: str) -> web.HTTPError:
    return http_error(SpawnRefused(status, message))


class TenantLocalSpawner(TenantSpawnerMixin, LocalProcessSpawner):
    """Starts single-user servers as local processes after the tenant policy allowed the spawn.

    Contract: `start` refuses (tornado HTTPError 403/400 with a message for the user) before any
    process starts when the user is in no tenant or asks for an unlisted profile or image, and
    (without system accounts) when the user is not the one this hub serves; it raises 500 with a
    message when the account cannot be made or cannot run the workbench's Python. Otherwise it
    behaves like LocalProcessSpawner (stop: SIGINT, SIGTERM, SIGKILL), and after the server
    stops, whatever it left in its cgroup is stopped too.
    """

    system_accounts = Bool(
        help="""Serve each hub user as a system account of their own (needs root). Default: on
        when the hub runs as root. Off, the hub serves one user, the one it runs as."""
    ).tag(config=True)

    account_prefix = Unicode(
        DEFAULT_PREFIX, help="""Prefix of the system accounts (`jupyter-alice`)."""
    ).tag(config=True)

    homes_dir = Unicode(
        "/home", help="""Folder in which new accounts get their home (with system accounts)."""
    ).tag(config=True)

    home_template = Unicode(
        "{account}", help="""Name of a new account's home under `homes_dir`: `{account}` (the
        account name) or `{username}` (the escaped hub name; only where no other homes live)."""
    ).tag(config=True)

    legacy_homes_dir = Unicode(
        "", help="""Where earlier versions kept homes (`<state>/home`): a user's old home is
        moved into their new one at their first spawn with an account."""
    ).tag(config=True)

    sample_notebook = Unicode(
        str(SAMPLE_NOTEBOOK), help="""Notebook copied into each new home."""
    ).tag(config=True)

    enforce_limits = Bool(
        True, help="""Enforce each profile's CPU and memory limits with a cgroup per server
        (cgroup v1, as root); where that is not possible the hub logs why at each spawn."""
    ).tag(config=True)

    cgroup_root = Unicode("/sys/fs/cgroup", help="""Where the cgroup v1 controllers are mounted.""",
                          ).tag(config=True)

    cgroup_parent = Unicode(
        "workbench", help="""Folder of the servers' cgroups, below the hub's own cgroup."""
    ).tag(config=True)

    tasks_limit = Integer(
        4096, help="""Processes and threads one server may have, with everything it starts
        (cgroup pids.max; 0: no limit). Stops a fork bomb from taking the machine."""
    ).tag(config=True)

    runtime_root = Unicode(
        "/run/workbench", help="""Folder of the accounts' private runtime folders (with system
        accounts): `<runtime_root>/<account>` holds the server's connection files and its
        kernels' IPC sockets, from the server's start to its stop. Kept short: a socket's path
        has at most 107 bytes."""
    ).tag(config=True)

    leftover_grace = Float(
        5.0, help="""Seconds the processes left in a stopped server's cgroup (jobs kept with
        --keep, boards) get between SIGTERM and SIGKILL."""
    ).tag(config=True)

    @default("system_accounts")
    def _system_accounts_default(self) -> bool:
        return os.geteuid() == 0

    @validate("runtime_root")
    def _check_runtime_root(self, proposal):
        root = proposal["value"]
        if not os.path.isabs(root) or not ipc_fits(Path(root) / ("x" * MAX_NAME)):
            raise TraitError(f"c.TenantLocalSpawner.runtime_root = {root!r}: use an absolute "
                             f"path of at most {MAX_SOCKET_PATH - IPC_NAME - MAX_NAME - 1} bytes "
                             "(the kernels' socket paths must fit in 107), e.g. /run/workbench")
        return root

    @validate("account_prefix")
    def _check_prefix(self, proposal):
        account_name("x", proposal["value"])  # raises ValueError naming the rule
        return proposal["value"]

    @default("options_form")
    def _options_form_default(self):
        return self._options_form_for_user

    def _options_form_for_user(self, spawner) -> str:
        mine = self.tenants().for_groups(self.group_names())
        # No tenant: no form, so the spawn goes straight to `start`, which explains the refusal.
        return options_form_html(mine) if mine else ""

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        return {key: values[0] for key, values in formdata.items() if values and values[0]}

    # ---- who serves the user, and where ---------------------------------------------------------

    @property
    def account_name(self) -> str:
        """The OS account the server runs as."""
        if self.system_accounts:
            return account_name(self.user.name, self.account_prefix)
        return os_user_name()

    @property
    def home_dir(self) -> Path:
        """The server's home: the account's (as the password database has it), else where a new
        account's home will be."""
        try:
            return Account.lookup(self.account_name).home
        except KeyError:
            folder = self.home_template.format(account=self.account_name,
                                               username=home_name(self.user.name))
            return Path(self.homes_dir) / folder

    @property
    def runtime_dir(self) -> Path:
        """The server's Jupyter runtime folder: `<runtime_root>/<account>` with system accounts,
        else Jupyter's own in the user's home."""
        if self.system_accounts:
            return Path(self.runtime_root) / self.account_name
        return self.home_dir / ".local" / "share" / "jupyter" / "runtime"

    def served_user(self) -> str:
        """Without system accounts: the one hub user served (the OS user's name, lower case)."""
        return os_user_name().lower()

    def make_preexec_fn(self, name):
        account = Account.lookup(self.account_name)
        # umask 077: what the server, its kernels and jobs create is the user's alone.
        home, umask = str(account.home), 0o077
        switch = set_user_setuid(account.name, chdir=False) if self.system_accounts else None
        join = self.cgroup.joiner() if self.cgroup is not None else None

        def preexec():
            if join is not None:
                join()  # before giving up root: only root may move a process between cgroups
            if switch is not None:
                switch()
            os.umask(umask)
            os.chdir(home)

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = env["LOGNAME"] = self.account_name
        env["HOME"] = str(self.home_dir)
        env["SHELL"] = "/bin/bash"
        env["JUPYTER_RUNTIME_DIR"] = str(self.runtime_dir)
        return env

    def get_args(self) -> list[str]:
        """`Spawner.args`, then `server_args`: IPC for kernels wherever the runtime folder's
        path leaves room for their sockets (always with system accounts: `runtime_root` is
        checked), else TCP, with a warning."""
        ipc = ipc_fits(self.runtime_dir)
        if not ipc:
            self.log.warning("Kernels of %s use TCP on 127.0.0.1, where other local accounts "
                             "can hear them: %s is too long for IPC sockets", self.user.name,
                             self.runtime_dir)
        return [*super().get_args(), *server_args(ipc)]

    def move_certs(self, paths):
        return paths

    # ---- start and stop -------------------------------------------------------------------------

    cgroup: ServerCgroup | None = None

    async def start(self):
        choice = self.decide()
        if not self.system_accounts:
            self.refuse_unless_served()
        elif os.geteuid() != 0:
            raise refused(500, "System accounts need the hub to run as root; ask the operator "
                          "to run `workbench up` as root or set system_accounts = False.")
        try:
            account = await asyncio.to_thread(self.provision)
        except AccountError as err:
            self.log.error("Cannot serve %s: %s", self.user.name, err)
            raise refused(500, f"Your account could not be prepared: {err}") from None
        self.apply_choice(choice, account)
        self.cgroup = self.limit(choice, account)
        return await super().start()

    def refuse_unless_served(self) -> None:
        """Without system accounts every server would run as the hub's own user: serve only that
        user, never someone else as them. Raises the HTTPError that refuses the spawn."""
        if os.geteuid() == 0:
            raise refused(500, "This hub runs as root without system accounts; servers never "
                          "run as root. Set c.TenantLocalSpawner.system_accounts = True.")
        if self.user.name != self.served_user():
            raise refused(403, f"This workbench runs as {self.served_user()} without root, so "
                          f"it serves only {self.served_user()}. Ask the operator to run "
                          "`workbench up` as root to give every user an account of their own.")

    def provision(self) -> Account:
        """The account (created on first use), its home prepared, and a check that it can run
        the workbench's Python. Blocking: called in a thread. Raises AccountError."""
        if not self.system_accounts:
            account = Account.lookup(self.account_name)
            prepare_home(account, Path(self.sample_notebook))
            return account
        home = self.home_dir
        account = ensure_account(self.account_name, home)
        self.adopt_legacy_home(account)
        prepare_home(account, Path(self.sample_notebook))
        try:
            prepare_runtime_dir(account, Path(self.runtime_root))
        except AccountError as err:
            raise AccountError(f"{err} (c.TenantLocalSpawner.runtime_root)") from None
        extra = [str(REPO_ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
        blocked = access_problems(python_paths(sys.executable, extra))
        if blocked:
            raise AccountError(
                "the accounts cannot use the workbench's Python environment ("
                + "; ".join(p.fix() for p in blocked) + "); `workbench up` fixes the folders")
        return account

    def adopt_legacy_home(self, account: Account) -> None:
        """Move the user's home of an earlier version (all servers as one OS user, homes in the
        state folder) into the account's home, once, and give it to the account."""
        if not self.legacy_homes_dir:
            return
        old = Path(self.legacy_homes_dir) / home_name(self.user.name)
        moved = adopt_folder(old, account)
        if moved is not None:
            self.log.info("Moved %s's old home %s to %s", self.user.name, old, moved)

    def limit(self, choice: Choice, account: Account) -> ServerCgroup | None:
        """The server's cgroup with the profile's limits, or None (logged) where none can be."""
        why = unavailable(Path(self.cgroup_root)) if self.enforce_limits else "enforce_limits is off"
        if why:
            self.log.warning("Not enforcing the limits of profile %s for %s: %s",
                             choice.slug, self.user.name, why)
            return None
        cgroup = ServerCgroup.for_account(account.name, Path(self.cgroup_root), self.cgroup_parent)
        try:
            cgroup.create(Limits(cpu=self.cpu_limit or None, memory=self.mem_limit or None,
                                 tasks=self.tasks_limit or None))
        except OSError as err:
            # A profile that was promised must bind: refuse rather than run without limits.
            self.log.error("Cannot apply the limits of %s for %s: %s (set "
                           "c.TenantLocalSpawner.enforce_limits = False to run without them)",
                           choice.slug, self.user.name, err)
            raise refused(500, "The limits of your profile could not be applied; ask the "
                          "operator (the hub log says why).") from None
        return cgroup

    async def poll(self):
        status = await super().poll()
        if status is not None and self.cgroup is not None:
            # The server ended on its own (a crash, the OOM killer): JupyterHub will not call
            # `stop`, so what it left behind goes now, as with a systemd unit whose main process
            # exited.
            await self._remove_cgroup(self.cgroup)
            await self._remove_runtime_dir()
        return status

    async def stop(self, now=False):
        await super().stop(now=now)
        cgroup = self.cgroup or self._existing_cgroup()
        if cgroup is not None:
            await self._remove_cgroup(cgroup)
        await self._remove_runtime_dir()

    async def _remove_runtime_dir(self) -> None:
        # The runtime folder lives as long as the server: the next start begins with no stale
        # connection files, and nothing is left in /run for an account that is gone.
        if not self.system_accounts:
            return
        try:
            await asyncio.to_thread(remove_runtime_dir, self.account_name, Path(self.runtime_root))
        except OSError as err:
            self.log.warning("Could not remove the runtime folder of %s: %s", self.user.name, err)

    async def _remove_cgroup(self, cgroup: ServerCgroup) -> None:
        try:
            left = await asyncio.to_thread(cgroup.remove, self.leftover_grace)
        except OSError as err:
            self.log.warning("Could not remove the cgroup of %s: %s", self.user.name, err)
            return
        if left:
            self.log.info("Stopped %d processes left by %s's server", len(left), self.user.name)
        self.cgroup = None

    def _existing_cgroup(self) -> ServerCgroup | None:
        # After a hub restart the spawner is new: find the server's cgroup by its account.
        if not (self.system_accounts and self.enforce_limits) or unavailable(Path(self.cgroup_root)):
            return None
        cgroup = ServerCgroup.for_account(self.account_name, Path(self.cgroup_root),
                                          self.cgroup_parent)
        return cgroup if cgroup.dirs["pids"].exists() else None

    # ---- the tenant's choice --------------------------------------------------------------------

    def decide(self) -> Choice:
        """The tenant's choice for this spawn, or raise the HTTPError that refuses it."""
        try:
            return choose(
                self.tenants(), self.user.name, self.group_names(), self.user_options or {}
            )
        except SpawnRefused as refusal:
            self.log.warning("Refusing spawn for %s: %s", self.user.name, refusal.message)
            raise http_error(refusal) from None

    def apply_tenant_policy(self) -> Choice:
        """Decide and apply the tenant's choice (no account, home or process is touched), or
        raise the HTTPError that refuses the spawn."""
        choice = self.decide()
        self.apply_choice(choice)
        return choice

    def apply_choice(self, choice: Choice, account: Account | None = None) -> None:
        """Set the limits and the environment for a permitted choice (`account`: as whom the
        server runs, once known)."""
        home = account.home if account else self.home_dir
        self.log.info(
            "Spawning %s locally in tenant %s (profile %s, account %s, home %s)",
            self.user.name, choice.tenant.name, choice.profile.name, self.account_name, home,
        )
        self.notebook_dir = str(home)
        self.cpu_limit = choice.profile.cpu.limit_value
        self.cpu_guarantee = choice.profile.cpu.guarantee_value
        self.mem_limit = int(parse_quantity(choice.profile.memory.limit))
        self.mem_guarantee = int(parse_quantity(choice.profile.memory.guarantee))
        # The home is a plain folder on this machine, not a claim: local jobs need no volume.
        context = notebook_context(
            choice, self.user.name, engine="local", jobs_dir=str(home / "jobs"),
            uid=account.uid if account else None, gid=account.gid if account else None,
        )
        self.environment = {**self.environment, **context.to_env()}
        self.workbench_choice = choice
        self.workbench_context = context
