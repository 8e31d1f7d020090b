"""MindSpore Lite side of the export, run in `.venv-lite` (Python 3.7, never imports mindspore).

    python -m export.lite_tool convert MODEL.onnx OUTPUT.ms
    python -m export.lite_tool predict MODEL.ms INPUTS.npz OUTPUTS.npz

`convert` turns a normalised ONNX model into a Lite 2.0 `.ms` model (input kept NCHW);
`predict` runs every array of INPUTS.npz (NCHW float32, any batch) through a fresh Lite model
each (as the server does) and saves the logits under the same keys. Both print one JSON line
describing the model input as Lite reports it (shape, layout) and the Lite version.
"""
import argparse
import json
import os
import sys

import numpy as np
import mindspore_lite as mslite

_LAYOUTS = {mslite.Format.NCHW: "NCHW", mslite.Format.NHWC: "NHWC"}


def convert(onnx_path, output_path):
    """Convert the ONNX model to a Lite model (save type MINDIR_LITE) at `output_path`."""
    base, suffix = os.path.splitext(output_path)
    if suffix != ".ms":
        raise ValueError(f"the output must end in .ms, got {output_path}")
    converter = mslite.Converter()
    converter.input_format = mslite.Format.NCHW
    converter.save_type = mslite.ModelType.MINDIR_LITE
    converter.optimize = "general"
    converter.convert(mslite.FmkType.ONNX, onnx_path, base)
    if not os.path.isfile(output_path):
        raise RuntimeError(f"the converter wrote no {output_path}")
    return describe(load(output_path))


def load(model_path):
    """Build a Lite model for the CPU from a `.ms` file."""
    context = mslite.Context()
    context.target = ["cpu"]
    context.cpu.thread_num = 2
    model = mslite.Model()
    model.build_from_file(model_path, mslite.ModelType.MINDIR_LITE, context)
    return model


def describe(model):
    """The model input as Lite reports it, and the Lite version."""
    tensor = model.get_inputs()[0]
    return {"input_name": tensor.name, "input_shape": list(tensor.shape),
            "input_layout": _LAYOUTS.get(tensor.format, str(tensor.format)),
            "mindspore_lite": mslite.__version__}


def predict(model_path, inputs_path, outputs_path):
    """Run each NCHW batch in `inputs_path` through its own fresh Lite model; save the logits by key.

    One Model per batch size, resized once, the way the server runs them: Lite 2.0 computes
    wrong logits after a second resize of one Model (serving/backends/mslite_backend.py).
    """
    info, outputs = None, {}
    with np.load(inputs_path) as batches:
        if not batches.files:
            raise ValueError(f"{inputs_path} holds no batch")
        for key in batches.files:
            model = load(model_path)
            info = describe(model)
            batch = batches[key]
            if info["input_layout"] == "NHWC":
                batch = batch.transpose(0, 2, 3, 1)
            outputs[key] = run_batch(model, np.ascontiguousarray(batch, dtype=np.float32))
    np.savez(outputs_path, **outputs)
    return info


def run_batch(model, batch):
    """Resize the model to the batch's shape and return a copy of its first output.

    The copy is taken at once: the array Lite hands out shares its output buffer, which the
    next resize or predict of the same Model overwrites.
    """
    inputs = model.get_inputs()
    if list(inputs[0].shape) != list(batch.shape):
        model.resize(inputs, [list(batch.shape)])
        inputs = model.get_inputs()
    inputs[0].set_data_from_numpy(batch)
    return np.array(model.predict(inputs)[0].get_data_to_numpy(), copy=True)


def main(argv=None):
    """Command-line entry point; errors go to stderr with exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m export.lite_tool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    convert_cmd = commands.add_parser("convert", help="ONNX -> Lite .ms")
    convert_cmd.add_argument("onnx")
    convert_cmd.add_argument("output")
    predict_cmd = commands.add_parser("predict", help="run NCHW batches through a .ms model")
    predict_cmd.add_argument("model")
    predict_cmd.add_argument("inputs")
    predict_cmd.add_argument("outputs")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            info = convert(args.onnx, args.output)
        else:
            info = predict(args.model, args.inputs, args.outputs)
    except (RuntimeError, ValueError, OSError) as exc:
        sys.stderr.write(f"lite_tool {args.command}: {exc}\n")
        return 1
    sys.stdout.write(f"{json.dumps(info)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
