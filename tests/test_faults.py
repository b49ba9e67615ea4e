"""Faults: killed jobs, two jobs on one output, reruns. Nothing is lost or interleaved."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import pandas as pd
import pytest

from churnlens import InputError
from churnlens.bundle import load_bundle
from churnlens.model_source import load_models
from churnlens.scoring import score
from churnlens.work_folders import output_lock
from tests import forked_cli
from tests.conftest import AS_OF, record_count

KILLS = 3  # random kill points per job kind


@pytest.fixture(scope="module")
def events_path(sample_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    late = sample_events.head(5).assign(
        timestamp=pd.Timestamp("2025-03-01"), amount=[1001.0, 1002.0, 1003.0, 1004.0, 1005.0]
    )
    pd.concat([sample_events, late], ignore_index=True).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def bundle(churn_bundle: Path) -> Path:
    """The shared model trained as of ``AS_OF`` (no segments beside it). It was trained on
    the sample log without this module's late events, which are there for the scoring:
    a training as of ``AS_OF`` reads nothing after it."""
    return churn_bundle


def _cli(*args: str) -> BaseProcess:
    """``churnlens *args`` in a process of its own, forked with its imports done (see
    :mod:`tests.forked_cli`): a kill drawn over a run's duration lands in the work."""
    return forked_cli.start(*args)


def _wait(proc: BaseProcess, seconds: float) -> int:
    proc.join(timeout=seconds)
    assert proc.exitcode is not None, f"still running after {seconds} s"
    return proc.exitcode


def _duration(args: list[str], timed: Path | None = None, out: Path | None = None) -> float:
    """Seconds the shorter of two whole runs of ``args`` takes (writing to ``timed``
    instead of ``out`` when given): on a busy machine one run can take twice another,
    and kills drawn over a slow run's length would land after the faster runs end."""
    forked_cli.ready()
    swapped = [str(timed) if timed and a == str(out) else a for a in args]
    taken = []
    for _ in range(2):
        started = time.perf_counter()
        assert _wait(_cli(*swapped), 300) == 0
        taken.append(time.perf_counter() - started)
    return min(taken)


def _kill_after(proc: BaseProcess, seconds: float) -> bool:
    """SIGKILL after ``seconds`` unless it finished first; True when it was killed."""
    proc.join(timeout=seconds)
    if proc.exitcode is not None:
        return False
    proc.kill()
    return _wait(proc, 30) == -signal.SIGKILL


@pytest.mark.slow
def test_scoring_killed_at_random_points_loses_nothing(
    events_path: Path, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    first = score(events_path, AS_OF, out, load_models(bundle))
    before = out.read_bytes()

    def manifest() -> dict:
        # a kill after the rename of a complete run may leave a newer manifest of the same
        # scores: compare what it says about them
        data = json.loads(first.manifest_path.read_text())
        keys = ("as_of", "rows", "stages", "actions", "input_fingerprint", "model_version")
        return {k: data[k] for k in keys}

    described = manifest()
    rng = random.Random(11)
    args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(out)]
    args += ["--model", str(bundle), "--partitions", "6", "--no-track"]
    # kill points drawn within a whole run's duration, measured here (machines differ)
    duration = _duration(args, tmp_path / "timed.parquet", out)
    killed = 0
    for _ in range(KILLS):
        killed += _kill_after(_cli(*args), rng.uniform(0.1, 0.9) * duration)
        assert out.read_bytes() == before  # never partial, never lost
        assert manifest() == described
    record_count("SIGKILLs landed in a scoring run", killed)
    again = score(events_path, AS_OF, out, load_models(bundle))  # the next run succeeds
    assert again.manifest["rows"] == first.manifest["rows"]
    assert not list(tmp_path.glob(".scores.parquet.work.*"))  # stale work removed
    assert killed >= 1, "no kill landed inside a run; widen the window"


@pytest.mark.slow
def test_training_killed_at_random_points_keeps_every_bundle_whole(
    events_path: Path, churn_bundle: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(churn_bundle.parent, models)  # an earlier training's bundles, kept whole
    config = tmp_path / "config.yaml"
    config.write_text(
        "training: {horizon_days: 60, snapshot_step_days: 60, min_history_days: 60}\n"
        "model: {n_estimators: 80, min_child_samples: 40}\n"
    )
    rng = random.Random(5)
    args = ["train", str(events_path), "--as-of", AS_OF, "--config", str(config)]
    args += ["--models-dir", str(models), "--no-track"]
    duration = _duration(args)  # into the same models folder: its bundles stay whole
    killed = 0
    for _ in range(KILLS):
        killed += _kill_after(_cli(*args), rng.uniform(0.1, 0.9) * duration)
        for bundle_dir in models.iterdir():
            if not bundle_dir.name.startswith("."):  # hidden: a killed run's temporary
                load_bundle(bundle_dir)  # whole, hashes verified
    record_count("SIGKILLs landed in a training run", killed)
    done = subprocess.run([sys.executable, "-m", "churnlens.cli", *args], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_second_job_on_the_same_output_fails_fast(events_path, bundle, tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    with output_lock(out):
        with pytest.raises(InputError, match=r"another churnlens job .* is writing"):
            score(events_path, AS_OF, out, load_models(bundle))
        done = subprocess.run(
            [sys.executable, "-m", "churnlens.cli", "score", str(events_path), "--as-of", AS_OF,
             "--out", str(out), "--model", str(bundle), "--no-track"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "writing this output right now" in " ".join(done.stderr.split())
    assert not out.exists()
    assert score(events_path, AS_OF, out, load_models(bundle)).path == out  # lock released


@pytest.mark.slow
def test_two_jobs_started_together_never_interleave(events_path, bundle, tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(out)]
    args += ["--model", str(bundle), "--no-track"]
    procs = [_cli(*args) for _ in range(2)]
    codes = sorted(_wait(p, 300) for p in procs)
    assert codes in ([0, 0], [0, 1])  # one after the other, or the second refused
    frame = pd.read_parquet(out)
    assert frame["customer_id"].is_unique
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["rows"] == len(frame)


def test_same_input_and_model_give_byte_identical_scores(events_path, bundle, tmp_path) -> None:
    a = score(events_path, AS_OF, tmp_path / "a.parquet", load_models(bundle), partitions=3)
    b = score(events_path, AS_OF, tmp_path / "b.parquet", load_models(bundle), partitions=3)
    assert a.path.read_bytes() == b.path.read_bytes()


def test_events_after_as_of_are_ignored_and_counted(events_path, bundle, tmp_path) -> None:
    result = score(events_path, AS_OF, tmp_path / "s.parquet", load_models(bundle))
    assert result.manifest["events_after_as_of_ignored"] == 5
    from churnlens.features.batched import write_features

    features = write_features(events_path, AS_OF, tmp_path / "f.parquet")
    assert features.events_after_as_of == 5


def _dead_pid() -> int:
    """A process id no process has now: a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_during_score_leaves_no_work_folder(
    events_path: Path, bundle: Path, tmp_path: Path, number: int
) -> None:
    out = tmp_path / "2025-02-03.parquet"  # date-named: no later run on this output
    proc = _cli("score", str(events_path), "--as-of", AS_OF, "--out", str(out), "--model",
                str(bundle), "--partitions", "6", "--no-track")  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".2025-02-03.parquet.work.*")) and proc.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, number)
    code = _wait(proc, 60)
    if code != 0:  # it was stopped mid-run, not finished before the signal landed
        assert not out.exists()
    assert not list(tmp_path.glob(".2025-02-03.parquet.*"))  # work and temporary files


def test_work_left_by_dead_processes_is_swept_and_live_work_kept(
    events_path: Path, bundle: Path, tmp_path: Path
) -> None:
    dead, alive = _dead_pid(), os.getpid()
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
    stale = tmp_path / f".2025-01-01.parquet.work.{dead}-{host}.abc123"
    older = tmp_path / f".2024-12-01.parquet.work.{dead}.jkl012"  # named without a host
    kept = tmp_path / f".2025-01-02.parquet.work.{alive}-{host}.def456"
    # a job on another machine sharing the folder: its process id means nothing here
    elsewhere = tmp_path / f".2025-01-03.parquet.work.{dead}-other-node-7.mno345"
    partial = tmp_path / "models" / f".churn-20250101-x.bundle.{dead}-{host}.ghi789"
    for folder in (stale, older, kept, elsewhere, partial):
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"partial")
    score(events_path, AS_OF, tmp_path / "2025-02-03.parquet", load_models(bundle))
    assert not stale.exists() and not older.exists()
    assert kept.exists() and elsewhere.exists()
    from churnlens.bundle import write_bundle

    model = load_bundle(bundle, "churn")[0]
    write_bundle(tmp_path / "models" / "churn-new", model, {"as_of": AS_OF})
    assert not partial.exists()
