#!/usr/bin/env python3
"""Runs a unit's exported network (foldK/result.onnx) in onnxruntime on the unit's test split
and prints its top-1 beside QuantLab's own evaluation of the same result (unit.toml).

    .venv/bin/python tools/verify_onnx.py UNIT [--fold K] [--data DIR] [--tolerance POINTS]

The model takes the problem's raw uint8 pixels (docs/export.md), so the test split is read from
the problem's files as they are: IDX files (mnist) or CIFAR binary batches (cifar10). Their
folder is the unit's `problem.data_dir`, relative to `storage.data`, relative to the experiment
file; --data names it instead. Exits 1 when the two top-1 differ by more than --tolerance
points (0.1), 2 on bad input.
"""
import argparse
import gzip
import os
import pathlib
import sys
import tomllib

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


def onnx_top1(model, images, batch=1000):
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    if feed.type != "tensor(uint8)":
        raise BadInput(f"{model}: takes {feed.type}, not raw uint8 pixels (the problem gives no input encoding)")
    predictions = []
    for start in range(0, len(images), batch):
        logits = session.run(None, {feed.name: np.ascontiguousarray(images[start:start + batch])})[0]
        predictions.append(logits.argmax(1))
    return np.concatenate(predictions)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unit", type=pathlib.Path)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--data", type=pathlib.Path, help="the problem's data folder")
    parser.add_argument("--tolerance", type=float, default=0.1, help="largest top-1 difference, in points")
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
        predicted = onnx_top1(model, images)
        ours = 100.0 * float(np.mean(predicted == labels))
        theirs = quantlab_top1(args.unit, args.fold)
    except BadInput as error:
        print(f"verify_onnx: {error}", file=sys.stderr)
        return 2
    difference = abs(ours - theirs)
    print(f"{model}: onnxruntime {onnxruntime.__version__} top-1 {ours:.2f} % on {len(labels)} test samples; "
          f"QuantLab {theirs:.2f} %; difference {difference:.2f} points")
    return 0 if difference <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
