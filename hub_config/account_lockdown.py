"""A hub account starts nothing outside its server: no login, no cron job, no `at` job.

Everything a hub account runs belongs in its server's cgroup (`hub_config.local_limits`), where
the profile's limits bind it and where stopping or culling the server ends it. A cron job, an
`at` job or an ssh login (with a key the user wrote into `~/.ssh/authorized_keys`: OpenSSH with
PAM lets keys in to an account whose password is locked with `!`) would each run outside it,
unlimited, and outlive the server. So every hub account

- has `/usr/sbin/nologin` as its login shell: sshd, su and whatever else runs the login shell
  get a refusal (the server's terminals run `/bin/bash` themselves);
- has expired (the shadow file's expiry day 1, 1970-01-02): PAM's account check, which sshd
  (`UsePAM yes`), su, cron and atd make before running anything as the account, refuses it,
  before a session or a tunnel opens. The hub starts servers by setuid, not through PAM, so
  they are unaffected;
- is named in `/etc/cron.deny` and `/etc/at.deny`, so `crontab` and `at` refuse it (a deny file
  that is missing is made, readable by all, as the setgid/setuid tools must read it).

The deny files are the operator's too: their lines are kept as they are, a name is appended once,
and writers on this machine (several hubs, several threads) are serialised by an exclusive lock
on the file itself, which is only ever appended to or rewritten in place, never replaced.
Operators who run sshd can also name the accounts there (`DenyUsers jupyter-*`).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

NOLOGIN = "/usr/sbin/nologin"
EXPIRED = "1970-01-02"  # day 1: an expiry field of 0 means "never" to some tools
DENY_FILES = (Path("/etc/cron.deny"), Path("/etc/at.deny"))
SHADOW = Path("/etc/shadow")
_EXPIRY_FIELD = 7


class LockdownError(RuntimeError):
    """An account could not be locked down; the message says why."""


def expiry_day(name: str, shadow: Path = SHADOW) -> int | None:
    """The day (since 1970-01-01) on which account `name` expires, as the shadow file has it;
    None when it never does or has no entry. Needs root."""
    with open(shadow) as lines:
        for line in lines:
            fields = line.rstrip("\n").split(":")
            if fields[0] == name and len(fields) > _EXPIRY_FIELD:
                value = fields[_EXPIRY_FIELD].strip()
                return int(value) if value.isdigit() and int(value) > 0 else None
    return None


def usermod_argv(name: str, shell: str, expires: int | None,
                 today: int | None = None) -> list[str] | None:
    """The `usermod` command that gives account `name` the login shell `NOLOGIN` and an expiry
    in the past, for what it lacks of them (`shell`, `expires`: what it has now); None when it
    lacks nothing."""
    if today is None:
        today = (datetime.date.today() - datetime.date(1970, 1, 1)).days
    argv = ["usermod"]
    if shell != NOLOGIN:
        argv += ["--shell", NOLOGIN]
    if expires is None or expires > today:
        argv += ["--expiredate", EXPIRED]
    return argv + [name] if len(argv) > 1 else None


def listed(text: str, name: str) -> bool:
    """Whether a deny file's `text` names `name` on a line of its own (as cron and at read it)."""
    return name in (line.strip() for line in text.splitlines())


def _open_locked(path: Path):
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.fchmod(fd, 0o644)  # whatever the umask: `crontab` and `at` must read it as the user
    except FileExistsError:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
    handle = os.fdopen(fd, "r+b")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def deny(name: str, path: Path) -> bool:
    """Name `name` in the deny file `path` (made, mode 0644, when missing), once; returns whether
    a line was added. Other lines stay as they are."""
    with _open_locked(path) as handle:
        text = handle.read().decode(errors="surrogateescape")
        if listed(text, name):
            return False
        gap = "\n" if text and not text.endswith("\n") else ""
        handle.write(f"{gap}{name}\n".encode())
        return True


def undeny(names: Iterable[str], path: Path) -> list[str]:
    """Take the lines naming `names` out of the deny file `path` (for accounts that are gone);
    returns the names taken out. Other lines stay as they are."""
    wanted = set(names)
    if not path.exists():
        return []
    with _open_locked(path) as handle:
        lines = handle.read().decode(errors="surrogateescape").splitlines(keepends=True)
        kept = [line for line in lines if line.strip() not in wanted]
        if len(kept) == len(lines):
            return []
        handle.seek(0)
        handle.truncate()
        handle.write("".join(kept).encode(errors="surrogateescape"))
        return sorted({line.strip() for line in lines} & wanted)


def lock_down(name: str, *, deny_files: Iterable[Path] = DENY_FILES, shadow: Path = SHADOW,
              run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """Make account `name` unable to log in or to schedule jobs: login shell, expiry and deny
    files as the module says; what it has already is left alone. Needs root.

    Raises:
        LockdownError: usermod failed (its message), or the password file stayed locked.
        OSError: a deny file could not be written.
    """
    argv = usermod_argv(name, pwd.getpwnam(name).pw_shell, expiry_day(name, shadow))
    if argv is not None:
        _usermod(argv, name, run)
    for path in deny_files:
        deny(name, path)


def _usermod(argv: list[str], name: str, run: Callable[..., subprocess.CompletedProcess],
             attempts: int = 20) -> None:
    for _ in range(attempts):
        result = run(argv, capture_output=True, text=True)
        if result.returncode == 0:
            return
        said = (result.stderr or result.stdout).strip()
        if "lock" not in said:  # else another useradd or usermod holds the password file: wait
            raise LockdownError(f"could not lock down account {name}: {said}")
        time.sleep(0.25)
    raise LockdownError(f"could not lock down account {name}: the password file stayed locked")
