"""A rank's log, read from its pod through the API server (the kubelet keeps it).

`PodLogs` serves the two ways a notebook reads logs:
- a live panel's tail (`tail`): from one follow stream per pod shown (`informer.LogTail`),
  opened at the first call and closed by itself once nobody asked for a while; a longer tail
  than the stream keeps, and a job that has ended, are asked for once instead;
- `%paddle_logs --follow` (`follow`): one follow stream of the rank's pod, opened again without
  repeating a line when the container restarts or the connection drops; where the rank moves
  to another pod (a whole-job restart's), that pod's log from its top.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from urllib3.exceptions import HTTPError

from launcher_magic.engines.base import EngineError
from launcher_magic.engines.cluster.api import ClusterApi, stream_text
from launcher_magic.engines.cluster.informer import LogTail, unseen_lines


class PodLogs:
    """The logs of one engine's pods; `container` is the container whose log is a rank's."""

    def __init__(self, api: ClusterApi, container: str, idle_seconds: float,
                 log: logging.Logger):
        self.api, self.container, self.idle_seconds, self.log = api, container, idle_seconds, log
        self._tails: dict[tuple[str, str], LogTail] = {}
        self._lock = threading.Lock()

    @property
    def streams(self) -> int:
        """How many follow streams are open now (for tests and benchmarks)."""
        with self._lock:
            return sum(1 for tail in self._tails.values() if tail.alive)

    def read(self, namespace: str, pod: str, count: int) -> list[str]:
        """The last `count` lines of the pod's log ([] where it cannot be read yet)."""
        try:
            text = self.api.call(f"reading the log of {pod}", self.api.core.read_namespaced_pod_log,
                                 pod, namespace, container=self.container, tail_lines=count,
                                 missing_ok=True)
        except EngineError:
            return []  # not scheduled yet, or its container has not started
        return (text or "").splitlines()[-count:]

    def tail(self, job_id: str, namespace: str, pod: str, count: int,
             finished: Callable[[], bool]) -> list[str]:
        """The last `count` lines for a live panel: from the pod's follow stream once it is
        open; the first call (and a longer tail than the stream keeps) asks once."""
        stream, new = self._stream(job_id, namespace, pod, finished)
        if not new and count <= stream.keep:
            return stream.lines(count)
        return self.read(namespace, pod, count)

    def _stream(self, job_id: str, namespace: str, pod: str,
                finished: Callable[[], bool]) -> tuple[LogTail, bool]:
        """The follow stream of a pod, and whether this call opened it."""
        core = self.api.core
        with self._lock:
            for key, idle in [(k, t) for k, t in self._tails.items() if t.idle or not t.alive]:
                idle.stop()  # a rank no panel shows any more
                del self._tails[key]
            stream = self._tails.get((job_id, pod))
            if stream is not None and stream.alive:
                return stream, False

            def open_stream(lines: int):
                return core.read_namespaced_pod_log(
                    pod, namespace, container=self.container, follow=True, timestamps=True,
                    tail_lines=lines, _preload_content=False,
                    # A quiet rank's stream is opened again after an hour (one request).
                    _request_timeout=(self.api.request_timeout, 3600.0))

            stream = LogTail(f"log of pod {pod}", open_stream, finished=finished,
                             idle_seconds=self.idle_seconds, log=self.log)
            self._tails[(job_id, pod)] = stream
            return stream, True

    def follow(self, namespace: str, pod_now: Callable[[], str | None],
               ended: Callable[[], bool], poll: float = 1.0) -> Iterator[str]:
        """What the rank writes from now on, until `ended()`: `pod_now()` names the rank's pod
        (None: none yet) and is asked again whenever a stream ends."""
        last, shown = None, None
        while True:
            try:
                pod = pod_now()
                if pod != shown:  # a new pod writes its log from the top
                    last, shown = None, pod
                response = None if pod is None else self.api.call(
                    f"following the log of {pod}", self.api.core.read_namespaced_pod_log, pod,
                    namespace, container=self.container, follow=True, timestamps=True,
                    _preload_content=False, _request_timeout=None, missing_ok=True)
            except EngineError:
                response = None  # not scheduled yet, or its container has not started
            if response is not None:
                try:
                    for line in stream_text(response):
                        fresh, last = unseen_lines([line], last)
                        if fresh:
                            yield fresh[0] + "\n"
                except (HTTPError, OSError):
                    pass  # the stream broke: open it again below
                finally:
                    response.release_conn()
            if ended():
                return
            time.sleep(poll)

    def close(self) -> None:
        with self._lock:
            tails, self._tails = list(self._tails.values()), {}
        for tail in tails:
            tail.stop()
