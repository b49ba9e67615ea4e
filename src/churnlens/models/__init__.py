"""Fitted models: the churn classifier with its baselines, and the segment model."""
