"""The training engine: losses, optimizers, schedules, EMA, checkpoints and the loop itself."""
