"""Writes a tiny ImageNet tree in the layout QuantLab's ilsvrc12 problem reads, for smoke tests
of the ImageNet examples with all 1,000 classes.

    make_imagenet_tree.py OUT_DIR [TRAIN_PER_CLASS] [VAL_IMAGES] [CLASSES]

OUT_DIR/train/nXXXXXXXX/*.JPEG for CLASSES made-up wnids (default 1,000; TRAIN_PER_CLASS noise
images of 48x40 each, default 1), a flat OUT_DIR/val/ of VAL_IMAGES images (default 16) and OUT_DIR/val_labels.txt
("FILE INDEX" lines). Seeded: the same bytes every run.
"""
import pathlib
import sys

import numpy as np
from PIL import Image


def main(out, train_per_class=1, val_images=16, classes=1000):
    out = pathlib.Path(out)
    rng = np.random.default_rng(5)
    for c in range(classes):
        folder = out / "train" / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=90)
    (out / "val").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(val_images):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(out / "val" / name, quality=90)
        lines.append(f"{name} {int(rng.integers(0, classes))}\n")
    (out / "val_labels.txt").write_text("".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
