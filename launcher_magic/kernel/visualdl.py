"""VisualDL boards for the notebook: start one per log folder, record it on disk, reuse it.

Modelled on TensorBoard's notebook manager. A board is `python -m <SERVER_MODULE>` (see
`workbench_contract.visualdl`) on a free loopback port, seen by the browser through the Jupyter
server's proxy (jupyter-server-proxy's `proxy/absolute/<port>/` route, which keeps the path whole,
so VisualDL's `--public-path` is that path). Each board is recorded as
`<runtime dir>/workbench-visualdl/<key>.json`; a later `%visualdl` or job panel for the same folder
reuses it while its process lives and its prefix still fits this server.

Where the board is reached (`board_url`), first match wins:
1. `PADDLE_WORKBENCH_VISUALDL_PROXY_URL`, a template with `%PORT%` (like TensorBoard's
   `TENSORBOARD_PROXY_URL`), for servers behind some other proxy;
2. under JupyterHub, `$JUPYTERHUB_SERVICE_PREFIX` + `proxy/absolute/<port>/`;
3. under a plain Jupyter server, that server's base URL + `proxy/absolute/<port>/` (the kernel finds
   its server by `JPY_PARENT_PID`);
4. no server (terminal IPython): `http://127.0.0.1:<port>/visualdl/`.

Lifetime: a board belongs to the kernel that started it and stops when that kernel exits, however
it dies (SIGKILL too), so nothing outlives the notebook that asked for it: the kernel stops its
boards when it exits, and each board gets the read end of a pipe whose write end only the kernel
holds (`--lifeline`); when the kernel is gone the pipe closes and the board exits at once. Nothing
runs in the child between fork and exec, which is unsafe in a kernel with threads.
"""

from __future__ import annotations

import atexit
import hashlib
import html
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlencode

from launcher_magic.core.processes import StopTimeouts, pid_alive, stop_groups
from workbench_contract.visualdl import SERVER_MODULE, TOKEN_ENV, TOKEN_HEADER, TOKEN_QUERY

PROXY_URL = "PADDLE_WORKBENCH_VISUALDL_PROXY_URL"
PORT_PLACEHOLDER = "%PORT%"
RECORDS_FOLDER = "workbench-visualdl"
START_TIMEOUT = 60.0
# How long a new board over recorded logs may take to read them before it is handed out.
DATA_TIMEOUT = 30.0
# A board ends at the first step (SIGINT); the later ones are for a board that hangs.
STOP_TIMEOUTS = StopTimeouts(interrupt=5.0, terminate=5.0, kill=5.0)


class VisualDLError(RuntimeError):
    """A board could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class BoardInstance:
    """One running board, as recorded on disk."""

    logdir: str
    port: int
    pid: int
    url: str  # what the browser loads (through the proxy, or direct)
    public_path: str  # VisualDL's --public-path; the path part of `url`
    owner_pid: int  # the kernel that started it
    started_at: float
    token: str = ""  # the board's key (see extensions.visualdl_server); "" for none

    def page_url(self, page: str = "scalar", **params: str) -> str:
        """The link to `page` of the board, carrying its key.

        The scalar page is asked for by name: VisualDL's start page opens its first tab, which
        is the model-graph upload page whenever that is enabled, not the training charts.
        """
        query = ({TOKEN_QUERY: self.token} if self.token else {}) | params
        return f"{self.url}{page}" + (f"?{urlencode(query)}" if query else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BoardInstance:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class StartResult:
    """What `start` did: started a new board or reused a running one."""

    instance: BoardInstance
    reused: bool


# ---- pure builders -----------------------------------------------------------------------------


def board_url(port: int, env: Mapping[str, str], server_base_url: str | None = None) -> str:
    """The URL (or absolute path) a browser uses for the board on `port`.

    Args:
        env: the kernel's environment.
        server_base_url: the plain Jupyter server's base URL, when one was found.
    """
    template = env.get(PROXY_URL, "").strip()
    if template:
        if PORT_PLACEHOLDER not in template:
            raise VisualDLError(
                f"{PROXY_URL}={template!r} has no {PORT_PLACEHOLDER}; set it to a template such "
                f"as /proxy/absolute/{PORT_PLACEHOLDER}/"
            )
        url = template.replace(PORT_PLACEHOLDER, str(port))
        return url if url.endswith("/") else url + "/"
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or server_base_url
    if prefix:
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        return f"{prefix}proxy/absolute/{port}/"
    return f"http://127.0.0.1:{port}/visualdl/"


def public_path_of(url: str) -> str:
    """VisualDL's `--public-path` for a board served at `url`: its path, no trailing slash."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path.rstrip("/")
    if not path.startswith("/") or not path:
        raise VisualDLError(f"the board URL {url!r} needs a path below the root")
    return path


def server_command(python: str, logdir: Path | str, port: int, public_path: str,
                   lifeline: int | None = None) -> list[str]:
    """argv of a board over `logdir` on 127.0.0.1:`port` under `public_path`.

    With `lifeline` (a pipe's read end, passed to the board), the board exits once the pipe's
    write end closes.
    """
    argv = [python, "-m", SERVER_MODULE, "--logdir", str(logdir),
            "--port", str(port), "--public-path", public_path]
    return argv + (["--lifeline", str(lifeline)] if lifeline is not None else [])


def embed_html(link: str, height: int = 600, title: str = "VisualDL") -> str:
    """An iframe showing the board page at `link` (its CSP lets only this server frame it)."""
    src = html.escape(link, quote=True)
    return (
        f'<div class="paddle-visualdl"><div style="margin:2px 0">{html.escape(title)} &middot; '
        f'<a href="{src}" target="_blank" rel="noopener">open in a new tab</a></div>'
        f'<iframe src="{src}" title="{html.escape(title, quote=True)}" width="100%" '
        f'height="{int(height)}" style="border:1px solid #d1d5db;border-radius:4px" '
        f'loading="eager"></iframe></div>'
    )


def record_key(logdir: Path | str, url: str) -> str:
    """The record's file name: one board per folder and place it is served from."""
    where = f"{Path(logdir).resolve()}\0{url.split('proxy/absolute/')[0]}"
    return hashlib.sha256(where.encode()).hexdigest()[:20]


# ---- I/O ---------------------------------------------------------------------------------------


def records_dir() -> Path:
    """Where boards are recorded: the user's Jupyter runtime folder (per user, per machine)."""
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / RECORDS_FOLDER


def server_base_url(env: Mapping[str, str]) -> str | None:
    """The base URL of the Jupyter server that started this kernel, if it can be found."""
    parent = env.get("JPY_PARENT_PID", "")
    if not parent.isdigit():
        return None
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        if str(info.get("pid")) == parent:
            return info.get("base_url") or "/"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]




def _runs(instance: BoardInstance, timeout: float = 2.0) -> list | None:
    """The runs the board has read so far; None while it does not answer."""
    url = f"http://127.0.0.1:{instance.port}{instance.public_path}/api/runs"
    request = urllib.request.Request(url, headers={TOKEN_HEADER: instance.token})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                return None
            return list(json.loads(response.read()).get("data") or [])
    except (OSError, urllib.error.URLError, ValueError, AttributeError, TypeError):
        return None


def _answers(instance: BoardInstance, timeout: float = 2.0) -> bool:
    return _runs(instance, timeout) is not None


def _has_records(logdir: Path) -> bool:
    return next(logdir.rglob("vdlrecords.*"), None) is not None


def lists_runs(instance: BoardInstance, wait: float = 0.0) -> bool:
    """Whether the board lists a run, asking for at most `wait` seconds. VisualDL answers before
    its reader has loaded the logs, and a page opened then shows an empty board that does not
    fill itself: a page is worth (re)loading once this is true."""
    deadline = time.monotonic() + wait
    while not _runs(instance):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def read_records(folder: Path | None = None) -> list[BoardInstance]:
    """Recorded boards whose process still lives; records of dead ones are removed."""
    folder = folder or records_dir()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            instance = BoardInstance.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if pid_alive(instance.pid):
            found.append(instance)
        else:
            path.unlink(missing_ok=True)
    return found


def _write_record(folder: Path, instance: BoardInstance) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"{record_key(instance.logdir, instance.url)}.json"
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    # The record holds the board's key: readable by this user only.
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(instance.to_dict(), handle, indent=1)
    os.replace(staging, target)


# Boards this process started, by pid, and the write ends of their lifelines.
_OWNED: dict[int, subprocess.Popen] = {}
_LIFELINES: dict[int, int] = {}


def _let_go(pid: int) -> subprocess.Popen | None:
    """Forget a board this process started; closing its lifeline tells it to exit."""
    keep = _LIFELINES.pop(pid, None)
    if keep is not None:
        os.close(keep)
    return _OWNED.pop(pid, None)


def start(logdir: Path | str, *, env: Mapping[str, str] | None = None,
          timeout: float = START_TIMEOUT, folder: Path | None = None,
          python: str | None = None) -> StartResult:
    """Start a board over `logdir`, or reuse the recorded one that still runs and fits.

    Returns once the board answers. Raises:
        VisualDLError: VisualDL is not installed, the board exited, or it did not answer in time.
    """
    env = os.environ if env is None else env
    folder = folder or records_dir()
    logdir = Path(logdir).expanduser().resolve()
    base = server_base_url(env)
    for instance in read_records(folder):
        if Path(instance.logdir) != logdir:
            continue
        expected = board_url(instance.port, env, base)
        if instance.url == expected and _answers(instance):
            return StartResult(instance, reused=True)

    _check_installed()
    port = _free_port()
    url = board_url(port, env, base)
    public_path = public_path_of(url)
    token = secrets.token_hex(24)
    log_path = folder / f"{record_key(logdir, url)}.log"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    process = _spawn(python or sys.executable, logdir, port, public_path,
                     {**os.environ, **dict(env), TOKEN_ENV: token}, log_path)
    owner_pid = os.getpid()
    instance = BoardInstance(
        logdir=str(logdir), port=port, pid=process.pid, url=url, public_path=public_path,
        owner_pid=owner_pid, started_at=time.time(), token=token,
    )
    deadline = time.monotonic() + timeout
    while not _answers(instance):
        if process.poll() is not None:
            _let_go(process.pid)
            tail = log_path.read_text(errors="replace")[-1500:]
            raise VisualDLError(f"VisualDL exited with status {process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            stop(instance)
            raise VisualDLError(f"VisualDL did not answer within {timeout:.0f}s; see {log_path}")
        time.sleep(0.2)
    if _has_records(logdir):  # handed out anyway if it still lists none
        lists_runs(instance, DATA_TIMEOUT)
    _write_record(folder, instance)
    return StartResult(instance, reused=False)


def _spawn(python: str, logdir: Path, port: int, public_path: str, env: Mapping[str, str],
           log_path: Path) -> subprocess.Popen:
    """Start the board's process, with its lifeline: the board holds the pipe's read end, the
    write end stays here and is inherited by nothing (os.pipe makes both ends close-on-exec;
    pass_fds hands over the read end alone)."""
    lifeline, keep = os.pipe()
    argv = server_command(python, logdir, port, public_path, lifeline)
    try:
        with open(log_path, "wb") as log:
            # Its own session: a Ctrl-C in the notebook interrupts the kernel, not the board, and
            # its pid is its process group's, which is how `stop` stops it.
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(lifeline,), env=dict(env),
            )
    except BaseException:
        os.close(keep)
        raise
    finally:
        os.close(lifeline)
    _OWNED[process.pid] = process
    _LIFELINES[process.pid] = keep
    return process


def _check_installed() -> None:
    import importlib.util

    for module in ("visualdl", SERVER_MODULE):
        if importlib.util.find_spec(module) is None:
            raise VisualDLError(
                f"{module} is not importable in this kernel; install the workbench's notebook "
                "extra (pip install 'paddle-workbench[notebook]', which brings visualdl)"
            )


def stop(instance: BoardInstance, folder: Path | None = None) -> None:
    """Stop a board and forget its record, if the record is this board's (not a newer one's).

    The board leads its own process group, so it is stopped like every child of the workbench:
    SIGINT to it, then SIGTERM and SIGKILL to its group (`STOP_TIMEOUTS`). A board this process
    started is also reaped. May be called for a board another kernel started.
    """
    process = _let_go(instance.pid)
    stop_groups([instance.pid], STOP_TIMEOUTS, leaders=[process] if process is not None else [])
    if process is not None:
        try:  # it may have exited before the stop: collect it all the same
            process.wait(1)
        except subprocess.TimeoutExpired:
            pass
    record = (folder or records_dir()) / f"{record_key(instance.logdir, instance.url)}.json"
    try:
        if BoardInstance.from_dict(json.loads(record.read_text())).pid == instance.pid:
            record.unlink(missing_ok=True)
    except (OSError, ValueError, TypeError):
        pass


def stop_owned() -> None:
    """Stop every board this process started (the kernel's exit calls it)."""
    folder = records_dir()
    records = {instance.pid: instance for instance in read_records(folder)}
    for pid in list(_OWNED):
        stop(records.get(pid) or BoardInstance(logdir="", port=0, pid=pid, url="",
                                               public_path="", owner_pid=os.getpid(),
                                               started_at=0.0), folder)


atexit.register(stop_owned)
