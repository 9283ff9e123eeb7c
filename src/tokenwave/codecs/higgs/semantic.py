"""Semantic encoder (used at inference) and decoder (training-only) of the Higgs tokenizer.

Both are stacks of k=3 "same" convolutions over the 25 Hz HuBERT features; parameter names follow
transformers' ``SemanticEncoder``/``SemanticDecoder``. Only the published geometry (stride 1, channel
ratio 1, dilation 1) is implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...nn.lengths import zero_pad_frames


class SemanticResidualUnit(nn.Module):
    """``x + conv1x1(elu(conv3(elu(x))))``, both convs without bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        y = self.conv1(zero_pad_frames(F.elu(x), lengths))
        return x + self.conv2(F.elu(y))


class SemanticEncoderBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.res_units = nn.ModuleList(SemanticResidualUnit(channels) for _ in range(2))
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        for unit in self.res_units:
            x = unit(x, lengths)
        return self.conv(zero_pad_frames(x, lengths))


class SemanticEncoder(nn.Module):
    """``[B, C, T] -> [B, C, T]``: conv (no bias), then two blocks of 2 residual units + conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.conv_blocks = nn.ModuleList(SemanticEncoderBlock(channels) for _ in range(2))

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        x = self.conv(zero_pad_frames(x, lengths))
        for block in self.conv_blocks:
            x = block(x, lengths)
        return x


class SemanticDecoderBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, bias=True)
        self.res_units = nn.ModuleList(SemanticResidualUnit(channels) for _ in range(2))

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        x = self.conv(zero_pad_frames(x, lengths))
        for unit in self.res_units:
            x = unit(x, lengths)
        return x


class SemanticDecoder(nn.Module):
    """Training-only reconstruction of the teacher features from the quantized latent."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.conv_blocks = nn.ModuleList(SemanticDecoderBlock(channels) for _ in range(2))
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        x = self.conv1(zero_pad_frames(x, lengths))
        for block in self.conv_blocks:
            x = block(x, lengths)
        return self.conv2(zero_pad_frames(x, lengths))
