"""The job panel: live widgets where a widget frontend exists, text everywhere else.

The panel has two outputs. A live ipywidgets view (state, a progress bar when the job reports
progress, a row per rank, a log tail with a rank selector, a Stop button) and a summary (HTML with
a text/plain twin) that is rewritten in place on every change of state, so the saved notebook
keeps a readable final state, progress figures included, even where widgets do not render
(nbconvert, GitHub, terminal IPython). Rendering is pure: `PanelView -> str`.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.progress import Progress, eta_seconds, percent, read_progress
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.training.checkpoint import latest_step
from workbench_contract import environment as wbenv

LOG_LINES = 20
MAX_SCALARS = 3  # last scalars on the progress line: the loss and two more
# How long the panel waits, once the job has ended, for its board to list the final records.
BOARD_FINAL_WAIT = 10.0
STATE_COLOURS = {
    JobState.QUEUED: "#7c3aed", JobState.PENDING: "#6b7280", JobState.RUNNING: "#2563eb",
    JobState.RESTARTING: "#d97706",
    JobState.STOPPING: "#d97706", JobState.SUCCEEDED: "#16a34a", JobState.FAILED: "#dc2626",
    JobState.STOPPED: "#6b7280",
}


@dataclass(frozen=True)
class PanelView:
    """Everything the panel shows at one moment."""

    spec: JobSpec
    status: JobStatus
    log_rank: int
    log_lines: tuple[str, ...]
    checkpoint_step: int | None
    now: float
    # What the engine does not honour of the spec, and what happened that the state forgets.
    notes: tuple[str, ...] = ()
    progress: Progress | None = None  # None: the job's code reports no progress

    @classmethod
    def read(cls, spec: JobSpec, job: JobDir, status: JobStatus,
             tail: Callable[[int, int], list[str]], log_rank: int | None = None,
             lines: int = LOG_LINES, notes: Sequence[str] = ()) -> PanelView:
        """Gather the view; `tail(rank, lines)` returns a rank's last log lines."""
        rank = log_rank if log_rank is not None else (status.failed_rank or 0)
        return cls(spec=spec, status=status, log_rank=rank, log_lines=tuple(tail(rank, lines)),
                   checkpoint_step=latest_step(job.checkpoints_dir), now=time.time(),
                   notes=tuple(notes), progress=read_progress(job.path))


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _facts(view: PanelView) -> list[tuple[str, str]]:
    spec, status = view.spec, view.status
    layout = f"{spec.nodes} node(s) x {spec.resources.nproc_per_node} process(es)"
    if spec.resources.gpus_per_node:
        layout += f", {spec.resources.gpus_per_node} GPU(s) per node"
    return [
        ("engine", spec.engine),
        ("layout", layout),
        ("elapsed", format_elapsed(status.elapsed(view.now))),
        ("restarts", f"{status.restarts} of {spec.max_restarts}"),
        ("checkpoint", "none yet" if view.checkpoint_step is None
         else f"step {view.checkpoint_step}"),
    ] + ([("resumed from", f"step {view.progress.first_step}")]
         if view.progress is not None and view.progress.first_step else [])


def format_rate(steps_per_second: float) -> str:
    """Three significant figures or so, never an exponent: 0.123, 1.23, 12.3, 123."""
    rate = steps_per_second
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def progress_figures(view: PanelView) -> list[str]:
    """What the progress line says: steps, percent, steps/s, ETA, last scalars ([]: no progress).

    The ETA is shown while the job runs only: once it has ended there is nothing left to wait
    for, and while it restarts the rate is the previous attempt's.
    """
    progress = view.progress
    if progress is None:
        return []
    done = percent(progress)
    figures = [f"step {progress.step}" if done is None
               else f"{progress.step}/{progress.total} ({int(done)}%)"]
    if progress.steps_per_second:
        figures.append(f"{format_rate(progress.steps_per_second)} steps/s")
    eta = eta_seconds(progress, view.now)
    if eta is not None and view.status.state == JobState.RUNNING:
        # Rounded up: "ETA 0:00" would claim the job is done while a step is still left.
        figures.append(f"ETA {format_elapsed(math.ceil(eta))}")
    # The loss first (what people watch), then the others in the order they were logged.
    names = sorted(progress.scalars, key=lambda name: name != "loss")[:MAX_SCALARS]
    figures += [f"{name} {progress.scalars[name]:.4g}" for name in names]
    return figures


def render_text(view: PanelView, with_log: bool = True) -> str:
    """The panel as plain text (terminal IPython, nbconvert, the saved notebook's text)."""
    status = view.status
    lines = [f"Paddle job {status.job_id}: {status.state.value}"
             + (f" - {status.message}" if status.message else "")]
    lines.append("  " + ", ".join(f"{k}: {v}" for k, v in _facts(view)))
    if figures := progress_figures(view):
        lines.append("  progress: " + ", ".join(figures))
    lines.extend(f"  note: {note}" for note in view.notes)
    for rank in status.ranks:
        code = "" if rank.exit_code is None else f" exit {rank.exit_code}"
        error = f" ({rank.error})" if rank.error else ""
        where = f"node {rank.node}" + (f" on {rank.host}" if rank.host else "")
        lines.append(f"  rank {rank.rank} ({where}): {rank.state.value}{code}{error}")
    if with_log and view.log_lines:
        lines.append(f"  last lines of rank {view.log_rank}:")
        lines.extend("    " + line for line in view.log_lines)
    return "\n".join(lines)


def render_header_html(view: PanelView) -> str:
    """Job id, state badge, message, facts and the engine's notes, as HTML."""
    status, esc = view.status, html.escape
    colour = STATE_COLOURS[status.state]
    badge = (f'<span style="background:{colour};color:white;padding:1px 8px;'
             f'border-radius:8px">{esc(status.state.value)}</span>')
    facts = " &middot; ".join(f"{esc(k)}: <b>{esc(v)}</b>" for k, v in _facts(view))
    notes = "".join(f'<div style="color:#92400e">note: {esc(note)}</div>' for note in view.notes)
    return (f"<div><b>Paddle job {esc(status.job_id)}</b> {badge} {esc(status.message)}</div>"
            f"<div>{facts}</div>{notes}")


def render_progress_html(view: PanelView) -> str:
    """A progress bar (plain HTML and CSS) with its figures; "" when the job reports none."""
    figures = progress_figures(view)
    if not figures:
        return ""
    done = percent(view.progress)
    bar = ""
    if done is not None:
        bar = (f'<div role="progressbar" aria-valuemin="0" aria-valuemax="100" '
               f'aria-valuenow="{int(done)}" style="display:inline-block;vertical-align:middle;'
               f'width:16em;height:0.8em;margin-right:0.6em;background:#e5e7eb;'
               f'border-radius:0.4em;overflow:hidden"><div style="width:{done:.1f}%;height:100%;'
               f'background:{STATE_COLOURS[view.status.state]}"></div></div>')
    text = " &middot; ".join(html.escape(figure) for figure in figures)
    return (f'<div class="paddle-job-progress">{bar}'
            f'<span style="vertical-align:middle">progress: {text}</span></div>')


def render_ranks_html(view: PanelView) -> str:
    """One table row per rank: node, the machine it runs on (a column only once a cluster
    engine has named one: local jobs all run here), state, exit code, error."""
    esc = html.escape
    machines = any(r.host for r in view.status.ranks)
    rows = "".join(
        f"<tr><td>{r.rank}</td><td>{r.node}</td>"
        + (f"<td>{esc(r.host or '')}</td>" if machines else "")
        + f'<td style="color:{STATE_COLOURS[JobState(r.state.value)]}">{esc(r.state.value)}</td>'
        f"<td>{'' if r.exit_code is None else r.exit_code}</td>"
        f"<td>{esc(r.error or '')}</td></tr>"
        for r in view.status.ranks
    )
    machine = "<th>machine</th>" if machines else ""
    return (f"<table><thead><tr><th>rank</th><th>node</th>{machine}<th>state</th>"
            f"<th>exit code</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>")


def render_log_html(view: PanelView) -> str:
    return (f'<pre style="max-height:20em;overflow:auto;margin:0">'
            f"{html.escape(chr(10).join(view.log_lines))}</pre>")


def render_html(view: PanelView, with_log: bool = True) -> str:
    """The panel as self-contained HTML (no scripts), for the notebook's saved summary."""
    parts = ['<div class="paddle-job-panel">', render_header_html(view),
             render_progress_html(view), render_ranks_html(view)]
    if with_log and view.log_lines:
        parts += [f"<div>last lines of rank {view.log_rank}:</div>", render_log_html(view)]
    parts.append("</div>")
    return "".join(parts)


class _Summary:
    """A display rewritten in place: HTML for people, text/plain for everything else.

    While the job runs it is one line (the live widgets above show the rest); once the job has
    ended it holds the whole final state, which is what a saved notebook keeps.
    """

    def __init__(self):
        self._handle = None

    def update(self, view: PanelView) -> None:
        from IPython.display import display

        if view.status.state.is_terminal():
            # The failed rank's last lines belong in what the notebook keeps; a success needs
            # no log there (the live panel above still shows any rank's).
            with_log = view.status.state != JobState.SUCCEEDED
            bundle = {"text/html": render_html(view, with_log), "text/plain":
                      render_text(view, with_log)}
        else:
            line = render_text(view, with_log=False).splitlines()[0]
            bundle = {"text/html": f"<div>{html.escape(line)}</div>", "text/plain": line}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def widgets_available() -> bool:
    """True in a kernel that can talk to a widget frontend, unless text is forced."""
    if os.environ.get(wbenv.PANEL, "").lower() == "text":
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return shell is not None and hasattr(shell, "kernel")


def remembered(history: tuple[str, ...], status: JobStatus) -> tuple[str, ...]:
    """`history` and what `status` says that a later status will not: a node that lost its
    machine (the job restarts elsewhere, and its new pods no longer tell), once each."""
    if any(n.lost_at is not None for n in status.nodes) and status.message not in history:
        return (*history, status.message)
    return history


class JobPanel:
    """Shows one job and keeps it current; `refresh()` reads the job and redraws what changed.

    Args:
        spec, job: the job.
        status_of: returns the job's current JobStatus (the engine's `status`).
        tail: `tail(rank, lines, status)` returns a rank's last log lines (the engine's
            `log_lines`).
        on_stop: called when the Stop button is pressed.
        widgets: False for text only (no widget frontend).
        notes: what the engine does not honour of the spec (shown under the facts).
    """

    def __init__(self, spec: JobSpec, job: JobDir, status_of: Callable[[], JobStatus],
                 tail: Callable[[int, int, JobStatus], list[str]],
                 on_stop: Callable[[], object] | None = None, widgets: bool | None = None,
                 notes: Sequence[str] = ()):
        self.spec, self.job, self.status_of, self.on_stop = spec, job, status_of, on_stop
        self.tail, self.notes = tail, tuple(notes)
        # What happened to the job that its state forgets, kept in the job directory so that
        # any later panel of the job (another kernel's, `%paddle_attach`) still tells it.
        self.history: tuple[str, ...] = job.read_history()
        # The engine's feed of the job's states (`status_feed`), where it has one: the panel
        # then draws each state as it comes instead of what a poll happens to see.
        self.feed = None
        self.board_url: str | None = None  # the job's VisualDL board, once shown
        self._board_had_data = self._board_final = False
        self.widgets = widgets_available() if widgets is None else widgets
        self.log_rank: int | None = None
        self._summary = _Summary()
        self._last_state: JobState | None = None
        self._last_text = ""
        self.view: PanelView | None = None
        if self.widgets:
            self._build_widgets()

    def _build_widgets(self) -> None:
        import ipywidgets as w

        self._header = w.HTML()
        self._ranks = w.HTML()
        self._rank_picker = w.Dropdown(
            options=[(f"rank {r}", r) for r in range(self.spec.world_size)],
            description="log of", layout=w.Layout(width="14em"),
        )
        self._rank_picker.observe(self._pick_rank, names="value")
        self._stop = w.Button(description="Stop", button_style="danger", icon="stop")
        self._stop.on_click(self._stop_clicked)
        self._log = w.HTML()
        # Hidden until the job reports progress (a job that reports none shows elapsed time).
        self._bar = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="16em"))
        self._bar_label = w.Label()
        self._progress_box = w.HBox([self._bar, self._bar_label],
                                    layout=w.Layout(display="none"))
        children = [self._header, self._progress_box, self._ranks,
                    w.HBox([self._rank_picker, self._stop]), self._log]
        if self.spec.visualdl:
            # The job's VisualDL board, open by default (the user asked for --visualdl) and
            # collapsible; it is started when the panel is shown (see _show_board).
            self._board = w.HTML("<i>starting VisualDL...</i>")
            self._board_box = w.Accordion(children=[self._board], selected_index=0)
            self._board_box.set_title(0, "VisualDL")
            children.append(self._board_box)
        self.box = w.VBox(children)

    def _pick_rank(self, change) -> None:
        self.log_rank = change["new"]
        self.refresh(force=True)

    def _stop_clicked(self, _button) -> None:
        self._stop.disabled = True
        self._stop.description = "Stopping"
        if self.on_stop is not None:
            self.on_stop()
        self.refresh(force=True)

    def show(self) -> None:
        if self.widgets:
            from IPython.display import display

            display(self.box)
        self.refresh(force=True)
        if self.spec.visualdl:
            self._show_board()

    def _show_board(self) -> None:
        """Start (or reuse) the job's VisualDL board; a failure is shown, never raised."""
        from launcher_magic.kernel import visualdl
        if not self.widgets:
            print(f"VisualDL: run %visualdl {self.spec.job_id} to see this job's board",
                  flush=True)
            return
        try:
            board = visualdl.start(self.job.visualdl_dir).instance
        except visualdl.VisualDLError as err:
            self._board.value = (f"<pre style=\"margin:0\">VisualDL is not available: "
                                 f"{html.escape(str(err))}</pre>")
            return
        self.board = board
        self.board_url = board.url
        self._board.value = visualdl.embed_html(board.page_url(),
                                                title=f"VisualDL: {self.spec.job_id}")

    def refresh(self, force: bool = False, status: JobStatus | None = None) -> JobStatus:
        """Read the job and redraw; returns the status it showed. `status`: show this one (a
        state the job went through, from the engine's feed) instead of asking for it."""
        status = status or self.status_of()
        history = remembered(self.history, status)
        if history != self.history:
            self.history = history
            with contextlib.suppress(OSError):
                self.job.write_history(history)
        view = PanelView.read(self.spec, self.job, status,
                              lambda rank, lines: self.tail(rank, lines, status), self.log_rank,
                              notes=self.notes + self.history)
        self.view = view
        if self.widgets:
            self._draw_widgets(view)
            if self._rank_picker.value != view.log_rank:
                self._rank_picker.value = view.log_rank
            if self.board_url:
                self._reload_board(view)
        if force or status.state != self._last_state:
            self._last_state = status.state
            if self.widgets:
                self._summary.update(view)
            else:
                self._print_text(view)
        return status

    def _reload_board(self, view: PanelView) -> None:
        """Reload the board when its first records appear and when the job ends.

        VisualDL's page lists runs and charts once, when it loads; the board usually loads
        before rank 0 has written anything, so without a reload it would stay empty. The board
        itself reads new records a moment after they are written: a reload waits until it lists
        them (the next refresh asks again; at the end, up to BOARD_FINAL_WAIT seconds).
        """
        from launcher_magic.kernel import visualdl
        has_data = any(self.job.visualdl_dir.glob("vdlrecords.*"))
        reason = None
        if has_data and not self._board_had_data and visualdl.lists_runs(self.board):
            self._board_had_data, reason = True, "data"
        if view.status.state.is_terminal() and not self._board_final:
            if has_data:
                visualdl.lists_runs(self.board, wait=BOARD_FINAL_WAIT)
            self._board_final, reason = True, "final"
        if reason:
            self._board.value = visualdl.embed_html(
                self.board.page_url(loaded=reason), title=f"VisualDL: {self.spec.job_id}")

    def _draw_widgets(self, view: PanelView) -> None:
        self._header.value = render_header_html(view)
        self._ranks.value = render_ranks_html(view)
        self._log.value = render_log_html(view)
        self._draw_progress(view)
        if view.status.state.is_terminal():
            self._stop.disabled = True
            self._stop.description = view.status.state.value
            # The final summary below now shows state, progress and ranks; not twice.
            self._header.layout.display = self._ranks.layout.display = "none"
            self._progress_box.layout.display = "none"

    def _draw_progress(self, view: PanelView) -> None:
        figures = progress_figures(view)
        if not figures:
            self._progress_box.layout.display = "none"
            return
        progress, done = view.progress, percent(view.progress)
        self._progress_box.layout.display = None
        self._bar.layout.display = "none" if done is None else None
        if done is not None:
            self._bar.max = progress.total  # before the value, which is clamped to max
            self._bar.value = min(progress.step, progress.total)
        self._bar.bar_style = {JobState.SUCCEEDED: "success",
                               JobState.FAILED: "danger"}.get(view.status.state, "")
        self._bar_label.value = "progress: " + ", ".join(figures)

    def _print_text(self, view: PanelView) -> None:
        final = view.status.state.is_terminal()
        text = render_text(view, with_log=final)
        if text != self._last_text:
            self._last_text = text
            print(text if final else render_text(view, with_log=False).splitlines()[0],
                  flush=True)
