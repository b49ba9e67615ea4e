"""Write ``notebooks/01-quickstart.ipynb``: the Python API end to end on sample data.

The notebook is generated so that it can be regenerated after an API change: edit the
cells below and run::

    .venv/bin/python scripts/make_quickstart_notebook.py

It is written without outputs (the test suite executes it with ``pytest --nbmake``) and
with stable cell ids, so regenerating an unchanged notebook gives an identical file.
Everything the notebook writes goes to a temporary folder, the MLflow store included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "notebooks" / "01-quickstart.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """
# churnlens quickstart: from an event log to a next action for every customer

This notebook runs the Python API end to end on a small synthetic log, so that it runs
anywhere in under a minute:

1. generate a sample event log and load it;
2. build the point-in-time features;
3. train the churn model (against its baselines) and the customer segments;
4. score every customer: churn risk, lifecycle stage, segment and a next action;
5. look at one customer and why they got their action;
6. change the action policy and set a contact budget;
7. write the analysts' HTML report.

Everything is written to a temporary folder, including the MLflow store
(`MLFLOW_TRACKING_URI` points at a SQLite file in it), so running the notebook leaves
nothing in the repository. To try your own data, replace the sample log by the path of a
CSV or Parquet file with the columns `customer_id, timestamp, channel, event_type` (and
optionally `amount, direction, duration_s`).
""",
    ),
    (
        "code",
        """
import os
import tempfile
from pathlib import Path

import pandas as pd

import churnlens

tmp = Path(tempfile.mkdtemp(prefix="churnlens-quickstart-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
print("working folder:", tmp)
print("churnlens", churnlens.__version__)
""",
    ),
    (
        "md",
        """
## 1. A sample event log

`generate_events` simulates a retail business with web, app, store, phone, chat and email
channels: visits, purchases, support contacts, complaints and marketing touches, and
customers who leave for reasons the log can show (over-contact, service trouble, fading
engagement). 2,000 customers over two years (730 days from 2024-01-01) give about 100,000
events; the same seed always gives the same log.

The log is a plain pandas frame, one row per event. We write it as Parquet, the format
churnlens reads fastest; every function below takes the path.
""",
    ),
    (
        "code",
        """
from churnlens.sample import generate_events

events = generate_events(customers=2000, days=730, seed=7)
path = tmp / "events.parquet"
events.to_parquet(path, index=False)
events.head()
""",
    ),
    (
        "md",
        """
`load_events` validates the log (required columns, types, timestamps, directions; exact
duplicates are dropped and counted) and loads it into DuckDB. A log that does not fit
raises an `InputError` that names each problem and how to fix it. `summary()` says what
was loaded.
""",
    ),
    (
        "code",
        """
summary = churnlens.load_events(path).summary()
print(
    f"{summary.events:,} events of {summary.customers:,} customers, "
    f"{summary.first_timestamp:%Y-%m-%d} to {summary.last_timestamp:%Y-%m-%d}"
)
print("duplicates dropped:", summary.duplicates_dropped)
print("by event type:", summary.by_event_type)
print("by channel:   ", summary.by_channel)
print("by role:      ", summary.by_role)
""",
    ),
    (
        "md",
        """
Every step takes an **as-of day**: it sees the events up to and including that day and
nothing after it. Here it is the last day of the log, as in a nightly job.
""",
    ),
    (
        "code",
        """
as_of = summary.last_timestamp.date().isoformat()
assert as_of == "2025-12-30", as_of
as_of
""",
    ),
    (
        "md",
        """
## 2. Features

`build_features` computes the point-in-time features: one row per customer seen on or
before the as-of day, indexed by `customer_id`. The families are `freq_*` (activity over
several windows), `chan_*` (channel mix), `gap_*` (time between contacts), `rfm_*`
(recency, frequency, monetary value and their population scores), `cycle_*` (the
customer's own repurchase cycle and how overdue they are) and `fatigue_*` (marketing
pressure and responses). Here are the RFM and cycle columns of a few customers:
""",
    ),
    (
        "code",
        """
features = churnlens.build_features(path, as_of=as_of)
assert features.index.is_unique and len(features) == summary.customers
features.filter(regex=r"^(cycle|rfm)_").head().round(2)
""",
    ),
    (
        "md",
        """
`feature_names()` gives the feature columns, in order, before any data is seen (they
depend only on the settings).
""",
    ),
    (
        "code",
        """
from itertools import groupby

names = churnlens.feature_names()
assert names == list(features.columns)
print(len(names), "features")
for family, columns in groupby(names, key=lambda name: name.split("_")[0]):
    print(f"{family:>8}: {', '.join(columns)}")
""",
    ),
    (
        "md",
        """
## 3. Training

`train` takes snapshots of the log before the as-of day, each labelled by whether the
customer churned in the following 90 days (no purchase), so that every label is known by
the as-of day. It fits a calibrated LightGBM model, validates it on the latest snapshot
(out of time) against two baselines, a logistic regression on RFM and recency alone, then
refits on all snapshots. The model is written as a bundle in `models_dir`; with
`track=True` the run, its metrics and plots go to MLflow and the model is registered.

In the validation table, higher `roc_auc`, `pr_auc_stayers` and `top_decile_lift` are
better, lower `brier` and `log_loss` are better; `model_raw` is the model before
calibration.
""",
    ),
    (
        "code",
        """
from churnlens.segmenting import segment
from churnlens.training import train

result = train(path, as_of, models_dir=tmp / "models", track=True)
print("snapshots:", ", ".join(d.isoformat() for d in result.snapshots))
print(f"training rows: {result.rows:,}")
print("bundle:", result.bundle.name)
print(f"registered version {result.model_version}: {result.champion}")
result.validation.round(3)
""",
    ),
    (
        "code",
        """
# The model must beat both baselines on the out-of-time validation snapshot.
auc = result.validation["roc_auc"]
assert auc["model"] > max(auc["logistic_rfm"], auc["recency"]), auc
""",
    ),
    (
        "md",
        """
`segment` groups the customers with K-means on their features as of the same day (the
number of segments is chosen by silhouette) and names each segment. Its profile gives
the size, typical features and the churn rate really observed in the latest labelled
snapshot. With `track=True`, segment ids stay stable across retrains.
""",
    ),
    (
        "code",
        """
seg = segment(path, as_of, models_dir=tmp / "models", track=True)
print("bundle:", seg.bundle.name)
assert seg.profile["size"].sum() == summary.customers
columns = ["name", "size", "share", "churn_rate", "rfm_recency_days", "rfm_frequency",
           "rfm_monetary_mean", "cycle_days"]
seg.profile[columns].round(2)
""",
    ),
    (
        "md",
        """
## 4. Scoring

`load_models` loads the churn and segment bundles and checks them (files, hashes, the
churnlens version, feature names) before any data is read; it also takes registry URIs
such as `models:/churnlens-churn@champion`. `score` then gives every customer seen up to
the as-of day a churn probability with its reasons, a lifecycle stage, a segment, an
expected value for the next year and the value at risk (probability times value), and an
action from the action policy with its channel and a priority (1 = first) within the
action. It writes the scores file and a manifest beside it; `keep_scores=True` also
returns the scores as a DataFrame.
""",
    ),
    (
        "code",
        """
from churnlens.model_source import load_models
from churnlens.scoring import score

models = load_models(result.bundle, seg.bundle)
scored = score(path, as_of, tmp / "scores.parquet", models, keep_scores=True)
scores = scored.scores
print(f"{len(scores):,} customers scored in {scored.seconds:.1f} s into {scored.path.name}")
print("stages: ", scored.manifest["stages"])
print("actions:", scored.manifest["actions"])
""",
    ),
    (
        "code",
        """
# One row per customer, probabilities in [0, 1], every action declared by the policy.
assert scores["customer_id"].is_unique and len(scores) == summary.customers
assert scores["churn_probability"].between(0, 1).all()
assert set(scores["action"]) <= set(scored.manifest["policy"]["actions"])
assert sum(scored.manifest["stages"].values()) == len(scores)
scores.head()
""",
    ),
    (
        "md",
        """
Lifecycle stages follow each customer's own repurchase cycle: a repeat buyer is `active`
within one cycle of their last purchase, then `silent`, `sleeping` (after two) and `lost`
(after three); one-time and non-buyers are `new` and then measured against the
population's cycles. The action depends on the stage, the risk band, the value tier and
contact fatigue:
""",
    ),
    (
        "code",
        """
stages = list(scored.manifest["stages"])
table = pd.crosstab(scores["lifecycle_stage"], scores["action"], margins=True)
table.reindex([*stages, "All"], fill_value=0)
""",
    ),
    (
        "md",
        """
## 5. One customer

The customer with the highest value at risk among those the policy contacts: their
churn probability, stage, the days on which they become (or became) silent and lost
without a new purchase, the action and its channel, and the reasons in plain words (the
strongest drivers of their risk, then the policy rule that chose the action).
""",
    ),
    (
        "code",
        """
policy_actions = scored.manifest["policy"]["actions"]
contacting = [name for name, spec in policy_actions.items() if spec["contact"]]
candidates = scores[scores["action"].isin(contacting)]
customer = candidates.loc[candidates["value_at_risk"].idxmax()]

for column in ("customer_id", "churn_probability", "lifecycle_stage", "silent_on", "lost_on",
               "value_at_risk", "action", "action_channel", "priority"):
    print(f"{column:>17}: {customer[column]}")
reasons = list(customer["reasons"])
print("          reasons:")
for reason in reasons:
    print("    -", reason)

assert reasons and all(isinstance(reason, str) and reason for reason in reasons)
assert isinstance(customer["action_channel"], str) and customer["priority"] == 1
""",
    ),
    (
        "md",
        """
Their last events in the log:
""",
    ),
    (
        "code",
        """
events[events["customer_id"] == customer["customer_id"]].tail(8)
""",
    ),
    (
        "md",
        """
## 6. A custom action policy

The action policy is a list of ordered rules; the first rule whose conditions all hold
gives the action. `Policy()` is the shipped default (the same policy as
`configs/actions.yaml` in the repository; `load_policy()` without a path gives it too). In
a project you would keep your policy in a YAML file and call
`load_policy("configs/actions.yaml")`; this notebook runs in a temporary folder, so it
builds the policy in code with `Policy.model_validate`, which checks a dict exactly as
`load_policy` checks a file (every key is optional and defaults to the shipped policy).
""",
    ),
    (
        "code",
        """
from churnlens.actions import Policy, load_policy

default = Policy()
assert load_policy() == default
print("risk bands:", default.risk_bands, "| value tiers:", default.value_tiers)
for rule in default.rules:
    when = rule.when.model_dump(exclude_none=True)
    print(f"{rule.name:>15}: {when} -> {rule.action}")
print(f"{'(no match)':>15}: -> {default.fallback}")
""",
    ),
    (
        "md",
        """
A policy with lower risk bands (more customers count as medium or high risk), scored
with a budget of 100 contacts: `max_contacts` keeps the contacting actions with the
highest value at risk and gives the others the fallback action with the rule `budget`.
""",
    ),
    (
        "code",
        """
custom = Policy.model_validate({"risk_bands": {"medium": 0.2, "high": 0.4}})
rescored = score(path, as_of, tmp / "scores-custom.parquet", models, custom,
                 max_contacts=100, keep_scores=True)
custom_scores = rescored.scores
assert set(custom_scores["action"]) <= set(custom.actions)

pd.DataFrame({
    "default policy": scores["risk_band"].value_counts(),
    "custom policy": custom_scores["risk_band"].value_counts(),
}).reindex(["low", "medium", "high"], fill_value=0)
""",
    ),
    (
        "code",
        """
contacts = custom_scores["action"].isin(custom.contact_actions())
budget = custom_scores["rule"] == "budget"
print(f"contacts kept: {contacts.sum()}, over the budget of 100: {budget.sum()} "
      f"(now {custom.fallback!r})")
print("reasons of one over the budget:", list(custom_scores.loc[budget, "reasons"].iloc[0]))

assert contacts.sum() <= 100 and budget.any()
assert (custom_scores.loc[budget, "action"] == custom.fallback).all()
# the budget keeps the highest value at risk
value_at_risk = custom_scores["value_at_risk"]
assert value_at_risk[contacts].min() >= value_at_risk[budget].max()

pd.DataFrame({
    "default policy": scores["action"].value_counts(),
    "custom policy, 100 contacts": custom_scores["action"].value_counts(),
}).fillna(0).astype(int)
""",
    ),
    (
        "md",
        """
## 7. The report

`score_job` is what the `churnlens score` command runs: the scores, then the analysts'
HTML report (risk, stages, segments and actions, with retention KPIs and cohorts from the
same log) and, with `track=True`, an MLflow run holding the manifest and the report. For
scores you already have, `churnlens.jobs.build_scores_report(scores, events, manifest)`
returns the same page as HTML text.
""",
    ),
    (
        "code",
        """
from churnlens.jobs import score_job

report = tmp / "report.html"
job = score_job(path, as_of, tmp / "scores-job.parquet", models, report=report)
print(f"{report.name}: {report.stat().st_size / 1024:.0f} KiB, open {report.as_uri()}")
assert report.stat().st_size > 10_000
assert job.manifest["actions"] == scored.manifest["actions"]
""",
    ),
    (
        "md",
        """
## What was written

Everything lives in the temporary folder: the log, the model bundles, the scores with
their manifests, the report and the MLflow store (browse it with
`mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`;
`notebooks/02-review-experiments.ipynb` reviews runs from Python). The command line does
the same steps: `churnlens train`, `churnlens segment` and `churnlens score`.
""",
    ),
    (
        "code",
        """
for item in sorted(tmp.iterdir()):
    print(item.name + ("/" if item.is_dir() else ""))
""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook: markdown and code cells with stable ids and no outputs."""
    cells = []
    for i, (kind, text) in enumerate(CELLS):
        source = text.strip("\n")
        cell_id = f"quickstart-{i:02d}"
        if kind == "md":
            cells.append(new_markdown_cell(source, id=cell_id))
        else:
            cells.append(new_code_cell(source, id=cell_id))
    kernelspec = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook = new_notebook(cells=cells, metadata={"kernelspec": kernelspec})
    nbformat.validate(notebook)
    return notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the notebook to write")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
