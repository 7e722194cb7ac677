"""Why QuantLab's convolutional topologies stay in NCHW: LibTorch 1.13's CPU batch norm is
much less precise in the channels_last layout, which would otherwise speed up forward+backward
by 1.2-1.3x (README, Performance). Prints the relative error against float64 of

  - one BatchNorm2d in training mode, on plain and on post-ReLU inputs, per layout;
  - the gradients of the GPFQ CIFAR-10 convnet (topologies/convnet: three blocks of
    conv-ReLU-BN x2 + max pool, FC 128 + ReLU + BN, FC), per layout.

Rerun it with a newer LibTorch before switching layouts.

usage: /usr/bin/python3 bench/channels_last_precision.py
"""
import copy
import os

import torch
import torch.nn as nn


def relative(a, reference):
    return ((a.double() - reference).abs().max() / reference.abs().max()).item()


def layouts(module, x, weights):
    """Outputs and parameter gradients of (weights * module(x)).sum() in NCHW, channels_last
    and float64."""
    results = {}
    for layout in ("nchw", "channels_last", "float64"):
        m, xi = copy.deepcopy(module), x.clone()
        if layout == "channels_last":
            m, xi = m.to(memory_format=torch.channels_last), xi.contiguous(memory_format=torch.channels_last)
        if layout == "float64":
            m, xi = m.double(), xi.double()
        m.train()
        y = m(xi)
        (y * weights.to(y.dtype)).sum().backward()
        results[layout] = (y.detach().double(), [p.grad.double() for p in m.parameters()])
    return results


def convnet(classes=10):
    layers, channels = [], 3
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(width)]
            channels = width
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 16, 128), nn.ReLU(), nn.BatchNorm1d(128),
                         nn.Linear(128, classes))


def main():
    torch.set_num_threads(os.cpu_count())  # as qlhost does by default
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; relative error against float64")
    for name, transform in (("BatchNorm2d(32), N(0,1) input", lambda t: t), ("BatchNorm2d(32), post-ReLU input", torch.relu)):
        x = transform(torch.randn(16, 32, 16, 16))
        r = layouts(nn.BatchNorm2d(32), x, torch.randn(16, 32, 16, 16))
        reference = r["float64"][0]
        print(f"{name:34} output: NCHW {relative(r['nchw'][0], reference):.1e}, "
              f"channels_last {relative(r['channels_last'][0], reference):.1e}")
    for batch in (16, 128):
        r = layouts(convnet(), torch.randn(batch, 3, 32, 32), torch.randn(batch, 10))
        worst = {layout: max(relative(g, reference) for g, reference in zip(r[layout][1], r["float64"][1]))
                 for layout in ("nchw", "channels_last")}
        print(f"GPFQ CIFAR convnet, batch {batch:3}     worst parameter gradient: NCHW {worst['nchw']:.1e}, "
              f"channels_last {worst['channels_last']:.1e}")


if __name__ == "__main__":
    main()
