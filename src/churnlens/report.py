"""The analysts' report of a scoring run: one self-contained HTML page.

Everything the page needs is inside it: styles inline, plots as matplotlib PNGs embedded
as base64 ``data:`` URIs, no scripts and no links, so it can be mailed or archived as one
file. All text taken from the data is HTML-escaped (building blocks:
:mod:`churnlens.report_html`).

The page is written for an analyst who budgets retention spend: it leads with the
customers to contact (``contact``: treated customers of a contact action within the
budget, never the control group) and the value at risk among them, one row and a top
list per contact action, with the control group's size beside it; then the win-back pool (``lost``
customers, whose value at risk is 0 and whose value if retained is their
``winback_value``). Lost customers never appear in the lists ranked by value at risk.
Money amounts carry the ``currency`` prefix; risk bands are red (high), amber (medium)
and grey (low), in tables and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens.errors import InputError, Problem
from churnlens.lifecycle import STAGES
from churnlens.outputs import atomic_path, check_output_path, publish_mode
from churnlens.report_html import (
    RISK_COLOURS,
    bars,
    cards,
    cell,
    cohorts_section,
    e,
    figure,
    img,
    kpis_section,
    missing,
    money,
    note,
    page,
    reasons_list,
    table,
)
from churnlens.report_watch import drift_section, history_section

__all__ = ["REQUIRED", "TOP_N", "TOP_PER_ACTION", "build_report", "reasons_list", "write_report"]

REQUIRED = ("customer_id", "churn_probability", "lifecycle_stage", "value_at_risk", "action")
TOP_N = 20
TOP_PER_ACTION = 10
WINBACK_ACTION = "seasonal_winback"
TOP_COLUMNS: tuple[str, ...] = (
    *("customer_id", "churn_probability", "risk_band", "lifecycle_stage", "segment_name"),
    *("value_at_risk", "value_if_retained", "clv", "action", "action_channel", "priority"),
    "reasons",
)
ACTION_COLUMNS: tuple[str, ...] = (
    *("customer_id", "priority", "churn_probability", "risk_band", "lifecycle_stage"),
    *("segment_name", "value_at_risk", "value_if_retained", "clv", "action_channel", "reasons"),
)
WINBACK_COLUMNS: tuple[str, ...] = (
    *("customer_id", "winback_value", "clv", "churn_probability", "risk_band", "segment_name"),
    *("days_since_purchase", "lost_on", "action", "reasons"),
)
_FINGERPRINT_KEYS = ("input_fingerprint", "data_fingerprint", "fingerprint")
_OPTIONAL = ("segment_id", "segment_name", "action_channel", "priority", "risk_band")


# ------------------------------------------------------------------------ the sections


def _check(scores: pd.DataFrame) -> pd.DataFrame:
    absent = [c for c in REQUIRED if c not in scores.columns]
    if absent:
        raise InputError(
            "scores",
            [
                Problem(
                    column=c,
                    message="required column is missing",
                    fix="pass the scores frame written by `churnlens score`",
                )
                for c in absent
            ],
        )
    frame = scores.copy()
    for col in _OPTIONAL:
        if col not in frame.columns:
            frame[col] = None
    frame["reasons"] = (
        frame["reasons"].map(reasons_list) if "reasons" in frame.columns else [[]] * len(frame)
    )
    frame["churn_probability"] = pd.to_numeric(frame["churn_probability"], errors="coerce")
    frame["value_at_risk"] = pd.to_numeric(frame["value_at_risk"], errors="coerce").fillna(0.0)
    for col in ("value_if_retained", "winback_value", "clv", "expected_value"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame["customer_id"] = frame["customer_id"].astype(str)
    has_channel = [not missing(v) and str(v) != "" for v in frame["action_channel"]]
    if "contact" in frame.columns:  # controls have a channel but are not contacted
        frame["contact"] = frame["contact"].fillna(False).astype(bool).to_numpy()
    else:  # scores of earlier versions: no control group
        frame["contact"] = np.array(has_channel, dtype=bool)
    frame["lost"] = (frame["lifecycle_stage"].astype(object) == "lost").to_numpy(dtype=bool)
    if "winback_value" not in frame.columns:  # older scores: the value if retained of lost
        fallback = frame["value_if_retained"] if "value_if_retained" in frame.columns else np.nan
        frame["winback_value"] = pd.Series(fallback, index=frame.index).where(frame["lost"])
    return frame


def _winback_source(scores: pd.DataFrame) -> str | None:
    """The column the win-back values come from (None: no such value in the scores)."""
    for column in ("winback_value", "value_if_retained"):
        if column in scores.columns:
            return column
    return None


def _sum(values: pd.Series) -> float:
    """The sum; NaN when there are values and all are missing."""
    return float(values.sum(min_count=1)) if len(values) else 0.0


def _shown(rows: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    shown = rows[[c for c in columns if c in rows.columns]].copy()
    if "priority" in shown.columns:
        priority = pd.to_numeric(shown["priority"], errors="coerce").astype("Int64")
        shown["priority"] = priority.astype(object)
    return shown


def _values(frame: pd.DataFrame, column: str) -> str:
    if column not in frame.columns:
        return ""
    seen = sorted({cell(v, column)[0] for v in frame[column] if not missing(v)})
    return ", ".join(seen)


def _header(
    frame: pd.DataFrame, manifest: dict[str, Any], currency: str, source: str | None
) -> str:
    as_of = manifest.get("as_of") or _values(frame, "as_of") or "–"
    version = manifest.get("model_version") or _values(frame, "model_version") or "–"
    fingerprint = next((manifest[k] for k in _FINGERPRINT_KEYS if manifest.get(k)), "–")
    contact = frame[frame["contact"]]
    pool = frame[frame["lost"] & (frame["action"].astype(object) == WINBACK_ACTION)]
    pool_value = _sum(pool["winback_value"]) if source else float("nan")
    items = [
        (f"{len(contact):,}", "customers to contact (control group kept apart)"),
        (money(contact["value_at_risk"].sum(), currency), "value at risk among them"),
        (money(frame["value_at_risk"].sum(), currency), "total value at risk"),
        (f"{len(pool):,}", f"win-back pool (lost customers, {WINBACK_ACTION})"),
        (money(pool_value, currency), "win-back value of the pool"),
        (f"{frame['churn_probability'].mean():.1%}" if len(frame) else "–", "mean churn prob."),
        (f"{int((frame['risk_band'] == 'high').sum()):,}", "high-risk customers"),
        (f"{len(frame):,}", "customers scored"),
    ]
    if "group" in frame.columns:
        controls = int((frame["group"].astype(object) == "control").sum())
        items.append((f"{controls:,}", "control group (not contacted)"))
    meta = (
        f"As of <b>{e(as_of)}</b> · model <code>{e(version)}</code> · "
        f"input fingerprint <code>{e(fingerprint)}</code>"
    )
    return f'<h1>Churn report, as of {e(as_of)}</h1><p class="meta">{meta}</p>{cards(items)}'


def _by_priority(rows: pd.DataFrame) -> pd.DataFrame:
    order = rows.assign(_p=pd.to_numeric(rows["priority"], errors="coerce"))
    return order.sort_values(
        ["_p", "value_at_risk", "churn_probability", "customer_id"],
        ascending=[True, False, False, True],
        na_position="last",
        kind="stable",
    )


def _channels(channels: pd.Series) -> str:
    counts = channels.astype(str).value_counts(sort=False)
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return ", ".join(f"{name} ({n:,})" for name, n in counts.items())


def _contacts(frame: pd.DataFrame, currency: str) -> str:
    parts = [
        "<h2>Customers to contact</h2>",
        note(
            "Customers whose action has a channel. Value at risk = churn probability x "
            "value if retained; lost customers have none and are in the win-back pool."
        ),
    ]
    contact = frame[frame["contact"]]
    if contact.empty:
        return "".join([*parts, note("No customer is to be contacted.")])
    summary = contact.groupby("action", sort=False, observed=True).agg(
        customers=("customer_id", "size"),
        value_at_risk=("value_at_risk", "sum"),
        mean_churn_probability=("churn_probability", "mean"),
        channels=("action_channel", _channels),
    )
    summary = summary.sort_values("value_at_risk", ascending=False, kind="stable")
    parts.append(table(summary.rename_axis("action").reset_index(), currency))
    for action in summary.index:
        rows = contact[contact["action"] == action]
        top = _by_priority(rows[~rows["lost"]]).head(TOP_PER_ACTION)
        title = f"{action}: top {len(top)} of {int((~rows['lost']).sum()):,}, by priority"
        if rows["lost"].any():
            title += f" ({int(rows['lost'].sum()):,} lost: in the win-back pool)"
        parts.append(f"<h3>{e(title)}</h3>" + table(_shown(top, ACTION_COLUMNS), currency))
    return "".join(parts)


def _winback(frame: pd.DataFrame, currency: str, source: str | None, n: int = TOP_N) -> str:
    parts = [
        "<h2>Win-back pool</h2>",
        note(
            "Lost customers: no value at risk; their value if retained is their win-back "
            f"value. Those with the action {WINBACK_ACTION} are kept for the next large "
            "seasonal campaign."
        ),
    ]
    if source is None:
        parts.append(note("These scores carry no win-back value (nor a value if retained)."))
    elif source != "winback_value":
        parts.append(note(f"Win-back value: the {source.replace('_', ' ')} of lost customers."))
    lost = frame[frame["lost"]]
    if lost.empty:
        return "".join([*parts, note("No lost customer.")])
    total = money(_sum(lost["winback_value"]), currency)
    parts.append(f"<p>{len(lost):,} lost customers, win-back value <b>{e(total)}</b>.</p>")
    summary = lost.groupby("action", sort=False, observed=True).agg(
        customers=("customer_id", "size"),
        winback_value=("winback_value", lambda v: v.sum(min_count=1)),
        mean_churn_probability=("churn_probability", "mean"),
    )
    summary = summary.sort_values("winback_value", ascending=False, kind="stable")
    parts.append(table(summary.rename_axis("action").reset_index(), currency))
    top = lost.sort_values(
        ["winback_value", "customer_id"], ascending=[False, True], na_position="last"
    ).head(n)
    title = f"Top {len(top)} lost customers by win-back value"
    parts.append(f"<h3>{e(title)}</h3>" + table(_shown(top, WINBACK_COLUMNS), currency))
    return "".join(parts)


def _distribution(frame: pd.DataFrame) -> str:
    fig, ax = figure("Churn probability")
    bins = np.linspace(0, 1, 21)
    bands = [b for b in ("low", "medium", "high") if (frame["risk_band"] == b).any()]
    if bands:
        data = [frame.loc[frame["risk_band"] == b, "churn_probability"].dropna() for b in bands]
        colours = [RISK_COLOURS[b] for b in bands]
        ax.hist(data, bins=bins, stacked=True, color=colours, label=[f"{b} risk" for b in bands])
        ax.legend()
    else:
        ax.hist(frame["churn_probability"].dropna(), bins=bins, color="#607d8b")
    ax.set(xlabel="churn probability", ylabel="customers", xlim=(0, 1))
    return "<h2>Churn probability</h2>" + img(fig, "histogram of churn probabilities")


def _group(frame: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    out = frame.groupby(by, dropna=True, sort=False).agg(
        customers=("customer_id", "size"),
        mean_churn_probability=("churn_probability", "mean"),
        value_at_risk=("value_at_risk", "sum"),
        to_contact=("contact", "sum"),
    )
    out["share"] = out["customers"] / max(len(frame), 1)
    return out[["customers", "share", "mean_churn_probability", "value_at_risk", "to_contact"]]


def _stages(frame: pd.DataFrame, currency: str) -> str:
    by = _group(frame, "lifecycle_stage")
    order = list(STAGES) + sorted(str(s) for s in by.index if s not in STAGES)
    by = by.reindex(order)
    by[["customers", "share", "value_at_risk", "to_contact"]] = by[
        ["customers", "share", "value_at_risk", "to_contact"]
    ].fillna(0)
    by = by.astype({"customers": "int64", "to_contact": "int64"})
    shown = by.rename_axis("lifecycle_stage").reset_index()
    return (
        "<h2>Lifecycle stages</h2>"
        + table(shown, currency)
        + bars("Customers and value at risk per lifecycle stage", by, "lifecycle stage", currency)
    )


def _actions(frame: pd.DataFrame, currency: str) -> str:
    by = _group(frame, "action").sort_values("value_at_risk", ascending=False, kind="stable")
    shown = by.rename_axis("action").reset_index()
    return (
        "<h2>Actions</h2>"
        + table(shown, currency)
        + bars("Customers and value at risk per action", by, "action", currency)
    )


def _segments(frame: pd.DataFrame, profiles: pd.DataFrame | None, currency: str) -> str:
    parts = ["<h2>Segments</h2>"]
    assigned = frame[frame["segment_id"].notna()]
    if assigned.empty:
        parts.append('<p class="note">These scores carry no segment assignments.</p>')
    else:
        ids = pd.to_numeric(assigned["segment_id"]).astype("int64")
        by = _group(assigned.assign(segment_id=ids), "segment_id").sort_index()
        names = assigned["segment_name"].groupby(ids).first()  # first non-null name
        by.insert(0, "segment_name", names.reindex(by.index))
        parts.append(table(by.reset_index(), currency))
    if profiles is not None and not profiles.empty:
        shown = profiles if isinstance(profiles.index, pd.RangeIndex) else profiles.reset_index()
        parts.append("<h3>Segment profiles</h3>" + table(shown, currency))
    return "".join(parts)


def _top(frame: pd.DataFrame, currency: str, n: int = TOP_N) -> str:
    kept = frame[~frame["lost"]]  # lost customers: in the win-back pool
    top = kept.sort_values(
        ["value_at_risk", "churn_probability", "customer_id"],
        ascending=[False, False, True],
        kind="stable",
    ).head(n)
    return (
        f"<h2>Top {n} customers by value at risk</h2>"
        + note("Lost customers are not ranked here: see the win-back pool.")
        + table(_shown(top, TOP_COLUMNS), currency)
    )


def build_report(
    scores: pd.DataFrame,
    kpis: pd.DataFrame | None = None,
    cohorts: pd.DataFrame | None = None,
    segments: pd.DataFrame | None = None,
    manifest: dict[str, Any] | None = None,
    currency: str = "",
) -> str:
    """The report of a scoring run as one self-contained HTML page.

    Parameters
    ----------
    scores
        The scores frame (one row per customer). ``reasons`` may be lists or
        ``'; '``-joined strings; segment columns may be missing or entirely null.
        Without ``winback_value`` the win-back value of lost customers is their
        ``value_if_retained`` (and is shown as unknown without either).
    kpis
        Monthly retention KPIs from :func:`churnlens.retention.monthly_kpis`.
    cohorts
        The cohort matrix from :func:`churnlens.retention.cohort_matrix`.
    segments
        A segment profile table, shown as given.
    manifest
        The run's manifest: ``as_of``, ``model_version`` and the input fingerprint
        (``input_fingerprint``, ``data_fingerprint`` or ``fingerprint``) are shown.
    currency
        The prefix of every money amount (value at risk, win-back value, expected
        value, value if retained, CLV, revenue), e.g. ``"$"``; escaped like all text.

    Returns
    -------
    str
        The HTML page. Customers to contact are those whose action has a channel.

    Raises
    ------
    InputError
        When ``scores`` lacks a required column.
    """
    frame = _check(scores)
    source = _winback_source(scores)
    body = [_header(frame, manifest or {}, currency, source)]
    body += [drift_section(manifest or {}), history_section(scores, manifest or {})]
    body.append(_contacts(frame, currency))
    body += [_winback(frame, currency, source), _distribution(frame), _stages(frame, currency)]
    body += [_actions(frame, currency), _segments(frame, segments, currency)]
    if kpis is not None and not kpis.empty:
        body.append(kpis_section(kpis, currency))
    if cohorts is not None and not cohorts.empty:
        body.append(cohorts_section(cohorts))
    body.append(_top(frame, currency))
    return page("churnlens report", body)


def write_report(html: str, path: str | Path, like: str | Path | None = None) -> Path:
    """Write the page to ``path`` (a ``.html`` file) atomically, with the file mode of
    ``like`` (the scores file it describes) when given; returns the path.

    Raises
    ------
    InputError
        When ``path`` does not end in ``.html``, is a directory or is not writable; the
        previous file, if any, is kept.
    """
    path = check_output_path(path, suffixes=(".html",))
    with atomic_path(path, None if like is None else publish_mode(like)) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
