"""One machine, many users: account names, account creation, homes, reachability of the Python
environment, cgroup limits, the state folder, the tenants file `workbench up` trusts, passwords
that never reach the command line, and the spawn form. Pure rules are tested as data; what needs
root (accounts, cgroups) runs for real, as CI does.

The attacks on a running multi-user hub are in `test_local_accounts_attacks.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import pwd
import random
import re
import stat
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from hub_config.account_lockdown import DENY_FILES, NOLOGIN, expiry_day, listed
from hub_config.accounts import (
    MAX_NAME,
    AccessProblem,
    Account,
    AccountError,
    access_problems,
    account_name,
    adopt_folder,
    ensure_account,
    grant_traversal,
    make_homes_dir,
    prepare_home,
    prepare_runtime_dir,
    remove_runtime_dir,
    useradd_argv,
)
from hub_config.cli import CommandError
from hub_config.cli.up import new_password
from hub_config.local_limits import (
    Limits,
    ServerCgroup,
    cgroup_dirs,
    limit_files,
    own_cgroups,
    unavailable,
)
from hub_config.local_spawner import (
    TenantLocalSpawner,
    ipc_fits,
    options_form_html,
    server_args,
)
from hub_config.local_state import (
    DEFAULT_GROUP,
    TenantsMirror,
    UnsafeStateFolder,
    check_state_place,
    choose_tenants_file,
    default_tenants,
    secure_state,
)
from hub_config.tenants import Tenants, TenantsFileError, load_tenants

from .conftest import (
    AS_ROOT,
    EXAMPLE_TENANTS,
    REPO,
    account_prefix,
    public_dir,
    remove_accounts,
)

needs_root = pytest.mark.skipif(not AS_ROOT, reason="creates system accounts and cgroups: "
                                "needs root (CI runs as root)")
LINUX_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

# ---- account names -------------------------------------------------------------------------------

KEPT = [("alice", "jupyter-alice"), ("bob-2", "jupyter-bob-2"), ("7up", "jupyter-7up"),
        ("a" * 24, "jupyter-" + "a" * 24)]


@pytest.mark.parametrize(("user", "account"), KEPT, ids=[k[0][:10] for k in KEPT])
def test_plain_names_are_kept(user, account):
    assert account_name(user) == account


TRICKY = ["Alice", "a.b", "a-b", "a_b", "ann@example.org", "ann-example-org", "émile", "..",
          "a" * 25, "a" * 40, "a" * 41, "x" * 24 + "_0123456789", "root", "-", "_"]


def test_every_name_maps_to_a_distinct_valid_account():
    accounts = [account_name(name) for name in TRICKY]
    assert len(set(accounts)) == len(accounts), dict(zip(TRICKY, accounts, strict=True))
    for name, account in zip(TRICKY, accounts, strict=True):
        assert len(account) <= MAX_NAME, (name, account)
        assert LINUX_NAME.match(account), (name, account)
        assert account.startswith("jupyter-")
    assert account_name("a.b") == account_name("a.b")  # stable


def _tricky_names(count: int, seed: int = 7) -> set[str]:
    """Names of every kind a company's identity provider hands out: Chinese (two or three
    characters, and with a Latin alias), Latin with accents, e-mail addresses, digits only, and
    plain names that look like an escaped one's hash."""
    rng = random.Random(seed)
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 400)]
    latin = "abcdefghijklmnopqrstuvwxyz"
    names = {"张伟", "王芳", "李娜", "a3a0bafd0b", "_a3a0bafd0b"}
    names |= {hashlib.sha256(n.encode()).hexdigest()[:10] for n in ("张伟", "王芳", "李娜")}
    while len(names) < count:
        kind = rng.randrange(5)
        if kind == 0:
            name = "".join(rng.choice(han) for _ in range(rng.choice((2, 3))))
        elif kind == 1:
            name = rng.choice(han) + rng.choice(han) + "." + "".join(rng.sample(latin, 4))
        elif kind == 2:
            name = "".join(rng.choice(latin + "éüøç.-_") for _ in range(rng.randrange(1, 40)))
        elif kind == 3:
            name = "".join(rng.sample(latin, 5)) + "@" + rng.choice(("corp.cn", "example.org"))
        else:
            name = "".join(rng.choice("0123456789abcdef") for _ in range(10))
        names.add(name)
    return names


def test_no_two_names_share_an_account():
    """`account_name("张伟")` once was `jupyter-a3a0bafd0b`, which the hub user `a3a0bafd0b`
    also gets: names with nothing left after escaping must still carry the separator."""
    names = _tricky_names(20000)
    accounts: dict[str, str] = {}
    for name in names:
        account = account_name(name)
        assert account not in accounts, (name, accounts.get(account), account)
        assert len(account) <= MAX_NAME and LINUX_NAME.match(account), (name, account)
        accounts[account] = name
    assert account_name("张伟") != account_name(hashlib.sha256("张伟".encode()).hexdigest()[:10])


@pytest.mark.parametrize("prefix", ["", "Jupyter-", "1x-", "x" * 25], ids=["empty", "upper",
                                                                            "digit", "long"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(ValueError, match="prefix"):
        account_name("alice", prefix)


def test_useradd_makes_a_home_and_a_group_of_its_own():
    argv = useradd_argv("jupyter-alice", Path("/home/jupyter-alice"))
    assert argv[0] == "useradd" and argv[-1] == "jupyter-alice"
    for flag in ("--create-home", "--user-group"):
        assert flag in argv
    assert argv[argv.index("--home-dir") + 1] == "/home/jupyter-alice"
    # Locked down from the start (hub_config.account_lockdown): no login shell, expired.
    assert argv[argv.index("--shell") + 1] == "/usr/sbin/nologin"
    assert argv[argv.index("--expiredate") + 1] == "1970-01-02"


def test_a_locked_password_file_is_retried(monkeypatch, tmp_path):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 10 if len(calls) < 3 else 1, "", "no way")

    monkeypatch.setattr(Account, "lookup", classmethod(lambda cls, name: (_ for _ in ()).throw(
        KeyError(name))))
    with pytest.raises(AccountError, match="no way"):
        ensure_account("jupyter-nobody-here", tmp_path / "x", run=fake_run)
    assert len(calls) == 3


# ---- accounts and homes, for real ---------------------------------------------------------------


@pytest.fixture
def homes():
    """A homes folder other accounts can reach, and a prefix; accounts removed at the end."""
    prefix, folder = account_prefix(), public_dir("wb-homes-")
    try:
        yield prefix, folder
    finally:
        assert remove_accounts(prefix) == []
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_the_homes_folder_is_passable_whatever_the_umask(tmp_path):
    old = os.umask(0o077)  # as the hub runs
    try:
        make_homes_dir(tmp_path / "srv" / "homes")
    finally:
        os.umask(old)
    for folder in (tmp_path / "srv", tmp_path / "srv" / "homes"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


@needs_root
def test_a_new_account_gets_a_private_home_with_the_sample(homes, tmp_path):
    prefix, folder = homes
    sample = tmp_path / "sample.ipynb"
    sample.write_text("{}")
    name = account_name("ada", prefix)
    account = ensure_account(name, folder / name)
    assert ensure_account(name, folder / "elsewhere") == account  # created once
    prepare_home(account, sample)
    home = account.home
    assert home == folder / name
    info = home.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, account.uid)
    for entry in (home / "jobs", home / "sample.ipynb"):
        assert entry.stat().st_uid == account.uid, entry
    assert (home / "sample.ipynb").read_text() == "{}"
    (home / "sample.ipynb").write_text("my edits")
    prepare_home(account, sample)
    assert (home / "sample.ipynb").read_text() == "my edits"  # never over the user's edits


@needs_root
def test_links_planted_in_a_home_do_not_redirect_roots_writes(homes, tmp_path):
    """The user controls their home: root's preparation must not follow their links."""
    prefix, folder = homes
    name = account_name("mallory", prefix)
    account = ensure_account(name, folder / name)
    victim_dir = tmp_path / "root-owned"
    victim_dir.mkdir()
    victim_file = tmp_path / "would-be-written"
    for entry in (account.home / "jobs", account.home / "sample.ipynb"):
        entry.unlink(missing_ok=True)
    (account.home / "jobs").symlink_to(victim_dir)
    (account.home / "sample.ipynb").symlink_to(victim_file)  # dangling: a write would create it
    sample = tmp_path / "sample.ipynb"
    sample.write_text("{}")
    prepare_home(account, sample)
    assert victim_dir.stat().st_uid == 0, "root chowned the link's target to the user"
    assert not victim_file.exists(), "root wrote through the user's link"


def assert_locked_down(name: str) -> None:
    assert pwd.getpwnam(name).pw_shell == NOLOGIN
    assert expiry_day(name) == 1
    for path in DENY_FILES:
        assert listed(path.read_text(), name), path


@needs_root
def test_a_new_account_is_locked_down(homes):
    prefix, folder = homes
    name = account_name("ada", prefix)
    ensure_account(name, folder / name)
    assert_locked_down(name)
    # su asks PAM, which refuses an expired account even to root.
    su = subprocess.run(["su", "-s", "/bin/sh", name, "-c", "id"], capture_output=True,
                        text=True)
    assert su.returncode != 0 and "expired" in su.stdout + su.stderr, su


@needs_root
def test_an_account_of_an_earlier_version_is_locked_down_at_its_next_spawn(homes):
    prefix, folder = homes
    name = account_name("old", prefix)
    subprocess.run(["useradd", "--create-home", "--home-dir", str(folder / name), "--shell",
                    "/bin/bash", "--user-group", name], check=True, capture_output=True)
    ensure_account(name, folder / name)
    assert_locked_down(name)
    remove_accounts(prefix)
    for path in DENY_FILES:  # the test's accounts leave no line behind
        assert not listed(path.read_text(), name), path


@needs_root
def test_a_home_of_an_earlier_version_moves_into_the_account(homes, tmp_path):
    prefix, folder = homes
    account = ensure_account(account_name("ada", prefix), folder / account_name("ada", prefix))
    old = tmp_path / "state" / "home" / "ada"
    (old / "jobs" / "mnist-1").mkdir(parents=True)
    (old / "notes.ipynb").write_text("{}")
    (old / "link").symlink_to("/etc/passwd")
    moved = adopt_folder(old, account)
    assert moved == account.home / "workbench-home" and not old.exists()
    for path in (moved, moved / "notes.ipynb", moved / "jobs" / "mnist-1"):
        assert path.stat().st_uid == account.uid, path
    assert (moved / "link").lstat().st_uid == account.uid
    assert Path("/etc/passwd").stat().st_uid == 0  # the link's target was left alone
    old.mkdir()
    assert adopt_folder(old, account) is None  # the place is taken: nothing is overwritten


# ---- the runtime folder: kernels on IPC sockets -------------------------------------------------


def test_the_default_runtime_folder_fits_the_longest_account():
    root = Path(TenantLocalSpawner.runtime_root.default_value)
    assert ipc_fits(root / ("x" * MAX_NAME))
    # jupyter_client's own default in a home under /tmp, as the tests make them, does not.
    assert not ipc_fits(Path("/tmp/wb-homes-abcdefgh/wb123456-ann/.local/share/jupyter/runtime"))


@pytest.mark.parametrize("root", ["run/workbench", "/var/lib/paddle-workbench/runtime/folders"])
def test_a_runtime_root_that_cannot_hold_sockets_is_refused(root):
    with pytest.raises(Exception, match="runtime_root"):
        TenantLocalSpawner(runtime_root=root)


def test_kernels_use_ipc_and_terminals_bash():
    args = server_args(ipc=True)
    assert "--KernelManager.transport=ipc" in args
    assert '--ServerApp.terminado_settings=shell_command=["/bin/bash", "-l"]' in args
    assert "--KernelManager.transport=ipc" not in server_args(ipc=False)


@needs_root
def test_the_runtime_folder_is_the_accounts_alone(homes, tmp_path):
    prefix, folder = homes
    name = account_name("ada", prefix)
    account = ensure_account(name, folder / name)
    root = tmp_path / "run" / "workbench"
    runtime = prepare_runtime_dir(account, root)
    assert runtime == root / name
    assert (stat.S_IMODE(runtime.stat().st_mode), runtime.stat().st_uid) == (0o700, account.uid)
    assert (stat.S_IMODE(root.stat().st_mode), root.stat().st_uid) == (0o755, 0)
    (runtime / "kernel-1.json").write_text("{}")
    assert prepare_runtime_dir(account, root) == runtime  # kept while the server may run
    assert (runtime / "kernel-1.json").exists()
    assert remove_runtime_dir(name, root) and not runtime.exists()
    runtime.symlink_to(tmp_path)  # something root did not make for the account: replaced
    assert prepare_runtime_dir(account, root).is_dir() and not runtime.is_symlink()
    root.chmod(0o777)
    with pytest.raises(AccountError, match="only root may write"):
        prepare_runtime_dir(account, root)


# ---- can accounts run this Python? ---------------------------------------------------------------


def fake_stat(modes: dict[str, int]):
    def stat_of(path: Path):
        mode = modes.get(str(path))
        if mode is None:
            raise FileNotFoundError(path)
        return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    return stat_of


def test_folders_on_the_way_need_traverse_and_targets_read():
    modes = {"/": stat.S_IFDIR | 0o755, "/root": stat.S_IFDIR | 0o700,
             "/root/env": stat.S_IFDIR | 0o755, "/root/env/python": stat.S_IFREG | 0o755,
             "/srv": stat.S_IFDIR | 0o755, "/srv/code": stat.S_IFDIR | 0o750}
    problems = access_problems([Path("/root/env/python"), Path("/srv/code"), Path("/missing")],
                               stat_of=fake_stat(modes))
    assert problems == [AccessProblem(Path("/root"), "traverse", Path("/root/env/python")),
                        AccessProblem(Path("/srv/code"), "read", Path("/srv/code"))]
    assert [p.fix() for p in problems] == ["chmod o+x /root", "chmod -R o+rX /srv/code"]


def test_granting_traversal_adds_only_o_x_to_folders(tmp_path):
    blocked = tmp_path / "blocked"
    (blocked / "env").mkdir(parents=True)
    blocked.chmod(0o700)
    target = blocked / "env" / "python"
    target.write_text("")
    target.chmod(0o755)
    problems = access_problems([target])
    assert AccessProblem(blocked, "traverse", target) in problems
    assert AccessProblem(blocked, "traverse", target) in grant_traversal(problems)
    assert stat.S_IMODE(blocked.stat().st_mode) == 0o701
    assert not [p for p in access_problems([target]) if p.path == blocked]


# ---- cgroups ------------------------------------------------------------------------------------


def test_a_profile_becomes_cgroup_files():
    files = limit_files(Limits(cpu=0.5, memory=512 * 2**20, tasks=100))
    assert files["cpu"] == [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]
    assert ("memory.limit_in_bytes", str(512 * 2**20)) in files["memory"]
    assert files["memory"][-1] == ("memory.memsw.limit_in_bytes", str(512 * 2**20))
    assert files["pids"] == [("pids.max", "100")]
    unlimited = limit_files(Limits(cpu=None, memory=None))
    assert unlimited["cpu"][-1] == ("cpu.cfs_quota_us", "-1")
    assert unlimited["pids"] == [("pids.max", "max")]


def test_server_cgroups_nest_below_the_hubs_own():
    own = own_cgroups("9:name=systemd:/\n4:memory:/sandbox/x\n3:cpu,cpuacct:/\n1:pids:/\n0::/\n")
    assert own["memory"] == "/sandbox/x" and own["cpuacct"] == "/"
    dirs = cgroup_dirs(Path("/sys/fs/cgroup"), own, "workbench", "jupyter-ada")
    assert dirs == {
        "cpu": Path("/sys/fs/cgroup/cpu/workbench/jupyter-ada"),
        "memory": Path("/sys/fs/cgroup/memory/sandbox/x/workbench/jupyter-ada"),
        "pids": Path("/sys/fs/cgroup/pids/workbench/jupyter-ada"),
    }


@pytest.mark.skipif(bool(unavailable()), reason=f"cgroup v1 as root: {unavailable()}")
def test_a_cgroup_binds_a_process_and_its_children(tmp_path):
    cgroup = ServerCgroup.for_account(f"{account_prefix()}probe")
    cgroup.create(Limits(cpu=0.25, memory=64 * 2**20, tasks=50))
    try:
        assert (cgroup.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
        # A child starts a grandchild (as a kernel starts a job) that tries to use 256 MiB.
        code = ("import subprocess, sys; print('grandchild', subprocess.call([sys.executable, "
                "'-c', \"b = b'x' * (256 << 20); print('allocated')\"]))")
        child = subprocess.run([sys.executable, "-c", code], preexec_fn=cgroup.joiner(),
                               capture_output=True, text=True, timeout=120)
        assert "allocated" not in child.stdout
        assert child.stdout.split()[-2:] == ["grandchild", "-9"] or "MemoryError" in child.stderr
        oom = (cgroup.dirs["memory"] / "memory.oom_control").read_text()
        assert re.search(r"oom_kill [1-9]", oom) or "MemoryError" in child.stderr, oom
        # What is left when the server stops goes with the cgroup.
        sleeper = subprocess.Popen(["sleep", "300"], preexec_fn=cgroup.joiner())
        assert cgroup.contains(sleeper.pid)
        assert cgroup.remove(grace=2) == [sleeper.pid]
        assert sleeper.wait(10) in (-15, -9)
    finally:
        if cgroup.dirs["pids"].exists():
            cgroup.remove(grace=1)
    assert not any(folder.exists() for folder in cgroup.dirs.values())


@pytest.mark.skipif(bool(unavailable()), reason=f"cgroup v1 as root: {unavailable()}")
def test_a_server_that_ends_on_its_own_takes_what_it_started_with_it():
    """JupyterHub calls `stop` only for a server still running; `poll` cleans up the others."""
    spawner = TenantLocalSpawner(user=SimpleNamespace(name="ada", groups=[]), leftover_grace=2)
    spawner.cgroup = ServerCgroup.for_account(f"{account_prefix()}ended")
    spawner.cgroup.create(Limits(cpu=None, memory=None))
    orphan = subprocess.Popen(["sleep", "300"], preexec_fn=spawner.cgroup.joiner())
    server = subprocess.Popen(["true"])
    server.wait()
    spawner.pid = server.pid  # a server process that has exited
    dirs = spawner.cgroup.dirs.values()
    assert asyncio.run(spawner.poll()) == 0
    assert orphan.wait(10) == -15
    assert spawner.cgroup is None and not any(folder.exists() for folder in dirs)


# ---- the state folder and the tenants file ----------------------------------------------------------


def test_the_state_folder_is_the_hubs_alone(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    for name in ("jupyterhub.sqlite", "jupyterhub_cookie_secret", "users.yaml", "login.txt"):
        (state / name).write_text("x")
        (state / name).chmod(0o644)
    secure_state(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()} == {0o600}


OTHER_UID = 65534  # nobody


@needs_root
@pytest.mark.parametrize("place", ["parent-owned-by-another", "parent-writable-by-others",
                                   "state-owned-by-another", "file-owned-by-another"])
def test_a_state_folder_another_account_could_take_is_refused(tmp_path, monkeypatch, place):
    """Root's `workbench up` in a folder another account owns or may write to would let that
    account keep the hub's cookie secret and users file (replace the folder, or plant files)."""
    monkeypatch.delenv("SUDO_UID", raising=False)
    parent = tmp_path / "shared"
    parent.mkdir()
    state = parent / ".workbench"
    if place == "parent-owned-by-another":
        os.chown(parent, OTHER_UID, OTHER_UID)
    elif place == "parent-writable-by-others":
        parent.chmod(0o777)
    else:
        state.mkdir(mode=0o700)
        target = state if place == "state-owned-by-another" else state / "users.yaml"
        target.touch()
        os.chown(target, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeStateFolder, match="uid 65534|may be written by other accounts"):
        check_state_place(state)
    refused = subprocess.run([sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir",
                              str(state), "--port", "1"], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "workbench up:" in refused.stderr, refused.stderr
    assert not (state / "jupyterhub_cookie_secret").exists()


def test_a_state_folder_below_a_sticky_folder_or_ones_own_is_accepted(tmp_path):
    sticky = tmp_path / "tmp-like"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: anyone may create, nobody may rename what is not theirs
    check_state_place(sticky / "state")
    check_state_place(tmp_path / "state")


def test_the_default_tenant_is_valid_and_fits_the_machine():
    data = default_tenants(cpus=2, memory_bytes=8 * 2**30, image="r.example/cpu@sha256:" + "a" * 64)
    tenant = Tenants.from_dict(data, strict=True).tenants[0]
    assert tenant.groups == (DEFAULT_GROUP,)
    profile = tenant.profiles[0]
    assert (profile.cpu.limit_value, profile.memory.limit) == (2, "4Gi")


def test_without_a_tenants_file_one_is_written_and_named(tmp_path):
    chosen = choose_tenants_file(tmp_path, None, EXAMPLE_TENANTS)
    assert chosen.path == tmp_path / "tenants.yaml"
    assert "wrote a one-tenant default" in chosen.note
    assert [t.name for t in load_tenants(chosen.path).tenants] == ["local"]
    assert choose_tenants_file(tmp_path, None, EXAMPLE_TENANTS).note is None  # now it exists


def test_earlier_users_keep_the_tenants_they_were_made_with(tmp_path):
    (tmp_path / "users.yaml").write_text("users: {}\n")
    chosen = choose_tenants_file(tmp_path, None, EXAMPLE_TENANTS)
    assert "copied the example" in chosen.note
    assert chosen.path.read_text() == EXAMPLE_TENANTS.read_text()
    other = tmp_path / "other"
    other.mkdir()
    (other / "tenants.in-use.yaml").write_text(EXAMPLE_TENANTS.read_text())
    assert "last ran with" in choose_tenants_file(other, None, EXAMPLE_TENANTS).note


def test_a_broken_edit_keeps_the_last_good_tenants(tmp_path):
    source, copy = tmp_path / "tenants.yaml", tmp_path / "in-use.yaml"
    source.write_text(EXAMPLE_TENANTS.read_text())
    mirror = TenantsMirror(source, copy)
    assert mirror.sync() is None and copy.read_text() == source.read_text()
    good = copy.read_text()
    source.write_text("tenants: [\n")
    problem = mirror.sync()
    assert problem and str(source) in problem and "not valid YAML" in problem
    assert "last valid version" in problem
    assert copy.read_text() == good
    assert mirror.sync() is None  # reported once
    edited = yaml.safe_load(good)
    edited["tenants"][1]["groups"].append("guests")
    source.write_text(yaml.safe_dump(edited))
    assert mirror.sync() is None
    assert "guests" in load_tenants(copy).tenants[1].groups
    source.unlink()
    assert "No such file" in mirror.sync()
    assert "guests" in load_tenants(copy).tenants[1].groups


def test_a_broken_tenants_file_at_start_is_an_error(tmp_path):
    source = tmp_path / "tenants.yaml"
    source.write_text("tenants: []\n")
    with pytest.raises(TenantsFileError, match="at least one tenant"):
        TenantsMirror(source, tmp_path / "copy.yaml").sync()
    assert not (tmp_path / "copy.yaml").exists()


# ---- passwords ----------------------------------------------------------------------------------


def args(**given) -> Namespace:
    return Namespace(**{"password": None, "password_stdin": False, **given})


def test_a_password_on_the_command_line_is_refused():
    with pytest.raises(CommandError, match="ps.*--password-stdin or WORKBENCH_PASSWORD"):
        new_password(args(password="hunter2"))


def test_passwords_come_from_stdin_the_environment_or_are_generated():
    assert new_password(args(password_stdin=True), stdin=io.StringIO("s3cret\n")) == "s3cret"
    with pytest.raises(CommandError, match="empty"):
        new_password(args(password_stdin=True), stdin=io.StringIO("\n"))
    assert new_password(args(), env={"WORKBENCH_PASSWORD": "from-env"}) == "from-env"
    generated = new_password(args(), env={})
    assert len(generated) >= 12 and generated != new_password(args(), env={})


@needs_root
def test_add_user_takes_the_password_from_stdin_and_writes_the_default_tenant(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir", "state",
         "--add-user", "Ada", "--groups", DEFAULT_GROUP, "--password-stdin"],
        input="pw-from-stdin\n", cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "wrote a one-tenant default" in result.stdout
    assert "pw-from-stdin" not in result.stdout
    from hub_config.users import load_users, verify_password

    entry = load_users(tmp_path / "state" / "users.yaml")["ada"]
    assert verify_password("pw-from-stdin", entry["password"])
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


# ---- the spawn form -----------------------------------------------------------------------------


def test_the_local_spawn_form_offers_profiles_only():
    tenants = load_tenants(EXAMPLE_TENANTS).tenants
    form = options_form_html(tenants)
    assert 'name="profile"' in form
    assert 'name="image"' not in form and "sha256" not in form
    assert form.count("<option") == sum(len(t.profiles) for t in tenants)
    assert 'value="vision--cpu-small"' in form
