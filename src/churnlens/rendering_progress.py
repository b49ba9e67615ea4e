"""Progress while a command runs: a rich bar or spinner on a terminal, plain timestamped
lines otherwise (cron, a pipe, a log file), on standard error.

A nightly job's log then reads as a timeline::

    2025-06-02T02:00:01+00:00 score: checking the inputs and loading the models
    2025-06-02T02:00:11+00:00 Scoring partitions: 0/6
    2025-06-02T02:00:40+00:00 Scoring partitions: 1/6 (0 customers, 0/s)
    ...

Part of :mod:`churnlens.rendering` (kept apart for its length); imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

err_console = Console(stderr=True)


def interactive() -> bool:
    """Whether standard error is a terminal (rich bars) or not (plain lines)."""
    return err_console.is_terminal


def line(text: str) -> None:
    """One plain progress line with the local time, to standard error."""
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    err_console.print(f"{now} {text}", markup=False, highlight=False, soft_wrap=True)


def step(text: str) -> None:
    """A step of a command, as a plain line when not on a terminal (a terminal shows the
    spinner or bar of the step instead)."""
    if not interactive():
        line(text)


class PlainStatus:
    """A spinner's stand-in off a terminal: a line at the start, at each update and at
    the end with the time taken."""

    def __init__(self, text: str) -> None:
        self.text, self.started = text.rstrip("."), time.perf_counter()

    def update(self, text: str) -> None:
        self.text = text.rstrip(".")
        line(self.text)

    def __enter__(self) -> PlainStatus:
        line(self.text)
        return self

    def __exit__(self, *exc: object) -> None:
        outcome = "failed" if exc[0] is not None else "done"
        line(f"{outcome} after {time.perf_counter() - self.started:.1f} s")


def status(console: Console, text: str) -> Any:
    """A spinner with ``text`` on a terminal; plain lines otherwise."""
    return console.status(text) if interactive() else PlainStatus(text)


@contextlib.contextmanager
def partition_progress(label: str) -> Iterator[Callable[[int, int, int], None]]:
    """Progress over partitions with customers per second: a rich bar on a terminal (its
    total known from the first call, made before the first partition), else a line per
    partition."""
    started = time.perf_counter()

    def rate(customers: int) -> str:
        return f"{customers / max(time.perf_counter() - started, 1e-9):,.0f} customers/s"

    if not interactive():
        seen: set[tuple[int, int]] = set()

        def report(done: int, total: int, customers: int) -> None:
            if (done, total) not in seen:
                seen.add((done, total))
                line(f"{label}: {done}/{total} ({customers:,} customers, {rate(customers)})")

        yield report
        line(f"{label}: finished after {time.perf_counter() - started:.1f} s")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, rate="")

        def advance(done: int, total: int, customers: int) -> None:
            bar.update(task, completed=done, total=total, rate=rate(customers))

        yield advance
