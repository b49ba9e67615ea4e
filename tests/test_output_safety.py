"""Nothing a job writes may cost a user's input or an earlier output (issue: trust, 1-4).

- an output that is an input file, or lies inside an input folder, is refused before work;
- the scores file and its manifest are replaced as one step, even when the job is
  killed between the two renames;
- a full disk or an unwritable path gives one clear line and exit 1, earlier outputs
  left as they were.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churnlens import InputError
from churnlens.model_source import load_models
from churnlens.outputs import manifest_path, read_paired_manifest
from churnlens.scoring import score
from tests.conftest import AS_OF


@pytest.fixture(scope="module")
def bundle(churn_bundle: Path) -> Path:
    """The shared model trained on ``events_path`` as of ``AS_OF`` (no segments beside it)."""
    return churn_bundle


def cli(*args: str, fault: str | None = None, max_file_bytes: int | None = None):
    """The real CLI in a subprocess; optionally killed at a named point, or with a cap on
    the size of any file it writes (a full disk, as the process sees it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env["CHURNLENS_FAULT"] = fault

    def cap() -> None:
        if max_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "churnlens.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=cap,
        timeout=300,
        check=False,
    )


def one_clear_line(stderr: str) -> str:
    """The error, after the timestamped progress lines a command prints off a terminal."""
    assert "Traceback" not in stderr, stderr
    progress = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")
    rest = [line for line in stderr.splitlines() if not progress.match(line)]
    text = " ".join(" ".join(rest).split())
    assert text.startswith("error:"), stderr
    return text


# ------------------------------------------------------------------ outputs over inputs


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_refuses_an_output_that_is_its_own_event_log(
    sample_events: pd.DataFrame, bundle: Path, tmp_path: Path, suffix: str
) -> None:
    log = tmp_path / f"same{suffix}"
    if suffix == ".parquet":
        sample_events.to_parquet(log)
    else:
        sample_events.to_csv(log, index=False)
    before = log.read_bytes()
    done = cli("score", str(log), "--as-of", AS_OF, "--out", str(log), "--model", str(bundle),
               "--no-track")  # fmt: skip
    assert done.returncode == 1
    assert "would destroy the input" in one_clear_line(done.stderr)
    assert log.read_bytes() == before
    assert not manifest_path(log).exists()


def test_features_refuses_its_own_input_and_a_path_inside_the_input_folder(
    sample_events: pd.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    sample_events.to_parquet(folder / "part-0.parquet")
    before = (folder / "part-0.parquet").read_bytes()
    same = cli("features", str(folder / "part-0.parquet"), "--as-of", AS_OF,
               "--out", str(folder / "part-0.parquet"))  # fmt: skip
    assert same.returncode == 1 and "would destroy the input" in one_clear_line(same.stderr)
    inside = cli("features", str(folder), "--as-of", AS_OF, "--out", str(folder / "f.parquet"))
    assert inside.returncode == 1
    assert "inside the input folder" in one_clear_line(inside.stderr)
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]
    assert (folder / "part-0.parquet").read_bytes() == before


def test_a_hard_link_to_the_input_is_the_input(
    events_path: Path, bundle: Path, tmp_path: Path
) -> None:
    link = tmp_path / "linked.parquet"
    os.link(events_path, link)
    with pytest.raises(InputError, match="would destroy the input"):
        score(events_path, AS_OF, link, load_models(bundle))


# ------------------------------------------------------ scores and manifest, one step


@pytest.mark.slow
def test_a_kill_between_manifest_and_scores_renames_is_completed_by_the_next_run(
    events_path: Path, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(out),
            "--model", str(bundle), "--no-track"]  # fmt: skip
    assert cli(*args).returncode == 0
    old_scores, old_manifest = out.read_bytes(), manifest_path(out).read_bytes()
    assert read_paired_manifest(out) is not None
    # a second run, on a log with one more customer, killed right after its commit point
    log = tmp_path / "more.parquet"
    extra = pd.read_parquet(events_path).head(1).assign(customer_id="zz-new")
    pd.concat([pd.read_parquet(events_path), extra]).to_parquet(log)
    args[1] = str(log)
    killed = cli(*args, fault="after-commit")
    assert killed.returncode == -signal.SIGKILL
    # the new manifest is in place, the old scores still: readers see they do not pair
    assert manifest_path(out).read_bytes() != old_manifest
    assert out.read_bytes() == old_scores
    with pytest.raises(InputError, match="describes another version of this file"):
        read_paired_manifest(out)
    # the next job on this output completes the interrupted replacement before its own
    pending = out.with_name(".scores.parquet.pending")
    assert pending.is_file()
    from churnlens.work_folders import output_lock, remove_stale_work

    with output_lock(out):
        remove_stale_work(out)
    manifest = read_paired_manifest(out)
    assert manifest is not None and manifest["rows"] == len(pd.read_parquet(out))
    assert "zz-new" in set(pd.read_parquet(out)["customer_id"])
    assert not pending.exists()


def test_a_failed_features_run_after_a_killed_one_keeps_the_committed_result(
    events_path: Path, tmp_path: Path
) -> None:
    """A features run killed after its commit point leaves the new manifest and the new
    result under its pending name; the next run on that output completes it before its
    own work, so its own failure (a full disk) does not take the committed result away."""
    out = tmp_path / "features.parquet"
    assert (
        cli("features", str(events_path), "--as-of", "2025-01-03", "--out", str(out)).returncode
        == 0
    )
    killed = cli("features", str(events_path), "--as-of", AS_OF, "--out", str(out),
                 fault="after-commit")  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    committed = json.loads(manifest_path(out).read_text())
    assert committed["as_of"] == AS_OF
    failed = cli("features", str(events_path), "--as-of", AS_OF, "--out", str(out),
                 max_file_bytes=2048)  # fmt: skip
    assert failed.returncode == 1
    assert "cannot be written (File too large)" in one_clear_line(failed.stderr)
    manifest = read_paired_manifest(out)  # the killed run's result, completed
    assert manifest is not None and manifest["as_of"] == AS_OF
    assert manifest["output_sha256"] == committed["output_sha256"]
    assert not out.with_name(".features.parquet.pending").exists()


@pytest.mark.parametrize("where", ["/scored/part-0.parquet", "/scores.parquet"])
def test_a_full_disk_keeps_the_earlier_pair_and_leaves_nothing_behind(
    events_path: Path, bundle: Path, tmp_path: Path, where: str
) -> None:
    out = tmp_path / "scores.parquet"
    first = score(events_path, AS_OF, out, load_models(bundle))
    old = out.read_bytes(), first.manifest_path.read_bytes()
    # six partitions: each work file is a sixth of the scores, the final file is all of
    # them; a cap just below its size fails the final write, a small one the work files
    cap = 4096 if where.startswith("/scored") else len(old[0]) - 1
    done = cli("score", str(events_path), "--as-of", AS_OF, "--out", str(out),
               "--model", str(bundle), "--no-track", "--partitions", "6",
               max_file_bytes=cap)  # fmt: skip
    assert done.returncode == 1
    line = one_clear_line(done.stderr)
    assert f"{where}: cannot be written (File too large)" in line
    assert (out.read_bytes(), first.manifest_path.read_bytes()) == old
    assert json.loads(first.manifest_path.read_text())["output_sha256"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["scores.parquet", "scores.parquet.lock", "scores.parquet.manifest.json"]


# ------------------------------------------------------------- operating-system errors


def test_an_output_under_proc_is_one_clear_line(events_path: Path, bundle: Path) -> None:
    done = cli("score", str(events_path), "--as-of", AS_OF, "--out", "/proc/s.parquet",
               "--model", str(bundle), "--no-track")  # fmt: skip
    assert done.returncode == 1
    assert "/proc/s.parquet" in one_clear_line(done.stderr)


def test_a_full_disk_during_training_is_one_clear_line_and_leaves_no_partial_bundle(
    events_path: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    config = tmp_path / "config.yaml"
    config.write_text(
        "training: {horizon_days: 60, snapshot_step_days: 60, min_history_days: 60}\n"
        "model: {n_estimators: 80, min_child_samples: 40}\n"
    )
    done = cli("train", str(events_path), "--as-of", AS_OF, "--config", str(config),
               "--models-dir", str(models), "--no-track", max_file_bytes=8192)  # fmt: skip
    assert done.returncode == 1
    assert "model bundle cannot be written" in one_clear_line(done.stderr)
    assert not models.exists() or not list(models.iterdir())


def test_a_manifest_that_fails_to_reach_the_disk_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from churnlens.outputs import manifest_file

    def full_disk(path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("churnlens.outputs.fsync_file", full_disk)
    target = tmp_path / "scores.manifest.json"
    with pytest.raises(OSError, match="No space left"):
        manifest_file(target, {"rows": 1}, 0o644)
    assert list(tmp_path.iterdir()) == []
