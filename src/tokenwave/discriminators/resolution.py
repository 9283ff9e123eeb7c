"""Multi-resolution magnitude-spectrogram discriminator (UnivNet, Jang et al. 2021), as WavTokenizer uses it.

Sub-discriminator ``(n_fft, hop, win)`` looks at ``|STFT(x)|`` as a one-channel image ``[B, 1, F, T]``
(frequency first) through weight-normed ``Conv2d``, all ``channels`` wide (64), LeakyReLU 0.1 after each::

    kernel (7, 5) stride (2, 2) padding (3, 2)
    kernel (5, 3) stride (2, 1) padding (2, 1)
    kernel (5, 3) stride (2, 2) padding (2, 1)
    kernel (3, 3) stride (2, 1) padding 1
    kernel (3, 3) stride (2, 2) padding 1
    post  channels -> 1, kernel (3, 3), padding 1   (+ projection e[c] . h, if conditional)

Feature maps: the five activations and the logits (6). The STFT is ``center=True`` with reflect padding; its
window defaults to WavTokenizer's ``torch.stft(window=None)``, i.e. **rectangular** (the reference comments
"interestingly rectangular window kind of works here"); ``window="hann"`` is the textbook choice.
Reference: WavTokenizer ``decoder/discriminators.py`` ``MultiResolutionDiscriminator``/``DiscriminatorR``
(the pre-0.1.0 Vocos one), spec_wavtokenizer.md section 6.2 item 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..losses.spectral import WindowKind, make_window, stft
from .common import (
    DiscriminatorOutput,
    as_waveform,
    condition_rows,
    conditional_table,
    leaky_relu,
    projection,
    wn_conv2d,
)

RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 256, 1024), (2048, 512, 2048), (512, 128, 512))


class ResolutionDiscriminator(nn.Module):
    """One resolution of the MRD (module docstring). ``resolution`` is ``(n_fft, hop_length, win_length)``."""

    def __init__(self, resolution: Sequence[int], *, channels: int = 64, num_embeddings: int | None = None,
                 window: WindowKind = "rectangular"):
        super().__init__()
        self.n_fft, self.hop_length, win_length = (int(v) for v in resolution)
        self.register_buffer("window", make_window(window, win_length), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            wn_conv2d(1, c, (7, 5), (2, 2), (3, 2)),
            wn_conv2d(c, c, (5, 3), (2, 1), (2, 1)),
            wn_conv2d(c, c, (5, 3), (2, 2), (2, 1)),
            wn_conv2d(c, c, 3, (2, 1), 1),
            wn_conv2d(c, c, 3, (2, 2), 1),
        ])
        self.emb = conditional_table(num_embeddings, c)
        self.conv_post = wn_conv2d(c, 1, (3, 3), 1, (1, 1))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``|STFT|`` ``[B, 1, n_fft // 2 + 1, 1 + L // hop]``."""
        return stft(x, n_fft=self.n_fft, hop_length=self.hop_length, window=self.window).abs().unsqueeze(1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> DiscriminatorOutput:
        rows = condition_rows(self.emb, condition)
        h = self.spectrogram(as_waveform(x))
        fmaps = []
        for conv in self.convs:
            h = leaky_relu(conv(h))
            fmaps.append(h)
        logits = self.conv_post(h) + projection(rows, h)
        fmaps.append(logits)
        return DiscriminatorOutput(logits, fmaps)


class MultiResolutionDiscriminator(nn.Module):
    """One :class:`ResolutionDiscriminator` per resolution (WavTokenizer: ``num_embeddings=4``)."""

    def __init__(self, resolutions: Sequence[Sequence[int]] = RESOLUTIONS, *, num_embeddings: int | None = None,
                 **kwargs):
        super().__init__()
        self.discriminators = nn.ModuleList(
            ResolutionDiscriminator(r, num_embeddings=num_embeddings, **kwargs) for r in resolutions
        )
        self.conditional = num_embeddings is not None

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> list[DiscriminatorOutput]:
        return [d(x, condition) for d in self.discriminators]
