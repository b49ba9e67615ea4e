"""The end-to-end demo: sample log -> train -> segment -> score -> report, all tracked.

What ``make demo`` and ``churnlens demo`` run. Everything lands in one work folder
(``data/events.parquet``, ``models/``, ``scores.parquet`` with its manifest and
``report.html``); the runs go to the configured MLflow store (``sqlite:///mlflow.db`` in
the working directory by default). Rerunning reuses the folder: the log is regenerated
only when its parameters changed, and new model versions are registered beside the old.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from churnlens.config import Settings
from churnlens.jobs import score_job
from churnlens.model_source import load_models
from churnlens.outputs import write_table
from churnlens.scoring import ScoreResult
from churnlens.segmenting import SegmentResult, segment
from churnlens.training import TrainResult, train

START = dt.date(2024, 1, 1)

Step = Callable[[str], None]


@dataclass
class DemoResult:
    """Where the demo put everything, and what each step returned."""

    workdir: Path
    events: Path
    as_of: dt.date
    trained: TrainResult
    segments: SegmentResult
    scored: ScoreResult
    report: Path


def _sample(path: Path, customers: int, days: int, seed: int) -> None:
    """Write the sample log unless the same one is already there."""
    from churnlens.sample import generate_events

    stamp = path.with_name(path.name + ".json")
    wanted = {"customers": customers, "days": days, "seed": seed, "start": START.isoformat()}
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return
    write_table(generate_events(customers, days, seed, START), path)
    stamp.write_text(json.dumps(wanted) + "\n", encoding="utf-8")


def run_demo(
    workdir: str | Path = "demo",
    customers: int = 20_000,
    days: int = 730,
    seed: int = 7,
    settings: Settings | None = None,
    step: Step | None = None,
) -> DemoResult:
    """Run the whole job on a sample log of ``customers`` customers over ``days`` days.

    The as-of day is the last day of the log: the model trains on snapshots whose
    labels end by then, and every customer is scored as of that day.
    """
    settings = settings or Settings()
    say = step or (lambda _: None)
    workdir = Path(workdir)
    events = workdir / "data" / "events.parquet"
    as_of = START + dt.timedelta(days=days - 1)
    models_dir = workdir / "models"

    say(f"Generating a sample log: {customers:,} customers over {days} days")
    _sample(events, customers, days, seed)
    say("Training the churn model and its baselines")
    trained = train(events, as_of, settings, models_dir, track=True)
    say("Fitting customer segments")
    segments = segment(events, as_of, settings, models_dir, track=True)
    say("Scoring every customer into a stage and an action")
    assert trained.bundle is not None and segments.bundle is not None
    models = load_models(trained.bundle, segments.bundle, settings)
    report = workdir / "report.html"
    scored = score_job(
        events, as_of.isoformat(), workdir / "scores.parquet", models, report=report, track=True
    )
    return DemoResult(workdir, events, as_of, trained, segments, scored, report)
