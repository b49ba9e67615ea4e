"""The analysts' report of a scoring run: one self-contained HTML page.

Everything the page needs is inside it: styles inline, plots as matplotlib PNGs embedded
as base64 ``data:`` URIs, no scripts and no links, so it can be mailed or archived as one
file. All text taken from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from datetime import date, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens.errors import InputError, Problem
from churnlens.lifecycle import STAGES
from churnlens.outputs import atomic_path, check_output_path

REQUIRED = ("customer_id", "churn_probability", "lifecycle_stage", "value_at_risk", "action")
TOP_N = 20
TOP_COLUMNS: tuple[str, ...] = (
    *("customer_id", "churn_probability", "risk_band", "lifecycle_stage", "segment_name"),
    *("value_at_risk", "action", "action_channel", "priority", "reasons"),
)
_FINGERPRINT_KEYS = ("input_fingerprint", "data_fingerprint", "fingerprint")
_PERCENT = {"share", "churn_probability", "mean_churn_probability"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;margin:.2rem 0 1rem}.meta code{background:#f3f3f3;padding:0 .3rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.7rem 1rem;min-width:180px}
.card .v{font-size:1.6rem;font-weight:600}.card .k{color:#555;font-size:.9rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #e5e5e5;padding:.25rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f6f6}
img{max-width:100%;height:auto}.note{color:#666;font-size:.9rem}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and np.isnan(value)


def reasons_list(value: object) -> list[str]:
    """Reasons as a list: from a list or array, or from a ``'; '``-joined string (CSV)."""
    if _missing(value):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    if isinstance(value, Iterable):
        return [str(v) for v in value if not _missing(v)]
    return [str(value)]


# ------------------------------------------------------------------------ formatting


def _cell(value: object, column: str) -> tuple[str, bool]:
    """Display text and whether it is a number (right-aligned)."""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else ""), False
    if _missing(value):
        return "–", False
    if isinstance(value, datetime):
        stamp = pd.Timestamp(value)
        return (stamp.date().isoformat() if stamp == stamp.normalize() else str(stamp)), False
    if isinstance(value, date):
        return value.isoformat(), False
    if isinstance(value, int | np.integer):
        return f"{int(value):,}", True
    if isinstance(value, float | np.floating):
        if column.endswith("_rate") or column in _PERCENT:
            return f"{value:.1%}", True
        return f"{value:,.2f}", True
    if isinstance(value, list | tuple | np.ndarray):
        return "; ".join(str(v) for v in value), False
    return str(value), False


def _table(frame: pd.DataFrame) -> str:
    """An HTML table of ``frame`` (its index is not shown), every cell escaped."""
    head = "".join(f"<th>{_e(str(c).replace('_', ' '))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            text, numeric = _cell(value, str(column))
            cells.append(f'<td class="n">{_e(text)}</td>' if numeric else f"<td>{_e(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(title: str, ncols: int = 1, size: tuple[float, float] = (6, 3.6)) -> tuple[Any, Any]:
    # A bare Figure (no pyplot): no global backend switch, nothing left open.
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    axes = fig.subplots(1, ncols)
    fig.suptitle(title)
    for ax in np.atleast_1d(axes):
        ax.grid(alpha=0.3)
    return fig, axes


def _img(fig: Any, alt: str) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# ------------------------------------------------------------------------ the sections


def _check(scores: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in scores.columns]
    if missing:
        raise InputError(
            "scores",
            [
                Problem(
                    column=c,
                    message="required column is missing",
                    fix="pass the scores frame written by `churnlens score`",
                )
                for c in missing
            ],
        )
    frame = scores.copy()
    for col in ("segment_id", "segment_name", "action_channel", "priority", "risk_band"):
        if col not in frame.columns:
            frame[col] = None
    frame["reasons"] = (
        frame["reasons"].map(reasons_list) if "reasons" in frame.columns else [[]] * len(frame)
    )
    frame["churn_probability"] = pd.to_numeric(frame["churn_probability"], errors="coerce")
    frame["value_at_risk"] = pd.to_numeric(frame["value_at_risk"], errors="coerce").fillna(0.0)
    frame["customer_id"] = frame["customer_id"].astype(str)
    has_channel = [not _missing(v) and str(v) != "" for v in frame["action_channel"]]
    frame["contact"] = np.array(has_channel, dtype=bool)
    return frame


def _values(frame: pd.DataFrame, column: str) -> str:
    if column not in frame.columns:
        return ""
    seen = sorted({_cell(v, column)[0] for v in frame[column] if not _missing(v)})
    return ", ".join(seen)


def _header(frame: pd.DataFrame, manifest: dict[str, Any]) -> str:
    as_of = manifest.get("as_of") or _values(frame, "as_of") or "–"
    version = manifest.get("model_version") or _values(frame, "model_version") or "–"
    fingerprint = next((manifest[k] for k in _FINGERPRINT_KEYS if manifest.get(k)), "–")
    cards = [
        (f"{len(frame):,}", "customers scored"),
        (f"{frame['value_at_risk'].sum():,.0f}", "total value at risk"),
        (f"{int(frame['contact'].sum()):,}", "customers to contact (action with a channel)"),
        (f"{frame['churn_probability'].mean():.1%}" if len(frame) else "–", "mean churn prob."),
        (f"{int((frame['risk_band'] == 'high').sum()):,}", "high-risk customers"),
    ]
    card_html = "".join(
        f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
        for v, k in cards
    )
    meta = (
        f"As of <b>{_e(as_of)}</b> · model <code>{_e(version)}</code> · "
        f"input fingerprint <code>{_e(fingerprint)}</code>"
    )
    return (
        f"<h1>Churn report, as of {_e(as_of)}</h1>"
        f'<p class="meta">{meta}</p><div class="cards">{card_html}</div>'
    )


def _distribution(frame: pd.DataFrame) -> str:
    fig, ax = _figure("Churn probability")
    bins = np.linspace(0, 1, 21)
    bands = [b for b in ("low", "medium", "high") if (frame["risk_band"] == b).any()]
    if bands:
        data = [frame.loc[frame["risk_band"] == b, "churn_probability"].dropna() for b in bands]
        ax.hist(data, bins=bins, stacked=True, label=[f"{b} risk" for b in bands])
        ax.legend()
    else:
        ax.hist(frame["churn_probability"].dropna(), bins=bins)
    ax.set(xlabel="churn probability", ylabel="customers", xlim=(0, 1))
    return "<h2>Churn probability</h2>" + _img(fig, "histogram of churn probabilities")


def _group(frame: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    out = frame.groupby(by, dropna=True, sort=False).agg(
        customers=("customer_id", "size"),
        mean_churn_probability=("churn_probability", "mean"),
        value_at_risk=("value_at_risk", "sum"),
        to_contact=("contact", "sum"),
    )
    out["share"] = out["customers"] / max(len(frame), 1)
    return out[["customers", "share", "mean_churn_probability", "value_at_risk", "to_contact"]]


def _bars(title: str, table: pd.DataFrame, label: str) -> str:
    fig, (left, right) = _figure(title, ncols=2, size=(9, 3.6))
    names = [str(n) for n in table.index]
    left.barh(names[::-1], table["customers"].to_numpy()[::-1])
    left.set(xlabel="customers")
    right.barh(names[::-1], table["value_at_risk"].to_numpy()[::-1], color="C3")
    right.set(xlabel="value at risk")
    right.tick_params(labelleft=False)
    return _img(fig, f"customers and value at risk per {label}")


def _stages(frame: pd.DataFrame) -> str:
    table = _group(frame, "lifecycle_stage")
    order = list(STAGES) + sorted(str(s) for s in table.index if s not in STAGES)
    table = table.reindex(order)
    table[["customers", "share", "value_at_risk", "to_contact"]] = table[
        ["customers", "share", "value_at_risk", "to_contact"]
    ].fillna(0)
    table = table.astype({"customers": "int64", "to_contact": "int64"})
    shown = table.rename_axis("lifecycle_stage").reset_index()
    return (
        "<h2>Lifecycle stages</h2>"
        + _table(shown)
        + _bars("Customers and value at risk per lifecycle stage", table, "lifecycle stage")
    )


def _actions(frame: pd.DataFrame) -> str:
    table = _group(frame, "action").sort_values("value_at_risk", ascending=False, kind="stable")
    shown = table.rename_axis("action").reset_index()
    return (
        "<h2>Actions</h2>"
        + _table(shown)
        + _bars("Customers and value at risk per action", table, "action")
    )


def _segments(frame: pd.DataFrame, profiles: pd.DataFrame | None) -> str:
    parts = ["<h2>Segments</h2>"]
    assigned = frame[frame["segment_id"].notna()]
    if assigned.empty:
        parts.append('<p class="note">These scores carry no segment assignments.</p>')
    else:
        ids = pd.to_numeric(assigned["segment_id"]).astype("int64")
        table = _group(assigned.assign(segment_id=ids), "segment_id").sort_index()
        names = assigned["segment_name"].groupby(ids).first()  # first non-null name
        table.insert(0, "segment_name", names.reindex(table.index))
        parts.append(_table(table.reset_index()))
    if profiles is not None and not profiles.empty:
        shown = profiles if isinstance(profiles.index, pd.RangeIndex) else profiles.reset_index()
        parts.append("<h3>Segment profiles</h3>" + _table(shown))
    return "".join(parts)


def _kpis(kpis: pd.DataFrame) -> str:
    shown = kpis.copy()
    rates = [c for c in ("retention_rate", "churn_rate", "repeat_purchase_rate") if c in kpis]
    if "partial" in shown.columns:
        shown["month"] = [
            f"{_cell(m, 'month')[0][:7]}{' (partial)' if p else ''}"
            for m, p in zip(shown["month"], shown["partial"], strict=True)
        ]
        shown = shown.drop(columns="partial")
    fig, ax = _figure("Retention by month")
    months = pd.to_datetime(pd.Series(list(kpis["month"])))
    for column in rates:
        values = kpis[column].to_numpy(dtype=float)
        ax.plot(months, values, marker="o", label=column.replace("_", " "))
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="month", ylabel="rate")
    if rates:
        ax.legend()
    fig.autofmt_xdate()
    note = (
        '<p class="note">Active customer: a purchase in the trailing window; retention = '
        "(active at month end − new customers) / active at month start; churn = 1 − "
        "retention; repeat purchase rate = share of the month's buyers who had bought "
        "before.</p>"
    )
    return "<h2>Retention</h2>" + note + _table(shown) + _img(fig, "retention rates by month")


def _cohorts(cohorts: pd.DataFrame) -> str:
    values = cohorts.to_numpy(dtype=float)
    rows = [_cell(c, "cohort")[0][:7] for c in cohorts.index]
    height = 1.6 + 0.32 * len(rows)
    fig, ax = _figure("Share of each cohort purchasing, by months since acquisition")
    fig.set_size_inches(9, height)
    ax.grid(False)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in cohorts.columns])
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="months since first purchase", ylabel="cohort (first purchase)")
    if values.size <= 400:
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                color = "white" if v > 0.6 else "black"
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.03)
    return "<h2>Cohorts</h2>" + _img(fig, "cohort retention heat-map")


def _top(frame: pd.DataFrame, n: int = TOP_N) -> str:
    top = frame.sort_values(
        ["value_at_risk", "churn_probability", "customer_id"],
        ascending=[False, False, True],
        kind="stable",
    ).head(n)
    shown = top[[c for c in TOP_COLUMNS if c in top.columns]].copy()
    shown["priority"] = pd.to_numeric(shown["priority"], errors="coerce").astype("Int64")
    shown["priority"] = shown["priority"].astype(object)
    return f"<h2>Top {n} customers by value at risk</h2>" + _table(shown)


def build_report(
    scores: pd.DataFrame,
    kpis: pd.DataFrame | None = None,
    cohorts: pd.DataFrame | None = None,
    segments: pd.DataFrame | None = None,
    manifest: dict[str, Any] | None = None,
) -> str:
    """The report of a scoring run as one self-contained HTML page.

    Parameters
    ----------
    scores
        The scores frame (one row per customer). ``reasons`` may be lists or
        ``'; '``-joined strings; segment columns may be missing or entirely null.
    kpis
        Monthly retention KPIs from :func:`churnlens.retention.monthly_kpis`.
    cohorts
        The cohort matrix from :func:`churnlens.retention.cohort_matrix`.
    segments
        A segment profile table, shown as given.
    manifest
        The run's manifest: ``as_of``, ``model_version`` and the input fingerprint
        (``input_fingerprint``, ``data_fingerprint`` or ``fingerprint``) are shown.

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
    body = [_header(frame, manifest or {}), _distribution(frame), _stages(frame)]
    body += [_actions(frame), _segments(frame, segments)]
    if kpis is not None and not kpis.empty:
        body.append(_kpis(kpis))
    if cohorts is not None and not cohorts.empty:
        body.append(_cohorts(cohorts))
    body.append(_top(frame))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>churnlens report</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(html: str, path: str | Path) -> Path:
    """Write the page to ``path`` (a ``.html`` file) atomically; returns the path.

    Raises
    ------
    InputError
        When ``path`` does not end in ``.html``, is a directory or is not writable; the
        previous file, if any, is kept.
    """
    path = check_output_path(path, suffixes=(".html",))
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
