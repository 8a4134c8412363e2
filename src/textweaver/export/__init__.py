"""Checkpoint -> ONNX model and the static web page that runs it in a browser."""
