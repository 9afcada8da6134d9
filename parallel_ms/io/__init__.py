"""A run's outputs: run directory, metrics, summary."""
