"""churnlens: churn risk, customer segments and a next action for every customer."""

__version__ = "0.1.0"

from churnlens.config import Settings, load_settings
from churnlens.errors import ChurnlensError, ConfigError, InputError, ModelError
from churnlens.events import load_events, read_events
from churnlens.features import (
    PopulationStats,
    build_features,
    compute_population,
    feature_names,
)

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
