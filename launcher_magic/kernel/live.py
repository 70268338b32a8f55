"""Showing a job live: the panel of one job, kept current until the job ends.

`show(job, engine)` is what a launch, `%paddle_attach` and `Job.attach()` do: draw the panel and
keep it current from a background thread while the cell returns; or, for a blocking cell, draw it
with `follow=False` and `wait(panel)` in the cell's own thread, which lets widget events such as the
Stop button through.
"""

from __future__ import annotations

import threading
import time

from launcher_magic.core.jobdir import JobHandle
from launcher_magic.core.status import JobStatus
from launcher_magic.engines import Engine
from launcher_magic.kernel.panel import JobPanel


def make_panel(job: JobHandle, engine: Engine) -> JobPanel:
    """The live panel of `job`, reading it through its engine (and the engine's feed of the
    job's states, where it gives one: `Engine.status_feed`, as the cluster engine's watches do)."""
    panel = JobPanel(job.spec, job.dir, lambda: engine.status(job),
                     tail=lambda rank, lines, status: engine.log_lines(job, rank, lines, status),
                     on_stop=lambda: engine.stop(job), notes=engine.notes(job.spec))
    if not engine.status(job).state.is_terminal():
        panel.feed = engine.status_feed(job)
    return panel


def show(job: JobHandle, engine: Engine, *, follow: bool = True) -> JobPanel:
    """Draw the job's panel; with `follow`, a daemon thread keeps it current until the job ends."""
    panel = make_panel(job, engine)
    panel.show()
    if follow:
        threading.Thread(target=_follow, args=(panel, engine.poll_interval), daemon=True,
                         name=f"panel-{job.job_id}").start()
    return panel


def wait(panel: JobPanel, interval: float) -> JobStatus:
    """Refresh the panel until the job ends, letting widget events (the Stop button) through.
    A Ctrl-C propagates to the caller, who decides what an interrupt means."""
    poll = ui_poller()
    while True:
        status = _refresh(panel)
        if status.state.is_terminal():
            return status
        if panel.feed is None:
            poll(interval)
            continue
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and not panel.feed.wait(0):
            poll(min(0.1, max(0.0, deadline - time.monotonic())))


def _follow(panel: JobPanel, interval: float) -> None:
    while not _refresh(panel).state.is_terminal():
        if panel.feed is None:
            time.sleep(interval)
        else:
            panel.feed.wait(interval)


def _refresh(panel: JobPanel) -> JobStatus:
    """Draw each state the engine's feed queued since the last refresh, in order, then the job as
    it is now; returns the last status drawn."""
    for status in panel.feed.take() if panel.feed is not None else ():
        panel.refresh(status=status)
        if status.state.is_terminal():
            return status
    return panel.refresh()


def ui_poller():
    """A `wait(seconds)` that processes widget messages meanwhile, where a kernel allows it."""
    try:
        from IPython import get_ipython
        from jupyter_ui_poll import ui_events

        if getattr(get_ipython(), "kernel", None) is None:
            raise ImportError
    except ImportError:
        return time.sleep

    def wait_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with ui_events() as process:
            while time.monotonic() < deadline:
                process(20)
                time.sleep(0.05)

    return wait_for
