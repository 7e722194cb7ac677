"""Checks an ONNX model QuantLab wrote against the logits QuantLab computed.

    check_onnx.py MODEL INPUT LOGITS

INPUT and LOGITS are raw little-endian float32 (int64 for token inputs) arrays, shaped by the
model's own input and output. The ONNX checker (full check, with strict shape inference) must
accept the model, and onnxruntime on the CPU must reproduce the logits to a relative 1e-4.
Prints the largest difference; exits 1 when they disagree.
"""
import sys

import numpy as np
import onnx
import onnxruntime


def main(model_path, input_path, logits_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.int64 if feed.type == "tensor(int64)" else np.float32
    sample_shape = [d for d in feed.shape[1:]]
    inputs = np.fromfile(input_path, dtype=dtype).reshape([-1] + sample_shape)
    output = session.get_outputs()[0]
    expected = np.fromfile(logits_path, dtype=np.float32).reshape(inputs.shape[0], output.shape[1])
    got = session.run([output.name], {feed.name: inputs})[0]
    def count(op_type):
        return sum(node.op_type == op_type for node in model.graph.node)

    types = {}
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            name = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
            types[name] = types.get(name, 0) + 1
    print(f"{count('DequantizeLinear')} DequantizeLinear, {count('QuantizeLinear')} QuantizeLinear, "
          f"{count('BatchNormalization')} BatchNormalization, initialisers " +
          ", ".join(f"{name} {count}" for name, count in sorted(types.items())))
    difference = float(np.max(np.abs(got - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    print(f"onnxruntime {onnxruntime.__version__}: largest logit difference {difference:.3g} "
          f"(of logits up to {scale:.3g}); arg-max agrees on "
          f"{int(np.sum(got.argmax(1) == expected.argmax(1)))}/{inputs.shape[0]}")
    return 0 if difference <= 1e-4 * scale else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
