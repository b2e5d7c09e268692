"""gammasweep: SGD across the feature-learning strength gamma, from raw data to figures."""

__version__ = "0.1.0"
