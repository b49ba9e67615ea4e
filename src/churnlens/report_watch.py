"""The report's sections on the run itself: drift against training and the changes since
the last run (:mod:`churnlens.drift`, :mod:`churnlens.history`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from churnlens.errors import InputError, Problem
from churnlens.history import biggest_movers, transition_matrix
from churnlens.report_html import e, note, table

LEVEL_WORDS = {
    "ok": "no drift worth a look",
    "warn": "some drift: worth a look before acting on the list",
    "alert": "strong drift: check the input before acting on the list",
}


def drift_section(manifest: dict[str, Any]) -> str:
    """Drift against training: the level, the score's PSI and KS, the stage mix then and
    now, and the features with the largest PSI. A drift record not of churnlens's making
    (a manifest edited by hand) is an :class:`InputError`."""
    try:
        return _drift_section(manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"its drift record is not one churnlens writes ({type(exc).__name__}: {exc})"
        fix = "score again to write the manifest, or remove its drift record"
        raise InputError("the scores manifest", [Problem("drift", what, fix=fix)]) from None


def _drift_section(manifest: dict[str, Any]) -> str:
    drift = manifest.get("drift")
    if not drift:
        return ""
    if not drift.get("checked"):
        return "<h2>Drift against training</h2>" + note(
            f"Not checked: {drift.get('reason', 'no training reference')}."
        )
    thresholds, score = drift["thresholds"], drift["score"]
    head = (
        f"<p><b>{e(drift['level'])}</b>: {e(LEVEL_WORDS[drift['level']])}. Against the "
        f"{e(drift['reference_as_of'])} training population ({drift['reference_customers']:,} "
        f"customers): score PSI {score['psi']:.3f}, KS {score['ks']:.3f}; stage mix PSI "
        f"{drift['stages']['psi']:.3f}.</p>"
    )
    stages = pd.DataFrame(
        {
            "stage": list(drift["stages"]["reference"]),
            "share_at_training": list(drift["stages"]["reference"].values()),
            "share_now": list(drift["stages"]["current"].values()),
            "shift_points": list(drift["stages"]["shift_points"].values()),
        }
    )
    features = pd.DataFrame(drift["features"][: max(10, thresholds["top"])])
    explain = note(
        f"PSI warns from {thresholds['psi_warn']} and alerts from {thresholds['psi_alert']} "
        f"(KS of the score: {thresholds['ks_warn']} / {thresholds['ks_alert']}); features that "
        f"grow with time by construction ({', '.join(thresholds['exclude']) or 'none'}) are "
        "shown but never warn."
    )
    return (
        "<h2>Drift against training</h2>"
        + head
        + explain
        + table(stages)
        + "<h3>Features with the largest PSI</h3>"
        + table(features)
    )


def history_section(scores: pd.DataFrame, manifest: dict[str, Any]) -> str:
    """Changes since the last run: the stage transition matrix and the biggest movers."""
    history = (manifest or {}).get("history") or {}
    if "previous_stage" not in scores.columns or scores["previous_stage"].isna().all():
        return ""
    since = history.get("previous_as_of") or "the last run"
    matrix = transition_matrix(scores).rename_axis(index="previous stage").reset_index()
    text = note(
        f"Customers by their stage in the run of {since} (rows; 'unseen': not in it) and "
        "their stage now (columns)."
    )
    movers = biggest_movers(scores)
    return (
        f"<h2>Since {e(since)}</h2>"
        + text
        + table(matrix)
        + "<h3>Biggest movers (churn probability)</h3>"
        + table(movers)
    )
