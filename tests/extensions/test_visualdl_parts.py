"""VisualDL without a hub: the builders as data, then real boards started, reused and stopped,
the scalar helper's records read back through VisualDL's own API, and `%visualdl`'s bad input."""

from __future__ import annotations

import ast
import json
import os
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from extensions import visualdl_proxy, visualdl_server
from launcher_magic.core.processes import pid_alive
from launcher_magic.kernel import visualdl as boards
from launcher_magic.training.metrics import ScalarLogger
from tests.launcher_magic.support import wait_until
from workbench_contract import visualdl as contract

from .conftest import requires_visualdl, write_scalars

# ---- builders ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "base", "expected"),
    [
        ({boards.PROXY_URL: "/lab-proxy/%PORT%/"}, None, "/lab-proxy/8123/"),
        ({boards.PROXY_URL: "https://nb.example.com/x/%PORT%",
          "JUPYTERHUB_SERVICE_PREFIX": "/user/a/"}, None, "https://nb.example.com/x/8123/"),
        ({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}, "/ignored/",
         "/user/alice/proxy/absolute/8123/"),
        ({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/named"}, None,
         "/user/alice/named/proxy/absolute/8123/"),
        ({}, "/", "/proxy/absolute/8123/"),
        ({}, "/base", "/base/proxy/absolute/8123/"),
        ({}, None, "http://127.0.0.1:8123/visualdl/"),
    ],
    ids=["template", "template-wins-over-hub", "hub", "hub-named-server", "plain-jupyter",
         "plain-jupyter-base-url", "no-server"],
)
def test_board_url_follows_where_the_kernel_runs(env, base, expected):
    assert boards.board_url(8123, env, base) == expected


def test_board_url_template_without_port_says_what_to_set():
    with pytest.raises(boards.VisualDLError, match="has no %PORT%.*/proxy/absolute/%PORT%/"):
        boards.board_url(1, {boards.PROXY_URL: "/fixed/"})


@pytest.mark.parametrize(("url", "path"), [
    ("/user/alice/proxy/absolute/9/", "/user/alice/proxy/absolute/9"),
    ("http://127.0.0.1:9/visualdl/", "/visualdl"),
], ids=["proxied", "direct"])
def test_public_path_is_the_urls_path(url, path):
    assert boards.public_path_of(url) == path


def test_public_path_cannot_be_the_root():
    with pytest.raises(boards.VisualDLError, match="below the root"):
        boards.public_path_of("http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="e.g. /user/alice/visualdl"):
        visualdl_server.check_public_path("/")
    with pytest.raises(ValueError, match="absolute URL path"):
        visualdl_server.check_public_path("user/alice")


def test_server_command_runs_the_workbench_board():
    argv = boards.server_command("/py", "/data/logs", 8123, "/user/a/proxy/absolute/8123")
    assert argv == ["/py", "-m", "extensions.visualdl_server", "--logdir", "/data/logs",
                    "--port", "8123", "--public-path", "/user/a/proxy/absolute/8123"]
    owned = boards.server_command("/py", "/data/logs", 8123, "/p", lifeline=7)
    assert owned == argv[:-1] + ["/p", "--lifeline", "7"]


def test_proxy_entry_serves_the_jobs_root_under_its_own_prefix():
    config = visualdl_proxy.server_process_config("/home/alice/jobs", "/py", "k3y")
    command = config["command"]
    assert command[:3] == ["/py", "-m", "extensions.visualdl_server"]
    assert command[command.index("--logdir") + 1] == "/home/alice/jobs"
    assert command[command.index("--port") + 1] == "{port}"
    # VisualDL must serve under exactly the path the proxy forwards whole (absolute_url).
    assert command[command.index("--public-path") + 1] == "{base_url}visualdl"
    # jupyter-server-proxy owns this board's lifetime: it watches no other process
    assert "--lifeline" not in command
    assert config["absolute_url"] is True
    # the board's key reaches the board and every request this route forwards, nothing else
    assert config["environment"] == {visualdl_server.TOKEN_ENV: "k3y"}
    assert config["request_headers_override"] == {visualdl_server.TOKEN_HEADER: "k3y"}
    icon = Path(config["launcher_entry"]["icon_path"])
    assert ET.parse(icon).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert config["launcher_entry"]["title"] == "VisualDL"


def test_proxy_entry_point_is_accepted_by_jupyter_server_proxy(monkeypatch, tmp_path):
    config = pytest.importorskip("jupyter_server_proxy.config",
                                 reason="jupyter-server-proxy is not installed (notebook extra)")
    monkeypatch.setenv("PADDLE_WORKBENCH_JOBS_DIR", str(tmp_path / "jobs"))
    processes = {p.name: p for p in config.get_entrypoint_server_processes()}
    assert "visualdl" in processes, "the jupyter_serverproxy_servers entry point is not installed"
    process = processes["visualdl"]
    assert str(tmp_path / "jobs") in process.command
    assert process.launcher_entry.icon_path.endswith("visualdl.svg")


def test_security_headers_allow_framing_only_from_the_users_own_origin():
    headers = visualdl_server.security_headers()
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in csp and "*" not in csp
    assert headers["X-Frame-Options"] == "SAMEORIGIN"


def test_instance_record_round_trips_and_tolerates_unknown_keys():
    instance = boards.BoardInstance(logdir="/l", port=1, pid=2, url="/u/", public_path="/u",
                                    owner_pid=3, started_at=4.0)
    data = instance.to_dict() | {"added_later": True}
    assert boards.BoardInstance.from_dict(json.loads(json.dumps(data))) == instance


def test_embed_html_escapes_the_url():
    page = boards.embed_html('/x/"><script>', 300, "VisualDL <run>")
    assert "<script>" not in page and "&lt;run&gt;" in page and 'height="300"' in page


# ---- the scalar helper -------------------------------------------------------------------------


def test_scalar_logger_needs_a_folder(monkeypatch):
    monkeypatch.delenv("PADDLE_WORKBENCH_VISUALDL_DIR", raising=False)
    with pytest.raises(ValueError, match="run inside %%paddle_launch"):
        ScalarLogger(env={})


def test_scalar_logger_writes_only_on_rank_zero(tmp_path):
    other = ScalarLogger(tmp_path / "r1", rank=1, world_size=2, env={})
    assert not other.active and other.log(0, loss=1.0) == {}
    assert not (tmp_path / "r1").exists()


@requires_visualdl
def test_scalar_logger_rejects_what_is_not_a_number(tmp_path):
    with ScalarLogger(tmp_path, rank=0, env={}) as scalars, pytest.raises(TypeError, match="float"):
        scalars.log(0, loss="0.5")


# ---- real boards -------------------------------------------------------------------------------


def _get(url: str, token: str | None = None):
    headers = {visualdl_server.TOKEN_HEADER: token} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


@requires_visualdl
def test_board_serves_the_scalars_and_is_reused_then_stopped(tmp_path, runtime_dir):
    logdir = tmp_path / "jobs" / "demo-1a2b" / "visualdl"
    losses = write_scalars(logdir, "demo-1a2b")
    first = boards.start(logdir, env={})
    board = first.instance
    assert not first.reused and board.url == f"http://127.0.0.1:{board.port}/visualdl/"
    api = f"http://127.0.0.1:{board.port}{board.public_path}/api"

    status, headers, body = _get(f"{api}/scalar/list?run=demo-1a2b&tag=train/loss", board.token)
    points = {step: value for _, step, value in json.loads(body)["data"]}
    assert status == 200 and points == pytest.approx(losses)
    _, _, body = _get(f"{api}/scalar/list?run=demo-1a2b&tag=train/throughput", board.token)
    assert len(json.loads(body)["data"]) == len(losses) - 1  # the first step has no step time
    for path in ("/", "/api/runs"):  # the page and the API both forbid foreign framing
        _, headers, _ = _get(f"http://127.0.0.1:{board.port}{board.public_path}{path}",
                             board.token)
        assert headers["Content-Security-Policy"] == "frame-ancestors 'self'"

    again = boards.start(logdir, env={})
    assert again.reused and again.instance == board
    record = runtime_dir / boards.RECORDS_FOLDER / f"{boards.record_key(logdir, board.url)}.json"
    assert json.loads(record.read_text())["pid"] == board.pid

    process = boards._OWNED[board.pid]
    boards.stop(board)
    assert not pid_alive(board.pid) and not record.exists()
    # closing its lifeline ended it cleanly, before any signal: the escalation is for a board
    # that hangs
    assert process.returncode == 0


@requires_visualdl
def test_a_dead_boards_record_is_not_reused(tmp_path, runtime_dir):
    logdir = tmp_path / "logs"
    write_scalars(logdir, "run")
    board = boards.start(logdir, env={}).instance
    os.kill(board.pid, 9)
    boards._OWNED[board.pid].wait(10)
    fresh = boards.start(logdir, env={})
    assert not fresh.reused and fresh.instance.pid != board.pid


@requires_visualdl
def test_a_board_for_another_prefix_is_not_reused(tmp_path, runtime_dir):
    logdir = tmp_path / "logs"
    write_scalars(logdir, "run")
    plain = boards.start(logdir, env={}).instance
    hub = boards.start(logdir, env={"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}).instance
    assert hub.pid != plain.pid and hub.public_path.startswith("/user/alice/proxy/absolute/")
    assert sorted(b.pid for b in boards.read_records()) == sorted([plain.pid, hub.pid])


# A board that answers at once but lists its runs only from its fourth answer on, as VisualDL
# does while its reader is still loading the logs; it says how often it was asked.
_SLOW_READER = """#!{python}
import http.server, json, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
asked = []

class Board(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        asked.append(self.path)
        runs = ["run"] if len(asked) > 3 else []
        body = json.dumps({{"status": 0, "msg": "", "data": runs}}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
        with open({count!r}, "w") as out:
            out.write(str(len(asked)))

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Board).serve_forever()
"""


def test_a_new_board_is_handed_out_once_it_has_read_the_logs(tmp_path, runtime_dir):
    """A page opened before VisualDL has read the logs stays empty: start() waits for a run."""
    import sys

    logdir = tmp_path / "logs"
    write_scalars(logdir, "run")
    count = tmp_path / "asked"
    fake = tmp_path / "fake-python"
    fake.write_text(_SLOW_READER.format(python=sys.executable, count=str(count)))
    fake.chmod(0o755)
    board = boards.start(logdir, env={}, python=str(fake)).instance
    try:
        assert int(count.read_text()) >= 4  # answered empty three times, then listed the run
        assert boards._runs(board) == ["run"]
    finally:
        boards.stop(board)


def test_a_board_that_cannot_start_says_why(tmp_path, runtime_dir):
    with pytest.raises(boards.VisualDLError, match="exited with status"):
        boards.start(tmp_path, env={}, python="/bin/false")


# ---- %visualdl ---------------------------------------------------------------------------------


@pytest.fixture
def magics(tmp_path, monkeypatch, runtime_dir):
    from IPython.core.interactiveshell import InteractiveShell

    from launcher_magic.kernel.magics import PaddleMagics

    monkeypatch.setenv("PADDLE_WORKBENCH_JOBS_DIR", str(tmp_path / "jobs"))
    return PaddleMagics(InteractiveShell.instance())


@pytest.mark.parametrize(("line", "message"), [
    ("somejob --logdir /tmp", "not both"),
    ("--logdir /no/such/folder", "no such folder"),
    ("nosuchjob", "no job 'nosuchjob'"),
    ("--height 5", "between 100 and 4000"),
], ids=["job-and-logdir", "missing-logdir", "unknown-job", "height"])
def test_visualdl_magic_bad_input_says_what_to_fix(magics, line, message):
    with pytest.raises(UsageError, match=message):
        magics.visualdl(line)


@requires_visualdl
def test_visualdl_magic_embeds_the_board(magics, tmp_path):
    from IPython.utils.capture import capture_output

    logdir = tmp_path / "logs"
    write_scalars(logdir, "run")
    with capture_output() as first:
        magics.visualdl(f"--logdir {logdir} --height 400")
    with capture_output() as second:
        magics.visualdl(f"--logdir {logdir}")
    html = first.outputs[0].data["text/html"]
    (board,) = boards.read_records()
    assert board.token and f'<iframe src="{escape(board.page_url())}"' in html
    assert 'height="400"' in html
    assert first.outputs[0].data["text/plain"].startswith("Started VisualDL")
    assert second.outputs[0].data["text/plain"].startswith("Reusing VisualDL")


# ---- the job panel -----------------------------------------------------------------------------


def _panel(tmp_path, visualdl: bool):
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.core.status import JobState, JobStatus
    from launcher_magic.kernel.panel import JobPanel
    from workbench_contract.environment import NotebookContext

    spec = build_spec(LaunchOptions(nodes=1, visualdl=visualdl), "x = 1", NotebookContext())
    job = JobDir.create(tmp_path / "jobs", spec, "x = 1")
    state = {"now": JobStatus(job_id=spec.job_id)}
    panel = JobPanel(spec, job, lambda: state["now"], lambda rank, lines, status: [],
                     widgets=True)
    return panel, job, state, JobState


@requires_visualdl
def test_panel_embeds_the_jobs_board_and_reloads_it_when_data_arrives(tmp_path, runtime_dir,
                                                                       monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    panel, job, state, JobState = _panel(tmp_path, visualdl=True)
    panel.show()
    (board,) = boards.read_records()
    assert Path(board.logdir) == job.visualdl_dir.resolve()
    assert panel.board_url == board.url == f"/user/alice/proxy/absolute/{board.port}/"
    assert panel._board_box.selected_index == 0  # open, and collapsible
    assert f'<iframe src="{escape(board.page_url())}"' in panel._board.value

    write_scalars(job.visualdl_dir, job.job_id, steps=3)
    reloaded = f'src="{escape(board.page_url(loaded="data"))}"'
    # Reloaded once the board has read the records (a refresh before that leaves the page).
    assert wait_until(lambda: panel.refresh() and reloaded in panel._board.value, timeout=30)
    assert boards._runs(board)
    state["now"] = state["now"].moved_to(JobState.RUNNING).moved_to(JobState.SUCCEEDED)
    panel.refresh()
    assert f'src="{escape(board.page_url(loaded="final"))}"' in panel._board.value
    assert boards.read_records() == [board]  # the same board all along


def test_panel_without_visualdl_has_no_board(tmp_path, runtime_dir):
    panel, *_ = _panel(tmp_path, visualdl=False)
    panel.show()
    assert panel.board_url is None and not hasattr(panel, "_board_box")
    assert boards.read_records() == []


def test_panel_shows_why_a_board_cannot_start(tmp_path, runtime_dir, monkeypatch):
    monkeypatch.setenv(boards.PROXY_URL, "/no-port-here/")
    panel, *_ = _panel(tmp_path, visualdl=True)
    panel.show()
    assert panel.board_url is None
    assert "VisualDL is not available" in panel._board.value and "%PORT%" in panel._board.value


def test_the_magic_and_the_board_take_the_key_names_from_the_contract():
    names = ("SERVER_MODULE", "TOKEN_ENV", "TOKEN_HEADER", "TOKEN_QUERY")
    for side in (boards, visualdl_server, visualdl_proxy):
        for name in names:
            if hasattr(side, name):
                assert getattr(side, name) is getattr(contract, name), (side.__name__, name)
    # the module the contract names is the one that serves boards
    assert contract.SERVER_MODULE == visualdl_server.__name__


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(("module", "forbidden"), [
    (visualdl_server, ("launcher_magic", "hub_config")),
    (visualdl_proxy, ("launcher_magic", "hub_config")),
    (boards, ("extensions",)),
], ids=["server", "proxy", "kernel-boards"])
def test_the_jupyter_server_and_the_kernel_side_meet_only_in_the_contract(module, forbidden):
    bad = {name for name in _imports(module)
           if any(name == f or name.startswith(f + ".") for f in forbidden)}
    assert not bad, f"{module.__name__} imports {sorted(bad)}; use workbench_contract"


@requires_visualdl
def test_board_answers_only_requests_that_carry_its_key(tmp_path, runtime_dir):
    """A real board process: the header, the one-time link, then the cookie; else 403."""
    write_scalars(tmp_path, "run")
    board = boards.start(tmp_path, env={}).instance
    requests = pytest.importorskip("requests")
    base = f"http://127.0.0.1:{board.port}{board.public_path}"
    refused = requests.get(f"{base}/api/runs", timeout=30)
    assert refused.status_code == 403 and "answers only its owner" in refused.text
    assert refused.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    wrong = {visualdl_server.TOKEN_HEADER: "wrong"}
    assert requests.get(f"{base}/api/runs", headers=wrong, timeout=30).status_code == 403
    right = {visualdl_server.TOKEN_HEADER: board.token}
    assert requests.get(f"{base}/api/runs", headers=right, timeout=30).status_code == 200

    browser = requests.Session()
    link = browser.get(board.page_url(loaded="final"), allow_redirects=False, timeout=30)
    assert link.status_code == 302
    assert link.headers["Location"] == f"{board.public_path}/scalar?loaded=final"
    cookie = link.headers["Set-Cookie"]
    assert f"{visualdl_server.token_cookie(board.port)}={board.token}" in cookie
    assert f"Path={board.public_path}/" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get(f"{base}/api/runs", timeout=30).status_code == 200
    stranger = requests.Session()
    stranger.cookies.set(visualdl_server.token_cookie(board.port), "guess")
    assert stranger.get(f"{base}/api/runs", timeout=30).status_code == 403


@requires_visualdl
def test_board_records_and_links_carry_a_private_key(tmp_path, runtime_dir):
    write_scalars(tmp_path, "run")
    board = boards.start(tmp_path, env={}).instance
    record = runtime_dir / boards.RECORDS_FOLDER / f"{boards.record_key(tmp_path, board.url)}.json"
    assert len(board.token) >= 32 and record.stat().st_mode & 0o077 == 0
    assert board.page_url() == f"{board.url}scalar?workbench_token={board.token}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(f"http://127.0.0.1:{board.port}{board.public_path}/api/runs")
    assert refused.value.code == 403
