#!/usr/bin/env python3
"""Quantifind's critical-ratio table: test loss of the uniformly quantised network over the
float network's, against bits, one row per model and selection of quantised parameters.

    critical_ratio_table.py UNIT_OR_SWEEP [UNIT_OR_SWEEP ...]

Each argument is a results unit (a row: its uniform sweep, labelled by the experiment's
parameters option) or a sweep folder (a row per unit, labelled by its grid values). Reads each
unit's fold0/uniform_variants.csv; prints where the units came from (commit, host, dates from
unit.toml), then a Markdown table with a column per bit depth and the float network's loss.
tools/docs/critical_ratio.sh makes the units and calls it.
"""
import csv
import pathlib
import sys
import tomllib

from unit_provenance import provenance


def fail(message):
    sys.exit(f"critical_ratio_table.py: {message}")


def read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"{path}: {e}")


def ratios(unit):
    """{bits: loss ratio} and the float network's loss from a unit's uniform sweep."""
    path = pathlib.Path(unit) / "fold0" / "uniform_variants.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    if not rows or "bits" not in rows[0] or "loss_ratio" not in rows[0]:
        fail(f"{path}: not a uniform sweep (no bits and loss_ratio columns)")
    by_bits = {int(float(r["bits"])): float(r["loss_ratio"]) for r in rows if r["variant"] != "float"}
    float_loss = next(float(r["loss"]) for r in rows if r["variant"] == "float")
    return by_bits, float_loss


def model_of(record):
    return pathlib.Path(record.get("experiment", "?")).stem


def rows_of(path):
    """(model, selection, unit folder, unit record) for each unit a unit or sweep folder holds."""
    path = pathlib.Path(path)
    if (path / "unit.toml").exists():
        record = read_toml(path / "unit.toml")
        return [(model_of(record), "every parameter (trained unit)", path, record)]
    if not (path / "sweep.toml").exists():
        fail(f"{path}: neither a results unit (unit.toml) nor a sweep (sweep.toml)")
    sweep = read_toml(path / "sweep.toml")
    common = " ".join(s for s in sweep.get("set", []) if "parameters" in s)
    rows = []
    for run in sweep.get("run", []):
        unit = pathlib.Path(run.get("unit", ""))
        if not (unit / "unit.toml").exists():
            fail(f"{path}: run {run.get('index')} has no finished unit")
        record = read_toml(unit / "unit.toml")
        selection = " ".join(run.get("overrides", [])).replace("algorithm.0.", "")
        parameters = common.split("=")[-1].strip('"') if common else "weights"
        rows.append((model_of(record), f"{parameters} of {selection}", unit, record))
    return rows


def main():
    if len(sys.argv) < 2:
        fail("usage: critical_ratio_table.py UNIT_OR_SWEEP [UNIT_OR_SWEEP ...]")
    rows = [row for argument in sys.argv[1:] for row in rows_of(argument)]
    table, all_bits = [], set()
    for model, selection, unit, record in rows:
        by_bits, float_loss = ratios(unit)
        all_bits.update(by_bits)
        table.append((model, selection, by_bits, float_loss))
    bits = sorted(all_bits)
    print(provenance([record for *_, record in rows]) + "\n")
    print("| model | quantised | " + " | ".join(f"{b} bits" for b in bits) + " | float loss |")
    print("| --- | --- | " + " | ".join("---:" for _ in bits) + " | ---: |")
    for model, selection, by_bits, float_loss in table:
        cells = [f"{by_bits[b]:.3f}" if b in by_bits else "-" for b in bits]
        print(f"| {model} | {selection} | " + " | ".join(cells) + f" | {float_loss:.4f} |")


if __name__ == "__main__":
    main()
