"""Changes since the last run: each customer's previous score, stage and action.

``score`` reads the previous scores file (``--previous``; by default the scores file it is
about to replace at the same output path, read before the new one is renamed over it) and
adds to every row

- ``previous_churn_probability`` and ``churn_probability_change`` (this run's minus the
  previous one, in probability: 0.05 is 5 points);
- ``previous_stage``: the stage in the last run, or ``unseen`` for a customer who was not
  in it (new since); ``previous_action`` (null for them).

When there is no previous file at all (the first run, ``--previous none``) the four
columns are null, so that the file's columns stay the same night after night.

Re-running the same night over its own output would compare tonight with tonight: when
the file being replaced has the same as-of day, its own ``previous_*`` columns (the night
before it) are used, so a rerun compares with the same night as the first attempt did.

The policy's ``risk_change_min`` condition (:mod:`churnlens.actions`) uses
``churn_probability_change``; :func:`risk_change` says, row by row, whether a customer has
history and whether their risk rose by at least the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from churnlens.errors import InputError
from churnlens.lifecycle import STAGES
from churnlens.scores_file import read_scores_file

HISTORY_COLUMNS: tuple[str, ...] = (
    "previous_churn_probability",
    "churn_probability_change",
    "previous_stage",
    "previous_action",
)
HISTORY_TYPES = {
    "previous_churn_probability": pa.float64(),
    "churn_probability_change": pa.float64(),
    "previous_stage": pa.string(),
    "previous_action": pa.string(),
}
UNSEEN = "unseen"  # previous_stage of a customer who was not in the last run
AUTO = "auto"
NEEDED = ("customer_id", "churn_probability", "lifecycle_stage", "action")
# read too when present: the day, and a rerun's own history
KEPT = ("as_of", "previous_churn_probability", "previous_stage", "previous_action")
MOVED_POINTS = 0.05  # the manifest counts customers whose risk moved this much


@dataclass(frozen=True)
class Previous:
    """The last run's scores: one row per customer, indexed by ``customer_id``, with
    ``previous_churn_probability``, ``previous_stage`` and ``previous_action``."""

    path: str
    as_of: str | None
    frame: pd.DataFrame
    listed: int | None = None  # a rerun's: the customers of the run its history is of

    @property
    def customers(self) -> int:
        """How many customers the previous run scored (those gone since included)."""
        return len(self.frame) if self.listed is None else self.listed


def read_previous(path: str | Path, as_of: str | None = None) -> Previous:
    """The previous scores file ``path`` (Parquet or CSV, written by ``churnlens score``).
    With ``as_of`` (this run's day) and a file of that same day, its own history columns
    are taken (see the module docstring). Raises :class:`InputError` naming what is wrong."""
    fix = "give --previous a scores file written by `churnlens score`, or --previous none"
    frame, manifest = read_scores_file(
        path, NEEDED, KEPT, label="", noun="previous scores file", fix=fix
    )
    manifest = manifest or {}
    found = manifest.get("as_of") or _day(frame)
    day = None if found is None else str(found)
    if as_of is not None and day == str(as_of) and "previous_stage" in frame.columns:
        history = manifest.get("history") or {}
        own = frame.set_index(frame["customer_id"])  # text: read_scores_file reads ids so
        kept = own[["previous_churn_probability", "previous_stage", "previous_action"]]
        kept = kept[kept["previous_stage"].notna() & (kept["previous_stage"] != UNSEEN)]
        listed = history.get("previous_customers")  # those gone since are not in the file
        listed = None if listed is None else max(int(listed), len(kept))
        return Previous(str(path), history.get("previous_as_of"), kept, listed)
    out = pd.DataFrame(
        {
            "previous_churn_probability": frame["churn_probability"].to_numpy(dtype=float),
            "previous_stage": frame["lifecycle_stage"].astype(str).to_numpy(),
            "previous_action": frame["action"].astype(str).to_numpy(),
        },
        index=pd.Index(frame["customer_id"], name="customer_id"),
    )
    return Previous(str(path), day, out)


def previous_at(
    previous: str | Path | Previous | None, out: Path, as_of: Any
) -> tuple[Previous | None, tuple[str, ...]]:
    """The previous scores a run on ``out`` compares with (``previous``: a path, a
    :class:`Previous`, ``None`` for none, or ``"auto"``: the file at ``out`` itself), and
    what the run should say about them. An explicit path that cannot be read raises; the
    automatic one only says why it was not used."""
    if previous is None:
        return None, ()
    day = str(as_of)
    if isinstance(previous, Previous) or str(previous) != AUTO:
        # read early by the CLI (before the models load) or given by path
        found = previous if isinstance(previous, Previous) else read_previous(previous, day)
        if found.as_of == day:
            return found, (f"--previous {found.path} is of the same day {day}",)
        if found.as_of is not None and found.as_of > day:
            return found, (f"--previous {found.path} is of a later day ({found.as_of}) than "
                           f"this run ({day}): the changes run backwards in time",)  # fmt: skip
        return found, ()
    if not out.is_file():
        return None, (f"no earlier scores at {out.name}: nothing to compare with yet",)
    try:
        found = read_previous(out, day)
    except InputError as exc:
        why = exc.problems[0].message if exc.problems else str(exc)
        return None, (f"the scores being replaced were not compared: {why}",)
    if found.as_of == day or not found.customers:
        return None, (f"the scores being replaced are of the same day {day} and hold no earlier "
                      "run: nothing to compare with",)  # fmt: skip
    if found.as_of is not None and found.as_of > day:
        later = f"the scores being replaced are of a later day ({found.as_of}) than this run "
        return None, (f"{later}({day}): not compared (give --previous to compare anyway)",)
    return found, ()


def _day(frame: pd.DataFrame) -> str | None:
    if "as_of" not in frame.columns or not len(frame):
        return None
    return str(pd.to_datetime(frame["as_of"]).max().date())


def add_history(frame: pd.DataFrame, previous: Previous) -> pd.DataFrame:
    """``frame`` (indexed by customer id, with ``churn_probability``) with the history
    columns of the module docstring."""
    found = previous.frame.reindex(frame.index.astype(str))
    before = found["previous_churn_probability"].to_numpy(dtype=float)
    now = frame["churn_probability"].to_numpy(dtype=float)
    stage = found["previous_stage"].to_numpy(dtype=object)
    return frame.assign(
        previous_churn_probability=before,
        churn_probability_change=now - before,
        previous_stage=np.where(pd.isna(stage), UNSEEN, stage),
        previous_action=found["previous_action"].to_numpy(dtype=object),
    )


def history_table(table: pa.Table) -> pa.Table:
    """A scored part as Arrow with the history columns typed (null where absent), so that
    every part and every night has the same columns."""
    for name, kind in HISTORY_TYPES.items():
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(kind))
        else:
            table = table.append_column(name, pa.nulls(len(table), kind))
    return table


def risk_change(frame: pd.DataFrame, minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether the customer has a previous score, and whether their churn
    probability rose by at least ``minimum`` since."""
    if "churn_probability_change" not in frame.columns:
        none = np.zeros(len(frame), dtype=bool)
        return none, none
    change = frame["churn_probability_change"].to_numpy(dtype=float)
    known = np.isfinite(change)
    return known, known & (change >= minimum - 1e-12)


def change_reasons(frame: pd.DataFrame, rows: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """The reasons of rows decided by a ``risk_change_min`` rule, saying which way it
    judged: the rise in points since the last run, or the risk band without history."""
    known, _ = risk_change(frame, 0.0)
    out = texts.copy()
    change = (
        frame["churn_probability_change"].to_numpy(dtype=float)
        if "churn_probability_change" in frame.columns
        else np.full(len(frame), np.nan)
    )
    bands = frame["risk_band"].astype(str).to_numpy()
    for i in np.flatnonzero(rows):
        if known[i]:
            out[i] = f"{texts[i]} (risk {100 * change[i]:+.1f} points since the last run)"
        else:
            out[i] = f"{texts[i]} ({bands[i]} risk band; no earlier score to compare)"
    return out


def history_manifest(con: Any, relation: str, previous: Previous | None) -> dict[str, Any]:
    """The manifest's ``history``: where the previous scores came from, how many customers
    were matched, new and gone, the stage transitions and how many moved."""
    if previous is None:
        return {"compared": False}
    rows = con.execute(
        f"SELECT previous_stage, lifecycle_stage, count(*) FROM {relation} GROUP BY ALL"
    ).fetchall()
    transitions: dict[str, dict[str, int]] = {}
    for before, now, n in sorted(rows, key=lambda r: (str(r[0]), str(r[1]))):
        transitions.setdefault(str(before), {})[str(now)] = int(n)
    (matched, changed, acted, rose, fell, mean) = con.execute(
        f"""SELECT count(previous_churn_probability),
        count_if(previous_stage <> '{UNSEEN}' AND previous_stage <> lifecycle_stage),
        count_if(previous_action IS NOT NULL AND previous_action <> action),
        count_if(churn_probability_change >= {MOVED_POINTS}),
        count_if(churn_probability_change <= -{MOVED_POINTS}),
        avg(churn_probability_change) FROM {relation}"""
    ).fetchone()
    (total,) = con.execute(f"SELECT count(*) FROM {relation}").fetchone()
    return {
        "compared": True,
        "previous": previous.path,
        "previous_as_of": previous.as_of,
        "previous_customers": previous.customers,
        "matched": int(matched or 0),
        "new": int(total) - int(matched or 0),
        "gone": previous.customers - int(matched or 0),
        "stage_changed": int(changed or 0),
        "action_changed": int(acted or 0),
        f"risk_rose_{round(100 * MOVED_POINTS)}_points": int(rose or 0),
        f"risk_fell_{round(100 * MOVED_POINTS)}_points": int(fell or 0),
        "mean_change": None if mean is None else round(float(mean), 6),
        "transitions": transitions,
    }


def transition_matrix(scores: pd.DataFrame) -> pd.DataFrame:
    """Customers by previous stage (rows) and stage now (columns)."""
    table = pd.crosstab(scores["previous_stage"].astype(str), scores["lifecycle_stage"].astype(str))
    rows = [s for s in (*STAGES, UNSEEN) if s in table.index]
    columns = [s for s in STAGES if s in table.columns]
    return table.reindex(index=rows, columns=columns, fill_value=0)


def biggest_movers(scores: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The customers whose churn probability rose most since the last run, then those
    whose fell most."""
    known = scores[scores["churn_probability_change"].notna()]
    change = "churn_probability_change"
    columns = [
        "customer_id", "previous_churn_probability", "churn_probability", change,
        "previous_stage", "lifecycle_stage", "previous_action", "action",
    ]  # fmt: skip
    rose = known.nlargest(top, change)
    fell = known.nsmallest(top, change)
    return pd.concat([rose[rose[change] > 0], fell[fell[change] < 0]])[columns]


def history_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """The history section's counts as MLflow metrics (``history_*``)."""
    history = manifest.get("history") or {}
    if not history.get("compared"):
        return {}
    keys = ("matched", "new", "gone", "stage_changed", "action_changed", "mean_change")
    return {f"history_{k}": float(history[k]) for k in keys if history.get(k) is not None}
