#!/usr/bin/env python3
"""A Markdown table of test top-1 (%) from a unit's variants sweep, as the docs print them.

    variants_table.py UNIT ALGORITHM [--rows COLUMN[,COLUMN]] --columns COLUMN [--values V[,V]] [--fold K]

Reads UNIT/fold<K>/<ALGORITHM>_variants.csv (written by every run with variants) and pivots
it: one row per value of the --rows columns (e.g. "series,bits") and of --values, one column
per value of --columns (e.g. "alphabet_scalar"); each cell is the variant's --values column
(default top1: test top-1 in %; loss_ratio and the other columns as written). The float
network's top-1 and where the numbers came from (unit, commit, host, date from unit.toml) are
printed above the table, so that a table pasted into the docs says what made it.

Example: variants_table.py logs/mnist/mlp/exp0003 greedy --rows series,bits --columns alphabet_scalar
"""
import argparse
import csv
import pathlib
import sys
import tomllib


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unit", type=pathlib.Path)
    parser.add_argument("algorithm")
    parser.add_argument("--rows", default="", help="comma-separated columns of the CSV (none: one row per value)")
    parser.add_argument("--values", default="top1", help="comma-separated columns shown in the cells")
    parser.add_argument("--columns", required=True, help="one column of the CSV")
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()

    path = args.unit / f"fold{args.fold}" / f"{args.algorithm}_variants.csv"
    try:
        with open(path, newline="") as f:
            records = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"variants_table.py: {path}: {e.strerror}")
    row_keys = [k for k in args.rows.split(",") if k]
    values = args.values.split(",")
    for key in row_keys + [args.columns, "top1"] + values:
        if records and key not in records[0]:
            sys.exit(f"variants_table.py: {path}: no column '{key}' (there are {', '.join(records[0])})")
    floats = [r for r in records if r["variant"] == "float"]
    variants = [r for r in records if r["variant"] != "float"]

    rows, columns, cells = [], [], {}
    for r in variants:
        column = r[args.columns]
        if column not in columns:
            columns.append(column)
        for value in values:
            row = " ".join([r[k] for k in row_keys] + ([value] if len(values) > 1 or not row_keys else []))
            if row not in rows:
                rows.append(row)
            cells[row, column] = f"{100 * float(r[value]):.2f}" if value == "top1" else r[value]

    record_path = args.unit / "unit.toml"
    if record_path.exists():
        with open(record_path, "rb") as f:
            record = tomllib.load(f)
        print(f"unit {args.unit.name}: commit {record.get('git_revision', '?')}, host {record.get('host', '?')}, "
              f"{record.get('started', '?')}")
    if floats:
        print(f"float network: {100 * float(floats[0]['top1']):.2f} %")
    print()
    print(f"| {' '.join(row_keys) or 'value'} \\ {args.columns} | " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print(f"| {row} | " + " | ".join(cells.get((row, c), "") for c in columns) + " |")


if __name__ == "__main__":
    main()
