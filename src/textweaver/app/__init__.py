"""What a person drives: the Python API, the CLI, `serve` and the studio."""
