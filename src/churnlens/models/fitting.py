"""Mechanics shared by the learners that fit on stacked snapshots: the time split, a row
cap by whole customers, and independent fits run side by side.

A learner's cost grows with its rows, its accuracy hardly does beyond a few hundred
thousand: :func:`cap_rows` keeps a seeded sample of whole customers (all of a customer's
snapshots or none, so no customer sits on both sides of a split), the same customers for
every fit with the same seed.

:func:`side_by_side` runs independent fits (each LightGBM with one thread) in a pool of
threads, one per available core: LightGBM and numpy release the interpreter lock while
they work, and each fit is deterministic, so the results are those of running them one
after the other, in about half the time on two cores. :class:`Background` runs one task
beside the caller (training fits the churn model while it builds the value model).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np
import pandas as pd

from churnlens.errors import ModelError

T = TypeVar("T")


def time_split(X: pd.DataFrame, horizon_days: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation): validation is the latest snapshot.

    Training rows are the snapshots whose label windows (``horizon_days`` after their
    day) end by the validation day, so no training label looks into the validation
    snapshot's label window. With a single snapshot there is no time to split on, so a
    seeded quarter of the customers is held out instead.
    """
    if "as_of" not in (X.index.names or []):
        raise ModelError("training data must be indexed by (as_of, customer_id) snapshots")
    as_of = X.index.get_level_values("as_of")
    latest = as_of.max()
    if (as_of < latest).any():
        valid = np.asarray(as_of == latest)
        train = np.asarray(as_of + pd.Timedelta(days=horizon_days) <= latest) & ~valid
        if train.any():
            return train, valid
        return ~valid, valid
    else:
        valid = np.random.default_rng(0).random(len(X)) < 0.25
    return ~valid, valid


def customer_ids(X: pd.DataFrame) -> np.ndarray:
    """Each row's customer (its position without a ``customer_id`` index level)."""
    if "customer_id" in (X.index.names or []):
        return np.asarray(X.index.get_level_values("customer_id"), dtype=object)
    return np.arange(len(X)).astype(str).astype(object)


def customer_buckets(ids: np.ndarray, seed: int) -> np.ndarray:
    """Each row's bucket in [0, 1,000,000), a seeded hash of its customer: the key by
    which :func:`cap_rows` keeps whole customers."""
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"{seed + 1:016d}")
    return hashed % 1_000_000


def cap_rows(rows: np.ndarray, buckets: np.ndarray, limit: int | None) -> np.ndarray:
    """``rows`` (a boolean mask) thinned to about ``limit`` rows by their customers'
    ``buckets`` (:func:`customer_buckets`: all of a customer's rows or none); unchanged
    within the limit or without one."""
    total = int(rows.sum())
    if limit is None or total <= limit:
        return rows
    return rows & (buckets < limit / total * 1_000_000)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def side_by_side(tasks: Mapping[str, Callable[[], T]]) -> dict[str, T]:
    """Each task's result by name, the tasks run in threads, at most one per core (in
    the order given: put the longest first). An exception in a task is raised here."""
    workers = max(1, min(len(tasks), cores()))
    if workers == 1:
        return {name: task() for name, task in tasks.items()}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="churnlens-fit") as pool:
        futures = {name: pool.submit(task) for name, task in tasks.items()}
        return {name: future.result() for name, future in futures.items()}


class Background(Generic[T]):
    """A task running in a daemon thread (an interrupted run exits without waiting for
    it); :meth:`result` waits for it and returns its value or raises its exception."""

    def __init__(self, task: Callable[[], T]) -> None:
        self._task = task
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="churnlens-background", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._task()
        except BaseException as error:  # handed to the caller by result()
            self._error = error

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
