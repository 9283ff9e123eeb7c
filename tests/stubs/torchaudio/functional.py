"""Own implementation of a band-limited (windowed-sinc) polyphase resampler.
Test-only stand-in (not shipped with tokenwave), used by the reference oracles under tools/goldens/ and by the tests.

It reproduces the algorithm documented for torchaudio.functional.resample with
its defaults (resampling_method="sinc_interp_hann", lowpass_filter_width=6,
rolloff=0.99):

  * reduce orig/new rates by their gcd -> (P, Q) = (orig/g, new/g)
  * cutoff  fc = min(P, Q) * rolloff        (in units of the reduced rates)
  * half-width (in input samples) W = ceil(lowpass_filter_width * P / fc)
  * Q polyphase FIR filters of length 2W + P, phase j (output j of each block
    of Q outputs) uses taps at input offsets k = -W .. W+P-1:
        t = (k/P - j/Q) * fc, clamped to [-lpw, lpw]
        h = sinc(pi t) * cos^2(pi t / (2 lpw)) * fc / P
  * input is zero padded with W samples on the left and W+P on the right,
    each filter is applied with stride P (one output block per P inputs),
    blocks are interleaved, and the result is cut to ceil(Q * L / P).

Filter taps are computed in the dtype of the waveform (float32 in practice).
"""
import math

import torch
import torch.nn.functional as F


def _polyphase_bank(p, q, lpw, rolloff, dtype, device):
    fc = min(p, q) * rolloff
    half = math.ceil(lpw * p / fc)
    k = torch.arange(-half, half + p, dtype=dtype, device=device).view(1, 1, -1) / p
    phase = torch.arange(0, -q, -1, dtype=dtype, device=device).view(-1, 1, 1) / q
    t = (phase + k) * fc
    t = t.clamp(-lpw, lpw)
    window = torch.cos(t * math.pi / lpw / 2) ** 2
    x = t * math.pi
    sinc = torch.where(x == 0, torch.ones((), dtype=dtype, device=device), torch.sin(x) / x)
    bank = sinc * window * (fc / p)
    return bank, half


def resample(waveform, orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99,
             resampling_method="sinc_interp_hann", beta=None):
    if resampling_method != "sinc_interp_hann":
        raise NotImplementedError("stub only implements sinc_interp_hann")
    if orig_freq == new_freq:
        return waveform
    g = math.gcd(int(orig_freq), int(new_freq))
    p, q = int(orig_freq) // g, int(new_freq) // g
    bank, half = _polyphase_bank(p, q, lowpass_filter_width, rolloff, waveform.dtype, waveform.device)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    n = flat.shape[-1]
    padded = F.pad(flat, (half, half + p))
    out = F.conv1d(padded[:, None], bank, stride=p)          # (B, Q, blocks)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)       # interleave phases
    target = int(math.ceil(q * n / p))
    out = out[..., :target]
    return out.reshape(*shape[:-1], out.shape[-1])
