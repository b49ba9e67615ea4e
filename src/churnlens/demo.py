"""The end-to-end demo: sample log -> train -> segment -> score -> report, all tracked,
then three campaign cycles measured against their control groups, uplift learned from
each.

What ``make demo`` and ``churnlens demo`` run. Everything lands in one work folder
(``data/events.parquet``, ``models/``, ``scores.parquet`` with its manifest and
``report.html``); the runs go to the configured MLflow store (``sqlite:///mlflow.db`` in
the working directory by default). Rerunning reuses the folder: the log is regenerated
only when its parameters changed, and new model versions are registered beside the old.

Each cycle: the scores (with their control groups) go to the campaign simulator
(:mod:`churnlens.sample.campaign`), which continues the same customers for the model's
horizon, the contacted ones receiving their action with known effects; the log grows by
the window's events (``data/events-cycle-N.parquet``) and ``churnlens outcomes`` measures
each action (``outcomes-N.csv``, ``outcomes-N.html``), shown beside the true average
effect on the experiment's customers. Then ``train-uplift`` learns from every campaign
so far, and the next cycle scores the same models with that uplift model on the grown
log on the day the window ends (ranked as ``--rank-by auto`` chooses; a new campaign,
with groups drawn afresh); its campaign continues the world the last one left.
Each cycle also reports, from the simulator's true effects, the incremental customers
per 1,000 contacts of contacting the top 20% of the contactable customers by value at
risk, by predicted incremental value (from cycle 2), as ranked (the one of the two
``auto`` chose), at random and by the true effect.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churnlens.actions import Policy
from churnlens.campaigns import OutcomesResult, experiment_rows, outcomes_job
from churnlens.config import Settings
from churnlens.jobs import score_job
from churnlens.model_source import ScoringModels, load_models
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
    cycles: list[Cycle] = field(default_factory=list)


@dataclass
class Cycle:
    """One campaign cycle: its scores, what ``outcomes`` measured, the true effects."""

    number: int
    scored: ScoreResult
    outcomes: OutcomesResult
    truth: dict[str, float]  # action (and "all") -> true mean effect on retention
    per_thousand: dict[str, float] = field(default_factory=dict)  # ranking -> customers


def true_effects(scores: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Per action, the simulator's mean effect on P(purchase in the window) over the
    experiment's customers (contacted and controls): what the measured lift estimates;
    ``all`` weights the actions by contacted customers, as the outcomes table does."""
    arms = experiment_rows(scores)
    effect = truth["effect"].reindex(arms["customer_id"].astype(str)).to_numpy()
    frame = pd.DataFrame({"action": arms["action"].to_numpy(), "effect": effect})
    means = frame.groupby("action")["effect"].mean()
    treated = arms[arms["contact"].astype(bool)].groupby("action").size()
    out = {str(a): float(v) for a, v in means.items()}
    weights = treated.reindex(means.index).fillna(0)
    if weights.sum() > 0:
        out["all"] = float((means * weights).sum() / weights.sum())
    return out


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
    models = load_models(trained.bundle, segments.bundle, settings, uplift=None)
    report = workdir / "report.html"
    scored = score_job(
        events, as_of.isoformat(), workdir / "scores.parquet", models, report=report, track=True
    )
    result = DemoResult(workdir, events, as_of, trained, segments, scored, report)
    result.cycles = _cycles(result, models, (customers, days, seed), settings, say)
    return result


AUTO = "as_ranked"  # the ranking --rank-by auto chose


def per_thousand(
    scores: pd.DataFrame, truth: pd.DataFrame, budget: float = 0.2, seed: int = 0
) -> dict[str, float]:
    """True incremental customers per 1,000 contacts when contacting the top ``budget``
    share of the contactable customers (a contact action) by each ranking: predicted
    incremental value (when the scores have it), value at risk, random, and the oracle
    (the simulator's true effect of each customer's action)."""
    contactable = scores[scores["action"].isin(Policy().contact_actions())]
    effect = truth["effect"].reindex(contactable["customer_id"].astype(str)).to_numpy()
    n = max(1, round(budget * len(contactable)))
    rng = np.random.default_rng(seed)
    keys = {
        "value_at_risk": contactable["value_at_risk"].to_numpy(dtype=float),
        "random": rng.random(len(contactable)),
        "oracle": effect,
    }
    if contactable["incremental_value"].notna().any():
        keys["incremental_value"] = contactable["incremental_value"].fillna(-np.inf).to_numpy()
    out = {}
    at_risk = -keys["value_at_risk"]
    for name, key in keys.items():
        # as scoring orders them: the key (missing last), then value at risk
        top = np.lexsort((at_risk, -np.nan_to_num(key, nan=-np.inf)))[:n]
        out[name] = 1000 * float(np.nansum(effect[top])) / n
    return out


def _cycles(
    result: DemoResult,
    models: ScoringModels,
    log: tuple[int, int, int],
    settings: Settings,
    say: Step,
) -> list[Cycle]:
    """Three campaign cycles (see the module docstring)."""
    from churnlens.sample.campaign import simulate_campaign
    from churnlens.uplifting import track_uplift, train_uplift, write_uplift_bundle

    horizon = settings.training.horizon_days
    workdir, events, scored = result.workdir, result.events, result.scored
    cycles: list[Cycle] = []
    campaign = None
    frame = pd.read_parquet(events)
    for number in (1, 2, 3):
        scores = pd.read_parquet(scored.path)
        say(f"Cycle {number}: simulating the campaign of {scored.manifest['as_of']}")
        campaign = simulate_campaign(*log, START, scores, horizon, after=campaign)
        frame = pd.concat([frame, campaign.events], ignore_index=True)
        grown = workdir / "data" / f"events-cycle-{number}.parquet"
        write_table(frame, grown)
        say(f"Cycle {number}: measuring each action against its control group")
        measured = outcomes_job(
            scored.path, grown, workdir / f"outcomes-{number}.csv", settings,
            horizon_days=horizon, report=workdir / f"outcomes-{number}.html", track=True,
        )  # fmt: skip
        truth = true_effects(scores, campaign.truth)
        ranked = per_thousand(scores, campaign.truth, seed=number)
        # what churnlens did: --rank-by auto takes incremental value only where the uplift
        # model's ranking beat value at risk on the campaigns it learned from
        ranked[AUTO] = ranked.get(scored.manifest.get("rank_by", ""), ranked["value_at_risk"])
        cycles.append(Cycle(number, scored, measured, truth, ranked))
        if number == 3:
            break
        say(f"Cycle {number}: learning uplift from the campaigns so far")
        past = [c.scored.path for c in cycles]
        learned = train_uplift(past, grown, settings)
        bundle = write_uplift_bundle(learned, workdir / "models", settings)
        track_uplift(learned, settings)
        models = load_models(result.trained.bundle, result.segments.bundle, settings, uplift=bundle)
        day = campaign.as_of + dt.timedelta(days=horizon)
        say(f"Cycle {number + 1}: scoring every customer as of {day}, with the uplift model")
        scored = score_job(
            grown, day.isoformat(), workdir / f"scores-{number + 1}.parquet", models, track=True
        )
    return cycles
