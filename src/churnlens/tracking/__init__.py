"""All of churnlens's MLflow code: the store, runs, the model registry.

- :mod:`~churnlens.tracking.store`: the tracking URI, retries, store failures;
- :mod:`~churnlens.tracking.runs`: one call records a whole run;
- :mod:`~churnlens.tracking.registry`: registered versions, the champion alias, loading.

No other module imports MLflow.
"""

from churnlens.tracking.registry import (
    CHAMPION,
    AliasDecision,
    ChampionScore,
    RegisteredVersion,
    find_version,
    list_models,
    load_champion,
    load_version,
    promote,
    registered_bundle,
    update_champion,
)
from churnlens.tracking.runs import (
    DatasetRecord,
    ModelToRegister,
    RunContent,
    RunRecord,
    add_to_run,
    dataset_digest,
    record_run,
)
from churnlens.tracking.store import DEFAULT_URI, failures, retry, tracking_uri

__all__ = [
    "CHAMPION",
    "DEFAULT_URI",
    "AliasDecision",
    "ChampionScore",
    "DatasetRecord",
    "ModelToRegister",
    "RegisteredVersion",
    "RunContent",
    "RunRecord",
    "add_to_run",
    "dataset_digest",
    "failures",
    "find_version",
    "list_models",
    "load_champion",
    "load_version",
    "promote",
    "record_run",
    "registered_bundle",
    "retry",
    "tracking_uri",
    "update_champion",
]
