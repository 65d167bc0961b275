"""The upload's worker threads: daemon threads, so that a part abandoned on a stalled link never holds
the interpreter's exit.

concurrent.futures.ThreadPoolExecutor's workers are joined at interpreter exit (its atexit hook), even
after ``shutdown(wait=False)``: a part blocked on a trickling store then held dumplib's process for the
SDK's read timeout (60 s measured, py-spy in ``_python_exit``), although Uploader.abort promises never
to wait for a part on the wire. These threads are daemons: an abandoned part dies with the process and,
never acknowledged, is never committed. Futures are concurrent.futures' own, so ``wait`` works on them.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading

from .._bounded import start_thread

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

    Job = Optional[Tuple["concurrent.futures.Future[Any]", Callable[..., Any], Tuple[Any, ...]]]


class DaemonPool:
    """*workers* daemon threads running submitted calls in order; what an Uploader needs of an executor."""

    def __init__(self, workers: int, name: str, initializer: Callable[[], None]) -> None:
        self._jobs: "queue.SimpleQueue[Job]" = queue.SimpleQueue()
        self._initializer = initializer
        self._threads: List[threading.Thread] = []
        for i in range(workers):
            thread = threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            try:
                start_thread(thread, "an upload thread")
            except BaseException:
                self.shutdown(wait=False)  # those already started end at their first job: a None
                raise
            self._threads.append(thread)

    def submit(self, fn: Callable[..., Any], *args: Any) -> "concurrent.futures.Future[Any]":
        future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """No more work: each thread ends once the queue before it is done (*cancel_futures*: calls not
        begun are cancelled first); *wait*: until they have."""
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        self._initializer()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it began
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever waits on the future, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)
