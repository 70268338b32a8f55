"""`workbench up`: the whole workbench on this machine (the embedded default).

Starts JupyterHub (which starts configurable-http-proxy) on 127.0.0.1 with the local login
(a users file, no identity provider), the local process spawner applying the tenants' rules, the
idle cullers, and the local engine as every server's default. All state lives under one directory
(`--state-dir`): database, cookie secret, users file, homes with the sample notebook, jobs.
Ctrl-C (or SIGTERM) stops the hub, which stops the proxy, the culler services and every server.

On the first start the users file gets one user, the operating-system user, in the first group of
the first tenant, with a generated password that is printed and kept in `<state>/login.txt`
(mode 0600). `--add-user NAME --groups a,b` adds more users.
"""

from __future__ import annotations

import getpass
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from hub_config import jupyterhub_config
from hub_config.cli import CommandError, require_extra
from hub_config.tenants import TenantsFileError, load_tenants
from hub_config.users import add_user, load_users

CONFIG_FILE = Path(jupyterhub_config.__file__).resolve()
# How long each stop signal gets before the next, harder one (the hub stops servers first).
STOP_TIMEOUTS = ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5))


def register(subparsers) -> None:
    parser = subparsers.add_parser("up", help="start the workbench on this machine")
    parser.add_argument("--state-dir", default=".workbench", help="where all state lives")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--tenants", help="tenants file (default: <state>/tenants.yaml or the "
                        "example shipped with the workbench)")
    parser.add_argument("--add-user", metavar="NAME", help="add (or reset) a local user, print "
                        "their password and exit")
    parser.add_argument("--groups", default="", help="with --add-user: comma-separated groups")
    parser.add_argument("--password", help="with --add-user: the password (default: generated)")
    parser.set_defaults(func=run)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tenants_path(state_dir: Path, given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    own = state_dir / "tenants.yaml"
    return own if own.exists() else jupyterhub_config.EXAMPLE_TENANTS


def ensure_first_user(state_dir: Path, tenants_file: Path) -> str | None:
    """Create the users file with the OS user on first start; return the message to print."""
    users_file = state_dir / "users.yaml"
    if users_file.exists():
        return None
    tenants = load_tenants(tenants_file)
    name = getpass.getuser().lower()
    group = tenants.tenants[0].groups[0]
    password = secrets.token_urlsafe(12)
    add_user(users_file, name, [group], password)
    login = state_dir / "login.txt"
    fd = os.open(login, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"user: {name}\npassword: {password}\n")
    return (f"Created {users_file} with user {name!r} (group {group!r}); "
            f"password: {password} (also in {login})")


def hub_environment(state_dir: Path, tenants_file: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "WORKBENCH_STATE_DIR": str(state_dir),
        "WORKBENCH_TENANTS_FILE": str(tenants_file),
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


def run(args) -> int:
    if not args.add_user:
        # Before any state is written: without JupyterHub there is nothing to start.
        require_extra("hub", "jupyterhub")
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    tenants_file = tenants_path(state_dir, args.tenants)
    try:
        tenants = load_tenants(tenants_file)
        if args.add_user:
            password = args.password or secrets.token_urlsafe(12)
            groups = [g.strip() for g in args.groups.split(",") if g.strip()]
            known = {g for t in tenants.tenants for g in (*t.groups, *t.admin_groups)}
            if not set(groups) & known:
                raise CommandError(
                    f"--groups {args.groups!r} puts {args.add_user} in no tenant; use one of: "
                    f"{', '.join(sorted(known))}"
                )
            add_user(state_dir / "users.yaml", args.add_user.lower(), groups, password)
            print(f"Added {args.add_user.lower()} (groups {', '.join(groups)}); password: {password}")
            return 0
        message = ensure_first_user(state_dir, tenants_file)
        load_users(state_dir / "users.yaml")
    except TenantsFileError as err:
        raise CommandError(str(err)) from None
    except ValueError as err:
        raise CommandError(str(err)) from None
    if message:
        print(message)

    env = hub_environment(state_dir, tenants_file, args.port)
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)]
    log = state_dir / "jupyterhub.log"
    print(f"Starting the workbench on http://127.0.0.1:{args.port} (state in {state_dir}, "
          f"tenants from {tenants_file}, hub log in {log}). Ctrl-C stops it.", flush=True)
    # Started from a script or with `&`, SIGINT may arrive ignored, and the hub would inherit
    # that: take Ctrl-C (and let the hub take our SIGINT) whatever our parent did.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(log, "ab") as log_file:
        # Its own session: Ctrl-C reaches us only, and we stop the hub in order.
        process = subprocess.Popen(argv, cwd=state_dir, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            code = process.wait()
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
