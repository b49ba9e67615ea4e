"""Configuration: frozen pydantic models loaded from YAML.

Every setting has a default, so ``Settings()`` is a complete configuration; a YAML file
only needs the keys it changes. Unknown keys and impossible values fail at load time with
the field path and the allowed values.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from churnlens.errors import ConfigError
from churnlens.yaml_files import read_yaml, shorten

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


MAX_DAYS = 36_500  # a horizon of a century at most: dates beyond it overflow


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventRoles(_Frozen):
    """Which event types play which role.

    ``purchase_types`` drive RFM and the repurchase cycle; ``outbound_types`` are touches
    the company sends (used when an event has no ``direction``); every other event is an
    inbound contact made by the customer.
    """

    purchase_types: tuple[str, ...] = ("purchase",)
    outbound_types: tuple[str, ...] = ("marketing",)

    @field_validator("purchase_types")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one purchase event type is needed, e.g. [purchase]")
        return value


class FeatureSettings(_Frozen):
    """Settings of the point-in-time feature builders."""

    windows_days: tuple[int, ...] = (7, 30, 90, 180, 365)
    trend_days: int = Field(30, gt=0, description="length of the two windows compared by trend")
    active_days_window: int = Field(90, gt=0)
    fatigue_windows_days: tuple[int, ...] = (30, 90)
    channels: tuple[str, ...] = ("web", "app", "store", "phone", "chat", "email")
    cycle_prior_intervals: float = Field(
        4.0,
        ge=0,
        description="weight, in intervals, of the population median in the shrunk cycle",
    )
    cycle_default_days: float = Field(
        60.0, gt=0, description="cycle used when the population has no repurchase interval"
    )

    @field_validator("windows_days", "fatigue_windows_days")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("give at least one window, e.g. [30, 90]")
        if any(v <= 0 for v in value):
            raise ValueError(f"windows must be positive numbers of days, got {list(value)}")
        if list(value) != sorted(set(value)):
            raise ValueError(f"windows must be strictly increasing, got {list(value)}")
        return value

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in value if not _NAME.match(c)]
        if bad:
            raise ValueError(
                f"channel names become column names and must be lower-case snake_case, got {bad}"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"channels are listed twice: {list(value)}")
        if "other" in value:
            raise ValueError("'other' is reserved for channels not listed here")
        return value


class TrainingSettings(_Frozen):
    """How training snapshots are taken and labelled."""

    horizon_days: int = Field(
        90, gt=0, le=MAX_DAYS, description="churn = no purchase in this many days"
    )
    snapshot_step_days: int | None = Field(
        None, gt=0, description="days between snapshots (default: the horizon)"
    )
    min_history_days: int = Field(90, ge=0, description="log days needed before a snapshot")
    max_snapshots: int = Field(8, gt=0)
    population: Literal["all", "purchasers"] = Field(
        "all", description="customers in a snapshot: any event so far, or a purchase so far"
    )
    max_customers: int = Field(
        500_000,
        gt=0,
        description="larger logs train on a stratified, seeded sample of this many customers",
    )


class ModelSettings(_Frozen):
    """The churn classifier (LightGBM) and its calibration."""

    n_estimators: int = Field(300, gt=0)
    learning_rate: float = Field(0.03, gt=0, le=1)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(100, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(5.0, ge=0)
    extra_trees: bool = False
    boost_from_baseline: bool = Field(
        True, description="grow the trees from the logistic RFM baseline's log-odds"
    )
    calibration: Literal["auto", "isotonic", "sigmoid", "none"] = "auto"
    isotonic_min_samples: int = Field(
        5000, gt=0, description="'auto' tries isotonic calibration from this many validation rows"
    )
    tree_weights: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 0.75, 1.0),
        min_length=1,
        description="blends of the trees with the logistic RFM part, chosen out of time "
        "(0: the logistic baseline alone; [1.0]: the trees always in full)",
    )
    max_rows: int | None = Field(
        300_000,
        gt=0,
        description="snapshot rows each fit trains on at most (a seeded sample of whole "
        "customers beyond; null: every row)",
    )
    seed: int = 7

    @field_validator("tree_weights")
    @classmethod
    def _weights_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= w <= 1 for w in value):
            raise ValueError(f"tree weights lie in [0, 1], got {list(value)}")
        return value


class SegmentSettings(_Frozen):
    """K-means customer segments."""

    k_min: int = Field(3, ge=2)
    k_max: int = Field(8, ge=2)
    silhouette_sample: int = Field(5000, gt=100)
    seed: int = 7

    @field_validator("k_max")
    @classmethod
    def _range(cls, value: int, info: Any) -> int:
        k_min = info.data.get("k_min", 2)
        if value < k_min:
            raise ValueError(f"k_max ({value}) must be at least k_min ({k_min})")
        return value


class LifecycleSettings(_Frozen):
    """Lifecycle stages from each customer's own repurchase cycle.

    Repeat buyers are ``active`` while the days since their last purchase are within
    ``silent_after_cycles`` cycles, ``silent`` within ``sleeping_after_cycles``,
    ``sleeping`` within ``lost_after_cycles``, and ``lost`` beyond. One-time buyers and
    customers who never bought are measured against percentiles of the population's
    repurchase intervals instead: ``new`` up to the first, then silent, sleeping, lost.
    """

    silent_after_cycles: float = Field(1.0, gt=0)
    sleeping_after_cycles: float = Field(2.0, gt=0)
    lost_after_cycles: float = Field(3.0, gt=0)
    one_time_percentiles: tuple[float, float, float] = Field(
        (50.0, 80.0, 95.0),
        description="percentiles of the population's repurchase intervals that end the "
        "new, silent and sleeping stages of one-time and non-buyers",
    )

    @field_validator("lost_after_cycles")
    @classmethod
    def _cycles_increase(cls, value: float, info: Any) -> float:
        silent = info.data.get("silent_after_cycles", 1.0)
        sleeping = info.data.get("sleeping_after_cycles", 2.0)
        if not silent < sleeping < value:
            raise ValueError(
                "the stage multipliers must increase: silent_after_cycles < "
                f"sleeping_after_cycles < lost_after_cycles, got {silent}, {sleeping}, {value}"
            )
        return value

    @field_validator("one_time_percentiles")
    @classmethod
    def _percentiles(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not 0 < value[0] < value[1] < value[2] < 100:
            raise ValueError(
                f"give three increasing percentiles between 0 and 100, got {list(value)}"
            )
        return value


class EngineSettings(_Frozen):
    """How DuckDB runs: memory cap, spill folder, threads, partition size."""

    memory_limit: str | None = Field(
        None, description="DuckDB memory cap, e.g. '4GB'; beyond it DuckDB spills to temp_dir"
    )
    temp_dir: str | None = Field(None, description="where DuckDB spills (default: its own)")
    threads: int | None = Field(None, gt=0, description="DuckDB threads (default: all cores)")
    partition_events: int = Field(
        20_000_000, gt=0, description="scoring works per customer-hash partition of this size"
    )
    feature_partition_events: int = Field(
        40_000_000,
        gt=0,
        description="feature building works per customer-hash partition of this size "
        "(one partition in memory at a time, where scoring overlaps two)",
    )

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]i?B\s*", value, re.I):
            raise ValueError(f"give a size such as '4GB' or '512MB', got {value!r}")
        return value


class ValueSettings(_Frozen):
    """The customer value model: horizon, training snapshots, and the CLV formula.

    ``expected_value`` and ``value_if_retained`` are spend over ``horizon_days``;
    ``clv`` = yearly gross contribution if retained (``margin`` times the yearly value)
    / (1 + ``discount_rate`` - yearly retention probability).
    """

    horizon_days: int = Field(
        365, gt=0, le=MAX_DAYS, description="value = spend over this many days"
    )
    snapshot_step_days: int = Field(
        30, gt=0, description="days between the supervised part's training snapshots"
    )
    max_snapshots: int = Field(4, ge=0, description="supervised snapshots (0: BTYD only)")
    min_history_days: int = Field(90, ge=0, description="log days needed before a snapshot")
    margin: float = Field(1.0, gt=0, le=1, description="gross contribution per unit of spend")
    discount_rate: float = Field(0.10, ge=0, le=1, description="yearly discount rate of CLV")
    seed: int = 7


class ExperimentSettings(_Frozen):
    """Randomised control groups in every campaign (see :mod:`churnlens.experiments`)."""

    name: str = Field("churnlens", min_length=1, description="the experiment: keys the draws")
    campaign: str | None = Field(
        None,
        min_length=1,
        description="customers keep their groups while it is unchanged (default: each "
        "scoring day is a campaign, with groups drawn afresh)",
    )
    control_share: float = Field(0.10, ge=0, lt=1, description="controls per contact action")
    control_shares: dict[str, float] = Field(
        default_factory=dict, description="per-action overrides of control_share"
    )
    global_control_share: float = Field(
        0.0, ge=0, lt=1, description="a campaign-wide holdout, contacted by no action"
    )
    costs: dict[str, float] = Field(
        default_factory=dict, description="cost per contact, per action (outcomes)"
    )

    @field_validator("control_shares")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 <= v < 1}
        if bad:
            raise ValueError(f"control shares must be in [0, 1), got {bad}")
        return value


class UpliftSettings(_Frozen):
    """The uplift models learned from past campaigns' control groups (``train-uplift``)."""

    learner: Literal["dr", "t"] = Field("t", description="T-learner or DR-learner")
    folds: int = Field(3, ge=2, le=10, description="cross-fitting folds")
    # the average effect and the slope are shrunk by their standard errors, so a small
    # action predicts ~0 rather than noise: the minimum only has to make a rate estimable
    min_treated: int = Field(10, ge=1, description="an action needs this many treated")
    min_control: int = Field(10, ge=1, description="... and this many controls")
    # the outcome models are pooled over the actions (a few thousand customers a campaign):
    # uplift is a small difference of two noisy rates, so few, shallow, populated trees
    n_estimators: int = Field(100, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(4, ge=2)
    min_child_samples: int = Field(100, ge=1)
    seed: int = 7


class ReportSettings(_Frozen):
    """The analysts' report."""

    currency: str = Field("", max_length=8, description="prefix of money amounts, e.g. $ or EUR")


class DriftSettings(_Frozen):
    """Drift against training (:mod:`churnlens.drift`): when scoring warns and alerts."""

    psi_warn: float = Field(0.1, gt=0, description="PSI from which a feature or the score warns")
    psi_alert: float = Field(0.25, gt=0, description="PSI from which it alerts")
    ks_warn: float = Field(0.1, gt=0, le=1, description="KS of the score from which it warns")
    ks_alert: float = Field(0.2, gt=0, le=1, description="KS of the score from which it alerts")
    # the tenure features grow with time by construction; cycle_days puts every customer
    # with one purchase (about a third) exactly on the population's median cycle, so a
    # change of that median by a day moves them across a decile cut (their own cycle is
    # checked through cycle_own_days, cycle_n_intervals and cycle_overdue_ratio)
    exclude: tuple[str, ...] = Field(
        ("freq_tenure_days", "rfm_tenure_days", "cycle_days"),
        description="features that grow with time by construction or sit on a population "
        "statistic: reported, never alerting",
    )
    top: int = Field(5, ge=1, description="the worst features listed in summaries")

    @model_validator(mode="after")
    def _ordered(self) -> DriftSettings:
        if self.psi_warn > self.psi_alert or self.ks_warn > self.ks_alert:
            raise ValueError("each warn threshold must not exceed its alert threshold")
        return self


class TrackingSettings(_Frozen):
    """Where MLflow runs and registered models go."""

    uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    experiment: str = Field(
        "churnlens",
        min_length=1,
        description="experiment name prefix: runs go to <prefix>-training and <prefix>-scoring",
    )
    churn_model_name: str = "churnlens-churn"
    segment_model_name: str = "churnlens-segments"
    value_model_name: str = "churnlens-value"
    uplift_model_name: str = "churnlens-uplift"


class Settings(_Frozen):
    """The whole churnlens configuration."""

    events: EventRoles = EventRoles()
    features: FeatureSettings = FeatureSettings()
    training: TrainingSettings = TrainingSettings()
    model: ModelSettings = ModelSettings()
    segments: SegmentSettings = SegmentSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    value: ValueSettings = ValueSettings()
    experiment: ExperimentSettings = ExperimentSettings()
    uplift: UpliftSettings = UpliftSettings()
    report: ReportSettings = ReportSettings()
    drift: DriftSettings = DriftSettings()
    engine: EngineSettings = EngineSettings()
    tracking: TrackingSettings = TrackingSettings()

    def with_overrides(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some fields of some sections replaced (validated)."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return settings_from_dict(data, source="overrides")


def format_validation_error(
    error: ValidationError, source: str, root: type[BaseModel] | None = None
) -> str:
    """One line per problem: the field path, what is wrong, the allowed keys."""
    root = root or Settings
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = item["loc"][:-1]
            allowed = _allowed_keys(root, parent)
            if allowed:
                msg += f"; allowed keys here: {', '.join(allowed)}"
        msg = msg.removeprefix("Value error, ")
        # a check of the whole file (an unknown action) names its place itself: the input
        # is the whole file, not worth repeating
        got = f" (got {shorten(repr(item.get('input')))})" if item["loc"] else ""
        lines.append(f"  - {path}: {msg}{got}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys of the model at ``path`` (through optional values and the items of lists,
    tuples and mappings: ``rules.0`` is a rule); none when it is not a model."""
    current: Any = model
    for part in path:
        if not isinstance(part, int) and _is_model(current):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        else:  # an item of a list, tuple or mapping: its value type
            args = [a for a in typing.get_args(current) if a is not Ellipsis]
            current = args[-1] if args else None
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if isinstance(current, types.UnionType) or typing.get_origin(current) is typing.Union:
            current = args[0] if len(args) == 1 else None
    return sorted(current.model_fields) if _is_model(current) else []


def _is_model(thing: Any) -> bool:
    return isinstance(thing, type) and issubclass(thing, BaseModel)


def settings_from_dict(data: Mapping[str, Any], source: str = "configuration") -> Settings:
    """Validate a mapping into :class:`Settings`, raising :class:`ConfigError`."""
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from a YAML file (safe loader); ``None`` gives the defaults."""
    if path is None:
        return Settings()
    path, data = read_yaml(path)
    return settings_from_dict(data, source=str(path))
