"""The magics: `%%paddle_launch`, `%paddle_jobs`, `%paddle_logs`, `%paddle_stop`, `%visualdl`.

The magics are thin: they parse options, turn mistakes into a `UsageError` that says what to fix,
and hand the work to the spec builder, the job directory, an engine and the panel.
"""

from __future__ import annotations

import atexit
import functools
import time
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Integer

from launcher_magic.core.jobdir import JobHandle
from launcher_magic.core.spec import LaunchOptions, SpecError
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.core.transfer import DEFAULT_PUSH_LIMIT
from launcher_magic.engines import Engine, available_engines
from launcher_magic.kernel import history
from launcher_magic.kernel.launch import USER_ERRORS, Job, Launcher
from launcher_magic.kernel.live import show, wait
from launcher_magic.kernel.panel import widgets_available

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


def reports_bugs(magic):
    """A magic whose unexpected exceptions (a bug, not the user's mistake: those are the
    USER_ERRORS, turned into one line where they happen) say so in one line and where the
    traceback is: `%tb` shows the whole chain, the original exception included."""

    @functools.wraps(magic)
    def run(self, *args, **kwargs):
        try:
            return magic(self, *args, **kwargs)
        except UsageError:
            raise
        except Exception as err:
            raise UsageError(
                f"%{magic.__name__} failed unexpectedly ({type(err).__name__}: {err}). This is a "
                "bug in Paddle Workbench, not in your cell: run %tb to see where it happened, "
                "and please report it with that traceback.") from err

    return run


@magics_class
class PaddleMagics(Magics):
    """Registered by `%load_ext launcher_magic`."""

    push_limit = Integer(
        DEFAULT_PUSH_LIMIT, help="Largest --push, in bytes once pickled."
    ).tag(config=True)

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
    @argument("--push", default=None, metavar="A,B",
              help="notebook variables put into every rank's globals before the cell runs")
    @argument("--pull", default=None, metavar="C,D",
              help="variables rank 0 sends back into the notebook when the job succeeds")
    @argument("--detach", action="store_true",
              help="return a handle to the job at once; the job still ends with this kernel")
    @argument("--keep", action="store_true",
              help="like --detach, and the job outlives this kernel (%%paddle_attach it later)")
    @argument("--new", action="store_true",
              help="start even if a job of this name is still running")
    @argument("--visualdl", action="store_true", help="log scalars for VisualDL")
    @cell_magic
    @reports_bugs
    def paddle_launch(self, line: str, cell: str):
        """Run this cell as a distributed PaddlePaddle job and show it live."""
        options = LaunchOptions.from_namespace(parse_argstring(self.paddle_launch, line))
        jobs = launcher(self.shell)
        try:
            job = jobs.launch(options, cell, namespace=self.shell.user_ns,
                              push_limit=self.push_limit)
            engine = jobs.engine(job.spec.engine)
        except USER_ERRORS as err:
            raise UsageError(str(err)) from None
        if options.detach or options.keep:
            show(job, engine)
            return Job(jobs, job, namespace=self.shell.user_ns)
        panel = None
        try:  # a Ctrl-C while the panel is drawn stops the job as one while it waits does
            panel = show(job, engine, follow=False)
            wait(panel, engine.poll_interval)
        except KeyboardInterrupt:
            engine.stop(job)
            if panel is not None:
                panel.refresh(force=True)
            print(f"Interrupted: job {job.job_id} was stopped.")
            return None
        if job.spec.pull:
            self._pull(Job(jobs, job, namespace=self.shell.user_ns))
        return None

    def _pull(self, job: Job) -> None:
        try:
            pulled = job.result()
        except USER_ERRORS as err:
            raise UsageError(str(err)) from None
        print(f"Pulled {', '.join(pulled)} from rank 0 of {job.job_id}.")

    @magic_arguments()
    @argument("job", help="job id, or a job name (its newest job)")
    @argument("--wait", action="store_true",
              help="keep the cell busy until the job ends (Ctrl-C detaches; the job goes on)")
    @line_magic
    @reports_bugs
    def paddle_attach(self, line: str = ""):
        """Show the live panel of a job again, in this kernel: `%paddle_attach JOB [--wait]`.

        Returns the job's handle (see `%%paddle_launch --detach`).
        """
        args = parse_argstring(self.paddle_attach, line)
        job, engine, _ = self._lookup(args.job)
        handle = Job(launcher(self.shell), job, namespace=self.shell.user_ns)
        panel = show(job, engine, follow=not args.wait)
        try:
            if args.wait:
                wait(panel, engine.poll_interval)
        except KeyboardInterrupt:
            print(f"Detached from job {job.job_id}; it goes on (%paddle_attach {job.job_id}).")
        return handle

    @magic_arguments()
    @argument("--since", default=None, metavar="PERIOD",
              help="only jobs that ran in the last PERIOD (7d, 24h, 90m), and GPU-hours over it")
    @argument("--all", action="store_true",
              help="GPU-hours of each user of your tenant, where the engine can list them")
    @line_magic
    @reports_bugs
    def paddle_jobs(self, line: str = ""):
        """Your jobs and what they cost: `%paddle_jobs [--since 7d] [--all]`.

        A row per job (state, start, duration, nodes x GPUs, GPU-hours, restarts, last
        checkpoint; with widgets, Logs / Attach / Stop buttons), then the GPU-hours of the period:
        yours, and your tenant's where the engine can list its jobs. GPU-hours are what a job held:
        nodes x GPUs per node x its runtime.
        """
        try:
            args = parse_argstring(self.paddle_jobs, line)
        except UsageError as err:
            raise UsageError(
                f"%paddle_jobs takes no arguments other than --since PERIOD and --all: {err}"
            ) from None
        jobs, now = launcher(self.shell), time.time()
        try:
            since = None if args.since is None else history.parse_since(args.since, now)
            user = jobs.context().user
        except (SpecError, *USER_ERRORS) as err:
            raise UsageError(str(err)) from None
        rows = [row for row in history.read_rows(jobs, now) if row.ran_since(since, now)]
        usage, why = history.read_tenant_usage(jobs, since)
        summary = history.summarize(rows, usage, user=user, since=since, now=now, caveat=why,
                                    period=history.period_label(args.since, since))
        if rows and widgets_available():
            from IPython.display import display

            view = history.HistoryView(rows, summary, history.job_actions(
                jobs, self.shell.run_line_magic), per_user=args.all)
            display(view.bundle(), raw=True)
            return None
        empty = (f"No jobs yet in {jobs.root()}." if since is None
                 else f"No jobs ran {summary.period} in {jobs.root()}.")
        print(history.render_text(rows, summary, per_user=args.all, empty=empty))
        return None

    @magic_arguments()
    @argument("job", help="job id, or a job name (its newest job)")
    @argument("--rank", type=int, default=None, help="which rank (default: the failed one, or 0)")
    @argument("--tail", type=int, default=50, help="how many lines")
    @argument("--follow", action="store_true",
              help="keep printing until the job ends, across restarts (Ctrl-C: stop following)")
    @line_magic
    @reports_bugs
    def paddle_logs(self, line: str = ""):
        """Show a rank's log: `%paddle_logs JOB [--rank N] [--tail K] [--follow]`.

        `--follow` prints what the rank writes from then on, through each restart of the job
        (a `== restart <n>: attempt <n+1> ==` line where the local engine starts a new attempt),
        and ends with `== job ended: <state> ==`. Interrupting stops following, not the job.
        """
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
                print(f"\n== stopped following; job {job.job_id} goes on ==")
                return None
            except USER_ERRORS as err:
                raise UsageError(str(err)) from None
            print(f"== job ended: {engine.status(job).state.value} ==")
        return None

    @line_magic
    @reports_bugs
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
    @reports_bugs
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


__all__ = ["PaddleMagics", "stop_session_jobs", "JobState"]
