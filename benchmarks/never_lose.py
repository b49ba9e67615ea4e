"""Does the default churn model ever lose to a simple baseline on a purchase-only log?

Usage::

    .venv/bin/python benchmarks/never_lose.py [--log data/external/CDNOW_master.txt]
        [--protocols 1998-03-31:91 1997-12-31:91 ...]

Issue 18's protocol, on more than one as-of day and horizon: for each ``AS_OF:HORIZON``,
``churnlens.training.backtest`` with the default configuration (only the horizon set, no
MLflow, no bundles), scored against the days that really followed; beside the model, the
baselines the issue names, fitted on the same training snapshots: recency, logistic RFM
(both from the backtest), gradient boosting on the four RFM inputs (LightGBM, 200 trees),
and the buy-till-you-die models of the value model (Pareto/NBD and BG/NBD fitted as of the
day; their expected purchases over the horizon rank the customers, so they have an AUC
and no Brier score). It prints, per protocol, every score's ROC AUC and Brier score and
the model's margin over the best baseline: the issue asks for at least +0.001 AUC and a
Brier score no worse. ``--log`` takes a CDNOW text file: ``CDNOW_master.txt`` or
``CDNOW_sample.txt`` (the 1/10 sample of 2,357 customers: a small log). Exit status 0
either way: this measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ["1998-03-31:91", "1997-12-31:91", "1998-03-31:60", "1997-09-30:91", "1998-01-31:120"]


def _gradient_boosting_rfm(table, as_of, settings):  # type: ignore[no-untyped-def]
    import lightgbm as lgb

    from churnlens.labels import make_snapshots, snapshot_dates
    from churnlens.models.churn import rfm_matrix

    snaps = make_snapshots(table, snapshot_dates(table, as_of, settings), settings)
    params = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "verbose": -1}
    model = lgb.LGBMClassifier(**params, min_child_samples=50, random_state=7, n_jobs=1)
    return model.fit(rfm_matrix(snaps.X), snaps.y.to_numpy())


def run(table, spec: str) -> list[dict]:  # type: ignore[no-untyped-def]
    import numpy as np
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from churnlens.config import Settings
    from churnlens.events import parse_as_of
    from churnlens.labels import make_snapshot
    from churnlens.models.churn import rfm_matrix
    from churnlens.models.value import HALF_DAY, WEEK, Purchases
    from churnlens.training import backtest

    day, horizon = spec.split(":")
    as_of, horizon_days = parse_as_of(day), int(horizon)
    settings = Settings().with_overrides(training={"horizon_days": horizon_days})
    result = backtest(table, as_of, settings)
    p = result.predictions
    y = p["churned"].to_numpy()
    X, _ = make_snapshot(table, as_of, horizon_days)
    gb = _gradient_boosting_rfm(table, as_of, settings).predict_proba(rfm_matrix(X))[:, 1]
    lifetimes = result.train.value.model.lifetimes_
    bought = Purchases.of(X)
    T = np.maximum(bought.T, HALF_DAY)
    scores = {
        "model": p["churn_probability"].to_numpy(),
        "logistic_rfm": p["logistic_rfm_probability"].to_numpy(),
        "recency": p["recency_probability"].to_numpy(),
        "gb_rfm": gb,
    }
    ranks = {}
    for name, fitted in (("pareto_nbd", lifetimes.pnbd), ("bg_nbd", lifetimes.bgnbd)):
        n = fitted.conditional_expected_purchases(horizon_days / WEEK, bought.x, bought.t_x, T)
        ranks[name] = -np.where(bought.buyer, n, 0.0)  # fewer expected purchases: churn
    rows = [
        {"score": k, "auc": roc_auc_score(y, v), "brier": brier_score_loss(y, v)}
        for k, v in scores.items()
    ]
    rows += [{"score": k, "auc": roc_auc_score(y, v), "brier": np.nan} for k, v in ranks.items()]
    for row in rows:
        row.update(protocol=spec, customers=len(y), churn_rate=float(y.mean()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, default=ROOT / "data/external/CDNOW_master.txt")
    parser.add_argument("--protocols", nargs="+", default=PROTOCOLS)
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd

    from churnlens.datasets import read_cdnow
    from churnlens.events import load_events

    events = read_cdnow(args.log)
    table = load_events(events)
    print(f"{args.log.name}: {events['customer_id'].nunique():,} customers, {len(events):,} rows")
    margins = []
    for spec in args.protocols:
        started = time.perf_counter()
        frame = pd.DataFrame(run(table, spec)).set_index("score")
        model = frame.loc["model"]
        others = frame.drop(index="model")
        auc_margin = model["auc"] - others["auc"].max()
        brier_margin = model["brier"] - np.nanmin(others["brier"])
        margins.append((spec, auc_margin, brier_margin))
        line = ", ".join(
            f"{name} {row['auc']:.4f}" + ("" if np.isnan(row["brier"]) else f"/{row['brier']:.5f}")
            for name, row in frame.iterrows()
        )
        print(
            f"{spec} ({int(model['customers']):,} customers, churn {model['churn_rate']:.3f}): "
            f"{line}; model - best baseline: AUC {auc_margin:+.4f}, Brier {brier_margin:+.5f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    ok = sum(a >= 0.001 and b <= 0 for _, a, b in margins)
    print(f"protocols where the model wins by the issue's rule (+0.001 AUC, Brier no worse): "
          f"{ok} of {len(margins)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
