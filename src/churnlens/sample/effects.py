"""A campaign's effects: the knobs (:class:`Effects`), the hidden per-customer traits that
make them heterogeneous, and the :class:`Plan` of what the treated world does to each
customer. The mechanism and the numbers are in :mod:`churnlens.sample.campaign`."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from churnlens.sample.customers import Traits
from churnlens.sample.params import P

# The default policy's actions (churnlens.actions); a custom action counts as a contact
# when the scores say so.
CONTACT_ACTIONS: tuple[str, ...] = (
    "nurture",
    "onboarding_guide",
    "reactivation_discount",
    "vip_care",
    "vip_winback_offer",
)
NON_CONTACT_ACTIONS: tuple[str, ...] = ("do_not_disturb", "let_go", "no_action", "seasonal_winback")

TRAIT_STREAM = 0xCA57  # spawn key of the effect traits' random stream (apart from the log's)
VALUE_CAP = 3.0  # the VIP actions' value factor is capped at three times the median buyer


@dataclass(frozen=True)
class Effects:
    """The true effects of the actions (see :mod:`churnlens.sample.campaign`). Every field
    at 0 gives no effect at all: :meth:`none`."""

    contact_weight: float = 2.0  # every contact: its weight in the touches count
    nurture_cut: float = 0.8  # nurture: log hazard cut x receptiveness
    onboarding_cut: float = 2.5  # onboarding_guide: x receptiveness x newness
    vip_cut: float = 0.5  # vip_care, vip_winback_offer: x receptiveness x min(value, 3)
    winback: float = 0.8  # reactivation_discount: P(revert) scale x price sensitivity
    vip_winback: float = 0.3  # vip_winback_offer: P(revert) scale x min(value, 3) / 3
    memory_days: float = 120.0  # a win-back fades with the days since the decision
    discount: float = 0.15  # reactivation_discount: order values x (1 - discount)
    rest: float = 1.0  # do_not_disturb: share of the company's marketing held back

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be finite and >= 0, got {value}")
        for name in ("winback", "vip_winback", "rest"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a probability scale in [0, 1]")
        if self.discount >= 1:
            raise ValueError(f"discount must be < 1, got {self.discount}")
        if self.memory_days <= 0:
            raise ValueError(f"memory_days must be > 0, got {self.memory_days}")

    @classmethod
    def none(cls) -> Effects:
        """Every effect neutral, the contact's own touch included."""
        return cls(**{f.name: 0 for f in fields(cls) if f.name != "memory_days"})


@dataclass
class Receptivity:
    """Hidden per-customer traits the effects depend on."""

    price_sensitivity: np.ndarray  # Beta(0.5, 0.8): near 0 for many, high for some
    receptiveness: np.ndarray  # gamma(2, 0.5), mean 1: how much caring content helps
    value: np.ndarray  # spend rate (aov / cycle) over the median buyer's; 0 for non-buyers


def draw_receptivity(seed: int, tr: Traits) -> Receptivity:
    """The effect traits, from their own stream of ``seed`` (the log's draws are untouched)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(TRAIT_STREAM,)))
    n = tr.join.size
    rate = np.where(np.isfinite(tr.cycle), tr.aov / tr.cycle, 0.0)
    median = np.median(rate[rate > 0]) if (rate > 0).any() else 1.0
    return Receptivity(
        price_sensitivity=rng.beta(0.5, 0.8, n),
        receptiveness=rng.gamma(2.0, 0.5, n),
        value=rate / median,
    )


@dataclass
class Plan:
    """What the treated world does to each customer (the untreated world does nothing)."""

    touch: np.ndarray  # weight of the contact's own outbound touch (0: no contact)
    revive: np.ndarray  # chance to revert a decision to leave at the campaign start
    care: np.ndarray  # cut of the log weekly hazard during the window
    rest: np.ndarray  # share of the company's marketing held back during the window
    price: np.ndarray  # order value multiplier during the window

    def stacked(self) -> Plan:
        """(2, n) arrays: row 0 the untreated world (neutral), row 1 the treated world."""
        neutral = {"touch": 0.0, "revive": 0.0, "care": 0.0, "rest": 0.0, "price": 1.0}
        return Plan(
            **{
                k: np.stack([np.full_like(getattr(self, k), v), getattr(self, k)])
                for k, v in neutral.items()
            }
        )


def over_contact(tr: Traits, touches: np.ndarray) -> np.ndarray:
    """Touches of the last four weeks above the tolerance, capped (the hazard's ``over``)."""
    return np.clip(touches.sum(axis=0) - tr.tolerance, 0, P.over_cap)


def make_plan(
    action: np.ndarray,
    contactable: np.ndarray,
    effects: Effects,
    rec: Receptivity,
    tr: Traits,
    onset: np.ndarray,
    over: np.ndarray,
    t0: float,
) -> Plan:
    """Each customer's treatment if they get their ``action`` at time ``t0`` (days)."""
    is_ = {a: action == a for a in (*CONTACT_ACTIONS, "do_not_disturb")}
    new = np.exp(-(t0 - tr.join) / 7.0 / P.new_weeks)
    value = np.minimum(rec.value, VALUE_CAP)
    focus = (
        effects.nurture_cut * is_["nurture"]
        + effects.onboarding_cut * new * is_["onboarding_guide"]
        + effects.vip_cut * value * (is_["vip_care"] | is_["vip_winback_offer"])
    )
    memory = np.exp(-np.clip(t0 - onset, 0.0, None) / effects.memory_days)
    memory = np.where(np.isfinite(onset), memory, 0.0)
    revive = memory * (
        effects.winback * rec.price_sensitivity * is_["reactivation_discount"]
        + effects.vip_winback * value / VALUE_CAP * is_["vip_winback_offer"]
    )
    return Plan(
        touch=np.where(contactable, float(effects.contact_weight), 0.0),
        revive=revive,
        care=focus * rec.receptiveness / (1.0 + over),
        rest=np.where(is_["do_not_disturb"], float(effects.rest), 0.0),
        price=np.where(is_["reactivation_discount"], 1.0 - effects.discount, 1.0),
    )
