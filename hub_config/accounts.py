"""One system account per hub user on one machine, the way The Littlest JupyterHub does it.

`workbench up` run as root serves each hub user as an operating-system account of their own
(`jupyter-<name>`), created on the user's first spawn with a home of mode 0700 outside the hub's
state. The kernel then keeps users apart: another account's files, `/proc/<pid>/environ` (where
the server's `JUPYTERHUB_API_TOKEN` lives) and processes are out of reach.

- `account_name` (pure): the account of a hub user; stable, at most 32 characters, and two hub
  users never share one.
- `useradd_argv` (pure) and `ensure_account`: create the account once (serialised, retried while
  another `useradd` holds the password file's lock), locked down so that it can start nothing
  outside its server: no login, no cron or `at` job (`hub_config.account_lockdown`).
- `prepare_home`: the home (0700, the account's), its `jobs` folder and the sample notebook. Root
  works inside a folder the user controls here, so nothing follows a link the user planted.
- `prepare_runtime_dir` and `remove_runtime_dir`: the account's private runtime folder, outside
  its home and with a short path, where its server keeps connection files and its kernels their
  IPC sockets (a Unix socket's path has at most 107 bytes).
- `access_problems` (pure) and `grant_traversal`: whether the accounts can reach the Python
  environment and the workbench's code, and making the folders on the way traversable.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hub_config.account_lockdown import EXPIRED, NOLOGIN, LockdownError, lock_down

DEFAULT_PREFIX = "jupyter-"
MAX_NAME = 32  # useradd's limit on Linux
_KEPT = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]*$")
# Names that stay as they are never contain "_", so an escaped name (which ends "_<hash>") can
# never equal one that was kept.
_HASH_SEPARATOR = "_"
_HASH_LENGTH = 10
# useradd exits 10 when it cannot lock the password file (another useradd, maybe another hub).
_LOCKED = 10
_USERADD_LOCK = threading.Lock()


class AccountError(RuntimeError):
    """An account could not be created or prepared; the message says why and what to do."""


@dataclass(frozen=True)
class Account:
    """A system account that serves one hub user."""

    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def lookup(cls, name: str) -> Account:
        """The account as the password database has it; raises KeyError if there is none."""
        entry = pwd.getpwnam(name)
        return cls(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir))


def os_user_name() -> str:
    """The name of the account this process runs as (from the password database, not from
    environment variables that a caller may have set)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def account_name(username: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The system account of hub user `username`: `<prefix><name>`.

    A name of lower-case letters, digits and dashes that fits in 32 characters is kept; any
    other (upper case, `.`, `@`, non-ASCII, too long) is escaped to those characters, cut to fit
    and given `_` and a hash of the original, so two hub users never map to one account: a kept
    name has no `_`, an escaped one always ends in `_<hash>` (a name with nothing left after
    escaping, `张伟` say, is `<prefix>_<hash>`).

    Raises:
        ValueError: the prefix is not a valid start of an account name, or leaves no room.
    """
    if not _PREFIX.match(prefix):
        raise ValueError(f"account prefix {prefix!r} must start with a letter and hold only "
                         "a-z, 0-9 and '-' (e.g. 'jupyter-')")
    room = MAX_NAME - len(prefix)
    if room < _HASH_LENGTH + 2:
        raise ValueError(f"account prefix {prefix!r} is too long: names are at most {MAX_NAME}")
    if _KEPT.match(username) and len(username) <= room:
        return prefix + username
    digest = hashlib.sha256(username.encode()).hexdigest()[:_HASH_LENGTH]
    safe = re.sub(r"[^a-z0-9-]+", "-", username.lower()).strip("-")
    safe = safe[: room - _HASH_LENGTH - 1].rstrip("-")
    return f"{prefix}{safe}{_HASH_SEPARATOR}{digest}"


def make_homes_dir(path: Path) -> None:
    """Create the folder of homes (and its missing parents) with mode 0755, whatever the umask:
    every account must pass through it to reach its own home."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)


def useradd_argv(name: str, home: Path, comment: str = "Paddle Workbench user") -> list[str]:
    """The `useradd` command that creates account `name` with its own group and home, with no
    login shell and expired from the start (`hub_config.account_lockdown`)."""
    return ["useradd", "--create-home", "--home-dir", str(home), "--shell", NOLOGIN,
            "--expiredate", EXPIRED, "--user-group", "--comment", comment, name]


def ensure_account(name: str, home: Path, *, attempts: int = 20,
                   run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Account:
    """The account `name`, created with home `home` if it does not exist yet (needs root), and
    locked down: no login, no cron or `at` job (`hub_config.account_lockdown.lock_down`, also
    for an account made by an earlier version).

    An existing account is used as the password database has it (its home may differ). Safe to
    call from several threads: account creation is serialised here, and retried while another
    process holds the password file's lock. Raises AccountError with useradd's message, or why
    the account could not be locked down.
    """
    with _USERADD_LOCK:
        account = _find_or_create(name, home, attempts, run)
        try:
            lock_down(name, run=run)
        except LockdownError as err:
            raise AccountError(str(err)) from None
        except OSError as err:
            raise AccountError(f"could not lock down account {name}: {err}") from None
        return account


def _find_or_create(name: str, home: Path, attempts: int,
                    run: Callable[..., subprocess.CompletedProcess]) -> Account:
    for _ in range(attempts):
        try:
            return Account.lookup(name)
        except KeyError:
            pass
        make_homes_dir(home.parent)
        result = run(useradd_argv(name, home), capture_output=True, text=True)
        if result.returncode == 0:
            return Account.lookup(name)
        if result.returncode != _LOCKED:
            raise AccountError(f"could not create account {name}: "
                               f"{(result.stderr or result.stdout).strip()}")
        time.sleep(0.25)
    raise AccountError(f"could not create account {name}: the password file stayed locked")


def prepare_home(account: Account, sample: Path | None) -> Path:
    """Make the account's home its own (mode 0700), with `jobs/` and the sample notebook.

    Existing entries are left as they are (never a notebook over the user's edits). Run as root,
    every step works relative to an open handle on the home and never follows a link inside it,
    so a link the user planted (`jobs -> /etc`) cannot turn root's writes elsewhere.

    Raises AccountError when the home is not a folder owned by the account.
    """
    home = account.home
    if not home.exists():
        home.mkdir(parents=True, mode=0o700)
        os.chown(home, account.uid, account.gid)
    info = home.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != account.uid:
        raise AccountError(f"{home} must be a folder owned by {account.name}; fix or remove it")
    os.chmod(home, 0o700)
    own = os.geteuid() != account.uid
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.mkdir("jobs", 0o700, dir_fd=fd)
            if own:
                os.chown("jobs", account.uid, account.gid, dir_fd=fd, follow_symlinks=False)
        except FileExistsError:
            pass
        if sample is not None and sample.is_file():
            _copy_new(sample, sample.name, fd, account if own else None)
    finally:
        os.close(fd)
    return home


def _copy_new(source: Path, name: str, dir_fd: int, owner: Account | None) -> None:
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                      dir_fd=dir_fd)
    except FileExistsError:
        return
    with os.fdopen(out, "wb") as target:
        if owner is not None:
            os.fchown(target.fileno(), owner.uid, owner.gid)
        target.write(source.read_bytes())


def prepare_runtime_dir(account: Account, root: Path) -> Path:
    """`root/<account>`: the account's private runtime folder (mode 0700, the account's), made
    when missing. Needs root.

    `root` is made (mode 0755) when missing, and must be a folder of root's that nobody else may
    write to, so that only root makes or replaces the folders in it. An entry for the account that
    is not a folder of the account's uid (a link, a file, a folder of another uid) is replaced.

    Raises AccountError when `root` is not such a folder.
    """
    make_homes_dir(root)  # its missing parents too, passable whatever the umask
    info = root.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != 0
            or stat.S_IMODE(info.st_mode) & 0o022):
        raise AccountError(f"{root} must be a folder of root's that only root may write to "
                           "(it holds the accounts' runtime folders); fix it or choose another")
    entry = root / account.name
    try:
        found = entry.lstat()
    except FileNotFoundError:
        found = None
    if found is not None and not (stat.S_ISDIR(found.st_mode) and found.st_uid == account.uid):
        _remove(entry)
        found = None
    if found is None:
        entry.mkdir(mode=0o700)
        os.chown(entry, account.uid, account.gid)
    entry.chmod(0o700)
    return entry


def remove_runtime_dir(name: str, root: Path) -> bool:
    """Remove account `name`'s runtime folder in `root` with what is in it (links themselves,
    never their targets); returns whether there was one."""
    entry = root / name
    if not (entry.exists() or entry.is_symlink()):
        return False
    _remove(entry)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)  # descends by file descriptor: a link inside is removed, not followed
    else:
        path.unlink()


def adopt_folder(old: Path, account: Account, name: str = "workbench-home") -> Path | None:
    """Move `old` (a home of an earlier version, owned by the hub's user) into the account's
    home as `name`, and give it and everything in it to the account (links themselves, never
    their targets). Returns the new place, or None when there was nothing to move or the place
    is taken. Run as root."""
    if not old.is_dir() or old.is_symlink() or old.resolve() == account.home.resolve():
        return None
    target = account.home / name
    if target.exists() or target.is_symlink():
        return None
    shutil.move(str(old), str(target))
    os.chown(target, account.uid, account.gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(target):
        for entry in dirs + files:
            os.chown(os.path.join(folder, entry), account.uid, account.gid, follow_symlinks=False)
    return target


# ---- can the accounts run the workbench's Python? ----------------------------------------------


@dataclass(frozen=True)
class AccessProblem:
    """A path other accounts cannot use: `kind` is "traverse" (a folder on the way lacks o+x,
    which `grant_traversal` fixes) or "read" (the path itself lacks o+r, or o+x for a folder or
    program, which the operator must decide)."""

    path: Path
    kind: str
    needed_by: Path

    def fix(self) -> str:
        return f"chmod o+x {self.path}" if self.kind == "traverse" else f"chmod -R o+rX {self.path}"


def access_problems(targets: Iterable[Path],
                    stat_of: Callable[[Path], os.stat_result] = os.stat) -> list[AccessProblem]:
    """What keeps another (non-owner, non-group) account from using each of `targets`.

    Every folder above a target must be traversable by others; the target itself readable, and
    also traversable or executable when it is a folder or program. Each symbolic link on the way
    counts as the path it points to as well. Missing targets are skipped.
    """
    problems: dict[tuple[Path, str], AccessProblem] = {}
    for target in targets:
        for path in dict.fromkeys([Path(os.path.abspath(target)), Path(target).resolve()]):
            try:
                mode = stat_of(path).st_mode
            except OSError:
                continue
            for folder in path.parents:
                if not stat_of(folder).st_mode & stat.S_IXOTH:
                    problems.setdefault((folder, "traverse"), AccessProblem(folder, "traverse", path))
            needs = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0)
            if mode & needs != needs:
                problems.setdefault((path, "read"), AccessProblem(path, "read", path))
    return list(problems.values())


def grant_traversal(problems: Iterable[AccessProblem]) -> list[AccessProblem]:
    """Add o+x to each folder of a "traverse" problem (others may pass through, not list it).

    Returns the problems fixed; "read" problems are left for the operator.
    """
    fixed = []
    for problem in problems:
        if problem.kind == "traverse":
            os.chmod(problem.path, os.stat(problem.path).st_mode | stat.S_IXOTH)
            fixed.append(problem)
    return fixed


def python_paths(executable: str, extra: Iterable[str] = ()) -> list[Path]:
    """What an account's server and kernels need to reach: the interpreter (link and target), its
    standard library and site-packages, and `extra` (the workbench's code, PYTHONPATH)."""
    import sysconfig

    paths = [Path(executable)]
    for key in ("stdlib", "purelib", "platlib"):
        paths.append(Path(sysconfig.get_paths()[key]))
    paths.extend(Path(p) for p in extra if p)
    return list(dict.fromkeys(paths))
