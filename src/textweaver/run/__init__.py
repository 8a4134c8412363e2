"""The run folder's one owner: checkpoints, the metrics/samples log, the lock."""
