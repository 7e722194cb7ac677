"""Forward+backward throughput of CIFAR ResNet-20 (option A) and the ANA CIFAR VGG, written in
plain PyTorch: the Python baseline of bench/forward_backward.cpp (same layers, same batch).

usage: .venv/bin/python bench/forward_backward.py NETWORK BATCH ITERATIONS THREADS [DEVICE [PRECISION]]
  NETWORK: resnet20 | vgg_ana (3x32x32, 10 classes) | vgg16 (torchvision's, 3x224x224, 1000 classes)
  DEVICE: cpu (default) | cuda;  PRECISION: fp32 (default) | bf16 (autocast)
prints: NETWORK images_per_second
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes - inp
        self.stride = stride

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = x[:, :, ::self.stride, ::self.stride]
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    def __init__(self, classes=10, n=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, width = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            for b in range(n):
                blocks.append(BasicBlock(width, planes, 2 if stage > 0 and b == 0 else 1))
                width = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def vgg_ana(classes=10):
    layers, channels = [], 3
    for out, pooled in ((128, False), (128, True), (256, False), (256, True), (512, False), (512, True)):
        layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=False))
        if pooled:
            layers.append(nn.MaxPool2d(2, 2))
        layers += [nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(512 * 16, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(),
        nn.Linear(1024, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(),
        nn.Linear(1024, classes, bias=False), nn.BatchNorm1d(classes))


def main():
    name, batch, iterations, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    bf16 = len(sys.argv) > 6 and sys.argv[6] == "bf16"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if name == "vgg16":
        import torchvision
        network, side, classes = torchvision.models.vgg16(), 224, 1000
    else:
        network, side, classes = (ResNet20() if name == "resnet20" else vgg_ana()), 32, 10
    network.to(device).train()
    torch.backends.cudnn.benchmark = device != "cpu"  # as qlhost does when not deterministic
    inputs = torch.randn(batch, 3, side, side, device=device)
    targets = torch.randint(0, classes, (batch,), device=device)

    def step():
        network.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(network(inputs).float(), targets)
        loss.backward()

    def synchronize():
        if device != "cpu":
            torch.cuda.synchronize()

    step()  # warm-up
    step()
    synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize()
    print(f"{name} {batch * iterations / (time.perf_counter() - start):.1f}")


if __name__ == "__main__":
    main()
