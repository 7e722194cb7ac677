"""Runs an MLP unit's quantized.h5 in NumPy, from that file alone, on the unit's test split and
compares its predictions with QuantLab's own (foldK/predictions.h5).

    check_quantized_h5.py UNIT [--fold K]

The file must hold the whole network (docs/export.md, "HDF5"): the configuration names the
topology and its options, integer codes dequantise as (codes - zero_point) * scale along their
axis, activation grids quantise as QuantizeLinear does, and the input encoding turns the raw
pixels into the network's input. Only the mlp topology (Linear, optional batch norm, ReLU or
identity) is rebuilt here. Prints the agreement; exits 1 below 99.9 % of samples.
"""
import argparse
import pathlib
import sys
import tomllib

import h5py
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import verify_onnx  # noqa: E402  (the test-split readers)


def text(value):
    """A string attribute: h5py gives fixed-length strings as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def tensor(file, name):
    """A parameter or buffer: integer codes dequantised, or the float tensor."""
    if name in file["quantized"]:
        group = file["quantized"][name]
        codes = group["codes"][()].astype(np.float32)
        scale, zero_point = group["scale"][()], group["zero_point"][()].astype(np.float32)
        axis = int(group.attrs["axis"])
        if axis >= 0:
            shape = [1] * codes.ndim
            shape[axis] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        return (codes - zero_point) * scale
    return file["tensors"][name][()]


def quantize(file, name, x):
    """x through the activation grid `name`, if the file has one (float32, ties to even)."""
    if name not in file["activations"]:
        return x
    a = file["activations"][name].attrs
    shifted = (x - np.float32(a["offset"])).astype(np.float32)
    scale = np.float32(a["scale"])
    if text(a["range"]) == "max_abs":
        flat = np.abs(shifted).reshape(len(shifted), -1)
        largest = flat.max(axis=1) if a["per_sample"] else np.full(len(shifted), flat.max())
        scale = (largest * scale).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(1)).reshape([-1] + [1] * (x.ndim - 1))
    codes = np.clip(np.rint(shifted / scale) + a["zero_point"], a["low"], a["high"])
    return ((codes - a["zero_point"]) * scale).astype(np.float32)


def encode(file, pixels):
    x = pixels.astype(np.float32)
    for name in sorted(file["input_encoding"], key=lambda n: int(n.removeprefix("step"))):
        step = file["input_encoding"][name]
        values = step[()].reshape([-1, 1, 1]) if step.size > 1 else step[()][0]
        operation = text(step.attrs["operation"])
        x = x - values if operation == "subtract" else x * values if operation == "multiply" else x / values
    return x.astype(np.float32)


def linear(file, name, x):
    y = x @ tensor(file, f"{name}.weight").T
    return y + tensor(file, f"{name}.bias") if f"{name}.bias" in file["tensors"] else y


def batch_norm(file, name, x):
    weight, bias = tensor(file, f"{name}.weight"), tensor(file, f"{name}.bias")
    mean, var = tensor(file, f"{name}.running_mean"), tensor(file, f"{name}.running_var")
    return ((x - mean) / np.sqrt(var + 1e-5) * weight + bias).astype(np.float32)


def mlp_logits(file, topology, x):
    x = quantize(file, "input", x).reshape(len(x), -1)
    layers = [f"fc{i + 1}" for i in range(len(topology.get("hidden", [])))]
    for i, name in enumerate(layers):
        x = quantize(file, f"{name}.output", linear(file, name, x))
        if topology.get("batch_norm", False):
            x = batch_norm(file, f"bn{i + 1}", x)
        if topology.get("activation", "relu") == "relu":
            x = np.maximum(x, 0)
        x = quantize(file, f"act{i + 1}.output", x)
    x = quantize(file, "classifier.output", linear(file, "classifier", x))
    return batch_norm(file, "bn_out", x) if topology.get("output_batch_norm", False) else x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("unit", type=pathlib.Path)
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()
    fold = args.unit / f"fold{args.fold}"
    with h5py.File(fold / "quantized.h5", "r") as file:
        configuration = tomllib.loads(text(file.attrs["configuration"]))
        topology = configuration["topology"]
        if topology["plugin"] != "mlp":
            print(f"check_quantized_h5: rebuilds mlp only, not {topology['plugin']}", file=sys.stderr)
            return 2
        config, experiment = verify_onnx.read_config(args.unit)
        problem = config["problem"]
        pixels, labels = verify_onnx.READERS[problem["plugin"]](problem, verify_onnx.data_folder(config, experiment))
        logits = mlp_logits(file, topology, encode(file, pixels))
        quantized = {name: int(file["quantized"][name].attrs["bits"]) for name in file["quantized"]}
    with h5py.File(fold / "predictions.h5", "r") as predictions:
        group = predictions["result"] if "result" in predictions else predictions["trained"]
        theirs = group["top_classes"][()][:, 0]
    agreement = 100.0 * float(np.mean(logits.argmax(1) == theirs))
    print(f"quantized.h5 in NumPy: top-1 {100.0 * float(np.mean(logits.argmax(1) == labels)):.2f} %, the same class "
          f"as QuantLab on {agreement:.2f} % of {len(labels)} samples; integer tensors and bits {quantized}")
    return 0 if agreement >= 99.9 else 1


if __name__ == "__main__":
    sys.exit(main())
