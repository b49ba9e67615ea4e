"""Pandas reference implementation of the feature specification in ``docs/features.md``.

This is the oracle the DuckDB engine is tested against and the vectorised-pandas baseline
of the benchmark. It is written independently of ``churnlens.features`` (only the
``PopulationStats`` container is shared) and follows the specification line by line: one
function per feature family, each returning one row per customer.

Internally customers are numbered ``0 .. n-1`` in ascending ``customer_id`` order (the
``cust`` column); the ids are put back as the index at the very end.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnlens.config import FeatureSettings, Settings
from churnlens.features.population import PopulationStats

QUINTILES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
_ONE_DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------- column names


def reference_feature_names(settings: Settings | None = None) -> list[str]:
    """The feature columns, in the order of the specification."""
    f = (settings or Settings()).features
    widest_fatigue = max(f.fatigue_windows_days)
    return [
        *(f"freq_contacts_{w}d" for w in f.windows_days),
        *(f"freq_purchases_{w}d" for w in f.windows_days),
        "freq_contacts_trend",
        f"freq_active_days_{f.active_days_window}d",
        "freq_tenure_days",
        "chan_n_channels",
        "chan_entropy",
        "chan_top_share",
        "chan_hhi",
        "chan_switch_rate",
        *(f"chan_share_{c}" for c in f.channels),
        "chan_share_other",
        "gap_mean",
        "gap_median",
        "gap_std",
        "gap_cv",
        "gap_max",
        "gap_last",
        "gap_days_since_contact",
        "rfm_has_purchase",
        "rfm_recency_days",
        "rfm_frequency",
        "rfm_monetary_total",
        "rfm_monetary_mean",
        "rfm_tenure_days",
        "rfm_r_score",
        "rfm_f_score",
        "rfm_m_score",
        "rfm_cell",
        "cycle_n_intervals",
        "cycle_own_days",
        "cycle_days",
        "cycle_overdue_ratio",
        *(f"fatigue_touches_{w}d" for w in f.fatigue_windows_days),
        f"fatigue_response_rate_{widest_fatigue}d",
        "fatigue_touches_since_contact",
        "fatigue_days_since_touch",
    ]


# --------------------------------------------------------------------------- the event log


@dataclass(frozen=True)
class _Log:
    """The events on or before ``D`` with their roles, and the customers.

    ``events`` columns: ``cust`` (customer number), ``timestamp``, ``day`` (days since
    1970-01-01), ``age`` (D - day), ``channel`` and ``event_type`` (categoricals with
    sorted categories, so they sort like the strings), ``amount``, ``is_purchase``,
    ``is_outbound``, ``is_contact``. ``contact_days`` and ``purchase_days``: the distinct
    (``cust``, ``day``, ``age``) with a contact / a purchase, sorted by customer and day.
    """

    events: pd.DataFrame
    customers: pd.Index
    contact_days: pd.DataFrame
    purchase_days: pd.DataFrame

    @property
    def n(self) -> int:
        return len(self.customers)


def _distinct_days(events: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    """Distinct (cust, day, age) of the events where ``mask`` holds, by customer and day.

    ``events`` is sorted by customer and timestamp, so a day is new when the customer or
    the day differs from the previous row's.
    """
    rows = events.loc[mask, ["cust", "day", "age"]]
    new_day = (rows["cust"].diff() != 0) | (rows["day"].diff() != 0)
    return rows[new_day].reset_index(drop=True)


def _prepare(events: pd.DataFrame, as_of: dt.date, settings: Settings) -> _Log:
    """Keep the events whose day is on or before ``as_of``, give every event its role and
    sort them by (customer, timestamp, channel, event_type)."""
    timestamp = pd.to_datetime(events["timestamp"])
    if timestamp.dt.tz is not None:  # defensive: the canonical frame is naive UTC
        timestamp = timestamp.dt.tz_convert("UTC").dt.tz_localize(None)
    day = (timestamp.dt.normalize() - pd.Timestamp("1970-01-01")) // _ONE_DAY
    as_of_day = (pd.Timestamp(as_of) - pd.Timestamp("1970-01-01")) // _ONE_DAY
    age = as_of_day - day
    seen = (age >= 0).to_numpy()
    kept = events.loc[seen, ["customer_id", "channel", "event_type", "amount", "direction"]]

    roles = settings.events
    event_type, direction = kept["event_type"], kept["direction"]
    is_purchase = event_type.isin(roles.purchase_types)
    is_outbound = ~is_purchase & (
        (direction == "outbound") | (direction.isna() & event_type.isin(roles.outbound_types))
    )
    cust, customers = pd.factorize(kept["customer_id"], sort=True)
    # Categoricals with sorted categories: their codes sort like the strings.
    channel, event_type = pd.Categorical(kept["channel"]), pd.Categorical(event_type)
    ev = pd.DataFrame(
        {
            "cust": cust,
            "timestamp": timestamp.to_numpy()[seen],
            "day": day.to_numpy(dtype=np.int64)[seen],
            "age": age.to_numpy(dtype=np.int64)[seen],
            "channel": channel,
            "event_type": event_type,
            "amount": kept["amount"].to_numpy(dtype=float),
            "is_purchase": is_purchase.to_numpy(dtype=bool),
            "is_outbound": is_outbound.to_numpy(dtype=bool),
            "is_contact": ~is_outbound.to_numpy(dtype=bool),  # a purchase or inbound
        }
    )
    # One sort, in the order of the switch rate; np.lexsort sorts by the last key first.
    order = np.lexsort((event_type.codes, channel.codes, ev["timestamp"].to_numpy(), cust))
    ev = ev.take(order).reset_index(drop=True)
    return _Log(
        events=ev,
        customers=pd.Index(customers, name="customer_id"),
        contact_days=_distinct_days(ev, ev["is_contact"]),
        purchase_days=_distinct_days(ev, ev["is_purchase"]),
    )


def _per_customer(values: pd.Series, log: _Log, fill: float = np.nan) -> pd.Series:
    """A per-customer series over all customers ``0 .. n-1`` (``fill`` for the absent)."""
    return values.reindex(pd.RangeIndex(log.n), fill_value=fill).astype(float)


def _count(mask: pd.Series, log: _Log, rows: pd.DataFrame | None = None) -> pd.Series:
    """Number of rows of ``rows`` (default: the events) where ``mask`` holds, per customer."""
    cust = (log.events if rows is None else rows)["cust"].to_numpy()
    return pd.Series(np.bincount(cust[mask.to_numpy()], minlength=log.n), dtype=float)


def _purchase_intervals(log: _Log) -> pd.DataFrame:
    """One row per interval between consecutive purchase days: ``cust``, ``interval``."""
    days = log.purchase_days.copy()
    days["interval"] = days.groupby("cust")["day"].diff()
    return days.dropna(subset=["interval"])[["cust", "interval"]]


# --------------------------------------------------------------------------- families


def _freq(log: _Log, f: FeatureSettings) -> pd.DataFrame:
    """freq_*: contact frequency."""
    ev = log.events
    age, contact, purchase = ev["age"], ev["is_contact"], ev["is_purchase"]
    out: dict[str, pd.Series] = {}
    for w in f.windows_days:
        out[f"freq_contacts_{w}d"] = _count(contact & (age < w), log)
    for w in f.windows_days:
        out[f"freq_purchases_{w}d"] = _count(purchase & (age < w), log)

    t = f.trend_days
    a = _count(contact & (age < t), log)
    b = _count(contact & (age >= t) & (age < 2 * t), log)
    out["freq_contacts_trend"] = ((a - b) / (a + b)).where(a + b > 0, 0.0)

    days = log.contact_days
    recent_days = days["age"] < f.active_days_window
    out[f"freq_active_days_{f.active_days_window}d"] = _count(recent_days, log, rows=days)
    out["freq_tenure_days"] = _per_customer(ev.groupby("cust")["age"].max(), log)
    return pd.DataFrame(out)


def _switch_rate(contacts: pd.DataFrame, log: _Log) -> pd.Series:
    """Share of consecutive contact pairs, in (timestamp, channel, event_type) order, whose
    channels differ; NaN for fewer than two contacts. ``contacts`` is in that order."""
    previous = contacts.groupby("cust")["channel"].shift()
    has_previous = previous.notna()
    switched = has_previous & (contacts["channel"] != previous)
    pairs = _count(has_previous, log, rows=contacts)
    switches = _count(switched, log, rows=contacts)
    return (switches / pairs).where(pairs > 0)


def _chan(log: _Log, f: FeatureSettings) -> pd.DataFrame:
    """chan_*: channel diversity over all contacts up to D."""
    ev = log.events
    contacts = ev.loc[ev["is_contact"], ["cust", "timestamp", "channel", "event_type"]]
    n_c = contacts.groupby(["cust", "channel"], observed=True).size()  # only channels with n_c > 0
    by_cust = n_c.groupby(level="cust")
    p = n_c / by_cust.transform("sum")
    by_cust_p = p.groupby(level="cust")
    s = by_cust.size()

    out: dict[str, pd.Series] = {}
    out["chan_n_channels"] = _per_customer(s, log, 0.0)
    evenness = (-(p * np.log(p))).groupby(level="cust").sum() / np.log(s)
    out["chan_entropy"] = _per_customer(evenness.where(s >= 2, 0.0), log)
    out["chan_top_share"] = _per_customer(by_cust_p.max(), log)
    out["chan_hhi"] = _per_customer((p**2).groupby(level="cust").sum(), log)
    out["chan_switch_rate"] = _switch_rate(contacts, log)

    has_contact = _per_customer(s, log, 0.0) > 0
    channel = p.index.get_level_values("channel")
    for c in f.channels:
        share = p[channel == c].groupby(level="cust").sum()
        out[f"chan_share_{c}"] = _per_customer(share, log, 0.0).where(has_contact)
    other = p[~channel.isin(f.channels)].groupby(level="cust").sum()
    out["chan_share_other"] = _per_customer(other, log, 0.0).where(has_contact)
    return pd.DataFrame(out)


def _gap(log: _Log) -> pd.DataFrame:
    """gap_*: intervals between consecutive contact days."""
    days = log.contact_days.copy()
    days["gap"] = days.groupby("cust")["day"].diff()
    gaps = days.dropna(subset=["gap"]).groupby("cust")["gap"]
    mean = _per_customer(gaps.mean(), log)
    std = _per_customer(gaps.std(ddof=0), log)
    return pd.DataFrame(
        {
            "gap_mean": mean,
            "gap_median": _per_customer(gaps.median(), log),
            "gap_std": std,
            "gap_cv": std / mean,
            "gap_max": _per_customer(gaps.max(), log),
            "gap_last": _per_customer(gaps.last(), log),
            "gap_days_since_contact": _per_customer(days.groupby("cust")["age"].min(), log),
        }
    )


def _rfm_base(log: _Log) -> pd.DataFrame:
    """Recency, frequency, monetary total and tenure, for every customer (NaN without
    purchase for recency and tenure, 0 for frequency and monetary total)."""
    ev = log.events
    purchases = ev[ev["is_purchase"]].groupby("cust")
    return pd.DataFrame(
        {
            "rfm_recency_days": _per_customer(purchases["age"].min(), log),
            "rfm_frequency": _per_customer(purchases.size(), log, 0.0),
            "rfm_monetary_total": _per_customer(purchases["amount"].sum(), log, 0.0),
            "rfm_tenure_days": _per_customer(purchases["age"].max(), log),
        }
    )


def _quintile_cuts(values: pd.Series) -> tuple[float, ...]:
    """20th, 40th, 60th, 80th percentiles (numpy's linear interpolation); NaN when empty."""
    if len(values) == 0:
        return tuple(np.nan for _ in QUINTILES)
    return tuple(float(v) for v in np.quantile(values.to_numpy(dtype=float), QUINTILES))


def _cuts_below(values: pd.Series, cuts: tuple[float, ...]) -> pd.Series:
    """How many cut points are strictly below each value (NaN values give NaN)."""
    below = sum((cut < values).astype(float) for cut in cuts)
    return below.where(values.notna())


def _rfm(log: _Log, population: PopulationStats) -> pd.DataFrame:
    """rfm_*: recency, frequency, monetary, and their quintile scores."""
    base = _rfm_base(log)
    has = base["rfm_frequency"] > 0
    out = pd.DataFrame({"rfm_has_purchase": has.astype(float)})
    out = out.join(base[["rfm_recency_days", "rfm_frequency", "rfm_monetary_total"]])
    out["rfm_monetary_mean"] = (out["rfm_monetary_total"] / out["rfm_frequency"]).where(has)
    out["rfm_tenure_days"] = base["rfm_tenure_days"]
    r = 5 - _cuts_below(base["rfm_recency_days"], population.recency_cuts)
    f = 1 + _cuts_below(base["rfm_frequency"], population.frequency_cuts)
    m = 1 + _cuts_below(base["rfm_monetary_total"], population.monetary_cuts)
    out["rfm_r_score"] = r.where(has)
    out["rfm_f_score"] = f.where(has)
    out["rfm_m_score"] = m.where(has)
    out["rfm_cell"] = (100 * r + 10 * f + m).where(has)
    return out


def _cycle(
    log: _Log, recency: pd.Series, population: PopulationStats, f: FeatureSettings
) -> pd.DataFrame:
    """cycle_*: the customer's own repurchase cycle, shrunk towards the population's P."""
    intervals = _purchase_intervals(log)["interval"].groupby(_purchase_intervals(log)["cust"])
    n = _per_customer(intervals.size(), log, 0.0)
    span = _per_customer(intervals.sum(), log, 0.0)  # sum of intervals = last - first day
    p = population.median_interval_days
    if np.isnan(p):
        p = f.cycle_default_days
    k = f.cycle_prior_intervals
    # as if the customer had also shown k intervals of the population's length P
    cycle_days = ((k * p + span) / (n + k)).where(n + k > 0, p)
    return pd.DataFrame(
        {
            "cycle_n_intervals": n,
            "cycle_own_days": (span / n).where(n > 0),
            "cycle_days": cycle_days,
            "cycle_overdue_ratio": recency / cycle_days,
        }
    )


def _fatigue(log: _Log, f: FeatureSettings) -> pd.DataFrame:
    """fatigue_*: outbound touches and the response to them."""
    ev = log.events
    age, outbound, contact = ev["age"], ev["is_outbound"], ev["is_contact"]
    out: dict[str, pd.Series] = {}
    for w in f.fatigue_windows_days:
        out[f"fatigue_touches_{w}d"] = _count(outbound & (age < w), log)

    widest = max(f.fatigue_windows_days)
    touches = _count(outbound & (age < widest), log)
    contacts = _count(contact & (age < widest), log)
    out[f"fatigue_response_rate_{widest}d"] = (contacts / touches).where(touches > 0)

    last_contact = ev["timestamp"].where(contact).groupby(ev["cust"]).transform("max")
    after_last_contact = last_contact.isna() | (ev["timestamp"] > last_contact)
    out["fatigue_touches_since_contact"] = _count(outbound & after_last_contact, log)
    last_touch_age = ev.loc[outbound, "age"].groupby(ev.loc[outbound, "cust"]).min()
    out["fatigue_days_since_touch"] = _per_customer(last_touch_age, log)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- public API


def _population(log: _Log) -> PopulationStats:
    """Quintile cut points over buyers and the median of customers' own mean intervals."""
    base = _rfm_base(log)
    buyers = base[base["rfm_frequency"] > 0]
    intervals = _purchase_intervals(log)
    own_means = intervals.groupby("cust")["interval"].mean()
    median = float(own_means.median()) if len(own_means) else float("nan")
    return PopulationStats(
        recency_cuts=_quintile_cuts(buyers["rfm_recency_days"]),
        frequency_cuts=_quintile_cuts(buyers["rfm_frequency"]),
        monetary_cuts=_quintile_cuts(buyers["rfm_monetary_total"]),
        median_interval_days=median,
    )


def reference_population(
    events: pd.DataFrame, as_of: dt.date, settings: Settings | None = None
) -> PopulationStats:
    """The population statistics of the events seen as of ``as_of``."""
    settings = settings or Settings()
    return _population(_prepare(events, as_of, settings))


def reference_features(
    events: pd.DataFrame,
    as_of: dt.date,
    settings: Settings | None = None,
    population: PopulationStats | None = None,
) -> pd.DataFrame:
    """All features of ``docs/features.md``, one float64 row per customer.

    ``population`` gives the RFM cut points and the median interval P; when ``None`` they
    are computed from ``events`` (as of ``as_of``).
    """
    settings = settings or Settings()
    f = settings.features
    log = _prepare(events, as_of, settings)
    if population is None:
        population = _population(log)
    rfm = _rfm(log, population)
    frame = pd.concat(
        [
            _freq(log, f),
            _chan(log, f),
            _gap(log),
            rfm,
            _cycle(log, rfm["rfm_recency_days"], population, f),
            _fatigue(log, f),
        ],
        axis=1,
    )
    frame = frame[reference_feature_names(settings)].astype("float64")
    frame.index = log.customers
    return frame
