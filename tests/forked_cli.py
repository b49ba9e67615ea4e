"""The real CLI in a process of its own, forked from a server that has already imported
churnlens and its libraries (:mod:`multiprocessing`'s forkserver, preloaded).

A new interpreter spends seconds importing pandas, DuckDB, LightGBM, scikit-learn and
MLflow before the first line of work: a kill drawn at random over a whole run's duration
then mostly lands in the imports and tests nothing. Forked from the preloaded server, the
child starts at the command itself, so every kill lands in the work (reading, scoring,
writing, renaming), and each run costs seconds less. The child is a separate process
with its own file descriptors, signal handlers and exit status, as a ``churnlens``
command is; stdout and stderr go to ``/dev/null``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from multiprocessing.process import BaseProcess

# the libraries a command imports: the server imports them once, before any fork
PRELOAD = [
    "tests.forked_cli",
    "churnlens.cli",
    "churnlens.scoring",
    "churnlens.training",
    "churnlens.segmenting",
    "churnlens.tracking",
    "churnlens.model_source",
    "lightgbm",
    "sklearn.linear_model",
    "mlflow",
]

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _run(args: list[str], env: dict[str, str], cwd: str) -> None:
    os.environ.clear()
    os.environ.update(env)  # the test's environment now, not the server's at its start
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    from churnlens.cli import app

    app(args, prog_name="churnlens")  # exits with the command's status


def _nothing() -> None:
    pass


@functools.cache
def ready() -> None:
    """Wait for the server's imports (a child that does nothing), once: call it before
    timing a command, so that no command is timed or killed while they run."""
    warm = _CONTEXT.Process(target=_nothing)
    warm.start()
    warm.join(timeout=120)
    assert warm.exitcode == 0, f"the fork server did not start: {warm.exitcode}"


def start(*args: str) -> BaseProcess:
    """``churnlens *args`` started in a forked child; ``.join()``, ``.kill()`` (SIGKILL)
    and ``.exitcode`` (negative: the signal that ended it) as for any process."""
    ready()
    process = _CONTEXT.Process(target=_run, args=(list(args), dict(os.environ), os.getcwd()))
    process.start()
    return process
