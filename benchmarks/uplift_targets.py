"""Does ranking by predicted incremental value contact the customers an action changes?

Usage::

    .venv/bin/python benchmarks/uplift_targets.py [--customers 20000] [--seeds 7 8 9]

For each seed, on the campaign simulator (:mod:`churnlens.sample.campaign`, its
documented heterogeneous effects):

1. a sample log of ``--customers`` customers over 730 days; the churn, value and segment
   models trained as of its last day T;
2. **learning campaign**: score as of T with ``--learn-share`` (0.5) of each contact
   action's customers as controls, simulate the 90-day window, ``train-uplift`` on it
   (features as of T, outcomes in (T, T+90]);
3. **next campaign**: score as of T+90 on the grown log with the uplift model (the
   shipped policy without its uplift floor, so every ranking faces the same actions),
   and simulate the next window to get every customer's true effect of their action;
4. with a budget of ``--budget`` (20%) of the contactable customers, the true
   incremental customers (sum of true effects) of contacting the top of each ranking:
   predicted incremental value, value at risk, random, and the oracle (true effect).

Prints per seed and the median: incremental customers per 1,000 contacts for each
ranking, incremental value / value at risk (target >= 1.3) and incremental value /
oracle (target >= 0.6), and the seconds taken. Exit status 0 either way: this measures.

Beside them, **the observable ceiling**: how far the features can go at all. A LightGBM
regressor is given the answer, every contactable customer's true effect in the next
campaign, and learns it from what churnlens sees (the features as of the scoring day,
the churn probability, the value if retained and the action), cross-fitted over two
halves so each customer is ranked by a model that did not see their effect. No model
learning from a campaign's noisy outcomes can expect to do better; the rest of the
oracle lies in the simulator's hidden traits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

START = dt.date(2024, 1, 1)
DAYS, HORIZON = 730, 90


def run_seed(customers: int, seed: int, learn_share: float, budget: float, work: Path) -> dict:
    from churnlens.actions import Policy
    from churnlens.config import Settings
    from churnlens.demo import per_thousand
    from churnlens.model_source import load_models
    from churnlens.outputs import write_table
    from churnlens.sample import generate_events
    from churnlens.sample.campaign import simulate_campaign
    from churnlens.scoring import score
    from churnlens.segmenting import segment
    from churnlens.training import train
    from churnlens.uplifting import train_uplift, write_uplift_bundle

    started = time.perf_counter()
    settings = Settings().with_overrides(experiment={"control_share": learn_share})
    log = generate_events(customers, DAYS, seed, START)
    events = work / "events.parquet"
    write_table(log, events)
    as_of = START + dt.timedelta(days=DAYS - 1)
    models_dir = work / "models"
    trained = train(events, as_of, settings, models_dir)
    segment(events, as_of, settings, models_dir)
    models = load_models(trained.bundle, settings=settings, uplift=None)
    first = score(events, as_of, work / "s1.parquet", models, keep_scores=True).scores
    campaign = simulate_campaign(customers, DAYS, seed, START, first, HORIZON, replicates=20)
    grown = work / "events-1.parquet"
    write_table(pd.concat([log, campaign.events], ignore_index=True), grown)
    learned = train_uplift([work / "s1.parquet"], grown, settings)
    write_uplift_bundle(learned, models_dir, settings)
    with_uplift = load_models(trained.bundle, settings=settings)
    policy = Policy(uplift_floor=None)
    day = as_of + dt.timedelta(days=HORIZON)
    second = score(grown, day, work / "s2.parquet", with_uplift, policy, keep_scores=True).scores
    truth = simulate_campaign(
        customers, DAYS, seed, START, second, HORIZON, replicates=20, after=campaign
    ).truth
    per_1000 = per_thousand(second, truth, budget, seed)
    per_1000["observable_ceiling"] = observable_ceiling(grown, day, second, truth, budget, seed)
    contactable = int(second["action"].isin(policy.contact_actions()).sum())
    return {
        "seed": seed,
        "contactable": contactable,
        "budget": max(1, round(budget * contactable)),
        "skipped": dict(learned.model.skipped_),
        **per_1000,
        "vs_value_at_risk": per_1000["incremental_value"] / per_1000["value_at_risk"],
        "vs_oracle": per_1000["incremental_value"] / per_1000["oracle"],
        "ceiling_vs_value_at_risk": per_1000["observable_ceiling"] / per_1000["value_at_risk"],
        "seconds": time.perf_counter() - started,
    }


def observable_ceiling(
    events: Path, day: dt.date, scores: pd.DataFrame, truth: pd.DataFrame, budget: float, seed: int
) -> float:
    """Incremental customers per 1,000 contacts when ranking by a model fitted to the true
    effects from the observable columns, cross-fitted over two halves (module docstring)."""
    import lightgbm as lgb
    import numpy as np

    from churnlens.actions import Policy
    from churnlens.config import Settings
    from churnlens.events import load_events
    from churnlens.features import build_features

    contactable = scores[scores["action"].isin(Policy().contact_actions())].reset_index()
    ids = contactable["customer_id"].astype(str)
    effect = truth["effect"].reindex(ids).to_numpy()
    features = build_features(load_events(events), day, Settings())
    features.index = features.index.astype(str)
    X = features.loc[ids].reset_index(drop=True)
    for column in ("churn_probability", "value_if_retained"):
        X[column] = contactable[column].to_numpy(dtype=float)
    X["action"] = contactable["action"].astype("category").cat.codes.to_numpy()
    half = np.random.default_rng(seed).integers(0, 2, len(X))
    key = np.empty(len(X))
    for k in (0, 1):
        model = lgb.LGBMRegressor(
            n_estimators=200, learning_rate=0.05, num_leaves=8, min_child_samples=30,
            random_state=seed, verbose=-1,
        )  # fmt: skip
        model.fit(X[half != k], effect[half != k])
        key[half == k] = model.predict(X[half == k])
    n = max(1, round(budget * len(X)))
    at_risk = -contactable["value_at_risk"].to_numpy(dtype=float)
    top = np.lexsort((at_risk, -key))[:n]
    return 1000 * float(np.nansum(effect[top])) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--learn-share", type=float, default=0.5)
    parser.add_argument("--budget", type=float, default=0.2)
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="uplift-targets-") as work:
            row = run_seed(args.customers, seed, args.learn_share, args.budget, Path(work))
        rows.append(row)
        print(
            f"seed {seed}: {row['contactable']:,} contactable, budget {row['budget']:,}; "
            "incremental customers per 1,000 contacts: "
            f"incremental value {row['incremental_value']:.1f}, value at risk "
            f"{row['value_at_risk']:.1f}, random {row['random']:.1f}, oracle "
            f"{row['oracle']:.1f}, observable ceiling {row['observable_ceiling']:.1f}; "
            f"x{row['vs_value_at_risk']:.2f} value at risk (ceiling "
            f"x{row['ceiling_vs_value_at_risk']:.2f}), {row['vs_oracle']:.0%} of oracle "
            f"({row['seconds']:.0f} s)",
            flush=True,
        )
        if row["skipped"]:
            print(f"  skipped: {row['skipped']}")
    for key in ("incremental_value", "value_at_risk", "random", "oracle", "observable_ceiling"):
        print(f"median {key}: {statistics.median(r[key] for r in rows):.1f} per 1,000")
    print(f"median x value at risk: {statistics.median(r['vs_value_at_risk'] for r in rows):.2f}"
          f" (target >= 1.3); median of oracle: "
          f"{statistics.median(r['vs_oracle'] for r in rows):.0%} (target >= 60%); the "
          "observable ceiling x value at risk: "
          f"{statistics.median(r['ceiling_vs_value_at_risk'] for r in rows):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
