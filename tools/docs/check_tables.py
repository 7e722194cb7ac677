#!/usr/bin/env python3
"""Every results table in the docs says where its numbers come from.

    check_tables.py ROOT     (checks ROOT/README.md and ROOT/docs/**/*.md)
    check_tables.py FILE...  (checks those files)

A results table is a Markdown table with a test accuracy, a loss ratio or a top-1 in it (a
header cell naming top-1, accuracy or loss ratio, a body cell that is a percentage, or three
cells like 97.39). It must
be preceded, within the 15 lines before it, by a line starting with "Reproduce:" (our numbers:
the command that made them, and the commit and machine it ran on) or "Source:" (numbers from a
paper or a reference repository). Prints one line per table without one and exits 1.
"""
import pathlib
import re
import sys

RESULT_HEADER = re.compile(r"top-?1|accuracy|loss ratio", re.IGNORECASE)
PERCENT_CELL = re.compile(r"^\**[−-]?\d+(\.\d+)? ?%\**( \(.*\))?$")
SCORE_CELL = re.compile(r"^\**\d{1,2}\.\d\d\**$")  # 97.39: a top-1 in % without the sign
MARKER = re.compile(r"^(Reproduce|Source):")
LOOK_BACK = 15


def tables(lines):
    """(first line index, header cells, body rows) of each Markdown table outside code blocks
    (a console transcript shows a command's output; the command is right there)."""
    i, fenced = 0, False
    while i < len(lines):
        if lines[i].startswith("```"):
            fenced = not fenced
            i += 1
        elif not fenced and lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|\s*$", lines[i + 1]):
            start, header = i, [c.strip() for c in lines[i].strip().strip("|").split("|")]
            i += 2
            body = []
            while i < len(lines) and lines[i].startswith("|"):
                body.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            yield start, header, body
        else:
            i += 1


def is_results(header, body):
    if any(RESULT_HEADER.search(cell) for cell in header):
        return True
    if any(PERCENT_CELL.match(cell) for row in body for cell in row):
        return True
    return sum(1 for row in body for cell in row if SCORE_CELL.match(cell)) >= 3


def check(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = []
    for start, header, body in tables(lines):
        if not is_results(header, body):
            continue
        before = lines[max(0, start - LOOK_BACK):start]
        if not any(MARKER.match(line.lstrip("> *_")) for line in before):
            problems.append(f"{path}:{start + 1}: a results table without a 'Reproduce:' or 'Source:' line before it")
    return problems


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    arguments = [pathlib.Path(a) for a in sys.argv[1:]]
    if len(arguments) == 1 and arguments[0].is_dir():
        root = arguments[0]
        files = [root / "README.md"] + sorted((root / "docs").rglob("*.md"))
    else:
        files = arguments
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
