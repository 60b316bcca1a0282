"""Worker threads for the resampling loops: batches of resamples computed on several cores, the same numbers.

The permutation, bootstrap, baseline and curve loops spend their time in BLAS
products and numpy ufuncs, which release the GIL, so plain threads share the
work without copying the study into other processes. The random draws stay on
the calling thread, in batch order, and each batch writes its own rows of the
result: the numbers do not depend on the number of workers (at a given batch size, see
:mod:`fairlandmark.stats.significance`).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import numpy as np

from fairlandmark.exceptions import InputError

__all__ = ["MSG_N_JOBS", "check_n_jobs", "resolve_workers", "workers_for", "MIN_THREADED_WORK", "BatchPool",
           "batch_pool", "run_parts", "run_all", "TaskQueue", "share_batches", "Background"]

MSG_N_JOBS = "n_jobs: must be a non-zero integer (-1 = all cores, 1 = no worker threads), got {value!r}"

T = TypeVar("T")
# Below this many (row x column x resample) operations a study is resampled on the calling thread alone:
# starting threads and handing them small batches then costs more than it saves (measured: small audits ran
# up to 1.6x slower on two threads; the paper-scale audit, 1.4e9, runs 1.6x faster).
MIN_THREADED_WORK = 50_000_000


def check_n_jobs(n_jobs: object) -> int:
    """Return ``n_jobs`` if it is a non-zero integer (negative counts from the number of cores, as in joblib)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise InputError(MSG_N_JOBS.format(value=n_jobs))
    return int(n_jobs)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def resolve_workers(n_jobs: int) -> int:
    """Threads for ``n_jobs``: itself when positive, ``cores + 1 + n_jobs`` when negative (-1 = all cores).

    Examples
    --------
    >>> resolve_workers(1)
    1
    >>> resolve_workers(-1) >= 1
    True
    """
    n_jobs = check_n_jobs(n_jobs)
    return n_jobs if n_jobs > 0 else max(1, _available_cores() + 1 + n_jobs)


def workers_for(n_jobs: int, work: float) -> int:
    """Threads for a resampling job of ``work`` operations: :func:`resolve_workers`, or 1 for small jobs.

    Examples
    --------
    >>> workers_for(-1, 1e3)
    1
    """
    return resolve_workers(n_jobs) if work >= MIN_THREADED_WORK else 1


class BatchPool:
    """Run batch computations on worker threads, at most ``workers`` of them pending at a time.

    With one worker each batch runs at once on the calling thread. The first exception of a batch is raised
    again by :meth:`submit` or when the pool closes; batches not yet started are cancelled.

    Examples
    --------
    >>> out = [0] * 4
    >>> with batch_pool(2) as pool:
    ...     for i in range(4):
    ...         pool.submit(out.__setitem__, i, i * i)
    >>> out
    [0, 1, 4, 9]
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._executor = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        self._pending: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker (at once with one worker); waits while ``workers`` batches are pending."""
        if self._executor is None:
            fn(*args)
            return
        # Bounded: the caller draws the next batch while the workers compute, without piling batches up.
        while len(self._pending) >= self.workers:
            self._pending.pop(0).result()
        self._pending.append(self._executor.submit(fn, *args))

    def close(self, *, cancel: bool = False) -> None:
        """Wait for every batch and raise the first error; with ``cancel``, drop the batches not yet started."""
        try:
            while self._pending and not cancel:
                self._pending.pop(0).result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pending = []
            if self._executor is not None:
                self._executor.shutdown(wait=True)


@contextmanager
def batch_pool(workers: int) -> Iterator[BatchPool]:
    """A :class:`BatchPool` that waits for its batches (and raises their first error) on leaving the block."""
    pool = BatchPool(workers)
    try:
        yield pool
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close()


def run_parts(work: Callable[[int], Any], parts: Sequence[int] | range, workers: int) -> None:
    """Call ``work(part)`` for every part, on up to ``workers`` threads (parts write disjoint results).

    Examples
    --------
    >>> out = [0, 0, 0]
    >>> run_parts(lambda i: out.__setitem__(i, i + 1), range(3), workers=2)
    >>> out
    [1, 2, 3]
    """
    with batch_pool(min(workers, max(1, len(parts)))) as pool:
        for part in parts:
            pool.submit(work, part)


def run_all(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """The results of independent tasks, in order, computed on up to ``workers`` threads.

    Examples
    --------
    >>> run_all([lambda: 1, lambda: 2], workers=2)
    [1, 2]
    """
    results: list[Any] = [None] * len(tasks)

    def work(i: int) -> None:
        results[i] = tasks[i]()

    run_parts(work, range(len(tasks)), workers)
    return results


class TaskQueue:
    """Independent tasks, each taken once, in order, by whichever thread is free to call :meth:`work`.

    A :class:`Background` thread given the queue takes tasks when its own task ends; the calling thread takes
    what is left when it is done with its own work. Which thread computes a task changes no number.

    Examples
    --------
    >>> queue = TaskQueue()
    >>> first, second = queue.put(lambda: 1), queue.put(lambda: 2)
    >>> queue.work()
    >>> first.result(), second.result()
    (1, 2)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tasks: deque[tuple[Callable[[], Any], Future[Any]]] = deque()

    def put(self, fn: Callable[[], T]) -> Future[T]:
        """Queue a task.

        Parameters
        ----------
        fn : callable
            Called without arguments by the thread that takes the task.

        Returns
        -------
        concurrent.futures.Future
            Its result, or its exception, once a thread has run it.
        """
        future: Future[T] = Future()
        with self._lock:
            self._tasks.append((fn, future))
            self._changed.notify_all()
        return future

    def work(self) -> None:
        """Run queued tasks on this thread until none is left (another thread may be running the last ones).

        A task's exception goes to its future. An interrupt (``KeyboardInterrupt``, ``SystemExit``) goes there
        too and is raised again here at once, so that Ctrl-C is never held back until the queue is empty.
        """
        while True:
            future: Future[Any] | None = None
            try:
                with self._lock:
                    if not self._tasks:
                        return
                    fn, future = self._tasks.popleft()
                if future.set_running_or_notify_cancel():  # False: cancelled
                    future.set_result(fn())
            except BaseException as error:  # handed to whoever asks for the result
                if future is not None and not future.done():
                    future.set_exception(error)
                if not isinstance(error, Exception):
                    raise

    def wait(self, timeout: float, unless: threading.Event) -> None:
        """Wait up to ``timeout`` seconds for a task to be queued or :meth:`wake` to be called, unless a task is
        queued already or ``unless`` is set (checked under the queue's lock, so no wake-up is missed)."""
        with self._lock:
            if not self._tasks and not unless.is_set():
                self._changed.wait(timeout)

    def wake(self) -> None:
        """Wake the threads in :meth:`wait` (something they wait for has happened)."""
        with self._lock:
            self._changed.notify_all()

    def cancel(self) -> None:
        """Drop the tasks not yet started (their futures are cancelled)."""
        with self._lock:
            tasks, self._tasks = list(self._tasks), deque()
        for _, future in tasks:
            future.cancel()


def share_batches(queue: TaskQueue, batches: Iterator[tuple[Any, ...]], work: Callable[..., Any], count: int) -> None:
    """``work(*batch)`` for every batch, as tasks of ``queue`` shared with any other thread working it.

    The batches are drawn from the iterator in order, one at a time under a lock, by whichever thread takes a
    task. This thread works the queue, then waits for the tasks that other threads took; the first error of a
    batch is raised here, and once a batch has failed the tasks left start no other batch.

    Parameters
    ----------
    queue : TaskQueue
    batches : iterator of tuple
        The arguments of each call; each batch must write its own results (the order of the calls varies).
    work : callable
    count : int
        Tasks to queue, about the number of batches: a task that finds none left does nothing, and batches
        left over after them are computed here.

    Examples
    --------
    >>> out = []
    >>> share_batches(TaskQueue(), iter([(1,), (2,), (3,)]), out.append, count=2)
    >>> out
    [1, 2, 3]
    """
    lock = threading.Lock()
    failed = threading.Event()

    def task() -> None:
        if failed.is_set():
            return
        with lock:
            batch = next(batches, None)
        if batch is None:
            return
        try:
            work(*batch)
        except BaseException:
            failed.set()
            raise

    futures = [queue.put(task) for _ in range(count)]
    queue.work()
    for future in futures:
        future.result()
    for batch in batches:  # more batches than tasks: the rest here (no other thread draws any more)
        work(*batch)


class Background(Generic[T]):
    """A task started on its own (daemon) thread now (``concurrent``), or run later by :meth:`result`, in order.

    The task receives a :class:`threading.Event` as its last argument: :meth:`cancel` sets it, and a long task
    checks it between batches and gives up (an error or Ctrl-C on the calling thread does not wait for it).
    With ``then``, the thread goes on to take tasks from that :class:`TaskQueue` once its own task ends.

    Examples
    --------
    >>> task = Background(lambda a, b, stop: a + b, 1, 2, concurrent=True)
    >>> task.result()
    3
    """

    def __init__(self, fn: Callable[..., T], *args: Any, concurrent: bool, then: TaskQueue | None = None) -> None:
        self.stop = threading.Event()
        self._call = (fn, args)
        self._then = then
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if concurrent:
            self._thread = threading.Thread(target=self._run, name="fairlandmark-beside", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        fn, args = self._call
        try:
            self._value = fn(*args, self.stop)
        except BaseException as error:  # handed to the caller by result() / check()
            self._error = error
        finally:
            self._done.set()
            if self._then is not None:
                self._then.wake()  # a caller in result_helping
        # A failed or cancelled task starts nothing more: the caller is about to give up.
        if self._then is not None and self._error is None and not self.stop.is_set():
            self._then.work()

    @property
    def running(self) -> bool:
        """Whether the thread is still busy: its own task, or tasks taken from its queue."""
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> None:
        """Raise the task's error now if it has already failed (so a broken task stops the caller early)."""
        if self._done.is_set() and self._error is not None:
            raise self._error

    def result(self) -> T:
        """The task's return value (its exception raised here); waits for it, or runs it now."""
        if self._thread is None:
            fn, args = self._call
            return fn(*args, self.stop)
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def result_helping(self) -> T:
        """:meth:`result`, taking tasks from its ``then`` queue while waiting (the task may queue some of its own
        and wait for them)."""
        if self._thread is not None and self._then is not None:
            while not self._done.is_set():
                self._then.work()
                self._then.wait(0.05, unless=self._done)  # woken by a new task or the end of this one
        return self.result()

    def cancel(self) -> None:
        """Ask the task to give up, and its queue to start nothing more; does not wait for it."""
        self.stop.set()
        if self._then is not None:
            self._then.cancel()
