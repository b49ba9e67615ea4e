"""churnlens: churn risk, customer segments and a next action for every customer.

The public names below are imported on first use (PEP 562), so ``import churnlens`` (and
the command line's start-up) does not pay for pandas, DuckDB and the rest of the data
stack until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from churnlens.errors import ChurnlensError, ConfigError, InputError, ModelError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from churnlens.config import Settings, load_settings
    from churnlens.events import load_events, read_events
    from churnlens.features import (
        PopulationStats,
        build_features,
        compute_population,
        feature_names,
    )

_LAZY = {
    "PopulationStats": "churnlens.features",
    "Settings": "churnlens.config",
    "build_features": "churnlens.features",
    "compute_population": "churnlens.features",
    "feature_names": "churnlens.features",
    "load_events": "churnlens.events",
    "load_settings": "churnlens.config",
    "read_events": "churnlens.events",
}

__all__ = [
    "ChurnlensError",
    "ConfigError",
    "InputError",
    "ModelError",
    "PopulationStats",
    "Settings",
    "__version__",
    "build_features",
    "compute_population",
    "feature_names",
    "load_events",
    "load_settings",
    "read_events",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
