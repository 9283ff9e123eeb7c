"""Multi-period discriminator (HiFi-GAN, Kong et al. 2020; Vocos/WavTokenizer and DAC variants).

Sub-discriminator ``p`` folds the waveform into ``[B, 1, L / p, p]`` so that each column holds every ``p``-th
sample, then runs weight-normed ``Conv2d`` with ``(k, 1)`` kernels along time only::

    pad     reflect-pad L up to a multiple of p   (DAC: always by p - L mod p, a full period when L mod p = 0)
    convs   1 -> 32 -> 128 -> 512 -> 1024, kernel (5, 1), stride (3, 1), padding (2, 0), LeakyReLU 0.1
            1024 -> 1024, kernel (5, 1), stride 1, padding (2, 0), LeakyReLU 0.1
    post    1024 -> 1, kernel (3, 1), padding (1, 0)   (+ projection e[c] . h, if conditional)

Feature maps: Vocos/WavTokenizer ``DiscriminatorP`` returns the activations of convs 2-5 and the logits (5);
DAC ``MPD`` those of all five convs and the logits (6) -- ``skip_first_feature_map`` picks one.
References: vocos 0.1.0 ``vocos/discriminators.py`` (= WavTokenizer ``decoder/discriminators.py``,
spec_wavtokenizer.md section 6.2 item 1), DAC ``dac/model/discriminator.py`` ``MPD``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import (
    DiscriminatorOutput,
    as_waveform,
    condition_rows,
    conditional_table,
    leaky_relu,
    projection,
    wn_conv2d,
)

PERIODS = (2, 3, 5, 7, 11)


class PeriodDiscriminator(nn.Module):
    """One period of the MPD (module docstring).

    Args:
        period: fold length ``p``.
        channels: widths of the strided convs; one more conv keeps the last width.
        num_embeddings: size of the conditional projection table (WavTokenizer: 4 bandwidth ids), or None.
        always_pad: DAC's padding (a full period of reflection even when ``L`` is a multiple of ``p``).
        skip_first_feature_map: leave the first conv's activation out of ``feature_maps`` (Vocos/HiFi-GAN).
    """

    def __init__(self, period: int, *, channels: Sequence[int] = (32, 128, 512, 1024), kernel_size: int = 5,
                 stride: int = 3, num_embeddings: int | None = None, always_pad: bool = False,
                 skip_first_feature_map: bool = True):
        super().__init__()
        self.period, self.always_pad, self.skip_first_feature_map = period, always_pad, skip_first_feature_map
        widths = [1, *channels]
        pad = (kernel_size // 2, 0)
        convs = [wn_conv2d(i, o, (kernel_size, 1), (stride, 1), pad) for i, o in zip(widths[:-1], widths[1:])]
        convs.append(wn_conv2d(widths[-1], widths[-1], (kernel_size, 1), 1, pad))
        self.convs = nn.ModuleList(convs)
        self.emb = conditional_table(num_embeddings, widths[-1])
        self.conv_post = wn_conv2d(widths[-1], 1, (3, 1), 1, (1, 0))

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``[B, 1, ceil(L / p), p]`` (``ceil(L / p) + 1`` rows with ``always_pad`` and ``p | L``)."""
        rest = x.shape[-1] % self.period
        if rest or self.always_pad:
            x = F.pad(x.unsqueeze(1), (0, self.period - rest), mode="reflect").squeeze(1)
        return x.reshape(x.shape[0], 1, -1, self.period)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> DiscriminatorOutput:
        """``x``: ``[B, L]`` or ``[B, 1, L]``; ``condition``: id(s) for the projection (see ``condition_rows``)."""
        rows = condition_rows(self.emb, condition)
        h = self.fold(as_waveform(x))
        fmaps = []
        for i, conv in enumerate(self.convs):
            h = leaky_relu(conv(h))
            if i > 0 or not self.skip_first_feature_map:
                fmaps.append(h)
        logits = self.conv_post(h) + projection(rows, h)
        fmaps.append(logits)
        return DiscriminatorOutput(logits, fmaps)


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per period (Vocos/WavTokenizer ``MultiPeriodDiscriminator``;
    WavTokenizer builds it with ``num_embeddings=4``)."""

    def __init__(self, periods: Sequence[int] = PERIODS, *, num_embeddings: int | None = None, **kwargs):
        super().__init__()
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(p, num_embeddings=num_embeddings, **kwargs) for p in periods
        )
        self.conditional = num_embeddings is not None

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> list[DiscriminatorOutput]:
        return [d(x, condition) for d in self.discriminators]
