"""The Python side of the ResNet-20 training figure (bench/gpu/check.sh): CIFAR ResNet-20 (option A,
the same network as bench/forward_backward.py) trained with SGD on CIFAR-10 binary files the way a
PyTorch script does it: a Dataset with torchvision's random crop (padding 4) and flip, normalised,
a DataLoader with worker processes and pinned memory, batches of 128, one optimiser step each.

usage: train_resnet20.py DATA_DIR EPOCHS WORKERS [DEVICE]
prints: resnet20-train IMAGES_PER_SECOND_OF_THE_LAST_EPOCH
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from forward_backward import ResNet20  # noqa: E402

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


class CifarFiles(Dataset):
    def __init__(self, folder):
        records = np.concatenate([np.fromfile(os.path.join(folder, f"data_batch_{i}.bin"), dtype=np.uint8)
                                  .reshape(-1, 3073) for i in range(1, 6)])
        self.labels = torch.from_numpy(records[:, 0].astype(np.int64))
        self.images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = F.pad(self.images[i].float().div_(255), (4, 4, 4, 4))
        top, left = np.random.randint(0, 9, 2)
        image = image[:, top:top + 32, left:left + 32]
        if np.random.rand() < 0.5:
            image = image.flip(2)
        return (image - MEAN) / STD, self.labels[i]


def main():
    folder, epochs, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "cuda"
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device != "cpu"
    network = ResNet20().to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(CifarFiles(folder), batch_size=128, shuffle=True, num_workers=workers, pin_memory=True,
                        persistent_workers=workers > 0)
    rate = 0.0
    for _ in range(epochs):
        network.train()
        start, seen = time.perf_counter(), 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(network(inputs), targets)
            loss.backward()
            optimizer.step()
            seen += len(targets)
            loss.item()  # what a script logs every step (and what qlhost waits for once a step)
        if device != "cpu":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - start)
    print(f"resnet20-train {rate:.1f}")


if __name__ == "__main__":
    main()
