"""Signal-level distances between a reference and an estimate: multi-scale STFT distance, mel distance, SI-SDR.

Every metric takes ``(ref, est, sample_rate)`` and returns a Python float. Only numpy is needed.

Inputs (shared with :mod:`tokenwave.eval.metrics.perceptual`)
--------------------------------------------------------------
* ``ref`` and ``est``: 1-D floating-point numpy arrays or torch tensors (any device, any float dtype; a
  tensor is detached and moved to the CPU). Shapes like ``[1, L]`` or ``[L, 1]`` are flattened; more than one
  channel is refused. Both are converted to float64 and never modified in place.
* Integer (PCM), boolean or complex samples raise ``TypeError``: scale PCM to [-1, 1] yourself.
* Empty signals and NaN or infinite samples raise ``ValueError``.
* Lengths: a codec may return a few samples more or fewer than it was given. If the lengths differ by at
  most :data:`MAX_LENGTH_MISMATCH` (1 %) of the longer signal, both are cropped to the shorter length (the
  end of the longer one is dropped; no alignment is searched); a larger difference raises ``ValueError``
  naming both lengths. Crop or align yourself before calling if 1 % is not what you want.
* ``sample_rate`` is a positive integer (Hz).

Where a metric is mathematically undefined for the input (a silent reference, for example) it returns
``nan`` and emits a :class:`MetricUndefinedWarning` saying why, so a runner can record the reason.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_LENGTH_MISMATCH", "MetricUndefinedWarning", "mel_distance", "mel_filterbank", "si_sdr",
           "stft_distance"]

#: Largest length difference (as a fraction of the longer signal) that is cropped away rather than refused.
MAX_LENGTH_MISMATCH = 0.01

#: A zero-mean reference whose RMS is at or below this (-200 dBFS) counts as silent in :func:`si_sdr`.
SILENCE_RMS = 1e-10


class MetricUndefinedWarning(RuntimeWarning):
    """A metric returned ``nan`` because it is undefined for this input; the message says why."""


# ---------------------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------------------
def _as_signal(x, name: str) -> np.ndarray:
    """One signal -> a fresh float64 1-D numpy array, or a clear error."""
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_complex() or not x.is_floating_point():
            raise TypeError(f"{name}: expected floating-point samples, got a torch tensor of {x.dtype}")
        x = x.double().numpy()  # via float64: numpy has no bfloat16
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected floating-point samples (float16/32/64), got dtype {arr.dtype}; "
                        "scale integer PCM to [-1, 1] first")
    if arr.ndim != 1:
        if arr.ndim == 0 or sum(d != 1 for d in arr.shape) > 1:
            raise ValueError(f"{name}: expected a 1-D signal, got shape {tuple(arr.shape)}")
        arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name}: empty signal")
    arr = arr.astype(np.float64, copy=True)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} NaN or infinite sample(s), the first at index "
                         f"{int(np.argmax(bad))}")
    return arr


def _pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 1-D arrays of one length (see the module docstring for the length rule)."""
    r = _as_signal(ref, "ref")
    e = _as_signal(est, "est")
    if r.size != e.size:
        longer = max(r.size, e.size)
        if abs(r.size - e.size) > MAX_LENGTH_MISMATCH * longer:
            raise ValueError(f"ref and est lengths differ by more than {MAX_LENGTH_MISMATCH:.0%}: "
                             f"ref has {r.size} samples, est has {e.size}")
        n = min(r.size, e.size)
        r, e = r[:n], e[:n]
    return r, e


def _sample_rate(sample_rate) -> int:
    """A positive whole number of Hz (an integral float such as 16000.0 is accepted) -> int."""
    if isinstance(sample_rate, numbers.Integral) and not isinstance(sample_rate, bool) and sample_rate > 0:
        return int(sample_rate)
    if isinstance(sample_rate, float) and sample_rate.is_integer() and sample_rate > 0:
        return int(sample_rate)
    raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")


def _undefined(reason: str) -> float:
    warnings.warn(reason, MetricUndefinedWarning, stacklevel=3)
    return math.nan


# ---------------------------------------------------------------------------------------------------------
# STFT and mel distances (descript-audiotools MultiScaleSTFTLoss / MelSpectrogramLoss)
# ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window, as ``scipy.signal.get_window("hann", n)`` (= ``torch.hann_window(n)``)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.flags.writeable = False
    return w


def _stft_magnitude(x: np.ndarray, window_length: int, hop_length: int) -> np.ndarray:
    """``|torch.stft(x, n_fft=window_length, hop_length, window=hann, center=True, pad_mode="reflect")|``.

    Shape ``[window_length // 2 + 1, 1 + len(x) // hop_length]``, float64.
    """
    pad = window_length // 2
    if x.size <= pad:
        raise ValueError(f"signal of {x.size} samples is too short for a {window_length}-sample STFT window "
                         f"(reflect padding needs more than {pad} samples)")
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad, mode="reflect"), window_length)[::hop_length]
    return np.abs(np.fft.rfft(frames * _hann(window_length), axis=-1)).T


def _log_lin_l1(a: np.ndarray, b: np.ndarray, clamp_eps: float, pow: float, log_weight: float,
                mag_weight: float) -> float:
    """``log_weight * mean|log10(clamp(a)^pow) - log10(clamp(b)^pow)| + mag_weight * mean|a - b|``."""
    log_a = np.log10(np.maximum(a, clamp_eps) ** pow)
    log_b = np.log10(np.maximum(b, clamp_eps) ** pow)
    return log_weight * float(np.mean(np.abs(log_a - log_b))) + mag_weight * float(np.mean(np.abs(a - b)))


def stft_distance(ref, est, sample_rate: int, *, window_lengths: Sequence[int] = (2048, 512),
                  clamp_eps: float = 1e-5, mag_weight: float = 1.0, log_weight: float = 1.0,
                  pow: float = 2.0) -> float:
    """Multi-scale STFT distance: ``MultiScaleSTFTLoss()`` of descript-audiotools with its default arguments.

    Definition, with ``|X_w|`` the STFT magnitude at window length ``w`` (below) and ``mean`` over every
    (frequency bin, frame) entry (``torch.nn.L1Loss()``, reduction "mean")::

        sum over w in window_lengths of
            log_weight * mean | log10(max(|X_w(ref)|, clamp_eps) ** pow) - log10(max(|X_w(est)|, clamp_eps) ** pow) |
          + mag_weight * mean | |X_w(ref)| - |X_w(est)| |

    Defaults (those of audiotools 0.7.2 ``audiotools.metrics.spectral.MultiScaleSTFTLoss``, which DAC copies
    in ``dac/nn/loss.py``): ``window_lengths=(2048, 512)``, ``clamp_eps=1e-5``, ``mag_weight=1``,
    ``log_weight=1``, ``pow=2``, ``match_stride=False``. The STFT is ``AudioSignal.stft`` with those
    parameters: hop ``w // 4``, ``n_fft = w``, periodic Hann window (``window_type=None`` falls back to the
    signal's default STFT params, whose window is ``"hann"``; the ``sqrt_hann`` in their docstring is not
    what the code does), no extra padding (``match_stride=False``), then ``torch.stft(center=True)`` whose
    default ``pad_mode="reflect"`` pads ``w // 2`` samples on each side; not normalised, one-sided, so
    ``w // 2 + 1`` bins by ``1 + len // (w // 4)`` frames. The signal needs more than ``max(w) // 2``
    samples (1024 by default) or ``ValueError`` is raised, as torch would.

    Provenance: the Higgs Audio v2 tokenizer card reports an "STFT distance" without defining it; Higgs'
    acoustic codec is a DAC, and DAC's own evaluation script (``scripts/evaluate.py``) reports
    ``MultiScaleSTFTLoss()`` with these defaults (at 22.05 and 44.1 kHz; here the caller picks the rate), so
    this is most likely what the card computed. The log term goes back to DDSP (Engel et al., ICLR 2020).

    Differences from audiotools: computed with numpy in float64 (audiotools casts to float32), so values
    agree to about 1e-5 relative, not bit for bit; symmetric in ``ref`` and ``est``. ``sample_rate`` does
    not enter the computation (the windows are in samples); it is accepted for a uniform signature.
    Scale-dependent: the magnitude term is in the signal's units (samples in [-1, 1]).
    """
    _sample_rate(sample_rate)
    r, e = _pair(ref, est)
    total = 0.0
    for w in window_lengths:
        w = int(w)
        total += _log_lin_l1(_stft_magnitude(r, w, w // 4), _stft_magnitude(e, w, w // 4), clamp_eps, pow,
                             log_weight, mag_weight)
    return float(total)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's Auditory Toolbox mel scale (librosa ``hz_to_mel(htk=False)``): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel` (librosa ``mel_to_hz(htk=False)``)."""
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Mel filterbank ``[n_mels, n_fft // 2 + 1]`` equal to ``librosa.filters.mel`` with its defaults.

    That is ``htk=False`` (Slaney mel scale) and ``norm="slaney"`` (each triangle scaled by
    ``2 / (f[i + 2] - f[i])``, so it has unit area in Hz), ``fmax=None`` meaning ``sample_rate / 2``; the
    algorithm of librosa 0.11 ``filters.mel`` written in float64 (librosa returns float32 by default).
    audiotools' ``AudioSignal.get_mel_filters`` calls exactly ``librosa.filters.mel(sr=, n_fft=, n_mels=,
    fmin=, fmax=)``. Cached; the returned array is read-only.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(float(fmin)), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights.flags.writeable = False
    return weights


def mel_distance(ref, est, sample_rate: int, *, n_mels: Sequence[int] = (150, 80),
                 window_lengths: Sequence[int] = (2048, 512), clamp_eps: float = 1e-5, mag_weight: float = 1.0,
                 log_weight: float = 1.0, pow: float = 2.0, mel_fmin: Sequence[float] = (0.0, 0.0),
                 mel_fmax: Sequence[float | None] = (None, None)) -> float:
    """Multi-scale mel distance: ``MelSpectrogramLoss()`` of descript-audiotools with its default arguments.

    Definition, with ``M_i = F_i @ |X_{w_i}|`` the mel spectrogram at scale ``i`` (``|X_w|`` the STFT
    magnitude exactly as in :func:`stft_distance`: periodic Hann, hop ``w // 4``, ``center=True`` reflect
    padding; ``F_i = mel_filterbank(sample_rate, w_i, n_mels[i], mel_fmin[i], mel_fmax[i])``, i.e.
    ``librosa.filters.mel`` with Slaney scale and Slaney area normalisation, applied to the magnitude, not
    the power) and ``mean`` over every (mel band, frame) entry::

        sum over scales i of
            log_weight * mean | log10(max(M_i(ref), clamp_eps) ** pow) - log10(max(M_i(est), clamp_eps) ** pow) |
          + mag_weight * mean | M_i(ref) - M_i(est) |

    Defaults (audiotools 0.7.2 ``audiotools.metrics.spectral.MelSpectrogramLoss``, copied by DAC's
    ``dac/nn/loss.py``): ``n_mels=(150, 80)``, ``window_lengths=(2048, 512)``, ``clamp_eps=1e-5``,
    ``mag_weight=1``, ``log_weight=1``, ``pow=2``, ``mel_fmin=(0, 0)``, ``mel_fmax=(None, None)`` (Nyquist),
    ``match_stride=False``, window ``"hann"``.

    Provenance: the Higgs Audio v2 tokenizer card reports a "mel distance" without defining it; DAC's
    evaluation script (``scripts/evaluate.py``) reports ``MelSpectrogramLoss()`` with these defaults, so this
    is most likely it. (DAC *trains* with a different mel loss: seven scales, ``mag_weight=0``, ``pow=1``;
    that is not this metric.)

    Differences from audiotools: numpy float64 throughout, including the filterbank (audiotools uses
    librosa's float32 one and float32 audio), so values agree to about 1e-5 relative. ``sample_rate`` sets
    the filterbank's frequency axis. Needs more than ``max(window_lengths) // 2`` samples.
    """
    sr = _sample_rate(sample_rate)
    r, e = _pair(ref, est)
    if not len(n_mels) == len(window_lengths) == len(mel_fmin) == len(mel_fmax):
        raise ValueError("n_mels, window_lengths, mel_fmin and mel_fmax must have the same length")
    total = 0.0
    for nm, w, fmin, fmax in zip(n_mels, window_lengths, mel_fmin, mel_fmax):
        w = int(w)
        fb = mel_filterbank(sr, w, int(nm), float(fmin), None if fmax is None else float(fmax))
        total += _log_lin_l1(fb @ _stft_magnitude(r, w, w // 4), fb @ _stft_magnitude(e, w, w // 4), clamp_eps,
                             pow, log_weight, mag_weight)
    return float(total)


# ---------------------------------------------------------------------------------------------------------
# SI-SDR
# ---------------------------------------------------------------------------------------------------------
def si_sdr(ref, est, sample_rate: int | None = None) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux, Wisdom, Erdogan, Hershey, "SDR - half-baked
    or well done?", ICASSP 2019, eq. 5-6).

    Both signals are first made zero-mean (``x - mean(x)``), as in the paper's reference code and in
    audiotools' ``SISDRLoss(zero_mean=True)`` used by DAC's evaluation. Then::

        alpha  = <est, ref> / <ref, ref>
        target = alpha * ref
        SI-SDR = 10 * log10( ||target||^2 / ||est - target||^2 )

    Invariant to scaling ``est`` by any positive or negative factor. No epsilon is added; the edge cases
    are defined explicitly:

    * silent reference (zero-mean RMS <= :data:`SILENCE_RMS`, i.e. -200 dBFS, which includes a constant
      signal): undefined, returns ``nan`` with a :class:`MetricUndefinedWarning`;
    * ``est`` exactly a scaled copy of ``ref`` (``||est - target|| == 0``, e.g. identical signals):
      ``+inf``;
    * ``target == 0`` (``est`` silent, or orthogonal to ``ref``) while the reference is not silent:
      ``-inf``.

    audiotools' ``SISDRLoss`` instead adds ``1e-8`` to ``<ref, ref>``, to ``<est, ref>`` and inside the log,
    which moves ordinary values by far less than 0.001 dB but turns the edge cases into large finite
    numbers. ``sample_rate`` is ignored (accepted so every metric can be called the same way).
    """
    if sample_rate is not None:
        _sample_rate(sample_rate)
    r, e = _pair(ref, est)
    r = r - r.mean()
    e = e - e.mean()
    ref_energy = float(np.dot(r, r))
    if ref_energy <= r.size * SILENCE_RMS**2:
        return _undefined("si_sdr: the reference is silent (zero-mean RMS <= 1e-10), SI-SDR is undefined")
    alpha = float(np.dot(e, r)) / ref_energy
    target = alpha * r
    residual = e - target
    target_energy = float(np.dot(target, target))
    noise_energy = float(np.dot(residual, residual))
    if target_energy == 0.0:
        return -math.inf
    if noise_energy == 0.0:
        return math.inf
    return 10.0 * math.log10(target_energy / noise_energy)
