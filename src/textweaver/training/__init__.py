"""Batches -> trained checkpoint: the loop, the automatic recipe, schedule, evaluation, fine-tuning, DDP."""
