"""The magics: `%%paddle_launch`, `%paddle_jobs`, `%paddle_logs`, `%paddle_stop`, `%visualdl`.

The magics are thin: they parse options, turn mistakes into a `UsageError` that says what to fix,
and hand the work to the spec builder, the job directory, an engine and the panel.
"""

from __future__ import annotations

import atexit
import threading
import time
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from launcher_magic.core.jobdir import JobHandle, list_jobs
from launcher_magic.core.spec import LaunchOptions
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines import Engine, available_engines
from launcher_magic.kernel.launch import USER_ERRORS, Job, Launcher
from launcher_magic.kernel.panel import JobPanel, format_elapsed

# The kernel's launcher: the jobs it started end with it (see stop_session_jobs).
_LAUNCHER: Launcher | None = None


def launcher(parent=None) -> Launcher:
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = Launcher(parent=parent)
    return _LAUNCHER


def stop_session_jobs() -> None:
    """End every job this kernel started that is still running, without waiting for them (the
    engines' shutdown hook): a kernel shutdown is not held up by the jobs' stop timeouts."""
    if _LAUNCHER is not None:
        _LAUNCHER.shutdown()


atexit.register(stop_session_jobs)


def make_panel(job: JobHandle, engine: Engine) -> JobPanel:
    """The live panel of `job`, reading it through its engine."""
    return JobPanel(job.spec, job.dir, lambda: engine.status(job),
                    tail=lambda rank, lines, status: engine.log_lines(job, rank, lines, status),
                    on_stop=lambda: engine.stop(job), notes=engine.notes(job.spec))


@magics_class
class PaddleMagics(Magics):
    """Registered by `%load_ext launcher_magic`."""

    @magic_arguments()
    @argument("--nodes", type=int, default=1, help="number of nodes (process groups or pods)")
    @argument("--nproc-per-node", type=int, default=None,
              help="training processes per node on CPU (default 1)")
    @argument("--gpus", type=int, default=0, help="GPUs per node (one process each)")
    @argument("--name", default=None, help="job name (a DNS-1123 label once normalised)")
    @argument("--engine", default=None,
              help=f"where to run: {', '.join(available_engines()) or 'no engine installed'} "
                   "(default: the hub's setting, else local)")
    @argument("--image", default=None, help="container image (cluster engines)")
    @argument("--cpu", default=None, help="CPU per node, e.g. 4 or 500m (cluster engines)")
    @argument("--memory", default=None, help="memory per node, e.g. 16Gi (cluster engines)")
    @argument("--max-restarts", type=int, default=0, help="relaunch a failed job up to R times")
    @argument("--timeout", default=None, help="maximum runtime: 600, 90s, 15m, 2h, 1d")
    @argument("--env", action="append", default=[], metavar="K=V",
              help="environment variable for every rank (repeatable)")
    @argument("--files", nargs="+", default=[], metavar="PATH",
              help="files or folders copied beside the cell into the job directory")
    @argument("--detach", action="store_true",
              help="return a handle to the job at once; the panel keeps updating")
    @argument("--visualdl", action="store_true", help="log scalars for VisualDL")
    @cell_magic
    def paddle_launch(self, line: str, cell: str):
        """Run this cell as a distributed PaddlePaddle job and show it live."""
        options = LaunchOptions.from_namespace(parse_argstring(self.paddle_launch, line))
        jobs = launcher(self.shell)
        try:
            job = jobs.launch(options, cell)
            engine = jobs.engine(job.spec.engine)
        except USER_ERRORS as err:
            raise UsageError(str(err)) from None
        panel = make_panel(job, engine)
        panel.show()
        if options.detach:
            threading.Thread(target=_follow, args=(panel, engine.poll_interval), daemon=True,
                             name=f"panel-{job.job_id}").start()
            return Job(jobs, job)
        try:
            _wait(panel, engine.poll_interval)
        except KeyboardInterrupt:
            engine.stop(job)
            panel.refresh(force=True)
            print(f"Interrupted: job {job.job_id} was stopped.")
        return None

    @line_magic
    def paddle_jobs(self, line: str = ""):
        """List your jobs: name, engine, state, nodes, age."""
        if line.strip():
            raise UsageError("%paddle_jobs takes no arguments")
        jobs = launcher(self.shell)
        rows, notes = [], []
        now = time.time()
        for path in list_jobs(jobs.root()):
            try:
                job = JobHandle.open(path.path)
                engine = jobs.engine(job.spec.engine)
                status = engine.status(job)
            except (OSError, ValueError, *USER_ERRORS):
                continue
            rows.append((job.job_id, job.spec.engine, status.state.value, str(job.spec.nodes),
                         format_elapsed(now - job.spec.created_at) + " ago"))
            notes += [f"{job.job_id}: {note}" for note in engine.notes(job.spec)]
        if not rows:
            print(f"No jobs yet in {jobs.root()}.")
            return None
        _print_table(("job", "engine", "state", "nodes", "age"), rows)
        for note in notes:
            print(f"note: {note}")
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
        job, engine, status = self._lookup(args.job)
        rank = args.rank if args.rank is not None else (status.failed_rank or 0)
        if not 0 <= rank < job.spec.world_size:
            raise UsageError(
                f"--rank {rank}: job {job.job_id} has ranks 0 to {job.spec.world_size - 1}"
            )
        if args.tail < 1:
            raise UsageError(f"--tail {args.tail} must be at least 1")
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
        job, engine, status = self._lookup(line.strip())
        if status.state.is_terminal():
            print(f"Job {job.job_id} has already ended: {status.state.value}.")
            return None
        status = engine.stop(job)
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
            job, _, _ = self._lookup(args.job)
            logdir, title = job.dir.visualdl_dir, f"VisualDL: {job.job_id}"
        else:
            logdir, title = launcher(self.shell).root(), "VisualDL: all jobs"
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

    def _lookup(self, ref: str) -> tuple[JobHandle, Engine, JobStatus]:
        """The job `ref` names, its engine and its status; a UsageError when there is none."""
        jobs = launcher(self.shell)
        try:
            job = jobs.lookup(ref)
            engine = jobs.engine(job.spec.engine)
            return job, engine, engine.status(job)
        except USER_ERRORS as err:
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
