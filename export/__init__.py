"""Checkpoint -> verified MINDIR, ONNX, MindSpore Lite (and Ascend AIR/OM) models in a versioned repository."""
import training  # noqa: F401  (sets the MindSpore runtime environment before MindSpore loads)
