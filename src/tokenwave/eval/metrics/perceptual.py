"""Perceptual and speech metrics between a reference and an estimate: PESQ-WB, STOI, voiced/unvoiced F1.

Each wraps a library from the ``eval`` extra (``pip install tokenwave[eval]``): ``pesq``, ``pystoi``,
``pyworld``. They are imported inside the functions, so importing this module needs only numpy and soxr.
Inputs follow :mod:`tokenwave.eval.metrics.signal` (float numpy arrays or torch tensors, 1-D; NaN/inf
refused; lengths within 1 % cropped to the shorter, else ``ValueError``). Undefined results are ``nan``
with a :class:`~tokenwave.eval.metrics.signal.MetricUndefinedWarning` that gives the reason.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import warnings

import numpy as np

from .signal import SILENCE_RMS, _pair, _sample_rate, _undefined

__all__ = ["VUV_F0_CEIL", "VUV_F0_FLOOR", "VUV_FRAME_PERIOD_MS", "VUV_SAMPLE_RATE", "pesq_wb", "stoi", "vuv_f1"]

PESQ_SAMPLE_RATE = 16000
#: V/UV analysis: signals are resampled to 16 kHz and tracked every 10 ms between 50 and 550 Hz, the
#: grid and range of the torchcrepe setup used by Vocos / WavTokenizer (``metrics/periodicity.py``).
VUV_SAMPLE_RATE = 16000
VUV_FRAME_PERIOD_MS = 10.0
VUV_F0_FLOOR = 50.0
VUV_F0_CEIL = 550.0


def _missing(package: str) -> str:
    return (f"this metric needs the '{package}' package, which is part of the optional evaluation "
            f"dependencies: pip install 'tokenwave[eval]'")


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """soxr at ``quality="HQ"`` (as tokenwave's audio loader); the same rate passes through untouched."""
    if sr_in == sr_out:
        return x
    import soxr

    return np.ascontiguousarray(soxr.resample(x, sr_in, sr_out, quality="HQ"), dtype=np.float64)


def _is_silent(x: np.ndarray) -> bool:
    return float(np.dot(x, x)) <= x.size * SILENCE_RMS**2


# ---------------------------------------------------------------------------------------------------------
# PESQ
# ---------------------------------------------------------------------------------------------------------
def pesq_wb(ref, est, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2), MOS-LQO between about 1.04 and 4.64, higher is better.

    Computed by the ``pesq`` package (ludlows/PESQ, the ITU reference C code) as
    ``pesq.pesq(16000, ref16, est16, "wb")``, where ``ref16`` / ``est16`` are the inputs resampled to
    16 kHz with soxr ``quality="HQ"`` when ``sample_rate`` is not 16000 (inputs at 8 kHz are upsampled, which
    PESQ-WB then scores as band-limited). The package scales both signals by the larger of their two peak
    values before scoring; PESQ itself level-aligns and time-aligns them, so a gain on ``est`` or a small
    delay barely matters. Identical signals score 4.6439 (the P.862.2 mapping of the maximum raw score 4.5).
    This is what WavTokenizer, Vocos and most codec papers report as "PESQ" / "WB-PESQ" (they resample to
    16 kHz with torchaudio's sinc resampler instead of soxr, which can move the last digits).

    Returns ``nan`` with a :class:`MetricUndefinedWarning` (instead of raising) when PESQ cannot score the
    pair: a silent reference (RMS <= 1e-10) or one in which PESQ finds no utterance
    (``pesq.NoUtterancesError``); a silent estimate (the C code fails on it); and a signal shorter than
    0.25 s at 16 kHz (``pesq.BufferTooShortError``). A runner should record these as missing, not as 0.
    """
    try:
        from pesq import NoUtterancesError, PesqError
        from pesq import pesq as _pesq
    except ImportError as exc:
        raise ImportError(_missing("pesq")) from exc
    sr = _sample_rate(sample_rate)
    r, e = _pair(ref, est)
    if _is_silent(r):
        return _undefined("pesq_wb: the reference is silent (RMS <= 1e-10), PESQ is undefined")
    if _is_silent(e):
        return _undefined("pesq_wb: the estimate is silent (RMS <= 1e-10); PESQ cannot score it")
    r16, e16 = _resample(r, sr, PESQ_SAMPLE_RATE), _resample(e, sr, PESQ_SAMPLE_RATE)
    try:
        return float(_pesq(PESQ_SAMPLE_RATE, r16, e16, "wb"))
    except NoUtterancesError:
        return _undefined("pesq_wb: PESQ detected no utterance in the reference (pesq.NoUtterancesError)")
    except PesqError as exc:  # BufferTooShortError: under 0.25 s; the others cannot happen at 16 kHz wb
        msg = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return _undefined(f"pesq_wb: the pesq package refused the input: {type(exc).__name__}: {msg}")
    except ValueError as exc:  # the C code yields NaN for a (near-)silent estimate and int() of it fails
        return _undefined(f"pesq_wb: the pesq package failed on this input ({exc}); is the estimate silent?")


# ---------------------------------------------------------------------------------------------------------
# STOI
# ---------------------------------------------------------------------------------------------------------
def stoi(ref, est, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (Taal et al., IEEE TASLP 2011), or extended STOI (Jensen & Taal,
    IEEE TASLP 2016) when ``extended=True``; in [0, 1] (ESTOI can go slightly below 0), higher is better.

    Computed by ``pystoi.stoi(ref, est, sample_rate, extended)`` (pystoi, a port of the authors' MATLAB
    code checked against it). pystoi itself resamples both signals to 10 kHz when ``sample_rate`` is not
    10000 (``scipy.signal.resample_poly`` with an Octave-compatible anti-aliasing window), removes the frames
    of the reference more than 40 dB below its loudest frame (and the same frames of the estimate), and
    correlates 15 one-third-octave band envelopes over 384 ms segments. No resampling is done here.

    Returns ``nan`` with a :class:`MetricUndefinedWarning` for a silent reference (RMS <= 1e-10; pystoi
    would return 0) and when fewer than 30 frames (about 0.4 s of non-silent reference) remain after
    silence removal (pystoi warns and returns 1e-5).
    """
    try:
        from pystoi import stoi as _stoi
    except ImportError as exc:
        raise ImportError(_missing("pystoi")) from exc
    sr = _sample_rate(sample_rate)
    r, e = _pair(ref, est)
    if _is_silent(r):
        return _undefined("stoi: the reference is silent (RMS <= 1e-10), STOI is undefined")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(r, e, sr, extended=bool(extended)))
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            return _undefined("stoi: fewer than 30 frames (~0.4 s) of non-silent reference; STOI is undefined")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value


# ---------------------------------------------------------------------------------------------------------
# Voiced / unvoiced F1
# ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _pyworld():
    """The pyworld module (its functions ``dio``, ``harvest``, ``stonemask`` ...).

    pyworld <= 0.3.5 reads its own version through ``pkg_resources`` in ``__init__``, which setuptools >= 81
    no longer ships; the compiled extension ``pyworld.pyworld`` needs nothing from it, so in that case it
    is loaded directly.
    """
    try:
        import pyworld

        return pyworld
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise ImportError(_missing("pyworld")) from exc
    spec = importlib.util.find_spec("pyworld")
    for folder in spec.submodule_search_locations or ():
        for name in sorted(os.listdir(folder)):
            if name.startswith("pyworld.") and name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                ext = importlib.util.spec_from_file_location("pyworld.pyworld", os.path.join(folder, name))
                module = importlib.util.module_from_spec(ext)
                ext.loader.exec_module(module)
                return module
    raise ImportError(_missing("pyworld") + " (found pyworld but not its compiled module)")


def _voiced(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-frame voicing (f0 > 0) from WORLD's DIO at 16 kHz, 10 ms frames, 50-550 Hz."""
    pw = _pyworld()
    x16 = np.ascontiguousarray(_resample(x, sample_rate, VUV_SAMPLE_RATE), dtype=np.float64)
    f0, _ = pw.dio(x16, VUV_SAMPLE_RATE, f0_floor=VUV_F0_FLOOR, f0_ceil=VUV_F0_CEIL,
                   frame_period=VUV_FRAME_PERIOD_MS)
    return f0 > 0


def vuv_f1(ref, est, sample_rate: int) -> float:
    """Voiced/unvoiced F1: agreement of per-frame voicing decisions, reference voicing as the truth.

    Definition: both signals are resampled to 16 kHz (soxr HQ) and run through the same pitch tracker on
    the same frame grid; a frame is voiced when the tracker gives it an F0 > 0. With the reference's voiced
    frames as the positive class, ``TP`` = voiced in both, ``FP`` = voiced only in ``est``, ``FN`` = voiced
    only in ``ref``::

        F1 = 2 TP / (2 TP + FP + FN)

    (= ``2 P R / (P + R)`` with precision ``P = TP / (TP + FP)`` and recall ``R = TP / (TP + FN)``). It is 1
    when the decisions agree on every frame, 0 when no frame is voiced in both but some is voiced in either,
    and ``nan`` (with a :class:`MetricUndefinedWarning`) when neither signal has a voiced frame.

    Tracker: WORLD's DIO (Morise et al., 2009) through pyworld, ``pyworld.dio(x, 16000, f0_floor=50,
    f0_ceil=550, frame_period=10)`` with its other defaults (``channels_in_octave=2``, ``speed=1``,
    ``allowed_range=0.1``); frames every 10 ms from t = 0, ``1 + floor(1000 * len / 16000 / 10)`` of them
    (StoneMask refinement would change F0 values, not voicing, so it is not run). DIO's voicing decision
    is its own (the F0 candidate's reliability), with no separate energy gate.

    Provenance: WavTokenizer (Ji et al., 2024) and Vocos (Siuzdak, 2023) report "V/UV F1" computed by
    ``metrics/periodicity.py`` (adapted from CARGAN, Morrison et al. 2022): torchcrepe "full" at 16 kHz,
    10 ms hop, 50-550 Hz, frames with periodicity < 0.21 or mean A-weighted level < -60 dB unvoiced, and this
    same F1 (their code gives ``nan`` also when ``TP = 0``). That script needs torchaudio (which this project
    does not install) and a 22 M-parameter network, so this uses a classical tracker on the same grid and F0
    range instead: the numbers compare codecs measured here with one another, not with those papers'
    columns. (WORLD's Harvest was rejected: it bridges short unvoiced gaps; on the shipped example recording
    it marks 95 % of the frames voiced, DIO 74 %.)
    """
    sr = _sample_rate(sample_rate)
    r, e = _pair(ref, est)
    vr, ve = _voiced(r, sr), _voiced(e, sr)
    tp = int(np.sum(vr & ve))
    fp = int(np.sum(~vr & ve))
    fn = int(np.sum(vr & ~ve))
    if tp + fp + fn == 0:
        return _undefined("vuv_f1: neither signal has a voiced frame, V/UV F1 is undefined")
    return 2.0 * tp / (2.0 * tp + fp + fn)

