"""Synthetic data in the official formats for the GPU figures (bench/gpu/check.sh).

usage: make_data.py cifar DIR IMAGES_PER_FILE      CIFAR-10 binary files: data_batch_1..5.bin, test_batch.bin
       make_data.py imagenet DIR CLASSES PER_CLASS  train/<class>/*.JPEG (256x256) and val/<class>/ (a quarter as many)
"""
import os
import sys

import numpy as np


def cifar(folder, per_file):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        count = per_file if name != "test_batch.bin" else max(per_file // 5, 100)
        records = np.empty((count, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, count)
        records[:, 1:] = rng.integers(0, 256, (count, 3072))
        records.tofile(os.path.join(folder, name))


def imagenet(folder, classes, per_class):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", max(per_class // 4, 1))):
        for c in range(classes):
            path = os.path.join(folder, split, f"n{c:08d}")
            os.makedirs(path, exist_ok=True)
            for i in range(count):
                # Smooth random content: JPEG-like statistics, not noise.
                small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((256, 256), Image.BILINEAR)
                image.save(os.path.join(path, f"image_{i:05d}.JPEG"), quality=90)


if __name__ == "__main__":
    if sys.argv[1] == "cifar":
        cifar(sys.argv[2], int(sys.argv[3]))
    else:
        imagenet(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
