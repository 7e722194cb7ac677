"""The ImageNet training pipeline in torchvision: ImageFolder + DataLoader with
RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize; the baseline of
bench/imagenet_pipeline.cpp (same files, same number of workers, same batch size).

usage: /usr/bin/python3 bench/imagenet_pipeline.py DIR WORKERS BATCH [train|eval]
  eval: Resize(256) + CenterCrop(224) instead of RandomResizedCrop(224) + flip
prints: torchvision images_per_second
"""
import sys
import time

import torch
from torchvision import datasets, transforms


def main():
    root, workers, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    evaluation = len(sys.argv) > 4 and sys.argv[4] == "eval"
    torch.set_num_threads(1)
    crop = [transforms.Resize(256), transforms.CenterCrop(224)] if evaluation else [
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    transform = transforms.Compose(crop + [
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    data = datasets.ImageFolder(f"{root}/train", transform)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers)

    def run():
        seen = 0
        start = time.perf_counter()
        for images, _ in loader:
            seen += images.shape[0]
        return seen / (time.perf_counter() - start)

    run()  # warm the page cache
    print(f"torchvision {run():.1f}")


if __name__ == "__main__":
    main()
