"""The training engine: the loop (`trainer`) and everything it owns (state, checkpoints, EMA, stop signals,
loaders, scoring, optimizers, schedulers, devices, DDP, seeds)."""
