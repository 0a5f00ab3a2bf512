"""Configs: composing and validating (`core`, `ranges`), building (`builders`), trusting (`trust`) and what a
checkpoint's stored config may rebuild (`stored`)."""
