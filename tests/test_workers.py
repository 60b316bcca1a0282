"""Worker threads change the speed of the resampling loops, never their numbers.

Draws stay in order on the calling thread and each batch writes its own rows, so the JSON document of an
audit is the same for any ``n_jobs``: fast and general paths, shared images, missing predictions, the
large-sample null, and the error-curve test that runs alongside the bootstrap.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fairlandmark import audit_arrays
from fairlandmark.audit import prepare_study
from fairlandmark.exceptions import InputError
from fairlandmark.stats import significance as significance_module
from fairlandmark.stats.significance import SignificanceOptions, run_significance
from fairlandmark.stats.workers import (Background, BatchPool, TaskQueue, batch_pool, resolve_workers, run_all,
                                       share_batches)

# A warning silenced with ``warnings.catch_warnings`` on one worker thread can leak from another: the
# resampling code must not need it (numpy's "Mean of empty slice" once escaped this way).
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


@pytest.fixture(autouse=True)
def threads_even_for_small_studies(monkeypatch):
    """These studies are small; without this they would run on the calling thread alone (MIN_THREADED_WORK)."""
    from fairlandmark.stats import workers

    monkeypatch.setattr(workers, "MIN_THREADED_WORK", 0)


def _study(seed=0, n=150, k=5, runs=3, shared=False, missing=False):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 100, size=(n, k, 2))
    pred = true + rng.normal(0, 1.4, size=(n, k, 2))
    if missing:
        pred[rng.random((n, k)) < 0.03] = np.nan
    groups = {"sex": rng.choice(["F", "M"], n), "site": np.resize(["A", "B", "C"], n)}
    if shared:  # the same images in every run
        per_run = n // runs
        ids = np.tile(np.arange(per_run), runs).astype(str)
        groups = {key: np.tile(value[:per_run], runs) for key, value in groups.items()}
        return pred, true, groups, np.repeat(np.arange(runs), per_run), ids
    return pred, true, groups, np.arange(n) % runs, np.arange(n).astype(str)


def _document(study, n_jobs, **options):
    pred, true, groups, runs, ids = study
    sig = SignificanceOptions(permutations=300, bootstrap=60, baseline_repeats=40, seed=11, n_jobs=n_jobs,
                              batch_size=70, **options)
    return audit_arrays(pred, true, groups, runs=runs, image_ids=ids, spacing_mm=1.0, min_group_size=3,
                        significance=sig, curves={"phi": [0.5, 1.0, 2.0, 3.0]}).to_json()


@pytest.mark.parametrize("case", [
    {}, {"shared": True}, {"missing": True}, {"shared": True, "missing": True},
])
def test_the_numbers_do_not_depend_on_the_workers(case):
    study = _study(seed=3, **case)
    one = _document(study, 1)
    assert _document(study, 2) == one
    assert _document(study, 3) == one
    assert _document(study, -1) == one


def test_the_large_sample_null_does_not_depend_on_the_workers():
    study = _study(seed=4)
    assert _document(study, 1, method="normal") == _document(study, 2, method="normal")


def test_the_settings_do_not_mention_the_workers():
    doc = _document(_study(seed=5), 2)
    assert "n_jobs" not in doc


@pytest.mark.parametrize("bad", [0, 1.5, True, "2", None])
def test_bad_n_jobs_is_one_clear_error(bad):
    with pytest.raises(InputError, match="n_jobs: must be a non-zero integer"):
        SignificanceOptions(n_jobs=bad)


def test_small_jobs_stay_on_the_calling_thread(monkeypatch):
    from fairlandmark.stats import workers

    monkeypatch.setattr(workers, "MIN_THREADED_WORK", 1000)
    monkeypatch.setattr(workers, "_available_cores", lambda: 4)
    assert workers.workers_for(-1, 999) == 1 and workers.workers_for(-1, 1000) == 4
    assert workers.workers_for(2, 10**9) == 2


def test_numpy_integers_are_fine_for_n_jobs():
    assert SignificanceOptions(n_jobs=np.int64(2)).n_jobs == 2


def test_resolve_workers_counts_from_the_cores(monkeypatch):
    from fairlandmark.stats import workers

    monkeypatch.setattr(workers, "_available_cores", lambda: 8)
    assert [resolve_workers(n) for n in (1, 3, -1, -2, -8, -20)] == [1, 3, 8, 7, 1, 1]


def _failing_at_batch_2(done):
    """A batch function that records its batch numbers and fails at batch 2."""

    def work(i):
        if i == 2:
            raise ValueError("batch 2 broke")
        done.append(i)

    return work


def test_a_failing_batch_raises_and_cancels_the_rest():
    done = []
    work = _failing_at_batch_2(done)
    with pytest.raises(ValueError, match="batch 2 broke"):
        with batch_pool(2) as pool:
            for i in range(50):
                pool.submit(work, i)
    assert len(done) < 49  # the pool stopped taking batches once one had failed


def test_pool_with_one_worker_runs_inline():
    pool = BatchPool(1)
    seen = []
    pool.submit(lambda: seen.append(threading.current_thread().name))
    pool.close()
    assert seen == [threading.current_thread().name]


def test_run_all_keeps_the_order_and_background_returns_or_raises():
    assert run_all([lambda i=i: i * i for i in range(7)], workers=3) == [0, 1, 4, 9, 16, 25, 36]
    assert Background(lambda x, stop: sorted(x), [3, 1, 2], concurrent=True).result() == [1, 2, 3]
    assert Background(lambda x, stop: sorted(x), [3, 1, 2], concurrent=False).result() == [1, 2, 3]
    broken = Background(lambda stop: 1 / 0, concurrent=True)
    with pytest.raises(ZeroDivisionError):
        broken.result()
    with pytest.raises(ZeroDivisionError):
        broken.check()  # a failed task stops its caller at the next check


def test_queued_tasks_run_once_each_on_whichever_thread_is_free():
    queue = TaskQueue()
    release = threading.Event()
    threads = []

    def task(i):
        threads.append((i, threading.current_thread().name))
        return i * 10

    futures = [queue.put(lambda i=i: task(i)) for i in range(6)]
    failed = queue.put(lambda: 1 / 0)
    # The other thread takes queued tasks once its own task ends; this thread takes the rest.
    beside = Background(lambda stop: release.wait(5) and "own", concurrent=True, then=queue)
    assert beside.running
    release.set()
    queue.work()
    assert beside.result() == "own"
    assert [f.result() for f in futures] == [0, 10, 20, 30, 40, 50]
    assert sorted(i for i, _ in threads) == list(range(6))  # each task once
    with pytest.raises(ZeroDivisionError):
        failed.result()  # an error goes to whoever asks for the result
    deadline = time.perf_counter() + 5
    while beside.running and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert not beside.running


def test_cancel_drops_the_queued_tasks_not_yet_started():
    queue = TaskQueue()
    ran = []
    started = threading.Event()
    beside = Background(lambda stop: started.set() or stop.wait(5), concurrent=True, then=queue)
    futures = [queue.put(lambda i=i: ran.append(i)) for i in range(3)]
    assert started.wait(5)
    beside.cancel()  # the task is told to stop, and its queue starts nothing more
    assert beside.result() is True
    assert all(f.cancelled() for f in futures)
    queue.work()
    assert ran == []


def test_an_interrupt_in_a_queued_task_is_raised_at_once():
    import _thread

    queue = TaskQueue()
    ran = []

    def interrupted():
        _thread.interrupt_main()  # Ctrl-C, delivered to this (the main) thread
        time.sleep(1)

    first = queue.put(interrupted)
    second = queue.put(lambda: ran.append(2))
    with pytest.raises(KeyboardInterrupt):
        queue.work()
    assert ran == []  # not held back until the queue is empty
    assert isinstance(first.exception(), KeyboardInterrupt)
    assert not second.done()


def test_shared_batches_stop_after_a_failure_and_none_is_left_out():
    done = []
    work = _failing_at_batch_2(done)
    with pytest.raises(ValueError, match="batch 2 broke"):
        share_batches(TaskQueue(), iter([(i,) for i in range(20)]), work, count=20)
    assert done == [0, 1]  # the tasks left start no other batch
    # More batches than tasks: the rest are computed too, in order.
    done.clear()
    share_batches(TaskQueue(), iter([(i,) for i in range(5) if i != 2]), work, count=2)
    assert done == [0, 1, 3, 4]


def test_the_caller_takes_the_tasks_its_background_waits_for():
    # The background task queues work and waits for it without working the queue itself: only the caller,
    # waiting with result_helping, can take it.
    queue = TaskQueue()

    def own(stop):
        return queue.put(lambda: threading.current_thread().name).result(timeout=10)

    beside = Background(own, concurrent=True, then=queue)
    assert beside.result_helping() == threading.current_thread().name


def test_ctrl_c_while_helping_the_other_test_tells_it_to_stop():
    import _thread

    study = _prepared()
    observed = _observed(study)
    told_to_stop = threading.Event()

    def other(options, drawn, queue, stop):
        # A batch of this test that the DP side takes while it waits, and that is interrupted there.
        queue.put(lambda: _thread.interrupt_main() or time.sleep(1))
        if stop.wait(20):
            told_to_stop.set()

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_significance(study, thresholds=[2.0], min_group_size=3, observed=observed,
                         options=SignificanceOptions(permutations=50, bootstrap=10, baseline_repeats=5, n_jobs=2),
                         alongside=other)
    assert told_to_stop.wait(5)
    assert time.perf_counter() - started < 15


def _prepared(seed=6):
    pred, true, groups, runs, ids = _study(seed=seed)
    import pandas as pd

    n, k = pred.shape[:2]
    rows = pd.DataFrame({
        "run": np.repeat(runs, k), "image_id": np.repeat(ids, k), "keypoint": np.tile(np.arange(1, k + 1), n),
        "pred_x": pred[..., 0].ravel(), "pred_y": pred[..., 1].ravel(),
        "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel()})
    meta = pd.DataFrame({"image_id": ids, **groups})
    return prepare_study(rows, meta, attributes=["sex", "site"], spacing_mm=1.0)


def _observed(study):
    from fairlandmark.audit import run_audit

    return run_audit(study, thresholds_mm=[2.0], min_group_size=3, significance=None, curves=False,
                     emit_warnings=False).observed


def test_alongside_gets_the_shared_permutations_and_its_result_is_kept():
    study = _prepared()
    calls = []

    def other(options, drawn, queue, stop):
        calls.append((options.n_jobs, None if drawn is None else drawn.shape))
        return "curves"

    for n_jobs in (1, 2):
        sig = run_significance(study, thresholds=[2.0], min_group_size=3, observed=_observed(study),
                               options=SignificanceOptions(permutations=50, bootstrap=10, baseline_repeats=5,
                                                           n_jobs=n_jobs),
                               alongside=other)
        assert sig.alongside == "curves"
    n_images = len(np.unique(study.row_image))
    assert calls == [(1, (50, n_images)), (1, (50, n_images))]  # side by side: one thread of its own


def test_an_error_beside_or_in_the_significance_run_surfaces(monkeypatch):
    study = _prepared()
    observed = _observed(study)
    options = SignificanceOptions(permutations=50, bootstrap=10, baseline_repeats=5, n_jobs=2)

    def broken(options, drawn, queue, stop):
        raise RuntimeError("the other test broke")

    with pytest.raises(RuntimeError, match="the other test broke"):
        run_significance(study, thresholds=[2.0], min_group_size=3, observed=observed, options=options,
                         alongside=broken)
    # An error in this run does not wait for the other test: it is told to stop, and gives up.
    gave_up = threading.Event()

    def slow(options, drawn, queue, stop):
        for _ in range(600):  # 60 s unless told to stop
            if stop.wait(0.1):
                gave_up.set()
                return None
        return 1

    monkeypatch.setattr(significance_module, "_bootstrap", lambda *a, **k: (_ for _ in ()).throw(MemoryError("boot")))
    started = time.perf_counter()
    with pytest.raises(MemoryError, match="boot"):
        run_significance(study, thresholds=[2.0], min_group_size=3, observed=observed, options=options,
                         alongside=slow)
    assert time.perf_counter() - started < 20
    assert gave_up.wait(5)


def test_the_curve_test_gives_up_when_told_to_stop():
    from concurrent.futures import CancelledError

    from fairlandmark.stats.curves import error_curves

    study = _prepared()
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        error_curves(study, significance=SignificanceOptions(permutations=50, n_jobs=1), stop=stop)


def test_fewer_workers_when_their_batches_do_not_fit(monkeypatch):
    study = _prepared()
    original = significance_module._batch_size_that_fits

    def fits(study, options, slots=1):
        if slots > 2:
            raise InputError("too big")
        return original(study, options, slots)

    monkeypatch.setattr(significance_module, "workers_for", lambda n_jobs, work: 4)
    monkeypatch.setattr(significance_module, "_batch_size_that_fits", fits)
    workers, _ = significance_module._workers_and_batch(study, SignificanceOptions())
    assert workers == 1  # 4 -> 2 workers (3 slots) does not fit either -> 1
