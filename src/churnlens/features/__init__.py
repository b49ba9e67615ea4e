"""Point-in-time feature builders (one module per family) and the engine that runs them."""

from churnlens.features.aggregation import build_features, compute_population
from churnlens.features.engine import feature_names
from churnlens.features.population import PopulationStats

__all__ = ["PopulationStats", "build_features", "compute_population", "feature_names"]
