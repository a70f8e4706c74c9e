"""A run's files: its folder (checked before Hydra writes into it) and its checkpoints (written
atomically, read back by eval, sample and notebooks as the source of truth for the model and its
data)."""
