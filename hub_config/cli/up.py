"""`workbench up`: the whole workbench on this machine (the embedded default).

Starts JupyterHub (which starts configurable-http-proxy) on 127.0.0.1 with the local login
(a users file, no identity provider), the local process spawner applying the tenants' rules, the
idle cullers, and the local engine as every server's default. The hub's state lives under one
directory (`--state-dir`: database, cookie secret, users file, login file), mode 0700, its files
0600. Ctrl-C, SIGTERM or SIGHUP stops the hub, which stops the proxy, the culler services and
every server.

Lifetimes (`hub_config.instance`, `hub_config.hub_process`): one `workbench up` per state folder
(a lock; a second start is refused with the holder's pid); a start after a killed one first
stops what that one left; the hub cannot outlive this process (it is sent SIGTERM when this one
dies); a hub that dies after it served is started again a few times; its output goes to a
size-bounded log (`hub_config.bounded_log`). `workbench service` runs all this under systemd.

Run as root, every hub user is served as a system account of their own (`jupyter-<name>`, home
under `--homes-dir`, default /home), with the chosen profile's CPU and memory limits enforced by
a cgroup; see `hub_config.local_spawner`. Run as a normal user, the hub serves that one user.

On the first start the users file gets one user, the operating-system user, in the first group of
the first tenant, with a generated password that is printed and kept in `<state>/login.txt`
(mode 0600). `--add-user NAME --groups a,b` adds more users (as root); their password comes from
`--password-stdin`, `WORKBENCH_PASSWORD`, or is generated and printed, never from the command
line, where every user could read it in `ps`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

from hub_config import jupyterhub_config
from hub_config.accounts import (
    Account,
    access_problems,
    grant_traversal,
    make_homes_dir,
    os_user_name,
    python_paths,
)
from hub_config.bounded_log import BoundedLog
from hub_config.cli import CommandError, require_extra
from hub_config.hub_process import HubProcess, RestartBudget, answers, how_it_ended
from hub_config.instance import StateHeld, StateLock, reclaim
from hub_config.local_state import (
    TENANTS_IN_USE,
    TenantsMirror,
    UnsafeStateFolder,
    check_state_place,
    choose_tenants_file,
    secure_state,
)
from hub_config.tenants import TenantsFileError, load_tenants
from hub_config.users import add_user, load_users

CONFIG_FILE = Path(jupyterhub_config.__file__).resolve()
# Each of these stops the workbench cleanly, in a terminal or in the background (where SIGINT
# may arrive ignored: the handler is set whatever the parent did).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PASSWORD_ENV = "WORKBENCH_PASSWORD"
# How often the operator's tenants file is looked at while the hub runs.
TENANTS_POLL_SECONDS = 2.0


def register(subparsers) -> None:
    parser = subparsers.add_parser("up", help="start the workbench on this machine")
    parser.add_argument("--state-dir", default=".workbench", help="where the hub's state lives")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--tenants", help="tenants file (default: <state>/tenants.yaml, written "
                        "with one tenant for this machine if missing)")
    parser.add_argument("--homes-dir", default="/home", help="as root: where the users' "
                        "accounts get their homes (default /home)")
    parser.add_argument("--add-user", metavar="NAME", help="add (or reset) a local user, print "
                        "their password and exit")
    parser.add_argument("--groups", default="", help="with --add-user: comma-separated groups")
    parser.add_argument("--password-stdin", action="store_true", help="with --add-user: read "
                        f"the password from standard input (or set {PASSWORD_ENV}; default: "
                        "generated)")
    # Refused with a message that says what to use instead (see `new_password`).
    parser.add_argument("--password", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_password(args, stdin=sys.stdin, env=os.environ) -> str:
    """The password for `--add-user`: standard input, the environment, or a generated one.

    Raises CommandError for `--password VALUE` (visible to every user in `ps`) or empty input.
    """
    if args.password is not None:
        raise CommandError(f"--password shows the password to every user of this machine (ps); "
                           f"use --password-stdin or {PASSWORD_ENV}")
    if args.password_stdin:
        password = stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin read an empty password")
        return password
    return env.get(PASSWORD_ENV) or secrets.token_urlsafe(12)


def ensure_first_user(state_dir: Path, tenants_file: Path) -> str | None:
    """Create the users file with the OS user on first start; return the message to print."""
    users_file = state_dir / "users.yaml"
    if users_file.exists():
        return None
    tenants = load_tenants(tenants_file)
    name = os_user_name().lower()
    group = tenants.tenants[0].groups[0]
    password = secrets.token_urlsafe(12)
    add_user(users_file, name, [group], password)
    login = state_dir / "login.txt"
    fd = os.open(login, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"user: {name}\npassword: {password}\n")
    return (f"Created {users_file} with user {name!r} (group {group!r}); "
            f"password: {password} (also in {login})")


def prepare_accounts(homes_dir: Path) -> list[str]:
    """As root: make sure the users' accounts can reach their homes and run this Python.

    Folders on the way that others cannot pass through get o+x (pass, not list); returns one
    line per change for the operator. Raises CommandError for what only the operator can decide.
    """
    make_homes_dir(homes_dir)
    extra = [str(jupyterhub_config.REPO_ROOT), str(homes_dir),
             *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    problems = access_problems(python_paths(sys.executable, extra))
    lines = [f"Let other users pass through {p.path} (chmod o+x, not listable): the accounts "
             f"need {p.needed_by}" for p in grant_traversal(problems)]
    left = [p for p in problems if p.kind != "traverse"]
    if left:
        raise CommandError("the users' accounts could not use the workbench's Python; run "
                           + "; ".join(p.fix() for p in left) + " (or install it elsewhere)")
    return lines


def serving_message(homes_dir: Path) -> str:
    if os.geteuid() == 0:
        return (f"Each user runs as a system account of their own (jupyter-<name>, home in "
                f"{homes_dir}), within the CPU and memory limits of the profile they pick.")
    me = os_user_name()
    return (f"Running as {me}, not root: this workbench serves only {me.lower()}, in "
            f"{Account.lookup(me).home}. Run it as root to serve several users, each as an "
            "account of their own.")


def hub_environment(state_dir: Path, tenants_file: Path, port: int,
                    homes_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(PASSWORD_ENV, None)
    env.update({
        "WORKBENCH_STATE_DIR": str(state_dir),
        "WORKBENCH_TENANTS_FILE": str(tenants_file),
        "WORKBENCH_HOMES_DIR": str(homes_dir),
        "WORKBENCH_AUTH": "local",
        "WORKBENCH_SPAWNER": "local",
        "WORKBENCH_BIND_URL": f"http://127.0.0.1:{port}",
        "WORKBENCH_HUB_BIND_URL": f"http://127.0.0.1:{free_port()}",
        "WORKBENCH_PROXY_API_URL": f"http://127.0.0.1:{free_port()}",
    })
    # Single-user servers find `jupyterhub-singleuser` and the kernel next to this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def add_local_user(args, state_dir: Path, tenants_file: Path) -> int:
    if os.geteuid() != 0:
        raise CommandError(f"run as {os_user_name()}, not root, the workbench serves only "
                           f"{os_user_name().lower()}; run it as root to add users")
    tenants = load_tenants(tenants_file)
    password = new_password(args)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    known = {g for t in tenants.tenants for g in (*t.groups, *t.admin_groups)}
    if not set(groups) & known:
        raise CommandError(
            f"--groups {args.groups!r} puts {args.add_user} in no tenant; use one of: "
            f"{', '.join(sorted(known))}"
        )
    add_user(state_dir / "users.yaml", args.add_user.lower(), groups, password)
    shown = "from standard input" if args.password_stdin else (
        f"from {PASSWORD_ENV}" if os.environ.get(PASSWORD_ENV) else password)
    print(f"Added {args.add_user.lower()} (groups {', '.join(groups)}); password: {shown}")
    return 0


def run(args) -> int:
    if not args.add_user:
        # Before any state is written: without JupyterHub there is nothing to start.
        require_extra("hub", "jupyterhub")
    # Everything the hub and this command write (database, secret, users, logs) is theirs alone.
    os.umask(0o077)
    state_dir = Path(args.state_dir).resolve()
    try:
        check_state_place(state_dir)  # before anything is made or read there
        state_dir.mkdir(parents=True, exist_ok=True)
        check_state_place(state_dir)
    except UnsafeStateFolder as err:
        raise CommandError(str(err)) from None
    secure_state(state_dir)
    if args.add_user:  # beside a running workbench too: the hub reads the users file anew
        return add_local_user(args, state_dir, _tenants(args, state_dir).path)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_requested)
    lock = StateLock(state_dir)
    try:
        lock.acquire()
    except StateHeld as err:
        raise CommandError(str(err)) from None
    try:
        return start(args, state_dir)
    finally:
        lock.release()


def _stop_requested(signum, _frame) -> None:
    raise KeyboardInterrupt


def _tenants(args, state_dir: Path):
    try:
        tenants = choose_tenants_file(state_dir, args.tenants, jupyterhub_config.EXAMPLE_TENANTS)
    except (TenantsFileError, ValueError) as err:
        raise CommandError(str(err)) from None
    if tenants.note:
        print(tenants.note)
    return tenants


def start(args, state_dir: Path) -> int:
    """With the state folder held: stop what a killed workbench left, set up, serve."""
    left = reclaim(state_dir)
    if left:
        print(f"Stopped {len(left)} process(es) a workbench left running on {state_dir} when it "
              f"was killed: " + "; ".join(f"{p.pid} {p.command[:80]}" for p in left))
    homes_dir = Path(args.homes_dir).resolve()
    tenants = _tenants(args, state_dir)
    try:
        mirror = TenantsMirror(tenants.path, state_dir / TENANTS_IN_USE)
        mirror.sync()
        message = ensure_first_user(state_dir, tenants.path)
        load_users(state_dir / "users.yaml")
    except (TenantsFileError, ValueError) as err:
        raise CommandError(str(err)) from None
    granted = prepare_accounts(homes_dir) if os.geteuid() == 0 else []
    for line in [message, *granted, serving_message(homes_dir)]:
        if line:
            print(line)
    env = hub_environment(state_dir, mirror.copy, args.port, homes_dir)
    return serve(env, state_dir, mirror, args.port)


def serve(env: dict[str, str], state_dir: Path, mirror: TenantsMirror, port: int) -> int:
    """Run the hub until it exits or a stop signal; meanwhile keep its tenants file the last
    valid one, and start it again when it dies after it served, or is killed (a few times at
    most)."""
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)]
    log = BoundedLog(state_dir / "jupyterhub.log")
    url = f"http://127.0.0.1:{port}"
    print(f"Starting the workbench on {url} (state in {state_dir}, tenants from "
          f"{mirror.source}, hub log in {log.path}). Ctrl-C stops it.", flush=True)
    budget, hub = RestartBudget(), HubProcess(argv, env, state_dir, log)
    try:
        while True:
            hub.start()
            code, served = wait_watching(hub, mirror, log, url)
            # A hub that exits by itself before it served has a reason a restart will not mend
            # (its configuration, say); one killed by a signal was killed, whenever it was.
            if code == 0 or (code > 0 and not served):
                return _ended(code, log)
            restart = budget.take()
            if restart is None:
                _say(log, f"The hub ended again ({how_it_ended(code)}) after "
                          f"{budget.restarts} restarts within {budget.window / 60:g} min: "
                          "stopping the workbench")
                return 1
            _say(log, f"The hub ended unexpectedly ({how_it_ended(code)}): starting it again "
                      f"(restart {restart} of {budget.restarts} within {budget.window / 60:g} "
                      "min)")
            _reclaim(state_dir, log, "the ended hub left")
    except KeyboardInterrupt:
        print("Stopping the workbench...", flush=True)
        return 0
    finally:
        if hub.process is not None and hub.process.poll() is None:
            hub.stop()
        _reclaim(state_dir, log, "still ran after the hub stopped")
        log.close()


def _ended(code: int, log: BoundedLog) -> int:
    """The hub ended by itself: before it served (its configuration, say) or asked to."""
    if code:
        print("\n".join(log.tail(15)), file=sys.stderr)
        print(f"The hub ended ({how_it_ended(code)}); see {log.path}", file=sys.stderr)
        return code if code > 0 else 1
    print("The hub stopped; the workbench stops with it.", flush=True)
    return 0


def _say(log: BoundedLog, message: str) -> None:
    """A line for the operator, on the terminal and in the hub log."""
    line = f"[W {time.strftime('%Y-%m-%d %H:%M:%S')} workbench up] {message}"
    print(line, file=sys.stderr, flush=True)
    log.write(line.encode() + b"\n")


def _reclaim(state_dir: Path, log: BoundedLog, what: str) -> None:
    stopped = reclaim(state_dir)
    if stopped:
        _say(log, f"Stopped {len(stopped)} process(es) {what}: "
                  + "; ".join(f"{p.pid} {p.command[:80]}" for p in stopped))


def wait_watching(hub: HubProcess, mirror: TenantsMirror, log: BoundedLog,
                  url: str) -> tuple[int, bool]:
    """Wait for the hub to end: (its exit status, whether it had answered at `url`). Every few
    seconds, pass a valid edit of the tenants file on to it, or report a broken one here and in
    the hub log (the hub keeps the last valid one)."""
    served = False
    while True:
        code = hub.wait(TENANTS_POLL_SECONDS if served else 0.25)
        if code is not None:
            return code, served
        served = served or answers(url)
        problem = mirror.sync()
        if problem:
            _say(log, problem)
