#!/usr/bin/env python3
"""Checks that the repository's documentation points only into the repository.

Every relative link or image in a Markdown file must name a file or folder that exists (and,
for a '#anchor' into a Markdown file, a heading of it), and no source, example or document may
cite a document outside the repository (the team's shared folder, a spec kept elsewhere).

Usage: check_links.py [ROOT]   prints one line per problem; exit 1 when there is any
"""
import pathlib
import re
import sys

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Where the team keeps reference material that is not part of the product: the shared folder
# next to the checkout and its design notes (spelled in pieces so this file does not cite them).
OUTSIDE_PLACES = ["../" + "shared/", "shared" + "/design/", "ALGORITHMS" + ".md"]
OUTSIDE = re.compile("|".join(re.escape(place) for place in OUTSIDE_PLACES))
SKIP_DIRS = {".git", "node_modules", ".venv"}  # .venv: third-party packages (onnxruntime ships Markdown)
TEXT_SUFFIXES = {".md", ".cpp", ".hpp", ".h", ".in", ".toml", ".py", ".sh", ".txt", ".cmake"}


def tracked_files(root):
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith("build") for p in parts) or not path.is_file():
            continue
        yield path


def slug(heading):
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown):
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", markdown, re.MULTILINE)}


def check_markdown(root, path, problems):
    text = path.read_text(encoding="utf-8")
    in_code = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for match in LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}"
            if not resolved.exists():
                problems.append(f"{where}: link to {target}: no such file or folder")
            elif root.resolve() not in resolved.parents and resolved != root.resolve():
                problems.append(f"{where}: link to {target} leaves the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{where}: link to {target}: no heading '{anchor}' there")


def main(argv):
    root = pathlib.Path(argv[1] if len(argv) > 1 else pathlib.Path(__file__).resolve().parents[2])
    problems = []
    for path in sorted(tracked_files(root)):
        if path.suffix == ".md":
            check_markdown(root, path, problems)
        if path.suffix in TEXT_SUFFIXES and path != pathlib.Path(__file__).resolve():
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    problems.append(f"{path.relative_to(root)}:{number}: cites a document outside the repository")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
