"""Test helper, run in .venv-lite: every batch of INPUTS.npz through ONE Lite model, resized each time.

    python -m tests.export.lite_one_model MODEL.ms INPUTS.npz OUTPUTS.npz

This is how the export's Lite check ran before it built one Model per batch size; Lite 2.0
computes wrong logits after a second resize of one Model. Outputs are copied (lite_tool.run_batch).
"""
import sys

import numpy as np

from export.lite_tool import load, run_batch


def main(model_path, inputs_path, outputs_path):
    """Run the batches in order through one model; save the logits by key."""
    model = load(model_path)
    with np.load(inputs_path) as batches:
        outputs = {key: run_batch(model, batches[key]) for key in batches.files}
    np.savez(outputs_path, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
