"""Golden numbers from descript-audiotools for ``tokenwave.eval.metrics.signal`` (test oracle only).

audiotools is never a dependency of tokenwave: this script runs in a private virtual environment and writes
``tests/fixtures/audiotools_goldens.json``, which ``tests/test_eval_metrics_signal.py`` compares against.
The test imports this file too, for :func:`build_case` (the input signals), so the top level imports only
numpy and soundfile; torch and audiotools are imported in :func:`main`.

Setup used for the committed goldens (Python 3.11; audiotools 0.7.2 is the latest release)::

    python3 -m venv /tmp/audiotools-venv
    /tmp/audiotools-venv/bin/pip install torch==2.13.0            # the CPU wheel
    /tmp/audiotools-venv/bin/pip install --no-deps descript-audiotools==0.7.2
    /tmp/audiotools-venv/bin/pip install numpy==2.4.6 scipy==1.17.1 librosa==0.11.0 julius soundfile \\
        flatten-dict ffmpy importlib-resources pyloudnorm rich tqdm randomname argbind markdown2
    /tmp/audiotools-venv/bin/python tools/goldens/audiotools/make_goldens.py

``--no-deps`` because audiotools requires torchaudio, tensorboard and an old protobuf, none of which the
metrics use: torchaudio is replaced by the project's stand-in in ``tests/stubs`` (audiotools imports it
at module level only; ``MultiScaleSTFTLoss``, ``MelSpectrogramLoss`` and ``SISDRLoss`` never call it), and
``torch.utils.tensorboard`` (imported by ``audiotools.ml``) by an empty module. The metric code that runs is
audiotools' own, unmodified.

Recorded per case: ``MultiScaleSTFTLoss()(est, ref)``, ``MelSpectrogramLoss()(est, ref)`` and
``-SISDRLoss()(ref, est)`` (how DAC's ``scripts/evaluate.py`` reports SI-SDR), all with default arguments,
on float32 signals, plus checksums of the inputs so the test can tell it rebuilt the same signals.
"""

from __future__ import annotations

import json
import platform
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[3]
SPEECH = REPO / "src" / "tokenwave" / "assets" / "example_speech_en.wav"
OUTPUT = REPO / "tests" / "fixtures" / "audiotools_goldens.json"


def _speech() -> np.ndarray:
    x, sr = sf.read(str(SPEECH), dtype="float64")
    assert sr == 24000, sr
    return x


def _noise(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def _at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.mean(signal**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return signal + gain * noise


def build_case(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(ref, est, sample_rate)`` for one named case; float32 arrays (the dtype audiotools computes in)."""
    if name == "speech_noise_20db":
        sr = 24000
        ref = _speech()
        est = _at_snr(ref, _noise(1, ref.size), 20.0)
    elif name == "speech_clipped":
        sr = 24000
        ref = _speech()
        est = np.clip(ref, -0.1, 0.1)
    elif name == "speech_smoothed_gain":
        sr = 24000
        ref = _speech()
        est = 0.7 * np.convolve(ref, np.ones(5) / 5, mode="same")
    elif name == "speech_second_half_silent":
        sr = 24000
        ref = _speech()
        est = ref.copy()
        est[ref.size // 2:] = 0.0
    elif name == "tones_44k_gap_delay":
        sr = 44100
        t = np.arange(sr) / sr
        ref = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3300 * t + 0.5)
        ref[15000:25000] = 0.0
        est = _at_snr(np.concatenate([np.zeros(3), ref[:-3]]), _noise(2, sr), 30.0)
    elif name == "noise_16k_short":
        sr = 16000
        ref = 0.2 * _noise(3, 3200)
        est = 0.5 * ref + 0.1 * _noise(4, 3200)
    else:
        raise KeyError(name)
    return ref.astype(np.float32), est.astype(np.float32), sr


CASES = ("speech_noise_20db", "speech_clipped", "speech_smoothed_gain", "speech_second_half_silent",
         "tones_44k_gap_delay", "noise_16k_short")


def checksum(x: np.ndarray) -> list[float]:
    """``[len, sum, sum of squares]`` in float64: enough to tell the same input from a different one."""
    x = np.asarray(x, dtype=np.float64)
    return [float(x.size), float(x.sum()), float(np.dot(x, x))]


def main() -> None:
    if "torchaudio" not in sys.modules:
        try:
            import torchaudio  # noqa: F401
        except ImportError:
            sys.path.insert(0, str(REPO / "tests" / "stubs"))
    stub = types.ModuleType("torch.utils.tensorboard")
    stub.SummaryWriter = object
    sys.modules.setdefault("torch.utils.tensorboard", stub)

    import audiotools
    import librosa
    import torch
    from audiotools import AudioSignal
    from audiotools.metrics.distance import SISDRLoss
    from audiotools.metrics.spectral import MelSpectrogramLoss, MultiScaleSTFTLoss

    torch.set_num_threads(1)
    stft_loss, mel_loss, sisdr_loss = MultiScaleSTFTLoss(), MelSpectrogramLoss(), SISDRLoss()
    cases = []
    for name in CASES:
        ref, est, sr = build_case(name)
        def signal(a, sr=sr):  # a fresh AudioSignal per loss: they cache STFTs on the signal
            return AudioSignal(torch.from_numpy(a.copy()), sr)

        with torch.no_grad():
            stft = float(stft_loss(signal(est), signal(ref)))
            mel = float(mel_loss(signal(est), signal(ref)))
            sisdr = -float(sisdr_loss(signal(ref), signal(est)))
        cases.append(dict(name=name, sample_rate=sr, ref_checksum=checksum(ref), est_checksum=checksum(est),
                          stft_distance=stft, mel_distance=mel, si_sdr=sisdr))
        print(f"{name:28s} stft {stft:.6f}  mel {mel:.6f}  si-sdr {sisdr:.4f} dB")
    out = dict(
        generator="tools/goldens/audiotools/make_goldens.py",
        oracle=dict(audiotools=getattr(audiotools, "__version__", "0.7.2"), torch=torch.__version__,
                    numpy=np.__version__, librosa=librosa.__version__, python=platform.python_version()),
        losses=dict(stft_distance="audiotools.metrics.spectral.MultiScaleSTFTLoss()(est, ref)",
                    mel_distance="audiotools.metrics.spectral.MelSpectrogramLoss()(est, ref)",
                    si_sdr="-audiotools.metrics.distance.SISDRLoss()(ref, est)"),
        cases=cases,
    )
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", OUTPUT)


if __name__ == "__main__":
    main()
