"""Checkpoint -> text: the generator and the sampling rules."""
