"""Mel filterbanks, mel spectrograms and the mel reconstruction losses (single- and multi-scale).

Filterbank (triangles on a mel-spaced grid, as torchaudio ``melscale_fbanks`` and librosa ``filters.mel``)::

    f_k    = k * sr / n_fft,  k = 0 .. n_fft / 2                 FFT bin centres (Hz)
    p_i    = mel_to_hz(linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))_i
    W[k,m] = max(0, min((f_k - p_m) / (p_{m+1} - p_m), (p_{m+2} - f_k) / (p_{m+2} - p_{m+1})))
    norm="slaney":  W[:, m] *= 2 / (p_{m+2} - p_m)              unit area in Hz

    htk:     mel = 2595 log10(1 + f / 700)
    slaney:  mel = 3 f / 200 below 1 kHz, 15 + 27 ln(f / 1000) / ln 6.4 above (Auditory Toolbox)

computed in the order and precision of torchaudio 2.x ``functional.melscale_fbanks`` (``f_min``/``f_max``
mapped to mels in double precision, the rest in ``dtype``), returned ``[n_fft // 2 + 1, n_mels]`` like
torchaudio's ``MelScale.fb`` (not checked bit for bit: torchaudio is not installed here). librosa computes the
same formula in float64; ``dtype=torch.float64`` agrees with it to 1e-13 of the peak, float32 to 1e-5
(measured 7e-6 for 100 HTK mels at 24 kHz / 1024; tests/test_losses.py).

The two mel losses of the reference training code are one class, :class:`MultiScaleMelLoss`:

* WavTokenizer ``L_mel`` (``vocos.loss.MelSpecReconstructionLoss``; spec_wavtokenizer.md section 6.3): one
  scale, torchaudio ``MelSpectrogram(24 kHz, n_fft 1024, hop 256, 100 mels, center=True, power=1)`` with its
  defaults (periodic Hann, reflect padding, HTK scale, no norm), ``L1(ln(clamp(M, 1e-7)))``. Built by
  :func:`wavtokenizer_mel_loss`.
* DAC ``MelSpectrogramLoss`` (``dac/nn/loss.py`` with ``conf/base.yml``): windows 32 .. 2048, hop w/4, mels
  5 .. 320, Hann, Slaney scale and norm (librosa defaults), ``L1(log10(clamp(M, 1e-5) ** pow))`` with
  ``pow=1``, ``mag_weight=0``, summed over scales. Built by :func:`dac_mel_loss`; the class defaults. With
  audiotools' own defaults (windows (2048, 512), mels (150, 80), ``pow=2``, ``mag_weight=1``) the class
  reproduces descript-audiotools 0.7.2 ``MelSpectrogramLoss()`` goldens to 4e-7 relative (tests/test_losses.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .spectral import WindowKind, make_window, stft

MelScale = Literal["htk", "slaney"]

_SLANEY_F_SP = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: float, mel_scale: MelScale = "htk") -> float:
    """One frequency (Hz) to mels, in double precision (torchaudio ``_hz_to_mel``)."""
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    if f >= _SLANEY_MIN_LOG_HZ:
        return _SLANEY_MIN_LOG_MEL + math.log(f / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return f / _SLANEY_F_SP


def mel_to_hz(mels: torch.Tensor, mel_scale: MelScale = "htk") -> torch.Tensor:
    """Mels to Hz, elementwise in the dtype of ``mels`` (torchaudio ``_mel_to_hz``)."""
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    linear = _SLANEY_F_SP * mels
    log = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL))
    return torch.where(mels >= _SLANEY_MIN_LOG_MEL, log, linear)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                   mel_scale: MelScale = "htk", norm: Literal["slaney"] | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triangular mel filterbank ``[n_fft // 2 + 1, n_mels]`` (module docstring). ``f_max`` defaults to
    ``sample_rate // 2`` as in torchaudio (librosa: ``sample_rate / 2``; equal for even rates)."""
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    f_max = float(sample_rate // 2) if f_max is None else float(f_max)
    n_freqs = n_fft // 2 + 1
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=dtype)
    m_pts = torch.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2, dtype=dtype)
    f_pts = mel_to_hz(m_pts, mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.min(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


def mel_spectrogram(x: torch.Tensor, *, filterbank: torch.Tensor, window: torch.Tensor, n_fft: int,
                    hop_length: int, power: float = 1.0) -> torch.Tensor:
    """``x [..., L]`` -> mel spectrogram ``[..., n_mels, 1 + L // hop]``: ``fb^T |STFT(x)|^power`` with
    ``center=True`` reflect padding (torchaudio ``MelSpectrogram``, audiotools ``mel_spectrogram``)."""
    mag = stft(x, n_fft=n_fft, hop_length=hop_length, window=window).abs()
    if power != 1.0:
        mag = mag.pow(power)
    return torch.matmul(mag.transpose(-1, -2), filterbank.to(mag.dtype)).transpose(-1, -2)


def log_mel_distance(mel_hat: torch.Tensor, mel: torch.Tensor, *, clamp_min: float, log: Literal["ln", "log10"],
                     pow: float = 1.0, log_weight: float = 1.0, mag_weight: float = 0.0) -> torch.Tensor:
    """``log_weight * mean|log(clamp(M, c)^pow) - log(clamp(M_hat, c)^pow)| + mag_weight * mean|M - M_hat|``
    (mean over every element, so a batch gives the mean of its items' values)."""
    fn = torch.log if log == "ln" else torch.log10
    loss = log_weight * F.l1_loss(fn(mel_hat.clamp(min=clamp_min).pow(pow)), fn(mel.clamp(min=clamp_min).pow(pow)))
    if mag_weight:
        loss = loss + mag_weight * F.l1_loss(mel_hat, mel)
    return loss


class MelSpectrogram(nn.Module):
    """Caches the window and filterbank of one mel scale (non-persistent buffers); see :func:`mel_spectrogram`."""

    def __init__(self, *, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, win_length: int | None = None,
                 f_min: float = 0.0, f_max: float | None = None, mel_scale: MelScale = "htk",
                 norm: Literal["slaney"] | None = None, window: WindowKind = "hann", power: float = 1.0):
        super().__init__()
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
        self.register_buffer("window", make_window(window, win_length or n_fft), persistent=False)
        fb = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max,
                            mel_scale=mel_scale, norm=norm)
        self.register_buffer("filterbank", fb, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mel_spectrogram(x, filterbank=self.filterbank, window=self.window, n_fft=self.n_fft,
                               hop_length=self.hop_length, power=self.power)


class MultiScaleMelLoss(nn.Module):
    """Sum over scales of :func:`log_mel_distance` between mel spectrograms of ``y_hat`` and ``y``.

    Defaults are DAC's training loss (module docstring); :func:`wavtokenizer_mel_loss` gives WavTokenizer's
    single-scale ``L_mel``. ``hop_lengths`` defaults to ``w // 4``. Inputs ``[B, L]`` or ``[B, 1, L]``.
    """

    def __init__(self, *, sample_rate: int = 24000, window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
                 n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320), hop_lengths: Sequence[int] | None = None,
                 mel_scale: MelScale = "slaney", norm: Literal["slaney"] | None = "slaney",
                 window: WindowKind = "hann", f_min: float = 0.0, f_max: float | None = None,
                 clamp_min: float = 1e-5, log: Literal["ln", "log10"] = "log10", pow: float = 1.0,
                 log_weight: float = 1.0, mag_weight: float = 0.0):
        super().__init__()
        hops = [w // 4 for w in window_lengths] if hop_lengths is None else list(hop_lengths)
        if not len(window_lengths) == len(n_mels) == len(hops):
            raise ValueError("window_lengths, n_mels and hop_lengths must have the same length")
        self.scales = nn.ModuleList(
            MelSpectrogram(sample_rate=sample_rate, n_fft=w, hop_length=h, n_mels=m, f_min=f_min, f_max=f_max,
                           mel_scale=mel_scale, norm=norm, window=window)
            for w, m, h in zip(window_lengths, n_mels, hops)
        )
        self.clamp_min, self.log, self.pow = clamp_min, log, pow
        self.log_weight, self.mag_weight = log_weight, mag_weight

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y_hat.shape != y.shape:
            raise ValueError(f"y_hat and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
        total = y_hat.new_zeros(())
        for scale in self.scales:
            total = total + log_mel_distance(scale(y_hat), scale(y), clamp_min=self.clamp_min, log=self.log,
                                             pow=self.pow, log_weight=self.log_weight, mag_weight=self.mag_weight)
        return total


def wavtokenizer_mel_loss(sample_rate: int = 24000) -> MultiScaleMelLoss:
    """WavTokenizer/Vocos ``L_mel`` (spec_wavtokenizer.md section 6.3): n_fft 1024, hop 256, 100 HTK mels without
    norm, power 1, ``mean|ln(clamp(M(y), 1e-7)) - ln(clamp(M(y_hat), 1e-7))|``. Weighted by 45 in the reference."""
    return MultiScaleMelLoss(sample_rate=sample_rate, window_lengths=(1024,), n_mels=(100,), hop_lengths=(256,),
                             mel_scale="htk", norm=None, clamp_min=1e-7, log="ln")


def dac_mel_loss(sample_rate: int = 24000) -> MultiScaleMelLoss:
    """DAC's training mel loss (``conf/base.yml``: 7 scales, ``pow=1``, ``mag_weight=0``); weighted by 15 there."""
    return MultiScaleMelLoss(sample_rate=sample_rate)
