"""Inverse STFT with "same" padding (Vocos / WavTokenizer decoder head).

``torch.istft`` only supports ``center=True`` (its NOLA check fails at the edges of an un-padded
signal), so vocoders that predict one STFT frame per feature frame use their own inverse::

    frames  f_t = irfft(S[:, :, t], n_fft) * w                   (w = periodic Hann, length n_fft)
    y       = overlap-add of f_t at t * hop                       (length (T - 1) * hop + n_fft)
    env     = overlap-add of w**2 at t * hop
    out     = y[pad : -pad] / env[pad : -pad],  pad = (n_fft - hop) // 2

With ``n_fft - hop`` even the output has exactly ``T * hop`` samples. The cropped envelope never
vanishes when ``n_fft >= 2 * hop`` (Hann overlap), which is what makes the division safe.

The operations (``irfft`` with ``norm="backward"``, ``fold`` for the overlap-add, the envelope
built the same way) and their order follow vocos 0.1.0 ``vocos.spectral_ops.ISTFT`` so that the
output is bit-identical to it; ``padding="center"`` falls back to ``torch.istft(center=True)``
exactly as vocos does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("same", "center")


def same_pad(n_fft: int, hop_length: int) -> int:
    """Samples removed at each end by "same" padding."""
    return (n_fft - hop_length) // 2


def istft_output_length(frames, n_fft: int, hop_length: int, padding: str = "same"):
    """Samples produced for ``frames`` STFT frames (int or integer tensor)."""
    if padding == "same":
        return (frames - 1) * hop_length + n_fft - 2 * same_pad(n_fft, hop_length)
    if padding == "center":
        return (frames - 1) * hop_length
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def _overlap_add(frames: torch.Tensor, hop_length: int, output_size: int) -> torch.Tensor:
    """``(B, win, T)`` frames -> ``(B, 1, 1, output_size)`` via ``fold``, as vocos does."""
    win = frames.shape[1]
    return F.fold(frames, output_size=(1, output_size), kernel_size=(1, win), stride=(1, hop_length))


def istft_same(spec: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Complex ``(B, n_fft // 2 + 1, T)`` spectrogram -> ``(B, L)`` waveform, "same" padding.

    ``window`` has length ``n_fft`` (win_length == n_fft, as in the Vocos/WavTokenizer heads).
    ``lengths [B]`` (frames per item of a right-padded batch): frames past an item's length are dropped
    and its envelope is its own, so item ``b``'s first ``lengths[b] * hop`` samples equal its inverse
    alone (adding exact zeros changes no sum); the rest are zeros.
    """
    if spec.dim() != 3:
        raise ValueError(f"expected a (B, N, T) complex spectrogram, got shape {tuple(spec.shape)}")
    win_length = window.shape[0]
    pad = same_pad(win_length, hop_length)
    _, _, T = spec.shape

    ifft = torch.fft.irfft(spec, n_fft, dim=1, norm="backward")
    ifft = ifft * window[None, :, None]
    output_size = (T - 1) * hop_length + win_length
    end = output_size - pad
    if lengths is not None:
        frames = torch.arange(T, device=spec.device)[None, :] < lengths.to(spec.device)[:, None]  # (B, T)
        ifft = ifft * frames[:, None, :].to(ifft.dtype)
        y = _overlap_add(ifft, hop_length, output_size)[:, 0, 0, pad:end]
        window_sq = window.square()[None, :, None] * frames[:, None, :].to(window.dtype)
        envelope = _overlap_add(window_sq, hop_length, output_size)[:, 0, 0, pad:end]
        valid = torch.arange(end - pad, device=spec.device)[None, :] < (lengths.to(spec.device) * hop_length)[:, None]
        if not bool((envelope[valid] > 1e-11).all()):
            raise ValueError("window envelope vanishes: n_fft / hop_length do not satisfy NOLA after trimming")
        return torch.where(valid, y / torch.where(valid, envelope, 1.0), 0.0)

    y = _overlap_add(ifft, hop_length, output_size)[:, 0, 0, pad:end]

    window_sq = window.square().expand(1, T, -1).transpose(1, 2)
    envelope = _overlap_add(window_sq, hop_length, output_size)[0, 0, 0, pad:end]
    if not bool((envelope > 1e-11).all()):
        raise ValueError("window envelope vanishes: n_fft / hop_length do not satisfy NOLA after trimming")
    return y / envelope


class ISTFT(nn.Module):
    """Inverse STFT module; buffer ``window`` (periodic Hann, ``win_length``) as in vocos' ``ISTFT``."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int | None = None, padding: str = "same"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        win_length = n_fft if win_length is None else win_length
        if padding == "same" and win_length != n_fft:
            raise ValueError("padding='same' needs win_length == n_fft")
        self.padding = padding
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.register_buffer("window", torch.hann_window(win_length))

    def output_length(self, frames):
        return istft_output_length(frames, self.n_fft, self.hop_length, self.padding)

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Complex ``(B, n_fft // 2 + 1, T)`` -> real ``(B, L)``; ``lengths``: see :func:`istft_same`."""
        if self.padding == "center":
            if lengths is not None:
                raise ValueError("per-item lengths need padding='same'")
            return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window, center=True)
        return istft_same(spec, self.n_fft, self.hop_length, self.window, lengths)

    def extra_repr(self) -> str:
        return (
            f"n_fft={self.n_fft}, hop_length={self.hop_length}, win_length={self.win_length}, padding={self.padding!r}"
        )
