#!/usr/bin/env python3
"""A Markdown table of a sweep's units: their grid values, test top-1 (of the kept result),
its difference to one reference unit, and the last value of chosen metrics series.

    sweep_table.py SWEEP [--reference KEY=VALUE] [--metrics SERIES[,SERIES]]

Reads SWEEP/sweep.toml, each unit's unit.toml and fold0/metrics.h5 (h5py: run it with the
project's .venv/bin/python). --reference names the unit the "vs" column is measured against
(e.g. algorithm.0.scheme='none'); --metrics lists series of metrics.h5 shown at their last
epoch (e.g. train/bits_per_coordinate,train/quantization_nvar). Prints where the units came
from (commit, host, dates) above the table.
"""
import argparse
import pathlib
import sys
import tomllib

import h5py

from unit_provenance import provenance


def fail(message):
    sys.exit(f"sweep_table.py: {message}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=pathlib.Path)
    parser.add_argument("--reference", default="")
    parser.add_argument("--metrics", default="")
    args = parser.parse_args()
    try:
        with open(args.sweep / "sweep.toml", "rb") as f:
            sweep = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"{args.sweep / 'sweep.toml'}: {e}")
    series = [s for s in args.metrics.split(",") if s]
    rows, records = [], []
    for run in sweep.get("run", []):
        unit = pathlib.Path(run.get("unit", ""))
        if not (unit / "unit.toml").exists():
            fail(f"run {run.get('index')} has no unit")
        with open(unit / "unit.toml", "rb") as f:
            record = tomllib.load(f)
        records.append(record)
        fold = record.get("fold", [{}])[0]
        top1 = fold.get("result_top1", -1.0) if fold.get("status") == "done" else None
        last = []
        if top1 is not None and series:
            with h5py.File(unit / "fold0" / "metrics.h5", "r") as metrics:
                for name in series:
                    if name not in metrics:
                        fail(f"{unit}: metrics.h5 has no series {name}")
                    last.append(f"{metrics[name][-1]['value']:.3g}" if metrics[name].dtype.names else f"{metrics[name][-1]:.3g}")
        rows.append((" ".join(run.get("overrides", [])), top1, last))
    reference = next((top1 for label, top1, _ in rows if args.reference and args.reference in label), None)
    print(provenance(records) + "\n")
    columns = ["units", "test top-1"] + (["vs reference"] if reference is not None else []) + series
    print("| " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---:" for _ in columns[1:]) + " |")
    for label, top1, last in rows:
        cells = [label, "failed" if top1 is None else f"{100 * top1:.2f} %"]
        if reference is not None:
            cells.append("" if top1 is None or label.endswith(args.reference) else f"{100 * (top1 - reference):+.2f}")
        cells += last if top1 is not None else ["-"] * len(series)
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
