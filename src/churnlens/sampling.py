"""Customer samples for training on very large logs.

Training builds features at many snapshots, so on a log of tens of millions of
customers it samples customers rather than fail or crawl: a stratified, seeded sample
of at most ``training.max_customers`` customers, with whole histories (every event of a
sampled customer, none of the others). Strata are purchase-count bands over the whole
log (no purchase, 1, 2-3, 4-9, 10+), each sampled at the same rate, so the sample keeps
the log's mix of non-buyers, one-timers and regulars. Within a stratum the customers
with the smallest ``hash(customer_id, seed)`` are taken: the same seed gives the same
sample, whatever the row order or file layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from churnlens.events import EventTable

STRATA = (
    "CASE WHEN p = 0 THEN '0' WHEN p = 1 THEN '1' WHEN p <= 3 THEN '2-3' "
    "WHEN p <= 9 THEN '4-9' ELSE '10+' END"
)


@dataclass(frozen=True)
class CustomerSample:
    """What was sampled: sizes, rate, seed, and customers per stratum (log, sample)."""

    customers: int
    of: int
    rate: float
    seed: int
    strata: dict[str, tuple[int, int]] = field(default_factory=dict)


def sample_customers(
    table: EventTable, max_customers: int, seed: int
) -> tuple[EventTable, CustomerSample | None]:
    """The log restricted to a stratified sample of ``max_customers`` customers, or the
    log itself (and ``None``) when it has no more customers than that."""
    con = table.con
    # one scan of the log: each customer's purchase count (which also counts them)
    counts = f"{table.name}_purchase_counts"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {counts} AS SELECT customer_id, "
        f"count(*) FILTER (WHERE role = 'purchase') AS p FROM {table.name} GROUP BY customer_id"
    )
    try:
        (total,) = con.execute(f"SELECT count(*) FROM {counts}").fetchone()  # type: ignore[misc]
        if total <= max_customers:
            return table, None
        rate = max_customers / total
        ids = f"{table.name}_sample_ids"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {ids} AS
            SELECT customer_id, stratum, n FROM (
                SELECT customer_id, stratum, count(*) OVER (PARTITION BY stratum) AS n,
                       row_number() OVER (PARTITION BY stratum
                                          ORDER BY hash(customer_id, {int(seed)}), customer_id) AS k
                FROM (SELECT customer_id, {STRATA} AS stratum FROM {counts}))
            WHERE k <= ceil(n * {rate!r})
        """)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {counts}")
    rows = con.execute(
        f"SELECT stratum, any_value(n), count(*) FROM {ids} GROUP BY stratum ORDER BY stratum"
    ).fetchall()
    name = f"{table.name}_sample"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {table.name} "
        f"WHERE customer_id IN (SELECT customer_id FROM {ids})"
    )
    strata = {str(s): (int(n), int(k)) for s, n, k in rows}
    sample = CustomerSample(
        customers=sum(k for _, k in strata.values()),
        of=int(total),
        rate=rate,
        seed=seed,
        strata=strata,
    )
    sampled = EventTable(con, name, f"{table.source} (sample)", table.settings, table.rows_read, 0)
    assert sample.customers <= max_customers + len(strata) and math.isfinite(rate)
    return sampled, sample
