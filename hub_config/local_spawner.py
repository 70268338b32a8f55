"""The local process spawner of `workbench up`: the same tenant rules, one machine.

Each user's server is a `jupyterhub-singleuser` process started by the hub, with its home under the
state directory (`<state>/home/<user>`) and the sample notebook copied in on first start. The
tenant's choice becomes the environment the magic reads (engine `local`, tenant, limits) and
JupyterHub's CPU_LIMIT/MEM_LIMIT variables; the local engine honours the job limits.

All servers run as the operating-system user that runs `workbench up`: the hub keeps users apart
over HTTP (each server accepts only its owner), not on the file system. That fits one machine and
a classroom; a cluster uses `TenantKubeSpawner` for isolation.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode, default

from hub_config.policy import Choice, SpawnRefused, choose, notebook_context, profile_slug
from hub_config.tenant_spawner import TenantSpawnerMixin, http_error
from hub_config.tenants import Tenant, parse_quantity

SAMPLE_NOTEBOOK = Path(__file__).parent / "samples" / "paddle-quickstart.ipynb"
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]*$")


def home_name(username: str) -> str:
    """A directory name for a hub user: the name itself when harmless, else an escaped form."""
    if _SAFE_NAME.match(username) and ".." not in username:
        return username
    return "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}_" for c in username)


def prepare_home(home: Path, sample: Path) -> Path:
    """Create a user's home (and jobs folder) and copy the sample notebook in, never over edits."""
    (home / "jobs").mkdir(parents=True, exist_ok=True)
    target = home / sample.name
    if sample.is_file() and not target.exists():
        shutil.copyfile(sample, target)
    return home


def options_form_html(tenants: tuple[Tenant, ...]) -> str:
    """The spawn form: one choice of tenant profile, one of image (all from the user's tenants)."""
    profiles = "".join(
        f'<option value="{html.escape(profile_slug(t, p))}">'
        f"{html.escape(t.name)}: {html.escape(p.name)} ({html.escape(p.description)})</option>"
        for t in tenants for p in t.profiles
    )
    seen: dict[str, str] = {}
    for tenant in tenants:
        for image in tenant.images:
            seen.setdefault(image.image, image.name)
    images = "".join(
        f'<option value="{html.escape(ref)}">{html.escape(name)}</option>' for ref, name in seen.items()
    )
    return (
        '<label for="profile">Profile</label>'
        f'<select class="form-control" name="profile" id="profile">{profiles}</select>'
        '<label for="image">Image</label>'
        f'<select class="form-control" name="image" id="image">{images}</select>'
    )


class TenantLocalSpawner(TenantSpawnerMixin, LocalProcessSpawner):
    """Starts single-user servers as local processes after the tenant policy allowed the spawn.

    Contract: `start` refuses (tornado HTTPError 403/400 with a message for the user) before any
    process starts when the user is in no tenant or asks for an unlisted profile or image;
    otherwise it behaves like LocalProcessSpawner (stop: SIGINT, SIGTERM, SIGKILL).
    """

    homes_dir = Unicode(
        help="""Folder holding one home per user (default: ./home, the state dir's)."""
    ).tag(config=True)

    sample_notebook = Unicode(
        str(SAMPLE_NOTEBOOK), help="""Notebook copied into each new home."""
    ).tag(config=True)

    @default("homes_dir")
    def _homes_dir_default(self) -> str:
        return str(Path("home").resolve())

    @default("options_form")
    def _options_form_default(self):
        return self._options_form_for_user

    def _options_form_for_user(self, spawner) -> str:
        mine = self.tenants().for_groups(self.group_names())
        # No tenant: no form, so the spawn goes straight to `start`, which explains the refusal.
        return options_form_html(mine) if mine else ""

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        return {key: values[0] for key, values in formdata.items() if values and values[0]}

    @property
    def home_dir(self) -> Path:
        return Path(self.homes_dir) / home_name(self.user.name)

    # LocalProcessSpawner switches to the system user of the same name; here every hub user is
    # served by the OS user that runs the hub, in a home of their own.
    def make_preexec_fn(self, name):
        home = str(self.home_dir)

        def preexec():
            os.chdir(home)

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = self.user.name
        env["HOME"] = str(self.home_dir)
        env["SHELL"] = "/bin/bash"
        return env

    def move_certs(self, paths):
        return paths

    def get_args(self) -> list[str]:
        args = super().get_args()
        # Jupyter Server refuses to run as root unless told; `workbench up` runs as whoever
        # started it (root in containers and CI), and every server runs as that same user.
        if os.geteuid() == 0:
            args.append("--allow-root")
        return args

    async def start(self):
        self.apply_tenant_policy()
        return await super().start()

    def apply_tenant_policy(self) -> Choice:
        """Decide and apply the tenant's choice, or raise the HTTPError that refuses the spawn."""
        try:
            choice = choose(
                self.tenants(), self.user.name, self.group_names(), self.user_options or {}
            )
        except SpawnRefused as refused:
            self.log.warning("Refusing spawn for %s: %s", self.user.name, refused.message)
            raise http_error(refused) from None
        self.apply_choice(choice)
        return choice

    def apply_choice(self, choice: Choice) -> None:
        """Prepare the home and the environment for a permitted choice."""
        home = prepare_home(self.home_dir, Path(self.sample_notebook))
        self.log.info(
            "Spawning %s locally in tenant %s (profile %s, home %s)",
            self.user.name, choice.tenant.name, choice.profile.name, home,
        )
        self.notebook_dir = str(home)
        self.cpu_limit = choice.profile.cpu.limit_value
        self.cpu_guarantee = choice.profile.cpu.guarantee_value
        self.mem_limit = int(parse_quantity(choice.profile.memory.limit))
        self.mem_guarantee = int(parse_quantity(choice.profile.memory.guarantee))
        # Every server runs as the hub's own OS user here, so no uid/gid, and the home is a plain
        # folder on this machine, not a claim: the local engine's jobs need no shared volume.
        context = notebook_context(choice, self.user.name, engine="local",
                                   jobs_dir=str(home / "jobs"))
        self.environment = {**self.environment, **context.to_env()}
        self.workbench_choice = choice
        self.workbench_context = context
