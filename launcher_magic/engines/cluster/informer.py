"""Following objects of the API server by watching, not polling: a shared cache per kind.

A `SharedInformer` keeps every object of one kind in one namespace that matches its selectors
(PaddleJobs, TrainJobs, pods or events of the workbench's jobs) in memory, as client-go's shared
informers do: it lists them once, then follows one watch stream from the list's resourceVersion,
applying each ADDED, MODIFIED and DELETED event. Readers (`get`, `items`) never touch the API
server, so any number of panels cost nothing; `wait_for_change` lets one wake up on the next
change instead of sleeping.

When the stream ends (the server's `timeoutSeconds`, a proxy or load balancer that cuts idle
connections, a dropped network), the informer watches again from the last resourceVersion it saw
(BOOKMARK events keep that current while nothing changes), so nothing is missed and nothing is
listed again. When the server says that version is too old (410 Gone: etcd was compacted, or the
watch cache moved on), it lists again and replaces the cache, dropping what was deleted meanwhile.
Other errors (the server down, a 5xx, a 429) are retried after a backoff that doubles up to
`max_backoff`, with jitter so that many kernels do not retry in step.

`LogTail` does the same for a container's log: one follow stream per rank being shown, holding the
last lines, opened again (without repeating a line) when it drops or the container restarts, and
closed when nobody has asked for it for a while.

This module is the API I/O only; what the objects mean is the engine's business. It takes the
kubernetes client's list methods (`core.list_namespaced_pod`, a `functools.partial` of
`custom.list_namespaced_custom_object`) and calls them with `watch`, `resource_version` and
`_preload_content=False`, reading the JSON itself, so the objects are plain dicts as the API
server sent them.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)
# Every informer and log tail still running, so that the process's exit closes their streams
# first (daemon threads that still read or log while the interpreter finalizes can crash it).
_RUNNING: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for running in list(_RUNNING):
        running.stop()

def _close(running, response) -> None:
    """Mark a stream follower (an informer or a log tail) stopped and shut its open stream."""
    _RUNNING.discard(running)
    running._stopped.set()
    if response is not None:
        try:
            response.shutdown()
        except Exception:  # noqa: BLE001 - closing a stream that may be half gone
            pass


Lister = Callable[..., Any]  # a kubernetes client list method, namespace (and kind) bound


class Gone(Exception):
    """The server no longer has the resourceVersion asked for (410): list again."""


@dataclass
class WatchStats:
    """What one informer asked of the API server, for tests and benchmarks."""

    lists: int = 0  # list requests (the first, and one after each 410)
    watches: int = 0  # watch requests (each resume after a stream ended is one)
    events: int = 0  # events applied (bookmarks not counted)
    gone: int = 0  # 410 answers
    errors: int = 0  # failed requests or streams, retried after a backoff


def stream_lines(response) -> Iterator[bytes]:
    """The complete lines of a streamed HTTP response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


def backoff_delays(first: float, most: float, rng: random.Random | None = None) -> Iterator[float]:
    """first, 2 x first, 4 x first... up to `most`, each with up to 50% added at random."""
    rng = rng or random.Random()
    delay = first
    while True:
        yield delay * (1 + 0.5 * rng.random())
        delay = min(most, delay * 2)


def split_timestamp(line: str) -> tuple[str | None, str]:
    """(RFC 3339 timestamp, text) of a log line read with `timestamps=true`."""
    stamp, sep, text = line.partition(" ")
    if sep and stamp[:4].isdigit() and "T" in stamp:
        return stamp, text
    return None, line


def unseen_lines(lines: Iterable[str], last: str | None) -> tuple[list[str], str | None]:
    """The lines of a timestamped log newer than timestamp `last`, and the newest timestamp.

    A follow stream that is opened again (the container restarted, the connection dropped)
    starts from the top of the log; this drops what was already shown. The kubelet writes
    timestamps in one fixed-width UTC format, so they compare as strings.
    """
    fresh = []
    for line in lines:
        stamp, text = split_timestamp(line)
        if stamp is not None and last is not None and stamp <= last:
            continue
        last = stamp or last
        fresh.append(text)
    return fresh, last


def object_name(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _status_code(err: BaseException) -> int | None:
    """The HTTP status of an API server's refusal (None for any other error)."""
    from kubernetes.client.exceptions import ApiException

    return err.status if isinstance(err, ApiException) else None


class SharedInformer:
    """Every object of one kind, namespace and selector, kept current by one list and one watch.

    Args:
        name: what it follows, for logs ("pods of namespace x").
        lister: the client's list method with the namespace (and kind) bound.
        label_selector, field_selector: which objects (the server filters).
        watch_seconds: how long the server keeps one watch open before ending it (jittered by up
            to 20% so that many informers do not come back at once).
        request_timeout: seconds a list may take; a watch's read timeout is longer than
            `watch_seconds` by this much, so a dead connection is noticed.
        first_backoff, max_backoff: the retry delays after an error.
        on_change: called from the informer's thread with each changed object (None after a
            list, when anything may have changed); it must not block for long.

    Threads: `start` and `stop` from one thread; everything else from any.
    """

    def __init__(self, name: str, lister: Lister, *, label_selector: str = "",
                 field_selector: str = "", watch_seconds: int = 300,
                 request_timeout: float = 30.0, first_backoff: float = 0.5,
                 max_backoff: float = 30.0, on_change: Callable[[dict | None], None] | None = None,
                 log: logging.Logger | None = None):
        self.name, self.lister = name, lister
        self.selectors = {key: value for key, value in (("label_selector", label_selector),
                                                         ("field_selector", field_selector))
                          if value}
        self.watch_seconds, self.request_timeout = watch_seconds, request_timeout
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.on_change, self.log = on_change, log or LOG
        self.stats = WatchStats()
        self.resource_version: str | None = None  # None: list before the next watch
        self._objects: dict[str, dict] = {}
        self._version = 0  # counts changes of the cache
        self._cond = threading.Condition()
        self._synced = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._response = None  # the open watch, so that stop() can close it
        self._opened = False  # whether the last watch request got a stream

    # -- reading the cache ----------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the first list has filled the cache."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def get(self, name: str) -> dict | None:
        with self._cond:
            return self._objects.get(name)

    def items(self, where: Callable[[dict], bool] | None = None) -> list[dict]:
        with self._cond:
            objects = list(self._objects.values())
        return [obj for obj in objects if where is None or where(obj)]

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the cache changed after version `since` or `timeout` passed; returns the
        version now."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != since or self._stopped.is_set(),
                                timeout)
            return self._version

    # -- running --------------------------------------------------------------------------------

    def start(self) -> SharedInformer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"informer: {self.name}")
            _RUNNING.add(self)
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the watch now; the cache stays readable as it was."""
        _close(self, self._response)
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _run(self) -> None:
        failures = 0  # in a row: a stream that opened resets it
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._opened = False
                self._watch()
                failures = 0
            except Gone:
                self.stats.gone += 1
                self.log.info("Listing %s again: resourceVersion %s is gone", self.name,
                              self.resource_version)
                self.resource_version = None
            except Exception as err:  # noqa: BLE001 - any failure: retry after a backoff
                if self._stopped.is_set():
                    return
                self.stats.errors += 1
                failures = 1 if self._opened else failures + 1
                delay = min(self.max_backoff, self.first_backoff * 2 ** (failures - 1))
                delay *= 1 + 0.5 * random.random()
                # A stream that drops once is routine (proxies cut idle connections); say so
                # quietly, and loudly when the server cannot be reached again and again.
                self.log.log(logging.INFO if failures == 1 else logging.WARNING,
                             "Watching %s failed (%s); retrying in %.1f s", self.name,
                             _describe(err), delay)
                self._stopped.wait(delay)

    def _list(self) -> None:
        self.stats.lists += 1
        response = self.lister(**self.selectors, _preload_content=False,
                               _request_timeout=self.request_timeout)
        try:
            listed = json.loads(response.data)
        finally:
            response.release_conn()
        objects = {object_name(obj): obj for obj in listed.get("items") or []}
        with self._cond:
            self._objects = objects
            self._version += 1
            self.resource_version = (listed.get("metadata") or {}).get("resourceVersion") or "0"
            self._cond.notify_all()
        self._synced.set()
        self._changed(None)

    def _watch(self) -> None:
        """Follow one watch stream until the server ends it; raises Gone on 410."""
        seconds = int(self.watch_seconds * (0.8 + 0.2 * random.random()))
        self.stats.watches += 1
        try:
            response = self.lister(
                **self.selectors, watch=True, resource_version=self.resource_version,
                allow_watch_bookmarks=True, timeout_seconds=seconds, _preload_content=False,
                _request_timeout=(self.request_timeout, seconds + self.request_timeout))
        except Exception as err:
            if _status_code(err) == 410:
                raise Gone from None
            raise
        self._response, self._opened = response, True
        try:
            for line in stream_lines(response):
                if self._stopped.is_set():
                    return
                self._apply(json.loads(line))
        finally:
            self._response = None
            response.release_conn()

    def _apply(self, event: dict) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise WatchError(f"{obj.get('code')} {obj.get('reason', '')}: "
                             f"{obj.get('message', '')}".strip())
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        name = object_name(obj)
        with self._cond:
            if kind == "DELETED":
                self._objects.pop(name, None)
            else:
                self._objects[name] = obj
            self._version += 1
            self.resource_version = version or self.resource_version
            self._cond.notify_all()
        self.stats.events += 1
        self._changed(obj)

    def _changed(self, obj: dict | None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(obj)
        except Exception as err:  # noqa: BLE001 - a reader's bug must not stop the watch
            self.log.warning("Handling a change of %s failed: %s", self.name, err)


class SharedRead:
    """One read that every caller shares, made at most once per `every` seconds.

    For what a kernel cannot watch but must keep roughly current while something shows it (the
    place of queued jobs in Kueue's queue, served by an aggregated API that has no watch): a
    caller within `every` seconds of the last read gets that read's answer, so any number of
    callers cost one request per period, and no caller costs nothing. A read that raises is not
    made again before the period ends either (the caller gets the error, later ones the last
    answer), so a failing server is not asked harder.

    Threads: `get` from any; the read runs in the calling thread, others wait for it.
    """

    def __init__(self, read: Callable[[], Any], every: float,
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.every, self.clock = read, every, clock
        self.reads = 0  # reads made, for tests and benchmarks
        self._value: Any = None
        self._at: float | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            now = self.clock()
            if self._at is None or now - self._at >= self.every:
                self._at = now
                self.reads += 1
                self._value = self.read()
            return self._value


class WatchError(RuntimeError):
    """The watch stream said something went wrong (an ERROR event other than 410)."""


def _describe(err: BaseException) -> str:
    """An error for the log: the API server's status, or the error's kind and message without
    any URL's query string."""
    status = _status_code(err)
    if status is not None:
        return f"{status} {getattr(err, 'reason', '')}".strip()
    return re.sub(r"\?\S*", "?...", f"{err.__class__.__name__}: {err}")[:200]


class LogTail:
    """The last lines of one container's log, kept by one follow stream.

    Args:
        name: what it follows, for logs ("log of pod x").
        open_stream: `open_stream(tail_lines)` opens a follow stream with timestamps
            (`read_namespaced_pod_log(..., follow=True, timestamps=True, tail_lines=...,
            _preload_content=False)`); it raises when the container cannot be read yet.
        keep: how many lines to keep.
        finished: returns True once no more lines can come (the job ended); the tail then
            stops after its stream ends.
        idle_seconds: the stream is closed when `lines` has not been called for this long.

    A new stream after a drop or a container restart starts at the top of what the kubelet
    holds; lines at or before the newest timestamp already kept are skipped.
    """

    def __init__(self, name: str, open_stream: Callable[[int], Any], *, keep: int = 200,
                 finished: Callable[[], bool] = lambda: False, idle_seconds: float = 30.0,
                 first_backoff: float = 1.0, max_backoff: float = 120.0,
                 log: logging.Logger | None = None):
        self.name, self.open_stream, self.keep = name, open_stream, keep
        self.finished, self.idle_seconds = finished, idle_seconds
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.log = log or LOG
        self.opened = 0  # streams opened, for tests and benchmarks
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._last_stamp: str | None = None
        self._asked = time.monotonic()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._response = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"tail: {name}")
        _RUNNING.add(self)
        self._thread.start()

    def lines(self, count: int) -> list[str]:
        """The last `count` lines seen so far."""
        self._asked = time.monotonic()
        with self._lock:
            return list(self._lines)[-count:] if count > 0 else []

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Close the stream now; the lines kept stay readable."""
        _close(self, self._response)

    def _idle(self) -> bool:
        return time.monotonic() - self._asked > self.idle_seconds

    @property
    def idle(self) -> bool:
        """Nobody asked for its lines for `idle_seconds`: whoever owns it may `stop` it (an
        open stream is only left when it next breaks)."""
        return self._idle()

    def _run(self) -> None:
        delays = backoff_delays(self.first_backoff, self.max_backoff)
        while not self._stopped.is_set() and not self._idle():
            try:
                response = self.open_stream(self.keep)
                self.opened += 1
            except Exception as err:  # noqa: BLE001 - not started yet, or the server failed
                if self.finished():
                    return
                delay = next(delays)
                self.log.debug("Cannot follow %s yet (%s); retrying in %.1f s", self.name,
                               _describe(err), delay)
                self._stopped.wait(delay)
                continue
            self._response = response
            try:
                for line in stream_lines(response):
                    self._add([line.decode("utf-8", errors="replace")])
                    if self._stopped.is_set():
                        return
                delays = backoff_delays(self.first_backoff, self.max_backoff)
            except Exception as err:  # noqa: BLE001 - the stream broke: open it again
                self.log.debug("The log stream of %s broke: %s", self.name, _describe(err))
            finally:
                self._response = None
                response.release_conn()
            if self.finished():
                return
            self._stopped.wait(next(delays))

    def _add(self, raw: Iterable[str]) -> None:
        with self._lock:
            fresh, self._last_stamp = unseen_lines(raw, self._last_stamp)
            self._lines.extend(fresh)
