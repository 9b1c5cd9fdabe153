"""Zoobot: Bayesian CNNs for Galaxy Zoo votes, with MLflow-tracked active learning."""

__version__ = "0.1.0"
