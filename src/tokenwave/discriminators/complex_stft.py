"""Multi-band, multi-scale complex STFT discriminator (DAC, Kumar et al. 2023) and DAC's full discriminator.

Sub-discriminator ``w`` (window length; hop ``w / 4``) splits the complex STFT ``[B, 2 (re, im), T, F]`` into
frequency bands at fractions ``(0, .1), (.1, .25), (.25, .5), (.5, .75), (.75, 1)`` of the ``w / 2 + 1`` bins
(bin ``int(f * (w / 2 + 1))``), runs one conv stack per band, concatenates along frequency and scores::

    per band  2 -> 32, kernel (3, 9), padding (1, 4)                  (weight norm, LeakyReLU 0.1 after each)
              3 x 32 -> 32, kernel (3, 9), stride (1, 2), padding (1, 4)
              32 -> 32, kernel (3, 3), padding (1, 1)
    post      cat over bands (frequency) -> 32 -> 1, kernel (3, 3), padding (1, 1)

Feature maps: every band activation, band by band, then the logits (5 x 5 + 1 = 26).

STFT, from the two references: DAC (audiotools ``AudioSignal.stft`` with ``STFTParams(w, w / 4,
match_stride=True)``) uses ``match_stride`` framing (``ceil(L / hop)`` frames, see
:mod:`tokenwave.losses.spectral`) and the signal's default window, Hann in audiotools' code (its docstrings say
sqrt-Hann; ``window="sqrt_hann"`` is available). WavTokenizer's copy replaced it with plain ``torch.stft(x,
n_fft=w)``: rectangular window, ``center=True`` framing (``1 + L // hop`` frames) -- ``window="rectangular",
match_stride=False``. Defaults follow DAC.

:class:`DACDiscriminator` is DAC's ``Discriminator()``: five MPDs (DAC flavour: always padded, six feature maps,
no conditioning) then three of these, on audio normalised per item as ``y <- y - mean(y)``,
``y <- 0.8 y / (max|y| + 1e-9)``. References: DAC ``dac/model/discriminator.py`` (``MRD``, ``Discriminator``),
WavTokenizer ``decoder/discriminator_dac.py`` (spec_wavtokenizer.md section 6.2 item 3), vocos 0.1.0
``DiscriminatorR`` (the same band stack with a conditional projection).
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
from .period import PERIODS, PeriodDiscriminator

BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
WINDOW_LENGTHS = (2048, 1024, 512)


def normalize_audio(x: torch.Tensor) -> torch.Tensor:
    """DAC's discriminator input, per item: remove the mean, then peak-normalise to 0.8."""
    x = x - x.mean(dim=-1, keepdim=True)
    return 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)


class BandSTFTDiscriminator(nn.Module):
    """One window length of the multi-band complex STFT discriminator (module docstring)."""

    def __init__(self, window_length: int, *, hop_factor: float = 0.25,
                 bands: Sequence[tuple[float, float]] = BANDS, channels: int = 32, window: WindowKind = "hann",
                 match_stride: bool = True, num_embeddings: int | None = None):
        super().__init__()
        self.window_length, self.hop_length = window_length, int(window_length * hop_factor)
        self.match_stride = match_stride
        self.register_buffer("window", make_window(window, window_length), persistent=False)
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        c = channels

        def stack() -> nn.ModuleList:
            return nn.ModuleList([
                wn_conv2d(2, c, (3, 9), 1, (1, 4)),
                wn_conv2d(c, c, (3, 9), (1, 2), (1, 4)),
                wn_conv2d(c, c, (3, 9), (1, 2), (1, 4)),
                wn_conv2d(c, c, (3, 9), (1, 2), (1, 4)),
                wn_conv2d(c, c, (3, 3), 1, (1, 1)),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.emb = conditional_table(num_embeddings, c)
        self.conv_post = wn_conv2d(c, 1, (3, 3), 1, (1, 1))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``[B, 2, frames, w // 2 + 1]`` (real and imaginary parts)."""
        spec = stft(x, n_fft=self.window_length, hop_length=self.hop_length, window=self.window,
                    match_stride=self.match_stride)
        return torch.view_as_real(spec).permute(0, 3, 2, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> DiscriminatorOutput:
        rows = condition_rows(self.emb, condition)
        spec = self.spectrogram(as_waveform(x))
        fmaps, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            h = spec[..., lo:hi]
            for conv in convs:
                h = leaky_relu(conv(h))
                fmaps.append(h)
            outs.append(h)
        h = torch.cat(outs, dim=-1)
        logits = self.conv_post(h) + projection(rows, h)
        fmaps.append(logits)
        return DiscriminatorOutput(logits, fmaps)


class MultiBandSTFTDiscriminator(nn.Module):
    """One :class:`BandSTFTDiscriminator` per window length; ``normalize`` applies :func:`normalize_audio`
    first (as DAC's ``Discriminator`` and vocos 0.1.0's ``DiscriminatorR`` do)."""

    def __init__(self, window_lengths: Sequence[int] = WINDOW_LENGTHS, *, num_embeddings: int | None = None,
                 normalize: bool = True, **kwargs):
        super().__init__()
        self.discriminators = nn.ModuleList(
            BandSTFTDiscriminator(w, num_embeddings=num_embeddings, **kwargs) for w in window_lengths
        )
        self.normalize = normalize
        self.conditional = num_embeddings is not None

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> list[DiscriminatorOutput]:
        x = as_waveform(x)
        if self.normalize:
            x = normalize_audio(x)
        return [d(x, condition) for d in self.discriminators]


class DACDiscriminator(nn.Module):
    """DAC's ``Discriminator(rates=[], periods, fft_sizes)``: MPDs then band STFT discriminators in one
    ``discriminators`` list (key layout of ``dac.*`` in WavTokenizer checkpoints, see ``from_reference_key``).
    ``window`` and ``match_stride`` go to the STFT discriminators (module docstring)."""

    conditional = False

    def __init__(self, periods: Sequence[int] = PERIODS, window_lengths: Sequence[int] = WINDOW_LENGTHS, *,
                 bands: Sequence[tuple[float, float]] = BANDS, window: WindowKind = "hann",
                 match_stride: bool = True):
        super().__init__()
        mpds = [PeriodDiscriminator(p, always_pad=True, skip_first_feature_map=False) for p in periods]
        mrds = [BandSTFTDiscriminator(w, bands=bands, window=window, match_stride=match_stride)
                for w in window_lengths]
        self.discriminators = nn.ModuleList([*mpds, *mrds])

    def forward(self, x: torch.Tensor, condition: None = None) -> list[DiscriminatorOutput]:
        if condition is not None:
            raise ValueError("the DAC discriminator is unconditional")
        x = normalize_audio(as_waveform(x))
        return [d(x) for d in self.discriminators]
