"""The magics: `%%paddle_launch`, `%paddle_jobs`, `%paddle_logs`, `%paddle_stop`, `%visualdl`.

The magics are thin: they parse options, turn mistakes into a `UsageError` that says what to fix,
and hand the work to the spec builder, the job directory, an engine and the panel.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from launcher_magic.core.jobdir import JobDir, JobNotFound, jobs_root, list_jobs, resolve
from launcher_magic.core.spec import LaunchOptions, SpecError, build_spec
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines import Engine, EngineUnavailable, load_engine
from launcher_magic.kernel.panel import JobPanel, format_elapsed

# Jobs this kernel started: they end with the kernel (see stop_session_jobs).
_SESSION_JOBS: dict[str, tuple[Engine, JobDir]] = {}
_ENGINES: dict[str, Engine] = {}


def _engine(name: str, parent=None) -> Engine:
    if name not in _ENGINES:
        _ENGINES[name] = load_engine(name, parent=parent)
    return _ENGINES[name]


def stop_session_jobs(wait: bool = False) -> None:
    """Stop every job this kernel started that is still running.

    At interpreter exit this only signals the local supervisors (they stop their nodes
    themselves), so a kernel shutdown is not held up by the escalation timeouts.
    """
    for engine, job in list(_SESSION_JOBS.values()):
        try:
            status = job.read_status()
            if status is None or status.state.is_terminal():
                continue
            if wait:
                engine.stop(job)
            elif status.supervisor_pid:
                os.kill(status.supervisor_pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue


atexit.register(stop_session_jobs)


def _files(paths: list[str]) -> list[Path]:
    found = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UsageError(
                f"--files {raw}: no such file or folder (relative paths start at {Path.cwd()})"
            )
        if path.name in ("cell.py", "main.py", "spec.json", "status.json"):
            raise UsageError(f"--files {raw}: the job directory has its own {path.name}; rename it")
        found.append(path)
    return found


@magics_class
class PaddleMagics(Magics):
    """Registered by `%load_ext launcher_magic`."""

    @magic_arguments()
    @argument("--nodes", type=int, default=1, help="number of nodes (process groups or pods)")
    @argument("--nproc-per-node", type=int, default=None,
              help="training processes per node on CPU (default 1)")
    @argument("--gpus", type=int, default=0, help="GPUs per node (one process each)")
    @argument("--name", default=None, help="job name (a DNS-1123 label once normalised)")
    @argument("--engine", choices=["local", "kubernetes"], default=None,
              help="where to run (default: the hub's setting, else local)")
    @argument("--image", default=None, help="container image (kubernetes engine)")
    @argument("--cpu", default=None, help="CPU per node, e.g. 4 or 500m (kubernetes engine)")
    @argument("--memory", default=None, help="memory per node, e.g. 16Gi (kubernetes engine)")
    @argument("--max-restarts", type=int, default=0, help="relaunch a failed job up to R times")
    @argument("--timeout", default=None, help="maximum runtime: 600, 90s, 15m, 2h, 1d")
    @argument("--env", action="append", default=[], metavar="K=V",
              help="environment variable for every rank (repeatable)")
    @argument("--files", nargs="+", default=[], metavar="PATH",
              help="files or folders copied beside the cell into the job directory")
    @argument("--detach", action="store_true", help="return at once; the panel keeps updating")
    @argument("--visualdl", action="store_true", help="log scalars for VisualDL")
    @cell_magic
    def paddle_launch(self, line: str, cell: str):
        """Run this cell as a distributed PaddlePaddle job and show it live."""
        args = parse_argstring(self.paddle_launch, line)
        options = LaunchOptions(
            nodes=args.nodes, nproc_per_node=args.nproc_per_node, gpus=args.gpus,
            name=args.name, engine=args.engine, image=args.image, cpu=args.cpu,
            memory=args.memory, max_restarts=args.max_restarts, timeout=args.timeout,
            env=tuple(args.env), files=tuple(args.files), visualdl=args.visualdl,
        )
        try:
            spec = build_spec(options, cell, os.environ)
            files = _files(args.files)
            engine = _engine(spec.engine, parent=self.shell)
            engine.preflight(spec)
        except (SpecError, EngineUnavailable) as err:
            raise UsageError(str(err)) from None

        job = JobDir.create(jobs_root(), spec, cell, files)
        try:
            engine.submit(spec, job)
        except SpecError as err:
            import shutil

            shutil.rmtree(job.path, ignore_errors=True)
            raise UsageError(str(err)) from None
        _SESSION_JOBS[spec.job_id] = (engine, job)

        panel = JobPanel(spec, job, lambda: engine.status(job),
                         tail=lambda rank, lines, status: engine.log_lines(job, rank, lines, status),
                         on_stop=lambda: engine.stop(job))
        panel.show()
        if args.detach:
            threading.Thread(target=_follow, args=(panel, engine.poll_interval), daemon=True,
                             name=f"panel-{spec.job_id}").start()
            return None
        try:
            _wait(panel, engine.poll_interval)
        except KeyboardInterrupt:
            engine.stop(job)
            panel.refresh(force=True)
            print(f"Interrupted: job {spec.job_id} was stopped.")
        return None

    @line_magic
    def paddle_jobs(self, line: str = ""):
        """List your jobs: name, engine, state, nodes, age."""
        if line.strip():
            raise UsageError("%paddle_jobs takes no arguments")
        rows = []
        now = time.time()
        for job in list_jobs(jobs_root()):
            try:
                spec = job.read_spec()
                status = self._status(spec.engine, job)
            except (OSError, ValueError, EngineUnavailable):
                continue
            rows.append((job.job_id, spec.engine, status.state.value, str(spec.nodes),
                         format_elapsed(now - spec.created_at) + " ago"))
        if not rows:
            print(f"No jobs yet in {jobs_root()}.")
            return None
        _print_table(("job", "engine", "state", "nodes", "age"), rows)
        return None

    @magic_arguments()
    @argument("job", help="job id, or a job name (its newest job)")
    @argument("--rank", type=int, default=None, help="which rank (default: the failed one, or 0)")
    @argument("--tail", type=int, default=50, help="how many lines")
    @argument("--follow", action="store_true", help="keep printing until the job ends")
    @line_magic
    def paddle_logs(self, line: str = ""):
        """Show a rank's log: `%paddle_logs JOB [--rank N] [--tail K] [--follow]`."""
        args = parse_argstring(self.paddle_logs, line)
        job, spec, status = self._lookup(args.job)
        rank = args.rank if args.rank is not None else (status.failed_rank or 0)
        if not 0 <= rank < spec.world_size:
            raise UsageError(
                f"--rank {rank}: job {job.job_id} has ranks 0 to {spec.world_size - 1}"
            )
        if args.tail < 1:
            raise UsageError(f"--tail {args.tail} must be at least 1")
        engine = _engine(spec.engine, parent=self.shell)
        lines = engine.log_lines(job, rank, args.tail, status)
        print(f"== {job.job_id} rank {rank} ({status.state.value}) ==")
        print("\n".join(lines) if lines else "(no output yet)")
        if args.follow:
            try:
                for chunk in engine.follow_log(job, rank):
                    print(chunk, end="", flush=True)
            except KeyboardInterrupt:
                return None
            print(f"== job ended: {engine.status(job).state.value} ==")
        return None

    @line_magic
    def paddle_stop(self, line: str = ""):
        """Stop a job: `%paddle_stop JOB`."""
        if not line.strip():
            raise UsageError("%paddle_stop needs a job id or name (see %paddle_jobs)")
        job, spec, status = self._lookup(line.strip())
        if status.state.is_terminal():
            print(f"Job {job.job_id} has already ended: {status.state.value}.")
            return None
        status = _engine(spec.engine, parent=self.shell).stop(job)
        print(f"Job {job.job_id}: {status.state.value}.")
        return None

    @magic_arguments()
    @argument("job", nargs="?", default=None,
              help="job id or name (its newest job); default: all your jobs")
    @argument("--logdir", default=None, help="a VisualDL log folder instead of a job's")
    @argument("--height", type=int, default=600, help="height of the board in pixels")
    @line_magic
    def visualdl(self, line: str = ""):
        """Show a VisualDL board in the output: `%visualdl [JOB | --logdir DIR] [--height H]`."""
        from IPython.display import display

        from launcher_magic.kernel import visualdl as boards
        args = parse_argstring(self.visualdl, line)
        if args.job and args.logdir:
            raise UsageError("%visualdl takes a JOB or --logdir DIR, not both")
        if not 100 <= args.height <= 4000:
            raise UsageError(f"--height {args.height}: give a height between 100 and 4000 pixels")
        if args.logdir:
            logdir = Path(args.logdir).expanduser()
            if not logdir.is_dir():
                raise UsageError(f"--logdir {args.logdir}: no such folder "
                                 f"(relative paths start at {Path.cwd()})")
            title = f"VisualDL: {logdir}"
        elif args.job:
            try:
                job = resolve(jobs_root(), args.job)
            except JobNotFound as err:
                raise UsageError(str(err)) from None
            logdir, title = job.visualdl_dir, f"VisualDL: {job.job_id}"
        else:
            logdir, title = jobs_root(), "VisualDL: all jobs"
            logdir.mkdir(parents=True, exist_ok=True)
        try:
            result = boards.start(logdir)
        except boards.VisualDLError as err:
            raise UsageError(str(err)) from None
        board = result.instance
        verb = "Reusing" if result.reused else "Started"
        display({"text/html": boards.embed_html(board.page_url(), args.height, title),
                 "text/plain": f"{verb} VisualDL for {board.logdir}: {board.url}"}, raw=True)
        return None

    def _status(self, engine_name: str, job: JobDir) -> JobStatus:
        return _engine(engine_name, parent=self.shell).status(job)

    def _lookup(self, ref: str):
        try:
            job = resolve(jobs_root(), ref)
            spec = job.read_spec()
            return job, spec, self._status(spec.engine, job)
        except (JobNotFound, EngineUnavailable) as err:
            raise UsageError(str(err)) from None


def _wait(panel: JobPanel, interval: float) -> JobStatus:
    """Refresh the panel until the job ends, letting widget events (the Stop button) through."""
    poll = _ui_poller()
    while True:
        status = panel.refresh()
        if status.state.is_terminal():
            return status
        poll(interval)


def _follow(panel: JobPanel, interval: float) -> None:
    while not panel.refresh().state.is_terminal():
        time.sleep(interval)


def _ui_poller():
    """A `wait(seconds)` that processes widget messages meanwhile, where a kernel allows it."""
    try:
        from IPython import get_ipython
        from jupyter_ui_poll import ui_events

        if getattr(get_ipython(), "kernel", None) is None:
            raise ImportError
    except ImportError:
        return time.sleep

    def wait(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with ui_events() as process:
            while time.monotonic() < deadline:
                process(20)
                time.sleep(0.05)

    return wait


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


__all__ = ["PaddleMagics", "stop_session_jobs", "JobState"]
