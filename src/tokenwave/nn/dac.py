"""DAC encoder and decoder (Kumar et al. 2023, "High-Fidelity Audio Compression with Improved RVQGAN").

Module and parameter names follow transformers' ``DacEncoder``/``DacDecoder`` so that checkpoints in
the transformers layout load as they are. Convolutions hold plain (weight-norm folded) weights; the
original checkpoints' ``weight_g``/``weight_v`` pairs are folded when they are loaded.

Every ``forward`` takes optional per-item ``lengths`` (see :mod:`tokenwave.nn.lengths`) and returns the
output lengths alongside, so a right-padded batch gives each item what it would get alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .lengths import module_out_length, zero_pad_frames
from .snake import Snake


def _conv(module: nn.Module, x: torch.Tensor, lengths):
    """Run a conv on zero-padded frames and carry the lengths through it."""
    if lengths is not None and module.kernel_size[0] > 1:
        x = zero_pad_frames(x, lengths)
    y = module(x)
    return y, (None if lengths is None else module_out_length(module, lengths))


class ResidualUnit(nn.Module):
    """``x + conv1x1(snake(conv7_dilated(snake(x))))``; "same" padding keeps the length."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.snake1 = Snake(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        y, _ = _conv(self.conv1, self.snake1(x), lengths)
        # in place on the fresh conv output (autograd-safe: add needs neither input); a + b == b + a bitwise
        return self.conv2(self.snake2(y)).add_(x)


class EncoderBlock(nn.Module):
    """Three residual units (dilation 1, 3, 9), then a strided conv that doubles the channels."""

    def __init__(self, in_channels: int, stride: int):
        super().__init__()
        self.res_unit1 = ResidualUnit(in_channels, 1)
        self.res_unit2 = ResidualUnit(in_channels, 3)
        self.res_unit3 = ResidualUnit(in_channels, 9)
        self.snake1 = Snake(in_channels)
        self.conv1 = nn.Conv1d(
            in_channels, 2 * in_channels, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )

    def forward(self, x: torch.Tensor, lengths=None):
        x = self.res_unit3(self.res_unit2(self.res_unit1(x, lengths), lengths), lengths)
        return _conv(self.conv1, self.snake1(x), lengths)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv that halves the channels and upsamples by ``stride``, three residual units.

    ``output_padding = stride % 2`` (the Higgs variant) makes every block multiply the length by exactly
    ``stride``; stock DAC uses 0.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, output_padding: int):
        super().__init__()
        self.snake1 = Snake(in_channels)
        self.conv_t1 = nn.ConvTranspose1d(
            in_channels,
            out_channels,
            kernel_size=2 * stride,
            stride=stride,
            padding=math.ceil(stride / 2),
            output_padding=output_padding,
        )
        self.res_unit1 = ResidualUnit(out_channels, 1)
        self.res_unit2 = ResidualUnit(out_channels, 3)
        self.res_unit3 = ResidualUnit(out_channels, 9)

    def forward(self, x: torch.Tensor, lengths=None):
        x, lengths = _conv(self.conv_t1, self.snake1(x), lengths)
        x = self.res_unit3(self.res_unit2(self.res_unit1(x, lengths), lengths), lengths)
        return x, lengths


class DacEncoder(nn.Module):
    """Waveform ``[B, 1, L]`` -> latent ``[B, latent_dim, ~L / prod(strides)]``.

    Args:
        hidden_size: channels after the stem; doubled by every block.
        strides: downsampling factor of each block.
        latent_dim: output channels.
    """

    def __init__(self, hidden_size: int, strides: Sequence[int], latent_dim: int):
        super().__init__()
        self.conv1 = nn.Conv1d(1, hidden_size, kernel_size=7, padding=3)
        self.block = nn.ModuleList(EncoderBlock(hidden_size * 2**i, s) for i, s in enumerate(strides))
        width = hidden_size * 2 ** len(strides)
        self.snake1 = Snake(width)
        self.conv2 = nn.Conv1d(width, latent_dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, lengths=None):
        x, lengths = _conv(self.conv1, x, lengths)
        for block in self.block:
            x, lengths = block(x, lengths)
        return _conv(self.conv2, self.snake1(x), lengths)

    def output_length(self, length):
        """Frames produced for ``length`` input samples (int or integer tensor)."""
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                length = module_out_length(module, length)
        return length


class DacDecoder(nn.Module):
    """Latent ``[B, latent_dim, T]`` -> waveform ``[B, 1, T * prod(strides)]`` (linear output, no tanh).

    Args:
        latent_dim: input channels.
        hidden_size: channels after the stem; halved by every block.
        strides: upsampling factor of each block, in order.
        odd_stride_output_padding: use ``output_padding = stride % 2`` (Higgs) instead of 0 (DAC).
    """

    def __init__(
        self, latent_dim: int, hidden_size: int, strides: Sequence[int], *, odd_stride_output_padding: bool = True
    ):
        super().__init__()
        self.conv1 = nn.Conv1d(latent_dim, hidden_size, kernel_size=7, padding=3)
        self.block = nn.ModuleList(
            DecoderBlock(
                hidden_size // 2**i,
                hidden_size // 2 ** (i + 1),
                s,
                (s % 2) if odd_stride_output_padding else 0,
            )
            for i, s in enumerate(strides)
        )
        width = hidden_size // 2 ** len(strides)
        self.snake1 = Snake(width)
        self.conv2 = nn.Conv1d(width, 1, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor, lengths=None):
        x, lengths = _conv(self.conv1, x, lengths)
        for block in self.block:
            x, lengths = block(x, lengths)
        return _conv(self.conv2, self.snake1(x), lengths)
