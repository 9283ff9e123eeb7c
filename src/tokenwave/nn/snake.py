"""Snake activation (Ziyin et al. 2020, "Neural networks fail to learn periodic functions..."), as in DAC."""

from __future__ import annotations

import torch
from torch import nn


class Snake(nn.Module):
    """``y = x + sin^2(alpha x) / (alpha + 1e-9)`` with one learned ``alpha`` per channel.

    The 1e-9 keeps a zero alpha finite; the expression order matches DAC and transformers so that
    outputs are bit-identical to the references.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)
