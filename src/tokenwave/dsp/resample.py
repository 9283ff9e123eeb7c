"""Band-limited (windowed-sinc) polyphase resampling, bit-compatible with torchaudio.

Both Higgs Audio v2 reference implementations resample 24 kHz audio to 16 kHz for the semantic
teacher with ``torchaudio.functional.resample`` at its defaults (``sinc_interp_hann``,
``lowpass_filter_width=6``, ``rolloff=0.99``). torchaudio has no CPU wheel that we can depend on,
so this module reproduces that algorithm, including the order of the floating point operations
that build the filter taps, so that the resampled signal (and therefore every semantic code) is
the one the references compute.

Algorithm (rates reduced by their gcd to ``P`` in, ``Q`` out)::

    cutoff  fc = min(P, Q) * rolloff
    width   W  = ceil(lowpass_filter_width * P / fc)          # half-width in input samples
    phase j of Q, tap k in [-W, W + P):
        t = clamp((-j / Q + k / P) * fc, -lpw, lpw)
        h = sinc(pi t) * (cos(pi t / lpw / 2) ** 2 * fc / P)

    input  |<- W zeros ->| x[0] ... x[L-1] |<- W + P zeros ->|
    conv1d with the Q filters at stride P, interleave the phases, keep ceil(Q * L / P) samples.

The taps are computed in the dtype of the waveform, as torchaudio does.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["resample", "resampled_length"]


def _reduce(orig_freq: int, new_freq: int) -> tuple[int, int]:
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq or orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} -> {new_freq}")
    g = math.gcd(int(orig_freq), int(new_freq))
    return int(orig_freq) // g, int(new_freq) // g


def resampled_length(length: int, orig_freq: int, new_freq: int) -> int:
    """Number of samples :func:`resample` returns for ``length`` input samples."""
    p, q = _reduce(orig_freq, new_freq)
    return int(math.ceil(q * length / p))


@lru_cache(maxsize=32)
def _kernel(
    p: int, q: int, lowpass_filter_width: int, rolloff: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, int]:
    base_freq = min(p, q) * rolloff
    width = math.ceil(lowpass_filter_width * p / base_freq)
    idx = torch.arange(-width, width + p, dtype=dtype, device=device)[None, None] / p
    t = torch.arange(0, -q, -1, dtype=dtype, device=device)[:, None, None] / q + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base_freq / p
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    return kernels, width


def resample(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """Resample ``waveform [..., L]`` from ``orig_freq`` to ``new_freq`` Hz.

    Args:
        waveform: floating point audio, any leading shape, time last.
        orig_freq: input sample rate in Hz.
        new_freq: output sample rate in Hz.
        lowpass_filter_width: zero crossings of the sinc on each side (torchaudio default 6).
        rolloff: cutoff as a fraction of the lower Nyquist rate (torchaudio default 0.99).

    Returns:
        ``[..., ceil(L * new_freq / orig_freq)]`` in the input dtype.
    """
    if not waveform.is_floating_point():
        raise TypeError(f"resample expects a floating point waveform, got {waveform.dtype}")
    p, q = _reduce(orig_freq, new_freq)
    if p == q:
        return waveform
    kernel, width = _kernel(p, q, lowpass_filter_width, float(rolloff), waveform.dtype, waveform.device)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + p))
    out = F.conv1d(padded[:, None], kernel, stride=p)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[..., : int(math.ceil(q * length / p))]
    return out.reshape(*shape[:-1], out.shape[-1])
