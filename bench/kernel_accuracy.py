"""How far each convolution method's float32 result is from the exact sums.

For the 3x3 layers of VGG16 (half the resolution of a 500x500 FCN input,
MSRA weights, ReLU-like inputs in [0, 1)), the largest error of each
inference method against a float64 convolution, as a fraction of the
largest output: what the kernel choice may change in a deploy pass. Every
row has `direct` (oneDNN) as its baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from torchcaffe import kernels
from torchcaffe.kernel_choice import candidates

# (name, channels in, out, height, width)
LAYERS = [("conv1_2", 64, 64, 174, 174), ("conv2_2", 128, 128, 87, 87),
          ("conv3_2", 256, 256, 44, 44), ("conv4_2", 512, 512, 22, 22),
          ("conv5_2", 512, 512, 11, 11)]
WINDOW = kernels.Window((3, 3), (1, 1), (1, 1), (1, 1), 1)


def _relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return float((got.double() - exact).abs().max() / exact.abs().max())


def run(device: str) -> list[dict]:
    if device != "cpu":
        return []
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name, c, o, h, w in LAYERS:
        x = torch.rand(1, c, h, w, generator=gen)
        weight = torch.randn(o, c, 3, 3, generator=gen) * (2 / (9 * c)) ** 0.5
        bias = torch.zeros(o)
        exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
        with torch.no_grad():
            errors = {method: _relative_error(
                kernels.kernel("Convolution", method)(x, weight, bias, WINDOW), exact)
                for method in candidates("Convolution", x, (WINDOW,))}
        for method, error in errors.items():
            if method != "direct":
                rows.append({"metric": f"{name} {c}->{o} 3x3 on {h}x{w}: {method}, largest "
                                       "error / largest output", "value": error, "unit": "",
                             "baseline": "direct", "baseline_value": errors["direct"]})
    return rows
