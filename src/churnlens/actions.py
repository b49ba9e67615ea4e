"""The action policy: ordered rules turn a scored customer into one next action.

A policy (``configs/actions.yaml``; :class:`Policy` defaults are the same policy) holds

- ``risk_bands``: the churn probabilities at which the ``medium`` and ``high`` bands start;
- ``value_tiers``: the quantiles of the value if retained (over customers who have
  bought) at which the ``medium`` and ``high`` tiers start;
- ``fatigue``: when a customer is over-contacted and when a channel is worn out
  (:class:`~churnlens.contacts.FatigueRules`);
- ``actions``: every action a rule may give, and whether it contacts the customer;
- ``rules``: ordered; the first whose every condition holds gives the action, the
  channel and the reason; customers no rule matches get ``fallback`` (the shipped policy
  ends in an explicit catch-all rule, ``steady``, so that every customer has a reason).

Contacting actions go out on the customer's preferred inbound channel (or the rule's
fixed channel), never on a fatigued one; a customer with no channel left gets
``no_channel_action``. ``--max-contacts`` keeps the highest value at risk among the
contacting actions and gives the rest ``fallback`` with the rule ``budget``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churnlens.config import format_validation_error
from churnlens.contacts import FatigueRules
from churnlens.errors import ConfigError
from churnlens.history import change_reasons, risk_change
from churnlens.lifecycle import STAGES
from churnlens.reasons import append_reason
from churnlens.yaml_files import read_yaml

Stage = Literal["new", "active", "silent", "sleeping", "lost"]
Band = Literal["low", "medium", "high"]
BANDS: tuple[str, ...] = ("low", "medium", "high")
BUDGET_RULE = "budget"
UPLIFT_RULE = "negative_uplift"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"  # rule and action names: never SQL, never markup
UPLIFT = "uplift"
PRIOR = f"{UPLIFT}__prior"  # an uplift model's column for contact actions it has no model of
RISE = 0.05  # the shipped rising_risk rule: risk rose by at least 5 points since the last run


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Frozen):
    """Where the medium and the high band start."""

    medium: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.medium > self.high:
            raise ValueError(f"medium ({self.medium}) must not exceed high ({self.high})")
        return self


class ActionSpec(_Frozen):
    """An action a rule may give."""

    contact: bool = Field(description="does the action reach out to the customer?")
    description: str = ""


class Conditions(_Frozen):
    """What a rule matches on; every condition given must hold (none given: always)."""

    stage: tuple[Stage, ...] | None = None
    risk_band: tuple[Band, ...] | None = None
    value_tier: tuple[Band, ...] | None = None
    segment: tuple[int | str, ...] | None = Field(None, description="segment ids or names")
    min_churn_probability: float | None = Field(None, ge=0, le=1)
    max_churn_probability: float | None = Field(None, ge=0, le=1)
    over_contacted: bool | None = None
    uplift_min: float | None = Field(
        None, ge=-1, le=1, description="predicted uplift of the rule's action at least this"
    )
    risk_change_min: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="churn probability rose at least this since the last "
        "run; where a customer has no earlier score, risk_band stands in for it",
    )


class Rule(_Frozen):
    """If ``when`` holds: ``action`` on ``channel`` ("preferred" or a channel name)."""

    name: str = Field(pattern=NAME_PATTERN)
    when: Conditions = Conditions()
    action: str
    channel: str = "preferred"
    reason: str | None = None

    def text(self) -> str:
        return self.reason or f"policy rule {self.name}"


class Policy(_Frozen):
    """The whole action policy (see the module docstring)."""

    risk_bands: Thresholds = Thresholds(medium=0.3, high=0.6)
    value_tiers: Thresholds = Thresholds(medium=0.5, high=0.8)
    fatigue: FatigueRules = FatigueRules()
    default_channel: str = Field("email", description="when no inbound channel is known")
    actions: dict[str, ActionSpec] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    rules: tuple[Rule, ...] = Field(default_factory=lambda: DEFAULT_RULES)
    fallback: str = "no_action"
    no_channel_action: str = "do_not_disturb"
    uplift_floor: float | None = Field(
        -0.02, ge=-1, le=1, description="below this predicted uplift nobody is contacted"
    )
    negative_uplift_action: str = "do_not_disturb"
    rank_by: Literal["auto", "incremental_value", "value_at_risk"] = Field(
        "auto", description="budget and priority order; auto: incremental value with uplift"
    )

    @model_validator(mode="after")
    def _known_actions(self) -> Policy:
        declared = sorted(self.actions)
        odd = [name for name in declared if not re.match(NAME_PATTERN, name)]
        if odd:
            raise ValueError(
                f"actions: names are lower-case letters, digits and _ (as rule names); "
                f"got {', '.join(repr(n[:60]) for n in odd)}"
            )
        for where, action in [
            *((f"rules[{i}] ({r.name}).action", r.action) for i, r in enumerate(self.rules)),
            ("fallback", self.fallback),
            ("no_channel_action", self.no_channel_action),
            ("negative_uplift_action", self.negative_uplift_action),
        ]:
            if action not in self.actions:
                raise ValueError(
                    f"{where}: unknown action {action!r}; declared actions: {declared} "
                    "(declare it under 'actions' with contact: true/false)"
                )
        for name in (self.fallback, self.no_channel_action, self.negative_uplift_action):
            if self.actions[name].contact:
                raise ValueError(f"action {name!r} is a fallback and must have contact: false")
        names = [r.name for r in self.rules]
        for i, rule in enumerate(self.rules):
            low, high = rule.when.min_churn_probability, rule.when.max_churn_probability
            if low is not None and high is not None and low > high:
                raise ValueError(
                    f"rules[{i}] ({rule.name}): min_churn_probability {low} is above "
                    f"max_churn_probability {high}: the rule can never match"
                )
            if rule.when == Conditions() and i < len(self.rules) - 1:
                later = ", ".join(r.name for r in self.rules[i + 1 :])
                raise ValueError(
                    f"rules[{i}] ({rule.name}) has no conditions, so it matches every "
                    f"customer and the rules after it never apply ({later}); move it last"
                )
        reserved = {BUDGET_RULE, UPLIFT_RULE}
        twice = sorted({n for n in names if names.count(n) > 1} | (reserved & set(names)))
        if twice:
            raise ValueError(f"rule names must be unique and not {sorted(reserved)}: {twice}")
        return self

    def notes(self, channels: Sequence[str], segments: Any = None) -> list[str]:
        """What a scoring run should say about this policy on this data: channels the
        features do not know, segments the segments model (``None``: none loaded) lacks."""
        known = {*channels, "other"}
        out = [
            f"{where} names channel {channel!r}, which is not among the feature channels "
            f"({', '.join(channels)}); every other channel is counted as 'other'"
            for where, channel in [
                ("default_channel", self.default_channel),
                *((f"rule {r.name}", r.channel) for r in self.rules),
            ]
            if channel not in ("preferred", "none", *known)
        ]
        for rule in (r for r in self.rules if r.when.segment is not None):
            if segments is None:
                out.append(
                    f"rule {rule.name} needs segments, but no segments model is loaded: "
                    "it never matches"
                )
                continue
            have = {*segments.segment_ids_, *segments.segment_names_.values()}
            odd = [s for s in rule.when.segment if s not in have]
            if odd:
                out.append(
                    f"rule {rule.name} names segments {odd} that the segments model does not "
                    f"have (it has {sorted(map(str, segments.segment_names_.values()))})"
                )
        return out

    def contact_actions(self) -> list[str]:
        return sorted(name for name, spec in self.actions.items() if spec.contact)


DEFAULT_ACTIONS: dict[str, ActionSpec] = {
    "do_not_disturb": ActionSpec(contact=False, description="rest the customer"),
    "onboarding_guide": ActionSpec(contact=True, description="help a new customer start"),
    "vip_winback_offer": ActionSpec(contact=True, description="personal offer to a valued lapser"),
    "vip_care": ActionSpec(contact=True, description="service and recognition, no discount"),
    "nurture": ActionSpec(contact=True, description="relationship content, no discount"),
    "reactivation_discount": ActionSpec(contact=True, description="discount to come back"),
    "seasonal_winback": ActionSpec(
        contact=False, description="in the next large seasonal campaign; no one-to-one spend"
    ),
    "let_go": ActionSpec(contact=False, description="no spend; seasonal campaigns only"),
    "no_action": ActionSpec(contact=False, description="nothing to do now"),
}
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="over_contacted",
        when=Conditions(over_contacted=True),
        action="do_not_disturb",
        channel="none",
        reason="many recent touches, few responses: more would push them away",
    ),
    Rule(
        name="new_customer",
        when=Conditions(stage=("new",)),
        action="onboarding_guide",
        reason="new customer",
    ),
    Rule(
        name="vip_at_risk",
        when=Conditions(stage=("silent", "sleeping"), value_tier=("high",), risk_band=("high",)),
        action="vip_winback_offer",
        reason="high-value customer at high risk",
    ),
    Rule(
        name="vip_active",
        when=Conditions(stage=("active",), value_tier=("high",)),
        action="vip_care",
        reason="active high-value customer",
    ),
    Rule(
        name="rising_risk",
        when=Conditions(
            stage=("active", "silent"), risk_band=("medium", "high"), risk_change_min=RISE
        ),
        action="nurture",
        reason="risk rising while still engaged",
    ),
    Rule(
        name="sleeping",
        when=Conditions(stage=("sleeping",)),
        action="reactivation_discount",
        reason="sleeping customer",
    ),
    Rule(
        name="lost_high_value",
        when=Conditions(stage=("lost",), value_tier=("high",)),
        action="seasonal_winback",
        channel="none",
        reason="lost but of high value: include in the next large seasonal campaign",
    ),
    Rule(
        name="lost",
        when=Conditions(stage=("lost",)),
        action="let_go",
        channel="none",
        reason="lost and not of high value: no spend",
    ),
    Rule(
        name="steady",
        action="no_action",
        reason="no rule above applies: low risk or low value, nothing to do now",
    ),
)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in a YAML file; ``None`` gives the shipped default policy."""
    if path is None:
        return Policy()
    path, data = read_yaml(path, "policy")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), root=Policy)) from None


def band(values: np.ndarray, cuts: Thresholds | tuple[float, float]) -> pd.Categorical:
    """``low`` / ``medium`` / ``high`` by the two cut points (a value on a cut is above)."""
    medium, high = (cuts.medium, cuts.high) if isinstance(cuts, Thresholds) else cuts
    values = np.asarray(values, dtype=float)
    codes = (values >= medium).astype(int) + (values >= high).astype(int)
    return pd.Categorical.from_codes(codes, categories=list(BANDS), ordered=True)


def _matches(rule: Rule, frame: pd.DataFrame) -> np.ndarray:
    when, ok = rule.when, np.ones(len(frame), dtype=bool)
    for column in ("stage", "risk_band", "value_tier"):
        allowed = getattr(when, column)
        if allowed is not None:
            name = "lifecycle_stage" if column == "stage" else column
            holds = frame[name].astype(object).isin(allowed).to_numpy()
            if column == "risk_band" and when.risk_change_min is not None:
                known, _ = risk_change(frame, when.risk_change_min)
                holds = holds | known  # with history, the change decides instead of the band
            ok &= holds
    if when.risk_change_min is not None:
        known, rose = risk_change(frame, when.risk_change_min)
        ok &= ~known | rose
    if when.segment is not None:
        ids = [s for s in when.segment if isinstance(s, int)]
        names = [s for s in when.segment if isinstance(s, str)]
        ok &= (frame["segment_id"].isin(ids) | frame["segment_name"].isin(names)).to_numpy()
    p = frame["churn_probability"].to_numpy(dtype=float)
    if when.min_churn_probability is not None:
        ok &= p >= when.min_churn_probability
    if when.max_churn_probability is not None:
        ok &= p <= when.max_churn_probability
    if when.over_contacted is not None:
        ok &= frame["over_contacted"].to_numpy(dtype=bool) == when.over_contacted
    if when.uplift_min is not None and f"{UPLIFT}_{rule.action}" in frame.columns:
        uplift = frame[f"{UPLIFT}_{rule.action}"].to_numpy(dtype=float)
        ok &= np.isnan(uplift) | (uplift >= when.uplift_min)  # no prediction: no condition
    return ok


def chosen_uplift(frame: pd.DataFrame, actions: np.ndarray, contact: np.ndarray) -> np.ndarray:
    """Each row's predicted uplift for ``actions[i]`` (the ``uplift_<action>`` columns an
    uplift model adds); for a contact action without a model of its own, the model's
    prior (``uplift__prior``: what the actions do on average); otherwise NaN."""
    out = np.full(len(frame), np.nan)
    for action in np.unique(actions.astype(str)):
        column = f"{UPLIFT}_{action}"
        rows = actions == action
        if column in frame.columns:
            out[rows] = frame[column].to_numpy(dtype=float)[rows]
        elif PRIOR in frame.columns:
            rows &= contact
            out[rows] = frame[PRIOR].to_numpy(dtype=float)[rows]
    return out


def _usable(channel: object) -> bool:
    return isinstance(channel, str) and channel not in ("", "preferred", "none")


def _usable_all(channels: np.ndarray) -> np.ndarray:
    values = pd.Series(channels, dtype=object)
    return (values.notna() & ~values.isin(["", "preferred", "none"])).to_numpy(dtype=bool)


def _fatigued_on(frame: pd.DataFrame, channel: np.ndarray) -> np.ndarray:
    """Whether each row's ``fatigued_channels`` (comma-separated) holds ``channel[i]``."""
    tired = frame["fatigued_channels"].fillna("").astype(str).to_numpy(dtype=object)
    out = np.zeros(len(frame), dtype=bool)
    some = (tired != "") & _usable_all(channel)
    for c in np.unique(channel[some].astype(str)):
        rows = some & (channel == c)
        padded = np.char.add(np.char.add(",", tired[rows].astype(str)), ",")
        out[rows] = np.char.find(padded, f",{c},") >= 0
    return out


def _channels(
    rules: list[Rule], chosen: np.ndarray, frame: pd.DataFrame, policy: Policy
) -> np.ndarray:
    """The channel of each row's action: the rule's channel, else the preferred one, else
    the default; never a fatigued one (None when none is left)."""
    contact = np.array([policy.actions[r.action].contact for r in rules], dtype=bool)[chosen]
    fixed = np.array([r.channel if _usable(r.channel) else None for r in rules], dtype=object)
    preferred = frame["preferred_channel"].to_numpy(dtype=object)
    default = np.full(len(frame), policy.default_channel, dtype=object)
    out = np.full(len(frame), None, dtype=object)
    for option in (fixed[chosen], preferred, default):
        ok = contact & (out == None) & _usable_all(option)  # noqa: E711
        ok[ok] &= ~_fatigued_on(frame[ok], option[ok])
        out[ok] = option[ok]
    return out


def decide(frame: pd.DataFrame, policy: Policy, value_cuts: tuple[float, float]) -> pd.DataFrame:
    """Risk band, value tier, action, channel and rule for every row of a scored frame.

    ``frame`` needs ``lifecycle_stage, churn_probability, value_if_retained, segment_id,
    segment_name, over_contacted, preferred_channel, fatigued_channels`` and ``reasons``
    (lists); ``value_cuts`` are the values if retained where the medium and high tiers start
    (see :func:`value_cuts`). The rule's reason is appended to ``reasons``.
    """
    out = frame.copy()
    out["risk_band"] = band(out["churn_probability"].to_numpy(), policy.risk_bands)
    out["value_tier"] = band(out["value_if_retained"].to_numpy(), value_cuts)
    fallback = Rule(name="default", action=policy.fallback, reason="no rule matched")
    rules = [*policy.rules, fallback]
    chosen = np.full(len(out), len(policy.rules), dtype=int)
    for i in reversed(range(len(policy.rules))):  # the first match wins
        chosen[_matches(policy.rules[i], out)] = i
    channels = _channels(rules, chosen, out, policy)
    contact = np.array([policy.actions[r.action].contact for r in rules], dtype=bool)[chosen]
    stuck = contact & (channels == None)  # noqa: E711
    actions = np.array([r.action for r in rules], dtype=object)[chosen]
    texts = np.array([r.text() for r in rules], dtype=object)[chosen]
    by_change = np.array([r.when.risk_change_min is not None for r in rules], dtype=bool)
    texts = change_reasons(out, by_change[chosen], texts)
    actions[stuck] = policy.no_channel_action
    texts[stuck] = "every channel is fatigued"
    names = np.array([r.name for r in rules], dtype=object)[chosen]
    uplift = chosen_uplift(out, actions, contact & ~stuck)
    if policy.uplift_floor is not None:
        harmful = contact & ~stuck & (uplift < policy.uplift_floor)
        actions[harmful] = policy.negative_uplift_action
        channels = np.where(harmful, None, channels)
        names[harmful] = UPLIFT_RULE
        texts[harmful] = [
            f"contact is predicted to lower their chance of buying ({100 * u:+.1f} points)"
            for u in uplift[harmful]
        ]
    out["action"] = actions
    out["action_channel"] = pd.Series(channels, index=out.index, dtype=object)
    out["rule"] = names
    out[UPLIFT] = uplift
    out["incremental_value"] = uplift * out["value_if_retained"].to_numpy(dtype=float)
    out["reasons"] = append_reason(out["reasons"], texts)
    return out


def value_cuts(values: np.ndarray, policy: Policy) -> tuple[float, float]:
    """The values where the medium and high tiers start: quantiles of the customers with
    a positive value (linear interpolation)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return (np.inf, np.inf)
    q = np.quantile(v, [policy.value_tiers.medium, policy.value_tiers.high])
    return (float(q[0]), float(q[1]))


__all__ = [
    "STAGES",
    "ActionSpec",
    "Conditions",
    "Policy",
    "Rule",
    "band",
    "decide",
    "load_policy",
    "value_cuts",
]
