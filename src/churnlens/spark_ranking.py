"""The contact budget and ``priority`` on Spark, with no step that runs in one task.

:func:`churnlens.ranking.rank_sql` defines both with window functions over the whole
table: on Spark a window without ``PARTITION BY`` (or by action, or by two groups) runs in
one task. Here the same definition is computed in two distributed sorts:

1. **The budget** (with ``max_contacts`` = M): the treated rows of contact actions, only
   their ranking columns, are range-partitioned and sorted by the ranking order
   (:func:`churnlens.ranking.order_keys`, a total order); each row's position is its
   partition and its place in it (``monotonically_increasing_id``). The driver adds up
   the per-partition counts to find the partition and place of the M-th row, and reads
   that one row: the **threshold**. A contact-action row is over the budget exactly when
   it comes after the threshold in the ranking order (then at least M treated rows come
   before it), which every task decides alone; the columns it changes are
   :func:`churnlens.ranking.over_budget`'s, in Spark SQL.
2. **The priority**: the budgeted rows are range-partitioned and sorted by action, then
   the ranking order, so the rows of one action are contiguous and in order within each
   partition. Per (partition, action) the driver gets the count and the first position;
   a row's priority is its position minus its action's first position in its partition,
   plus the rows of that action in the partitions before, plus one (a broadcast table of
   one number per partition and action). The sorted partitions are the output, in the
   order the single-machine writer uses (action, then priority), one part file each.

Both sorts are kept (``persist``) so positions do not change between the counting job and
the jobs that use them; :func:`rank` returns them in :class:`Ranked` for the caller to
release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from churnlens.actions import Policy
from churnlens.ranking import order_keys, over_budget
from churnlens.scoring import EXTRA_COLUMNS, SCORE_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

POSITION = "_churnlens_position"
PART = "_churnlens_part"
OVER = "_churnlens_over"
SHIFT = "_churnlens_shift"
ROW_BITS = 33  # monotonically_increasing_id: partition index << 33 | row in the partition


@dataclass
class Ranked:
    """Ranked scores (``SCORE_COLUMNS`` then ``EXTRA_COLUMNS``), each partition sorted by
    action then priority, partitions in that order; ``kept`` are the persisted frames
    behind it (:meth:`release` them once the scores are written)."""

    frame: DataFrame
    kept: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        for df in self.kept:
            df.unpersist()
        self.kept.clear()


def _order(policy: Policy) -> list[Column]:
    from pyspark.sql import functions as F

    return [
        F.col(c).desc_nulls_last() if desc else F.col(c).asc_nulls_last()
        for c, desc in order_keys(policy)
    ]


def _positioned(df: DataFrame, order: list[Column], partitions: int) -> DataFrame:
    """``df`` range-partitioned and sorted by ``order``, with each row's position (kept)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ordered = df.repartitionByRange(partitions, *order).sortWithinPartitions(*order)
    with_position = ordered.withColumn(POSITION, F.monotonically_increasing_id())
    return with_position.persist(StorageLevel.MEMORY_AND_DISK)


def _part() -> Column:
    from pyspark.sql import functions as F

    return F.shiftright(F.col(POSITION), ROW_BITS)


def after(policy: Policy, row: dict[str, Any]) -> Column:
    """Whether a row comes strictly after ``row`` (its ranking columns) in the ranking
    order: lexicographic over :func:`order_keys`, nulls last, NaN first when descending
    (Spark's order, as its sorts use)."""
    from pyspark.sql import functions as F

    result = F.lit(False)
    for column, desc in reversed(order_keys(policy)):
        value, c = row[column], F.col(column)
        if value is None:  # nulls come last: nothing after, only nulls tie
            later, tie = F.lit(False), c.isNull()
        else:
            later = c.isNull() | ((c < F.lit(value)) if desc else (c > F.lit(value)))
            tie = c.eqNullSafe(F.lit(value))
        result = later | (tie & result)
    return F.coalesce(result, F.lit(False))


def _over(
    scored: DataFrame, policy: Policy, max_contacts: int | None, partitions: int, kept: list
) -> Column:
    """The over-the-budget condition, from the threshold row (see the module's text)."""
    from pyspark.sql import functions as F

    contact = F.col("action").isin(list(policy.contact_actions()))
    if max_contacts is None:
        return F.lit(False)
    if max_contacts == 0:
        return contact
    names = [c for c, _ in order_keys(policy)]
    treated = scored.filter(contact & (F.col("group") == "treatment")).select(*names)
    sorted_treated = _positioned(treated, _order(policy), partitions)
    kept.append(sorted_treated)
    counts = sorted_treated.groupBy(_part().alias(PART)).count().collect()
    wanted = max_contacts
    for part, n in sorted((int(r[0]), int(r[1])) for r in counts):
        if wanted <= n:
            position = (part << ROW_BITS) + wanted - 1
            row = sorted_treated.filter(F.col(POSITION) == position).first()
            assert row is not None, "the threshold row is where the counts put it"
            return contact & after(policy, {c: row[c] for c in names})
        wanted -= n
    return F.lit(False)  # fewer treated rows than the budget: nobody over it


def rank(scored: DataFrame, policy: Policy, max_contacts: int | None, partitions: int) -> Ranked:
    """The contact budget, ``contact`` and ``priority`` of :func:`rank_sql`, computed in
    ``partitions`` range partitions; ``scored`` is read several times (keep it with
    ``persist``)."""
    from pyspark.sql import functions as F

    kept: list[DataFrame] = []
    over = _over(scored, policy, max_contacts, partitions, kept)
    replaced = over_budget(policy, max_contacts, OVER, "spark")
    columns = [c for c in scored.columns if c not in ("priority", "contact")]
    budgeted = scored.withColumn(OVER, over).select(
        *[F.expr(replaced[c]).alias(c) if c in replaced else F.col(c) for c in columns]
    )
    contact = F.col("action").isin(list(policy.contact_actions())) & (F.col("group") == "treatment")
    budgeted = budgeted.withColumn("contact", F.coalesce(contact, F.lit(False)))
    order = [F.col("action").asc_nulls_last(), *_order(policy)]
    ranked = _positioned(budgeted, order, partitions)
    kept.append(ranked)
    groups = ranked.groupBy(_part().alias(PART), "action").agg(
        F.count(F.lit(1)).alias("n"), F.min(POSITION).alias("first")
    )
    before: dict[str, int] = {}
    shifts = []
    for part, action, n, first in sorted(groups.collect(), key=lambda r: int(r[0])):
        shifts.append((int(part), action, before.get(action, 0) - int(first) + 1))
        before[action] = before.get(action, 0) + int(n)
    schema = f"{PART} long, action string, {SHIFT} long"
    table = ranked.sparkSession.createDataFrame(shifts, schema)
    priority = (F.col(POSITION) + F.col(SHIFT)).cast("long").alias("priority")
    joined = ranked.withColumn(PART, _part()).join(F.broadcast(table), [PART, "action"], "left")
    out = joined.select(
        *[priority if c == "priority" else F.col(c) for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS)]
    )
    return Ranked(out, kept)


__all__ = ["Ranked", "after", "rank"]
