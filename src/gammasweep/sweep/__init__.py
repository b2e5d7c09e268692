"""The gamma-eta sweep: the parameterization, models, losses, optimizers, schedules, the online trainer
with its checkpoints, and adaptive eta."""
