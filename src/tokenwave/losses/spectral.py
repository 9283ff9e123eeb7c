"""STFT helpers shared by the spectral losses and the spectrogram discriminators.

One complex STFT with the two framings the reference training code uses::

    match_stride=False   torch.stft(center=True, pad_mode="reflect")        1 + L // hop frames
                         (torchaudio Spectrogram, vocos/WavTokenizer losses and discriminators)
    match_stride=True    reflect-pad ((w - hop) // 2, (w - hop) // 2 + r),  ceil(L / hop) frames
                         r = ceil(L / hop) * hop - L, then torch.stft(center=True) and drop 2 frames at
                         each end (audiotools ``AudioSignal.stft``, used by DAC's discriminator); needs
                         hop == w // 4, so frame t is centred on sample t * hop + hop / 2

Windows by name: ``"hann"`` (periodic, = ``torch.hann_window`` = ``scipy.signal.get_window("hann")``),
``"sqrt_hann"`` (its square root; audiotools' documented default, whose code default is ``"hann"``) and
``"rectangular"`` (``torch.stft(window=None)``, what WavTokenizer's discriminators use).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

WindowKind = Literal["hann", "sqrt_hann", "rectangular"]
WINDOWS: tuple[str, ...] = ("hann", "sqrt_hann", "rectangular")


def make_window(kind: str, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A window of ``length`` samples by name (see the module docstring)."""
    if kind == "hann":
        return torch.hann_window(length, dtype=dtype)
    if kind == "sqrt_hann":
        return torch.hann_window(length, dtype=dtype).sqrt()
    if kind == "rectangular":
        return torch.ones(length, dtype=dtype)
    raise ValueError(f"window must be one of {WINDOWS}, got {kind!r}")


def stft(x: torch.Tensor, *, n_fft: int, hop_length: int, window: torch.Tensor, match_stride: bool = False,
         pad_mode: str = "reflect") -> torch.Tensor:
    """Complex STFT of ``x [..., L]`` -> ``[..., n_fft // 2 + 1, frames]``.

    ``window`` has ``win_length <= n_fft`` samples (``torch.stft`` centres a shorter one in the frame). The
    framing follows ``match_stride`` (module docstring). Every item is transformed on its own.
    """
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if match_stride:
        if hop_length != n_fft // 4:
            raise ValueError(f"match_stride needs hop_length == n_fft // 4, got {hop_length} and {n_fft}")
        right = math.ceil(x.shape[-1] / hop_length) * hop_length - x.shape[-1]
        pad = (n_fft - hop_length) // 2
        x = F.pad(x.unsqueeze(1), (pad, pad + right), mode=pad_mode).squeeze(1)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop_length, win_length=window.shape[0],
                      window=window.to(device=x.device, dtype=x.dtype), center=True, pad_mode=pad_mode,
                      return_complex=True)
    if match_stride:
        spec = spec[..., 2:-2]
    return spec.reshape(*lead, *spec.shape[-2:])
