"""The related papers' experiments (sparse features, noise equilibrium): small nets trained by (S)GD,
with their metrics."""
