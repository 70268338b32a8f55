"""Job history with cost: what `%paddle_jobs` shows.

Rows and totals are pure: a `HistoryRow` is made from a job's spec, status and last checkpoint,
and GPU-hours are what a job held, nodes x GPUs per node x the time from its start to its end
(so they are right on a machine without GPUs too: zero). The same computation gives the user's
total from their job directories and the tenant's from the records an engine can list
(`Engine.tenant_usage`). Rendering is plain text (terminal IPython, the saved notebook), HTML, and
a widget view whose per-row buttons (Logs, Attach, Stop) call back into the magic. The I/O is at
the end: reading the job folders and the engine (`read_rows`, `read_tenant_usage`) and wiring the
buttons to the magics and the engine (`job_actions`).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from IPython.core.error import UsageError

from launcher_magic.core.jobindex import JobIndex
from launcher_magic.core.spec import JobSpec, SpecError, parse_duration
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import Engine, TenantUsage, UsageRecord
from launcher_magic.kernel.launch import USER_ERRORS, Launcher
from launcher_magic.kernel.panel import STATE_COLOURS, format_elapsed
from launcher_magic.training.checkpoint import latest_step

HEADER = ("job", "engine", "state", "started", "duration", "nodes x GPUs", "GPU-hours",
          "restarts", "checkpoint")


def gpu_hours(nodes: int, gpus_per_node: int, seconds: float) -> float:
    """GPU-hours of `nodes` x `gpus_per_node` GPUs held for `seconds`."""
    return nodes * gpus_per_node * max(0.0, seconds) / 3600


def parse_since(raw: str, now: float) -> float:
    """The start of the period `7d`, `24h`, `90m` (or seconds) before `now`, as a timestamp.

    Raises:
        SpecError: the text is not a duration.
    """
    try:
        return now - parse_duration(raw)
    except SpecError:
        raise SpecError(f"--since {raw!r} is not a period: use 7d, 24h, 90m or seconds") from None


@dataclass(frozen=True)
class HistoryRow:
    """One job of the history: what it is, how it went and what it cost."""

    job_id: str
    name: str
    engine: str
    state: JobState
    user: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration: float  # seconds it held its nodes (JobStatus.elapsed)
    nodes: int
    gpus_per_node: int
    restarts: int
    max_restarts: int
    checkpoint_step: int | None = None
    notes: tuple[str, ...] = ()
    tenant: str | None = None

    @classmethod
    def of(cls, spec: JobSpec, status: JobStatus, checkpoint_step: int | None,
           notes: Sequence[str] = (), now: float | None = None) -> HistoryRow:
        """The row of a job; `now` is the end of a job that is still running."""
        return cls(job_id=spec.job_id, name=spec.name, engine=spec.engine, state=status.state,
                   user=spec.user, tenant=spec.tenant, created_at=spec.created_at,
                   started_at=status.started_at, finished_at=status.finished_at,
                   duration=status.elapsed(now), nodes=spec.nodes,
                   gpus_per_node=spec.resources.gpus_per_node, restarts=status.restarts,
                   max_restarts=spec.max_restarts, checkpoint_step=checkpoint_step,
                   notes=tuple(notes))

    @property
    def gpu_hours(self) -> float:
        return gpu_hours(self.nodes, self.gpus_per_node, self.duration)

    def usage(self) -> UsageRecord:
        return UsageRecord(job_id=self.job_id, user=self.user, nodes=self.nodes,
                           gpus_per_node=self.gpus_per_node, started_at=self.started_at,
                           finished_at=self.finished_at, tenant=self.tenant)

    def ran_since(self, since: float | None, now: float) -> bool:
        """Whether the job existed at some time in [since, now] (None: always)."""
        if since is None:
            return True
        end = self.finished_at or (self.created_at if self.state.is_terminal() else now)
        return end >= since


def hours_in_period(record: UsageRecord, since: float | None, now: float) -> float:
    """GPU-hours `record` held inside [since, now] (None: from its start)."""
    if record.started_at is None:
        return 0.0
    start = record.started_at if since is None else max(record.started_at, since)
    end = min(record.finished_at or now, now)
    return gpu_hours(record.nodes, record.gpus_per_node, end - start)


def totals(records: Iterable[UsageRecord], since: float | None, now: float) -> dict[str, float]:
    """GPU-hours per user of the jobs that ran in [since, now] (None: all time). A user whose
    jobs held no GPU in the period is there with 0.0; one with no job in it is not."""
    hours: dict[str, float] = {}
    for record in records:
        if since is not None and (record.finished_at or now) < since:
            continue
        hours[record.user] = hours.get(record.user, 0.0) + hours_in_period(record, since, now)
    return hours


@dataclass(frozen=True)
class UsageSummary:
    """GPU-hours over a period: the user's, and their tenant's where an engine could see it."""

    period: str  # "all time", "since 2024-05-01 12:00 (7d)"
    user: str
    by_user: tuple[tuple[str, float], ...]  # the most first
    tenant: str | None = None
    tenant_seen: bool = False  # False: by_user holds only this user's jobs on this machine
    caveat: str = ""  # what the tenant's figure leaves out, or why there is none

    @property
    def mine(self) -> float:
        return dict(self.by_user).get(self.user, 0.0)

    @property
    def total(self) -> float:
        return sum(hours for _, hours in self.by_user)


def summarize(rows: Sequence[HistoryRow], tenant_usage: TenantUsage | None, *, user: str,
              since: float | None, now: float, period: str, caveat: str = "") -> UsageSummary:
    """The period's totals: this user's from their rows (their own job folders, whatever user a
    spec recorded), the tenant's from the engine's records where there are some (a job in both
    counts once, from its row: the job directory knows it best). `caveat` says why the tenant is
    unknown when `tenant_usage` is None."""
    records = {row.job_id: replace(row.usage(), user=user) for row in rows}
    if tenant_usage is not None:
        for record in tenant_usage.records:
            records.setdefault(record.job_id, record)
    hours = totals(records.values(), since, now)
    hours.setdefault(user, 0.0)
    by_user = tuple(sorted(hours.items(), key=lambda item: (-item[1], item[0])))
    if tenant_usage is None:
        return UsageSummary(period, user, by_user, caveat=caveat)
    return UsageSummary(period, user, by_user, tenant=tenant_usage.tenant, tenant_seen=True,
                        caveat=tenant_usage.caveat)


def period_label(raw: str | None, since: float | None) -> str:
    if since is None:
        return "all time"
    return f"since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))} ({raw})"


# -- text and HTML ----------------------------------------------------------------------------

def format_hours(hours: float) -> str:
    """Two decimals; a job that held GPUs never shows as 0.00 (that is for none held)."""
    return "<0.01" if 0 < hours < 0.005 else f"{hours:.2f}"


def cells(row: HistoryRow) -> tuple[str, ...]:
    """The row's values as the table shows them, in HEADER's order."""
    started = "-" if row.started_at is None else time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(row.started_at))
    return (row.job_id, row.engine, row.state.value, started, format_elapsed(row.duration),
            f"{row.nodes} x {row.gpus_per_node}", format_hours(row.gpu_hours),
            f"{row.restarts} of {row.max_restarts}",
            "-" if row.checkpoint_step is None else f"step {row.checkpoint_step}")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in (header, *rows))


def _who(summary: UsageSummary) -> str:
    return f"you ({summary.user})" if summary.user else "you"


def render_totals(summary: UsageSummary, per_user: bool = False) -> list[str]:
    """The totals as lines: yours, then the tenant's (or why it covers only yours)."""
    line = f"GPU-hours {summary.period}: {_who(summary)} {format_hours(summary.mine)}"
    if not summary.tenant_seen:
        reason = summary.caveat or "this engine cannot see other users' jobs"
        return [f"{line}; tenant total: {format_hours(summary.total)}, covering only your own "
                f"jobs ({reason})"]
    users = len(summary.by_user)
    lines = [f"{line}; tenant {summary.tenant or '(none)'} {format_hours(summary.total)} "
             f"({users} user{'s' if users != 1 else ''})"]
    if per_user:
        names = [user or "(unknown)" for user, _ in summary.by_user]
        width = max(map(len, names))
        lines += [f"  {name.ljust(width)}  {format_hours(hours)}"
                  for name, (_, hours) in zip(names, summary.by_user, strict=True)]
    if summary.caveat:
        lines.append(f"  ({summary.caveat})")
    return lines


def render_text(rows: Sequence[HistoryRow], summary: UsageSummary, per_user: bool = False,
                empty: str = "No jobs in this period.") -> str:
    """The history as plain text: the table, the totals, then each job's engine notes."""
    lines = [format_table(HEADER, [cells(row) for row in rows])] if rows else [empty]
    lines += render_totals(summary, per_user)
    lines += [f"note: {row.job_id}: {note}" for row in rows for note in row.notes]
    return "\n".join(lines)


def _state_html(state: JobState) -> str:
    return f'<b style="color:{STATE_COLOURS[state]}">{html.escape(state.value)}</b>'


def render_html(rows: Sequence[HistoryRow], summary: UsageSummary, per_user: bool = False) -> str:
    """The history as an HTML table (what a saved notebook shows where widgets do not)."""
    head = "".join(f"<th style=\"text-align:left\">{html.escape(h)}</th>" for h in HEADER)
    body = []
    for row in rows:
        values = [html.escape(c) for c in cells(row)]
        values[2] = _state_html(row.state)
        body.append("<tr>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"{_footer_html(rows, summary, per_user)}")


def _footer_html(rows: Sequence[HistoryRow], summary: UsageSummary, per_user: bool) -> str:
    lines = render_totals(summary, per_user)
    lines += [f"note: {row.job_id}: {note}" for row in rows for note in row.notes]
    return "<div>" + "<br>".join(html.escape(line) for line in lines) + "</div>"


# -- widgets ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryActions:
    """What the view's buttons do, given a job id: print a rank's log tail, show the job's live
    panel, stop the job (returning its state afterwards)."""

    on_logs: Callable[[str], object]
    on_attach: Callable[[str], object]
    on_stop: Callable[[str], JobState | None]


class HistoryView:
    """The history as widgets: a grid with a Logs, Attach and Stop button per job, the totals,
    and an output area where the buttons print. `bundle()` is what to display: the widget, with
    the text and HTML twins that a frontend without widgets (or a saved notebook) shows."""

    def __init__(self, rows: Sequence[HistoryRow], summary: UsageSummary,
                 actions: HistoryActions, per_user: bool = False):
        import ipywidgets as w

        self.rows, self.summary, self.actions = tuple(rows), summary, actions
        self.per_user = per_user
        self.output = w.Output()
        self.state_cells: dict[str, w.HTML] = {}
        self.buttons: dict[str, dict[str, w.Button]] = {}
        grid = [w.HTML(f"<b>{html.escape(h)}</b>") for h in (*HEADER, "")]
        for row in self.rows:
            values = [w.HTML(html.escape(c)) for c in cells(row)]
            values[2].value = _state_html(row.state)
            self.state_cells[row.job_id] = values[2]
            grid += [*values, self._buttons(row)]
        self.grid = w.GridBox(grid, layout=w.Layout(
            grid_template_columns=f"repeat({len(HEADER)}, max-content) auto", grid_gap="2px 12px"))
        self.box = w.VBox([self.grid, w.HTML(_footer_html(self.rows, summary, per_user)),
                           self.output])

    def _buttons(self, row: HistoryRow):
        import ipywidgets as w

        made = {}
        for label, icon in (("Logs", "file-text"), ("Attach", "eye"), ("Stop", "stop")):
            button = w.Button(description=label, icon=icon, layout=w.Layout(width="6em"),
                              button_style="danger" if label == "Stop" else "")
            button.on_click(lambda _b, label=label, job=row.job_id: self.click(label, job))
            made[label] = button
        made["Stop"].disabled = row.state.is_terminal()
        self.buttons[row.job_id] = made
        return w.HBox(list(made.values()))

    def click(self, label: str, job_id: str) -> None:
        """What pressing `label` (Logs, Attach, Stop) on `job_id`'s row does. A failure is
        printed in the view, never raised into the widget machinery."""
        with self.output:
            self.output.clear_output()
            try:
                if label == "Logs":
                    self.actions.on_logs(job_id)
                elif label == "Attach":
                    self.actions.on_attach(job_id)
                else:
                    self._stop(job_id)
            except Exception as err:  # noqa: BLE001 - shown to the user in the view
                print(f"{label} {job_id}: {err}")

    def _stop(self, job_id: str) -> None:
        button = self.buttons[job_id]["Stop"]
        button.disabled, button.description = True, "Stopping"
        state = self.actions.on_stop(job_id)
        button.description = "Stop"
        if state is not None:
            self.state_cells[job_id].value = _state_html(state)
            print(f"Job {job_id}: {state.value}.")

    def bundle(self) -> dict:
        return {**self.box._repr_mimebundle_(),
                "text/plain": render_text(self.rows, self.summary, self.per_user),
                "text/html": render_html(self.rows, self.summary, self.per_user)}


# -- reading the jobs (I/O) -------------------------------------------------------------------

def read_rows(jobs: Launcher, now: float) -> list[HistoryRow]:
    """A row for every job in the user's jobs folder, oldest first. A job whose engine cannot
    say its status now shows the last status it recorded, with a note why; a directory that
    cannot be read is left out.

    Jobs that have ended come from the folder's index (`core/jobindex.py`) without reading their
    directories; the others are asked of their engine, and those that have ended since go into
    the index."""
    index = JobIndex(jobs.root())
    engines: dict[str, Engine] = {}
    rows = []
    for indexed in index.jobs():
        job, status, step = indexed.handle, indexed.status, indexed.checkpoint_step
        notes: list[str] = []
        try:
            engine = engines.get(job.spec.engine) or jobs.engine(job.spec.engine)
            engines[job.spec.engine] = engine
            notes += engine.notes(job.spec)
            if status is None:
                status = engine.status(job)
                step = latest_step(job.dir.checkpoints_dir)
                index.record(job, status, step)
        except USER_ERRORS as err:
            if status is None:
                status = job.dir.read_status() or JobStatus(job_id=job.job_id)
                step = latest_step(job.dir.checkpoints_dir)
            notes.append(f"showing its last recorded status: {err}")
        rows.append(HistoryRow.of(job.spec, status, step, notes, now))
    index.save()
    return rows


def read_tenant_usage(jobs: Launcher, since: float | None) -> tuple[TenantUsage | None, str]:
    """What the hub's engine can tell of the whole tenant, or (None, why it cannot)."""
    try:
        engine = jobs.engine(jobs.context().engine)
        usage = engine.tenant_usage(since)
    except USER_ERRORS as err:
        return None, f"could not list your tenant's jobs: {err}"
    if usage is None:
        return None, (f"the {engine.name} engine cannot list other users' jobs: these are "
                      f"yours on this machine, in {jobs.root()}")
    return usage, ""


def job_actions(jobs: Launcher, run_magic: Callable[[str, str], object]) -> HistoryActions:
    """The view's buttons, wired as the magics do it: Logs is `%paddle_logs JOB` (the failed
    rank's tail, else rank 0's), Attach is `%paddle_attach JOB`, Stop is the engine's `stop`
    (what `%paddle_stop` and the panel's Stop button call too). `run_magic(name, line)` runs a
    line magic (the shell's `run_line_magic`)."""

    def attach(job_id: str) -> None:
        try:
            run_magic("paddle_attach", job_id)
        except UsageError as err:  # a job that went away, or no %paddle_attach in this kernel
            print(f"Attach {job_id}: {err}")

    def stop(job_id: str) -> JobState:
        return jobs.stop(jobs.lookup(job_id)).state

    return HistoryActions(on_logs=lambda job_id: run_magic("paddle_logs", f"{job_id} --tail 20"),
                          on_attach=attach, on_stop=stop)
