"""MLflow runs: what every churnlens run records, in one call per run.

:func:`record_run` opens a run in the configured store and experiment and logs, in this
order: the flattened settings and the run's params, the common tags (package version,
git commit), metrics and metric tables, figures, tables, dicts and texts, the config
file, and (for training runs) the model, registered with the champion rule. A failure of
the store becomes one :class:`~churnlens.errors.TrackingError` naming what was kept
(the bundle, the scores), and the run is marked FAILED when it got that far.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens import __version__
from churnlens.config import Settings
from churnlens.tracking.pyfunc import SCALAR_TYPES
from churnlens.tracking.registry import (
    ChampionScore,
    describe_version,
    log_model,
    update_champion,
)
from churnlens.tracking.store import failures, flatten, git_commit, retry, tracked_run, use_store


@dataclass(frozen=True)
class ModelToRegister:
    """A fitted model to log and register with a run, and how to judge the champion."""

    model: Any
    artifact: str  # the logged model's name in the run
    example: pd.DataFrame
    registered_name: str
    score: float  # the new version's validation score (higher is better)
    champion_score: ChampionScore
    bundle: Path | None = None  # the bundle written for it (None: a temporary one is)
    companions: dict[str, Path] = field(default_factory=dict)  # served with it, by kind
    tags: dict[str, str] = field(default_factory=dict)  # on the registered version
    description: str = ""  # of the registered version
    force: bool = False


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset a run used, logged as an MLflow dataset input (metadata only: the name,
    where it came from, its digest, its columns; never the data)."""

    name: str
    source: str  # the events path, or how an in-memory frame was named
    digest: str
    context: str  # training | validation | scoring
    columns: Mapping[str, str]  # name -> dtype
    tags: Mapping[str, str] = field(default_factory=dict)  # rows, dates, churn rate


def dataset_digest(*parts: object) -> str:
    """A short, stable digest of what defines a dataset (data fingerprint, dates, rows)."""
    import hashlib

    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunRecord:
    """Where a run was recorded, and what the registry decided."""

    run_id: str
    version: str | None = None
    champion: str | None = None


@dataclass
class RunContent:
    """Everything a run logs besides its params and tags."""

    metrics: dict[str, float] = field(default_factory=dict)
    metric_tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # prefix -> table
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # folder -> name -> fig
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # artifact -> table
    dicts: dict[str, dict[str, Any]] = field(default_factory=dict)  # artifact -> dict
    texts: dict[str, str] = field(default_factory=dict)  # artifact -> text
    # child runs: name -> metrics under the same keys (MLflow's compare view lines them up)
    children: dict[str, dict[str, float]] = field(default_factory=dict)
    datasets: list[DatasetRecord] = field(default_factory=list)


def record_run(
    settings: Settings,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    content: RunContent,
    *,
    kept: str,
    stage: str = "training",
    started: float | None = None,
    config_path: str | Path | None = None,
    register: ModelToRegister | None = None,
) -> RunRecord:
    """Record a run (see the module docstring) in the ``stage``'s experiment (training or
    scoring), started at ``started`` (epoch seconds: when the command began, so that the
    run's duration covers the whole command); ``kept`` says what survives a failure."""
    import mlflow

    with failures(kept), tracked_run(settings, run_name, stage, started) as run:
        log_common(settings, params, tags)
        _log_content(content)
        _log_children(run_name, content.children)
        log_config_file(config_path, settings)
        if register is None:
            return RunRecord(run.info.run_id)
        version = _register(settings, register)
        decision = update_champion(
            register.registered_name,
            version,
            register.score,
            register.champion_score,
            register.force,
            register.model.kind,
        )
        retry(lambda: mlflow.set_tag("champion_decision", decision.reason))
        describe_version(
            register.registered_name,
            version,
            register.description,
            {**register.tags, "champion_decision": decision.reason},
        )
        return RunRecord(run.info.run_id, version, decision.reason)


def _register(settings: Settings, register: ModelToRegister) -> str:
    """Log and register the model around its bundle (a temporary one when none was kept)."""
    from churnlens.bundle import versions, write_bundle

    with tempfile.TemporaryDirectory() as tmp:
        bundle = register.bundle or write_bundle(
            Path(tmp) / register.model.kind,
            register.model,
            {"settings": settings.model_dump(mode="json"), "versions": versions()},
        )
        return log_model(
            register.model, register.artifact, register.example, register.registered_name,
            bundle, register.companions,
        )  # fmt: skip


def add_to_run(
    settings: Settings,
    run_id: str,
    content: RunContent,
    tags: Mapping[str, str],
    *,
    kept: str,
) -> None:
    """Log more content and tags into a finished run (a backtest into its training run)."""
    import mlflow

    with failures(kept):
        use_store(settings)
        with mlflow.start_run(run_id=run_id):
            _log_content(content)
            retry(lambda: mlflow.set_tags(dict(tags)))


def _log_children(run_name: str, children: Mapping[str, Mapping[str, float]]) -> None:
    """One nested run per child (a candidate or baseline) with its metrics."""
    import mlflow

    for name, metrics in children.items():
        finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
        with mlflow.start_run(run_name=f"{run_name}/{name}", nested=True):
            retry(lambda finite=finite: mlflow.log_metrics(finite))
            retry(lambda name=name: mlflow.set_tags({"score": name, "kind": "comparison"}))


def _log_content(content: RunContent) -> None:
    import mlflow

    if content.metrics:
        retry(lambda: mlflow.log_metrics(content.metrics))
    for prefix, table in content.metric_tables.items():
        log_metric_table(table, prefix)
    for folder, figures in content.figures.items():
        log_figures(figures, folder)
    for artifact, frame in content.tables.items():
        retry(lambda frame=frame, artifact=artifact: mlflow.log_table(frame, artifact))
    for artifact, data in content.dicts.items():
        retry(lambda data=data, artifact=artifact: mlflow.log_dict(data, artifact))
    for artifact, text in content.texts.items():
        retry(lambda text=text, artifact=artifact: mlflow.log_text(text, artifact))
    for dataset in content.datasets:
        log_dataset(dataset)


def log_dataset(dataset: DatasetRecord) -> None:
    """One dataset input of the active run. MLflow's ``from_pandas`` would read every
    cell of the frame for its schema and digest (minutes on millions of rows); the
    schema here comes from the dtypes and the digest from what defines the data."""
    import warnings

    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    kinds = {**SCALAR_TYPES, "M": "datetime"}
    schema = Schema(
        [
            ColSpec(kinds.get(np.dtype(t).kind, "string"), name)
            for name, t in dataset.columns.items()
        ]
    )
    if Path(dataset.source).exists():
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": all local
            warnings.simplefilter("ignore")
            source: Any = resolve_dataset_source(str(Path(dataset.source).resolve()))
    else:
        source = CodeDatasetSource({"source": dataset.source})
    meta = MetaDataset(source, name=dataset.name, digest=dataset.digest, schema=schema)
    tags = {k: str(v) for k, v in dataset.tags.items()}
    retry(lambda: mlflow.log_input(meta, context=dataset.context, tags=tags))


def log_common(settings: Settings, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
    """Flattened settings and run params, and the tags every run carries."""
    import mlflow

    # where the run was tracked and how DuckDB ran say nothing about the model: not params
    machine = ("engine.", "tracking.")
    flat = flatten(settings.model_dump(mode="json"))
    all_params = {
        **{k: v for k, v in flat.items() if not k.startswith(machine)},
        **{k: str(v) for k, v in params.items()},
    }
    items = list(all_params.items())
    for start in range(0, len(items), 100):
        chunk = dict(items[start : start + 100])
        retry(lambda chunk=chunk: mlflow.log_params(chunk))
    base = {"churnlens_version": __version__}
    commit = git_commit()
    if commit:
        base["git_commit"] = commit
    retry(lambda: mlflow.set_tags({**base, **tags}))


def log_metric_table(table: pd.DataFrame, prefix: str = "") -> None:
    """Each cell of a (score x metric) table as metric ``{prefix}{score}_{metric}``."""
    import mlflow

    metrics = {
        f"{prefix}{row}_{col}": float(value)
        for row, values in table.iterrows()
        for col, value in values.items()
        if np.isfinite(value)
    }
    retry(lambda: mlflow.log_metrics(metrics))


def log_figures(figures: Mapping[str, Any], folder: str = "plots") -> None:
    import mlflow

    for name, fig in figures.items():
        retry(lambda fig=fig, name=name: mlflow.log_figure(fig, f"{folder}/{name}"))


def log_config_file(path: str | Path | None, settings: Settings) -> None:
    """The YAML file the run used, or the effective settings when none was given."""
    import mlflow
    import yaml

    if path is not None and Path(path).is_file():
        retry(lambda: mlflow.log_artifact(str(path), "config"))
    else:
        text = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        retry(lambda: mlflow.log_text(text, "config/effective.yaml"))
