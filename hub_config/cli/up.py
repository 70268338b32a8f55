"""`workbench up`: the whole workbench on this machine (the embedded default).

Starts JupyterHub (which starts configurable-http-proxy) on 127.0.0.1 with the local login
(a users file, no identity provider), the local process spawner applying the tenants' rules, the
idle cullers, and the local engine as every server's default. The hub's state lives under one
directory (`--state-dir`: database, cookie secret, users file, login file), mode 0700, its files
0600. Ctrl-C (or SIGTERM) stops the hub, which stops the proxy, the culler services and every
server.

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
import subprocess
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
from hub_config.cli import CommandError, require_extra
from hub_config.local_state import (
    TENANTS_IN_USE,
    TenantsMirror,
    choose_tenants_file,
    secure_state,
)
from hub_config.tenants import TenantsFileError, load_tenants
from hub_config.users import add_user, load_users

CONFIG_FILE = Path(jupyterhub_config.__file__).resolve()
# How long each stop signal gets before the next, harder one (the hub stops servers first).
STOP_TIMEOUTS = ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5))
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


def stop(process: subprocess.Popen) -> int:
    """Stop the hub: SIGINT (it stops servers, services and proxy), then harder signals."""
    for sig, timeout in STOP_TIMEOUTS:
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig) if sig == signal.SIGKILL else process.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


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
    state_dir.mkdir(parents=True, exist_ok=True)
    secure_state(state_dir)
    homes_dir = Path(args.homes_dir).resolve()
    try:
        tenants = choose_tenants_file(state_dir, args.tenants, jupyterhub_config.EXAMPLE_TENANTS)
        if args.add_user:
            if tenants.note:
                print(tenants.note)
            return add_local_user(args, state_dir, tenants.path)
        mirror = TenantsMirror(tenants.path, state_dir / TENANTS_IN_USE)
        mirror.sync()
        message = ensure_first_user(state_dir, tenants.path)
        load_users(state_dir / "users.yaml")
    except (TenantsFileError, ValueError) as err:
        raise CommandError(str(err)) from None
    granted = prepare_accounts(homes_dir) if os.geteuid() == 0 else []
    for line in [tenants.note, message, *granted, serving_message(homes_dir)]:
        if line:
            print(line)
    env = hub_environment(state_dir, mirror.copy, args.port, homes_dir)
    return serve(env, state_dir, mirror, args.port)


def serve(env: dict[str, str], state_dir: Path, mirror: TenantsMirror, port: int) -> int:
    """Run the hub until it exits or Ctrl-C; meanwhile keep its tenants file the last valid one."""
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)]
    log = state_dir / "jupyterhub.log"
    print(f"Starting the workbench on http://127.0.0.1:{port} (state in {state_dir}, "
          f"tenants from {mirror.source}, hub log in {log}). Ctrl-C stops it.", flush=True)
    # Started from a script or with `&`, SIGINT may arrive ignored, and the hub would inherit
    # that: take Ctrl-C (and let the hub take our SIGINT) whatever our parent did.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(log, "ab") as log_file:
        # Its own session: Ctrl-C reaches us only, and we stop the hub in order.
        process = subprocess.Popen(argv, cwd=state_dir, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            code = wait_watching(process, mirror, log_file)
            if code:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print("\n".join(tail), file=sys.stderr)
                print(f"The hub exited with status {code}; see {log}", file=sys.stderr)
            return code
        except KeyboardInterrupt:
            print("Stopping the workbench...", flush=True)
            stop(process)
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            if process.poll() is None:
                stop(process)


def wait_watching(process: subprocess.Popen, mirror: TenantsMirror, log_file) -> int:
    """Wait for the hub to exit; every few seconds, pass a valid edit of the tenants file on to
    it, or report a broken one here and in the hub log (the hub keeps the last valid one)."""
    while True:
        try:
            return process.wait(TENANTS_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        problem = mirror.sync()
        if problem:
            line = f"[W {time.strftime('%Y-%m-%d %H:%M:%S')} workbench up] {problem}"
            print(line, file=sys.stderr, flush=True)
            log_file.write(line.encode() + b"\n")
            log_file.flush()
