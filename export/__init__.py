"""Checkpoint -> verified MINDIR, ONNX, MindSpore Lite (and Ascend AIR/OM) models in a versioned repository."""
import runtime_env

runtime_env.configure()  # before any module of this package imports mindspore or mindspore_lite
