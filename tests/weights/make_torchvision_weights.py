"""Writes torchvision networks with seeded random weights, as QuantLab's pretrained-weights
tests read them, with their logits for fixed inputs.

    make_torchvision_weights.py OUT_DIR [NAME ...]

For each of resnet18, vgg11_bn and alexnet (or the NAMEs given) (1,000 classes; random batch-norm statistics so that
they matter): OUT_DIR/NAME.pth (torch.save of the state dict), OUT_DIR/NAME.safetensors, and
OUT_DIR/NAME.input / NAME.logits, raw little-endian float32 of 2 images [2, 3, S, S] (S = 224,
AlexNet 224 as well) and the network's logits in eval mode.
"""
import pathlib
import sys

import torch
import torchvision
from safetensors.torch import save_file


def main(out, names=("resnet18", "vgg11_bn", "alexnet")):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.manual_seed(7)
        model = getattr(torchvision.models, name)(weights=None)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)
        model.eval()
        state = model.state_dict()
        torch.save(state, out / f"{name}.pth")
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"{name}.safetensors"))
        images = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            logits = model(images)
        images.numpy().astype("<f4").tofile(out / f"{name}.input")
        logits.numpy().astype("<f4").tofile(out / f"{name}.logits")
        print(f"{name}: {sum(v.numel() for v in state.values())} values, logits up to {logits.abs().max():.3g}")


if __name__ == "__main__":
    main(sys.argv[1], *([sys.argv[2:]] if len(sys.argv) > 2 else []))
