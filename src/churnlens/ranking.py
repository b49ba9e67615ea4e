"""The order of the contact list: the budget, who is contacted, and ``priority``.

:func:`rank_sql` is the one definition of the contact budget and the priorities, in
DuckDB's or Spark's SQL, for whichever engine scores; :func:`with_ranking` resolves the
policy's ``rank_by`` (``auto``: incremental value when an uplift model scores, else
value at risk).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from churnlens.actions import BUDGET_RULE, Policy
from churnlens.errors import ConfigError
from churnlens.events.sql import ident, literal

RANKINGS: tuple[str, ...] = ("incremental_value", "value_at_risk")


def with_ranking(policy: Policy, uplift: Any, rank_by: str | None = None) -> Policy:
    """The policy with a concrete ``rank_by``: ``rank_by`` when given, else the policy's;
    ``auto`` is ``incremental_value`` with an uplift model (``uplift``: the model, or
    whether there is one) whose ranking beat value at risk on the campaigns it learned
    from (its ``ranks_by_increment()``), else ``value_at_risk``. Ranking by incremental
    value needs an uplift model."""
    chosen = rank_by or policy.rank_by
    present = uplift is not None and uplift is not False
    if chosen == "auto":
        trusted = getattr(uplift, "ranks_by_increment", lambda: True)()
        chosen = "incremental_value" if present and trusted else "value_at_risk"
    if chosen not in RANKINGS:
        raise ConfigError(f"rank_by must be one of auto, {', '.join(RANKINGS)}; got {chosen!r}")
    if chosen == "incremental_value" and not present:
        raise ConfigError(
            "ranking by incremental value needs an uplift model: train one with "
            "`churnlens train-uplift`, give --uplift-model, or rank by value_at_risk"
        )
    return policy.model_copy(update={"rank_by": chosen})


def order_keys(policy: Policy) -> list[tuple[str, bool]]:
    """The ranking order as (column, descending), nulls last in each: the policy's
    ``rank_by`` (when not value at risk), value at risk, churn probability (descending),
    then ``customer_id`` (ascending), which makes it a total order."""
    rank_by = "value_at_risk" if policy.rank_by == "auto" else policy.rank_by
    keys = [("value_at_risk", True), ("churn_probability", True), ("customer_id", False)]
    return ([(rank_by, True)] if rank_by != "value_at_risk" else []) + keys


def contact_sql(policy: Policy, dialect: str = "duckdb") -> str:
    """The policy's contact actions as an SQL list (for ``action IN (...)``)."""
    return ", ".join(literal(a, dialect) for a in policy.contact_actions()) or "NULL"


def over_budget(
    policy: Policy, max_contacts: int | None, over: str, dialect: str = "duckdb"
) -> dict[str, str]:
    """SQL for the columns a row over the contact budget changes (``over``: the SQL
    condition that it is): the fallback action, no channel, group ``none``, the rule
    ``budget`` and a reason saying so."""
    note = literal(f"over the contact budget of {max_contacts}", dialect)
    group = ident("group", dialect)
    return {
        "action": f"CASE WHEN {over} THEN {literal(policy.fallback, dialect)} ELSE action END",
        "action_channel": f"CASE WHEN {over} THEN NULL ELSE action_channel END",
        "group": f"CASE WHEN {over} THEN 'none' ELSE {group} END",
        "rule": f"CASE WHEN {over} THEN {literal(BUDGET_RULE, dialect)} ELSE rule END",
        "reasons": f"CASE WHEN {over} THEN array_append(reasons, {note}) ELSE reasons END",
    }


def rank_sql(
    relation: str,
    columns: Sequence[str],
    policy: Policy,
    max_contacts: int | None,
    dialect: str = "duckdb",
) -> str:
    """SQL over a relation of decided rows (with ``columns``, among them ``customer_id``,
    ``action``, ``action_channel``, ``rule``, ``reasons``, ``group``, ``value_at_risk``
    and ``churn_probability``) that applies the contact budget, says who is contacted
    and ranks ``priority`` (1 = first) in the same order within each action: the one
    definition of all three, in DuckDB's or Spark's dialect (``dialect``), for whichever
    engine scores.

    The contacting rows are ordered by the policy's ``rank_by`` (``value_at_risk``, or
    ``incremental_value`` with an uplift model: ``auto`` chooses; see
    :func:`with_ranking`; ties: higher value at risk, higher churn
    probability, then customer id). The budget counts treated customers only: a row is
    within it when fewer than ``max_contacts`` treated rows come before it, so treatment and control
    are cut at the same rank and the controls are exactly the customers who would have
    been contacted (:mod:`churnlens.experiments`). Rows over the budget get the fallback
    action, no channel, group ``none``, the rule ``budget`` and a reason saying so.
    ``contact`` is true for the treated rows of a contact action within the budget.
    Every action name and text reaches the SQL quoted (:mod:`churnlens.events.sql`).
    """
    group = ident("group", dialect)
    contact = contact_sql(policy, dialect)
    treated = f"CASE WHEN {group} = 'treatment' THEN 1 ELSE 0 END"
    order = ", ".join(f"{c} DESC NULLS LAST" if desc else c for c, desc in order_keys(policy))
    over = "false"
    if max_contacts is not None:
        over = f"(action IN ({contact}) AND treated_before >= {int(max_contacts)})"
    replaced = over_budget(policy, max_contacts, over, dialect)
    columns = [c for c in columns if c not in ("priority", "contact")]
    budgeted = ", ".join(
        f"{replaced.get(c, ident(c, dialect))} AS {ident(c, dialect)}" for c in columns
    )
    kept = ", ".join(ident(c, dialect) for c in columns)
    return f"""
        SELECT {kept},
               (action IN ({contact}) AND {group} = 'treatment') AS contact,
               CAST(row_number() OVER (PARTITION BY action ORDER BY {order} NULLS LAST)
                    AS BIGINT) AS priority
        FROM (
            SELECT {budgeted}
            FROM (SELECT *,
                         CASE WHEN action IN ({contact})
                              THEN sum({treated}) OVER (
                                  PARTITION BY action IN ({contact}) ORDER BY {order} NULLS LAST
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - {treated}
                         END AS treated_before
                  FROM {relation}) AS decided) AS budgeted
    """


__all__ = ["RANKINGS", "contact_sql", "order_keys", "over_budget", "rank_sql", "with_ranking"]
