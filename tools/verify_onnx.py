#!/usr/bin/env python3
"""Runs a unit's exported network (foldK/result.onnx) in onnxruntime on the unit's test split
and compares it with QuantLab's own evaluation of the same result: top-1 (unit.toml) and, sample
by sample, the predicted class and the logits of the best classes (foldK/predictions.h5).

    .venv/bin/python tools/verify_onnx.py UNIT [--fold K] [--data DIR] [--tolerance POINTS]
                                               [--agreement PERCENT] [--kernels]

The model takes the problem's raw uint8 pixels (docs/export.md), so the test split is read from
the problem's files as they are: IDX files (mnist) or CIFAR binary batches (cifar10). Their
folder is the unit's `problem.data_dir`, relative to `storage.data`, relative to the experiment
file; --data names it instead. Exits 1 when the two top-1 differ by more than --tolerance
points (0.1) or the predicted classes agree on fewer than --agreement percent of the samples
(99.9), 2 on bad input. --kernels also prints the operators onnxruntime runs after its graph
optimisations (what docs/export.md's table of kernels lists).
"""
import argparse
import gzip
import os
import pathlib
import sys
import tempfile
import tomllib
from collections import Counter

import h5py
import numpy as np
import onnxruntime


class BadInput(Exception):
    pass


def read_config(unit):
    path = unit / "config.toml"
    try:
        text = path.read_text()
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror}") from None
    first = text.splitlines()[0] if text else ""
    experiment = first.removeprefix("# resolved configuration of ").strip()
    return tomllib.loads(text), pathlib.Path(experiment)


def data_folder(config, experiment):
    root = pathlib.Path(config.get("storage", {}).get("data", "") or os.environ.get("QL_DATA", "."))
    if not root.is_absolute():
        root = experiment.parent / root
    folder = pathlib.Path(config["problem"].get("data_dir", ""))
    return folder if folder.is_absolute() else root / folder


def read_idx(path):
    if not path.exists() and pathlib.Path(str(path) + ".gz").exists():
        path = pathlib.Path(str(path) + ".gz")
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror or error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise BadInput(f"{path}: not an IDX file of unsigned bytes")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if values.size != np.prod(dims):
        raise BadInput(f"{path}: {values.size} values for dimensions {dims}")
    return values.reshape(dims)


def mnist_test_split(problem, folder):
    images = read_idx(folder / problem.get("test_images", "t10k-images-idx3-ubyte"))
    labels = read_idx(folder / problem.get("test_labels", "t10k-labels-idx1-ubyte"))
    limit = problem.get("max_test_samples", 0) or len(labels)
    return images[:limit, None, :, :], labels[:limit].astype(np.int64)


def cifar10_test_split(problem, folder):
    cifar100 = problem.get("variant", "cifar10") == "cifar100"
    path = folder / ("test.bin" if cifar100 else "test_batch.bin")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror}") from None
    label_bytes = 2 if cifar100 else 1
    record = label_bytes + 3 * 32 * 32
    if raw.size % record:
        raise BadInput(f"{path}: {raw.size} bytes is no whole number of {record}-byte records")
    records = raw.reshape(-1, record)
    return records[:, label_bytes:].reshape(-1, 3, 32, 32), records[:, label_bytes - 1].astype(np.int64)


READERS = {"mnist": mnist_test_split, "cifar10": cifar10_test_split}


def quantlab_top1(unit, fold):
    record = tomllib.loads((unit / "unit.toml").read_text())
    folds = record.get("fold", [])
    if fold >= len(folds):
        raise BadInput(f"{unit / 'unit.toml'}: no fold {fold}")
    entry = folds[fold]
    top1 = entry.get("result_top1", -1.0)
    return 100.0 * (top1 if top1 >= 0 else entry.get("trained_top1", -1.0))


def onnx_logits(model, images, batch=1000):
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    if feed.type != "tensor(uint8)":
        raise BadInput(f"{model}: takes {feed.type}, not raw uint8 pixels (the problem gives no input encoding)")
    logits = [session.run(None, {feed.name: np.ascontiguousarray(images[start:start + batch])})[0]
              for start in range(0, len(images), batch)]
    return np.concatenate(logits)


def optimised_operators(model):
    """The operators of the graph onnxruntime runs, after its default (all) optimisations."""
    options = onnxruntime.SessionOptions()
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(pathlib.Path(folder) / "optimised.onnx")
        onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        import onnx  # only here: the check itself needs onnxruntime alone
        graph = onnx.load(options.optimized_model_filepath).graph
    return Counter(node.op_type if not node.domain else f"{node.domain}.{node.op_type}" for node in graph.node)


def quantlab_predictions(unit, fold, labels):
    """The kept result's (else the trained network's) top classes and their logits, per sample."""
    path = unit / f"fold{fold}" / "predictions.h5"
    try:
        with h5py.File(path, "r") as file:
            split = file.attrs.get("split", b"")
            split = split.decode() if isinstance(split, bytes) else str(split)
            group = file["result"] if "result" in file else file["trained"]
            classes, scores, theirs = group["top_classes"][()], group["top_scores"][()], group["label"][()]
    except (OSError, KeyError) as error:
        raise BadInput(f"{path}: {error}") from None
    if split != "test" or len(theirs) != len(labels) or not np.array_equal(theirs, labels):
        raise BadInput(f"{path}: its {split} split's {len(theirs)} labels are not the test split read here")
    return classes, scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unit", type=pathlib.Path)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--data", type=pathlib.Path, help="the problem's data folder")
    parser.add_argument("--tolerance", type=float, default=0.1, help="largest top-1 difference, in points")
    parser.add_argument("--kernels", action="store_true", help="print the operators onnxruntime runs")
    parser.add_argument("--agreement", type=float, default=99.9,
                        help="least share of samples, in percent, whose predicted class must agree")
    args = parser.parse_args()
    try:
        model = args.unit / f"fold{args.fold}" / "result.onnx"
        if not model.exists():
            raise BadInput(f"{model}: no exported model (run with [export] format = \"onnx\")")
        config, experiment = read_config(args.unit)
        problem = config.get("problem", {})
        reader = READERS.get(problem.get("plugin"))
        if reader is None:
            raise BadInput(f"problem '{problem.get('plugin')}': this tool reads the test split of "
                           f"{', '.join(sorted(READERS))} only")
        images, labels = reader(problem, args.data or data_folder(config, experiment))
        logits = onnx_logits(model, images)
        ours = 100.0 * float(np.mean(logits.argmax(1) == labels))
        theirs = quantlab_top1(args.unit, args.fold)
        classes, scores = quantlab_predictions(args.unit, args.fold, labels)
    except BadInput as error:
        print(f"verify_onnx: {error}", file=sys.stderr)
        return 2
    difference = abs(ours - theirs)
    agreement = 100.0 * float(np.mean(logits.argmax(1) == classes[:, 0]))
    largest = float(np.max(np.abs(np.take_along_axis(logits, classes, axis=1) - scores)))
    print(f"{model}: onnxruntime {onnxruntime.__version__} top-1 {ours:.2f} % on {len(labels)} test samples; "
          f"QuantLab {theirs:.2f} %; difference {difference:.2f} points")
    print(f"per sample: the same class on {agreement:.2f} % of samples; largest difference of the best "
          f"{classes.shape[1]} logits {largest:.3g}")
    if args.kernels:
        operators = optimised_operators(model)
        print("onnxruntime runs: " + ", ".join(f"{op} {n}" for op, n in sorted(operators.items())))
    return 0 if difference <= args.tolerance and agreement >= args.agreement else 1


if __name__ == "__main__":
    sys.exit(main())
