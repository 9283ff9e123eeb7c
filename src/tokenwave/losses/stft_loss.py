"""Multi-resolution STFT loss (Parallel WaveGAN; Yamamoto et al. 2020, eqs. 4-6).

Per resolution ``r`` (FFT size, hop, window length), with ``S = sqrt(max(re^2 + im^2, 1e-7))`` the magnitude
of a ``center=True`` reflect-padded STFT with a periodic Hann window of ``win_length`` samples::

    L_sc(r)  = ||S(y) - S(y_hat)||_F / ||S(y)||_F          spectral convergence (norms over the whole batch)
    L_mag(r) = mean |ln S(y) - ln S(y_hat)|                 log-magnitude L1

    L = mean_r L_sc(r) + mean_r L_mag(r)  [+ waveform_weight * mean |y - y_hat|]

as ``parallel_wavegan/losses/stft_loss.py`` (``MultiResolutionSTFTLoss``), whose defaults (resolutions
(1024, 120, 600), (2048, 240, 1200), (512, 50, 240)) are ours. Spectral convergence is a ratio of norms over
the whole batch, so unlike the other losses it is not the mean of per-item values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .spectral import WindowKind, make_window, stft

PWG_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def stft_magnitude(x: torch.Tensor, *, n_fft: int, hop_length: int, window: torch.Tensor,
                   eps: float = 1e-7) -> torch.Tensor:
    """``sqrt(max(|STFT(x)|^2, eps))`` ``[..., n_fft // 2 + 1, frames]`` (the clamp keeps the gradient finite)."""
    spec = torch.view_as_real(stft(x, n_fft=n_fft, hop_length=hop_length, window=window))
    return spec.pow(2).sum(-1).clamp(min=eps).sqrt()


def spectral_convergence_loss(mag_hat: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """``||mag - mag_hat||_F / ||mag||_F`` over the whole tensor."""
    return torch.linalg.vector_norm(mag - mag_hat) / torch.linalg.vector_norm(mag)


def log_magnitude_loss(mag_hat: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """``mean |ln mag - ln mag_hat|``."""
    return F.l1_loss(mag_hat.log(), mag.log())


class STFTLoss(NamedTuple):
    total: torch.Tensor  # spectral_convergence + log_magnitude + waveform_weight * waveform
    spectral_convergence: torch.Tensor  # mean over resolutions
    log_magnitude: torch.Tensor  # mean over resolutions
    waveform: torch.Tensor  # mean |y - y_hat| (reported even when its weight is 0)


class MultiResolutionSTFTLoss(nn.Module):
    """Parallel WaveGAN's multi-resolution STFT loss (module docstring); caches one window per resolution.

    Args:
        resolutions: ``(n_fft, hop_length, win_length)`` triples.
        waveform_weight: weight of the optional waveform L1 term in ``total``.
    """

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] = PWG_RESOLUTIONS, *,
                 window: WindowKind = "hann", waveform_weight: float = 0.0):
        super().__init__()
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", make_window(window, win), persistent=False)
        self.waveform_weight = waveform_weight

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> STFTLoss:
        """``y_hat``, ``y``: ``[B, L]`` or ``[B, 1, L]``."""
        if y_hat.shape != y.shape:
            raise ValueError(f"y_hat and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
        sc, mag = [], []
        for i, (n_fft, hop, _) in enumerate(self.resolutions):
            window = self.get_buffer(f"window{i}")
            s_hat = stft_magnitude(y_hat, n_fft=n_fft, hop_length=hop, window=window)
            s = stft_magnitude(y, n_fft=n_fft, hop_length=hop, window=window)
            sc.append(spectral_convergence_loss(s_hat, s))
            mag.append(log_magnitude_loss(s_hat, s))
        sc_mean, mag_mean = torch.stack(sc).mean(), torch.stack(mag).mean()
        wave = F.l1_loss(y_hat, y)
        return STFTLoss(sc_mean + mag_mean + self.waveform_weight * wave, sc_mean, mag_mean, wave)
