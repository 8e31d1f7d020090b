"""GENet_Res50 training: model, data pipeline, recipe, train and eval entry points."""
import os

# Must precede the first `import mindspore`: oneDNN otherwise picks reference
# kernels for 3x3/7x7 convolutions on AVX-512 CPUs (25-100x slower).
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
# `import mindspore` would otherwise force protobuf's slow pure-Python backend.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "upb")
