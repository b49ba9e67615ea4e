"""The outcomes report: one self-contained HTML page a finance team can read.

Headline cards (customers, incremental customers and revenue of the whole campaign with
their intervals), a forest plot of each action's retention lift with its 95% interval, the
table per action (money in ``report.currency``), the actions whose lift is not told from
0 with their minimum detectable effect, and the lifts per lifecycle stage within each
action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnlens.outcomes import ALL
from churnlens.report_html import cards, e, figure, img, money, note, page, table

if TYPE_CHECKING:
    from churnlens.campaigns import OutcomesResult


def points(value: float) -> str:
    """A lift in percentage points: "+2.3 pts"."""
    return "–" if value != value else f"{100 * value:+.1f} pts"


def forest(frame: pd.DataFrame, title: str) -> str:
    """Each row's retention lift (points) with its 95% interval; ``all`` in black."""
    rows = frame.dropna(subset=["lift"])
    if rows.empty:
        return note("No action has customers in both groups: nothing to plot.")
    fig, ax = figure(title, size=(7, 0.5 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    lift = 100 * rows["lift"].to_numpy(float)
    low, high = 100 * rows["lift_low"].to_numpy(float), 100 * rows["lift_high"].to_numpy(float)
    colours = ["black" if a == ALL else "C0" for a in rows["action"]]
    ax.hlines(y, low, high, colors=colours)
    ax.scatter(lift, y, color=colours, zorder=3)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(y, [str(a) for a in rows["action"]])
    ax.set_xlabel("retention lift, treatment - control (percentage points, 95% interval)")
    return img(fig, title)


def _shown(frame: pd.DataFrame, currency: str) -> pd.DataFrame:
    out = pd.DataFrame({"action": frame["action"]})
    if "stage" in frame:
        out["stage"] = frame["stage"]
    out["treated"] = frame["n_treatment"].astype(int)
    out["controls"] = frame["n_control"].astype(int)
    out["retention treated"] = [f"{v:.1%}" if v == v else "–" for v in frame["retention_treatment"]]
    out["retention control"] = [f"{v:.1%}" if v == v else "–" for v in frame["retention_control"]]
    out["lift (95% interval)"] = [
        f"{points(v)} ({points(lo)} to {points(hi)})"
        for v, lo, hi in zip(frame["lift"], frame["lift_low"], frame["lift_high"], strict=True)
    ]
    out["p-value"] = [f"{p:.3f}" if p == p else "–" for p in frame["p_value"]]
    out["revenue per customer lift"] = [
        f"{money(v, currency, 2)} ({money(lo, currency, 2)} to {money(hi, currency, 2)})"
        for v, lo, hi in zip(
            frame["revenue_lift"],
            frame["revenue_lift_low"],
            frame["revenue_lift_high"],
            strict=True,
        )
    ]
    out["incremental customers"] = [
        "–" if v != v else f"{v:,.0f}" for v in frame["incremental_customers"]
    ]
    out["incremental revenue"] = [money(v, currency) for v in frame["incremental_revenue"]]
    if "cost_per_incremental_customer" in frame and frame["cost"].notna().any():
        out["cost per incremental customer"] = [
            money(v, currency, 2) for v in frame["cost_per_incremental_customer"]
        ]
    return out


def build_outcomes_report(result: OutcomesResult, currency: str = "") -> str:
    """The page (see the module docstring)."""
    m, frame, stages = result.manifest, result.table, result.stages
    whole = frame[frame["action"] == ALL].iloc[0]
    window = m["window"]
    lo, hi = whole["incremental_revenue_low"], whole["incremental_revenue_high"]
    body = [
        "<h1>Campaign outcomes</h1>",
        f'<p class="meta">Scored on <code>{e(m["as_of"])}</code>; purchases measured from '
        f"<code>{e(window[0])}</code> to <code>{e(window[1])}</code> "
        f"({e(m['horizon_days'])} days). Experiment "
        f"<code>{e((m.get('experiment') or {}).get('name', '–'))}</code>; events fingerprint "
        f"<code>{e(m['input_fingerprint'][:12])}</code>.</p>",
        cards(
            [
                (f"{int(whole['n_treatment']):,}", "customers contacted"),
                (f"{int(whole['n_control']):,}", "controls (not contacted)"),
                (points(whole["lift"]), "retention lift, all actions"),
                (
                    "–"
                    if whole["incremental_customers"] != whole["incremental_customers"]
                    else f"{whole['incremental_customers']:,.0f}",
                    "incremental customers retained",
                ),
                (money(whole["incremental_revenue"], currency), "incremental revenue"),
            ]
        ),
        note(
            f"Incremental revenue 95% interval: {money(lo, currency)} to {money(hi, currency)}. "
            "Treatment is the customers contacted; control the customers of the same action "
            "and budget rank kept out at random. A lift whose interval spans 0 is not "
            "distinguishable from no effect."
        ),
        "<h2>Retention lift per action</h2>",
        forest(frame, "Retention lift per action"),
        table(_shown(frame, currency)),
    ]
    small = frame[(frame["action"] != ALL) & ~frame["detectable"].astype(bool)]
    if len(small):
        body.append("<h2>Too small to tell</h2>")
        body.append(
            note(
                "These actions' lifts are not told apart from 0 (p >= 0.05: their 95% "
                "intervals hold 0); the minimum detectable effect is the lift their groups "
                "would detect with 80% power."
            )
        )
        mdes = pd.DataFrame(
            {
                "action": small["action"],
                "measured lift": [points(v) for v in small["lift"]],
                "minimum detectable effect": [points(v) for v in small["mde"]],
                "controls": small["n_control"].astype(int),
            }
        )
        body.append(table(mdes))
    if len(stages):
        body.append("<h2>Per lifecycle stage within each action</h2>")
        body.append(table(_shown(stages, currency)))
    body.append(f'<p class="note">Methods: {e("; ".join(m["methods"].values()))}.</p>')
    return page(f"churnlens outcomes {m['as_of']}", body)


__all__ = ["build_outcomes_report", "forest", "points"]
