"""The HTML building blocks of the analysts' report (:mod:`churnlens.report`).

Cells, tables, header cards, embedded matplotlib PNGs, and the two sections that do not
depend on the scores (retention KPIs and cohorts). Every text taken from the
data is HTML-escaped; money columns (:data:`MONEY_COLUMNS`) carry the report's currency
prefix; a ``risk_band`` cell carries a class that colours it: red for high, amber for
medium, grey for low (:data:`RISK_COLOURS`, also the colours of the plots).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from datetime import date, datetime
from html import escape
from typing import Any

import numpy as np
import pandas as pd

MONEY_COLUMNS = frozenset(
    {"value_at_risk", "winback_value", "expected_value", "value_if_retained", "clv", "revenue"}
)
PERCENT_COLUMNS = frozenset({"share", "churn_probability", "mean_churn_probability"})
RISK_COLOURS: dict[str, str] = {"high": "#c62828", "medium": "#f0a202", "low": "#9e9e9e"}

CSS = """
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
td.risk-high{background:#fde2e1;color:#b71c1c;font-weight:600}
td.risk-medium{background:#fff1d6;color:#8a5300}
td.risk-low{background:#eeeeee;color:#555555}
img{max-width:100%;height:auto}.note{color:#666;font-size:.9rem}
"""


def page(title: str, body: list[str]) -> str:
    """One self-contained HTML page: the title (escaped), the shared style, the body."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def e(value: object) -> str:
    """``value`` as escaped HTML text (quotes too)."""
    return escape(str(value), quote=True)


def missing(value: object) -> bool:
    """None, NA, NaT or NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and np.isnan(value)


def reasons_list(value: object) -> list[str]:
    """Reasons as a list: from a list or array, or from a ``'; '``-joined string (CSV)."""
    if missing(value):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    if isinstance(value, Iterable):
        return [str(v) for v in value if not missing(v)]
    return [str(value)]


def money(value: float, currency: str = "", decimals: int = 0) -> str:
    """``currency`` then the amount with thousands separators: "$1,234", "-$5"."""
    if missing(value):
        return "–"
    amount = float(value)
    text = f"{abs(amount):,.{decimals}f}"
    sign = "-" if amount < 0 and text.strip("0.,") else ""
    return f"{sign}{currency}{text}"


def cell(value: object, column: str, currency: str = "") -> tuple[str, bool]:
    """Display text and whether it is a number (right-aligned)."""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else ""), False
    if missing(value):
        return "–", False
    if isinstance(value, datetime):
        stamp = pd.Timestamp(value)
        return (stamp.date().isoformat() if stamp == stamp.normalize() else str(stamp)), False
    if isinstance(value, date):
        return value.isoformat(), False
    if column in MONEY_COLUMNS and isinstance(value, int | float | np.integer | np.floating):
        return money(float(value), currency, decimals=2), True
    if isinstance(value, int | np.integer):
        return f"{int(value):,}", True
    if isinstance(value, float | np.floating):
        if column.endswith("_rate") or column in PERCENT_COLUMNS:
            return f"{value:.1%}", True
        return f"{value:,.2f}", True
    if isinstance(value, list | tuple | np.ndarray):
        return "; ".join(str(v) for v in value), False
    return str(value), False


def table(frame: pd.DataFrame, currency: str = "") -> str:
    """An HTML table of ``frame`` (its index is not shown), every cell escaped."""
    head = "".join(f"<th>{e(str(c).replace('_', ' '))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            text, numeric = cell(value, str(column), currency)
            if column == "risk_band" and text in RISK_COLOURS:
                cells.append(f'<td class="risk-{text}">{e(text)}</td>')
            else:
                cells.append(f'<td class="n">{e(text)}</td>' if numeric else f"<td>{e(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def cards(items: list[tuple[str, str]]) -> str:
    """Header cards: (value, label) pairs, both escaped."""
    inner = "".join(
        f'<div class="card"><div class="v">{e(v)}</div><div class="k">{e(k)}</div></div>'
        for v, k in items
    )
    return f'<div class="cards">{inner}</div>'


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def figure(title: str, ncols: int = 1, size: tuple[float, float] = (6, 3.6)) -> tuple[Any, Any]:
    """A bare matplotlib Figure (no pyplot: no global backend switch, nothing left open)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    axes = fig.subplots(1, ncols)
    fig.suptitle(title)
    for ax in np.atleast_1d(axes):
        ax.grid(alpha=0.3)
    return fig, axes


def img(fig: Any, alt: str) -> str:
    """The figure as an ``<img>`` with an embedded PNG ``data:`` URI. Text is drawn as
    written: an action or segment named with ``$`` is not read as mathematics."""
    import matplotlib
    from matplotlib.text import Text

    buffer = io.BytesIO()
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    with matplotlib.rc_context({"text.parse_math": False}):  # tick labels made now too
        fig.tight_layout()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def bars(title: str, grouped: pd.DataFrame, label: str, currency: str) -> str:
    """Customers and value at risk per group (rows of ``grouped``), side by side."""
    fig, (left, right) = figure(title, ncols=2, size=(9, 3.6))
    names = [str(n) for n in grouped.index]
    left.barh(names[::-1], grouped["customers"].to_numpy()[::-1])
    left.set(xlabel="customers")
    right.barh(names[::-1], grouped["value_at_risk"].to_numpy()[::-1], color="C3")
    right.set(xlabel=f"value at risk ({currency})" if currency else "value at risk")
    right.tick_params(labelleft=False)
    return img(fig, f"customers and value at risk per {label}")


# ------------------------------------------------------------------------ retention sections


def kpis_section(kpis: pd.DataFrame, currency: str = "") -> str:
    """The retention section: monthly KPIs as a table and a plot."""
    shown = kpis.copy()
    rates = [c for c in ("retention_rate", "churn_rate", "repeat_purchase_rate") if c in kpis]
    if "partial" in shown.columns:
        shown["month"] = [
            f"{cell(m, 'month')[0][:7]}{' (partial)' if p else ''}"
            for m, p in zip(shown["month"], shown["partial"], strict=True)
        ]
        shown = shown.drop(columns="partial")
    fig, ax = figure("Retention by month")
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
    text = (
        '<p class="note">Active customer: a purchase in the trailing window; retention = '
        "(active at month end − new customers) / active at month start; churn = 1 − "
        "retention; repeat purchase rate = share of the month's buyers who had bought "
        "before.</p>"
    )
    return (
        "<h2>Retention</h2>" + text + table(shown, currency) + img(fig, "retention rates by month")
    )


def cohorts_section(cohorts: pd.DataFrame) -> str:
    """The cohorts section: a heat-map of the cohort matrix."""
    values = cohorts.to_numpy(dtype=float)
    rows = [cell(c, "cohort")[0][:7] for c in cohorts.index]
    height = 1.6 + 0.32 * len(rows)
    fig, ax = figure("Share of each cohort purchasing, by months since acquisition")
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
    return "<h2>Cohorts</h2>" + img(fig, "cohort retention heat-map")
