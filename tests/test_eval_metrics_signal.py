"""tokenwave.eval.metrics.signal / .perceptual: known answers, edge cases, and parity with descript-audiotools.

The audiotools goldens (tests/fixtures/audiotools_goldens.json) come from tools/goldens/audiotools/make_goldens.py,
run in a private venv with descript-audiotools 0.7.2; this test rebuilds the same input signals with that
script's ``build_case`` (numpy + soundfile only) and checks their checksums before comparing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenwave.eval.metrics import perceptual
from tokenwave.eval.metrics.perceptual import pesq_wb, stoi, vuv_f1
from tokenwave.eval.metrics.signal import (
    MetricUndefinedWarning,
    _stft_magnitude,
    mel_distance,
    mel_filterbank,
    si_sdr,
    stft_distance,
)

ROOT = Path(__file__).resolve().parents[1]
SPEECH_PATH = ROOT / "src" / "tokenwave" / "assets" / "example_speech_en.wav"
GOLDENS = ROOT / "tests" / "fixtures" / "audiotools_goldens.json"
MAKE_GOLDENS = ROOT / "tools" / "goldens" / "audiotools" / "make_goldens.py"


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(SPEECH_PATH), dtype="float64")
    assert sr == 24000 and x.ndim == 1
    return x, sr


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def at_snr(signal: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``signal`` plus white noise scaled so that 10 log10(P_signal / P_noise) is exactly ``snr_db``."""
    n = noise(signal.size, seed)
    return signal + n * np.sqrt(np.mean(signal**2) / (np.mean(n**2) * 10 ** (snr_db / 10)))


def sine(freq: float, sr: int, seconds: float, amp: float = 1.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


def need(module: str):
    """Skip unless the optional package imports (pyworld through the metric's own loader)."""
    try:
        if module == "pyworld":
            perceptual._pyworld()
        else:
            __import__(module)
    except ImportError:
        pytest.skip(f"{module} (tokenwave[eval]) is not installed")


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------
class TestInputs:
    def test_core_import_does_not_load_optional_dependencies(self):
        code = ("import sys, tokenwave.eval.metrics.signal, tokenwave.eval.metrics.perceptual; "
                "print([m for m in ('pesq', 'pystoi', 'pyworld', 'scipy', 'librosa', 'torch') if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"

    def test_torch_tensors_and_dtypes_give_the_same_value(self):
        x = sine(440, 16000, 0.5, 0.5)
        y = at_snr(x, 10)
        expected = stft_distance(x, y, 16000)
        assert stft_distance(torch.from_numpy(x), torch.from_numpy(y), 16000) == expected
        assert stft_distance(x[None, :], y[:, None], 16000) == expected  # [1, L] / [L, 1] flattened
        x32, y32 = x.astype(np.float32), y.astype(np.float32)
        assert stft_distance(torch.from_numpy(x32), y32, 16000) == stft_distance(x32, y32, 16000)
        assert math.isfinite(si_sdr(torch.from_numpy(x32).bfloat16(), y32))
        assert si_sdr(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(si_sdr(x, y), abs=0)

    def test_inputs_are_not_modified(self):
        x = sine(440, 16000, 0.5, 0.5) + 0.1
        y = at_snr(x, 10)
        x0, y0 = x.copy(), y.copy()
        si_sdr(x, y), stft_distance(x, y, 16000), mel_distance(x, y, 16000)
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_nan_and_inf_are_refused(self, bad):
        x = sine(440, 16000, 0.5)
        y = x.copy()
        y[100] = bad
        for fn in (lambda a, b: stft_distance(a, b, 16000), si_sdr, lambda a, b: mel_distance(a, b, 16000)):
            with pytest.raises(ValueError, match="NaN or infinite.*index 100"):
                fn(x, y)
            with pytest.raises(ValueError, match="NaN or infinite"):
                fn(y, x)

    def test_integer_complex_empty_and_multichannel_inputs_are_refused(self):
        x = sine(440, 16000, 0.5)
        with pytest.raises(TypeError, match="int16"):
            si_sdr((x * 1000).astype(np.int16), x)
        with pytest.raises(TypeError, match="complex"):
            si_sdr(x.astype(np.complex128), x)
        with pytest.raises(TypeError):
            si_sdr(torch.ones(100, dtype=torch.int32), x[:100])
        with pytest.raises(ValueError, match="empty"):
            si_sdr(np.zeros(0), np.zeros(0))
        with pytest.raises(ValueError, match="1-D"):
            si_sdr(np.stack([x, x]), np.stack([x, x]))
        with pytest.raises(ValueError, match="sample_rate"):
            stft_distance(x, x, 0)
        with pytest.raises(ValueError, match="sample_rate"):
            stft_distance(x, x, 16000.5)
        assert stft_distance(x, x, 16000.0) == 0.0

    def test_small_length_mismatch_crops_to_the_shorter(self):
        x = sine(440, 16000, 1.0, 0.5)  # 16000 samples: up to 160 may differ
        y = at_snr(x, 10)
        longer = np.concatenate([y, np.ones(160)])
        assert stft_distance(x, longer, 16000) == stft_distance(x, y, 16000)
        assert si_sdr(longer, x) == si_sdr(y, x)
        assert si_sdr(x[:-7], y) == si_sdr(x[:-7], y[:-7])

    def test_large_length_mismatch_is_refused_naming_both_lengths(self):
        x = sine(440, 16000, 1.0)
        si_sdr(x, np.concatenate([x, np.zeros(161)]))  # 161 <= 1 % of 16161: cropped
        with pytest.raises(ValueError, match="ref has 16000 samples, est has 16200"):
            si_sdr(x, np.concatenate([x, np.zeros(200)]))
        with pytest.raises(ValueError, match="ref has 15000 samples, est has 16000"):
            stft_distance(x[:15000], x, 16000)


# ---------------------------------------------------------------------------------------------------------
# STFT and mel distances
# ---------------------------------------------------------------------------------------------------------
class TestSpectralDistances:
    def test_identical_signals_are_at_distance_zero(self, speech):
        x, sr = speech
        assert stft_distance(x, x, sr) == 0.0
        assert mel_distance(x, x, sr) == 0.0

    def test_symmetric_and_positive(self, speech):
        x, sr = speech
        y = at_snr(x, 20)
        assert stft_distance(x, y, sr) == pytest.approx(stft_distance(y, x, sr), rel=1e-12)
        assert mel_distance(x, y, sr) == pytest.approx(mel_distance(y, x, sr), rel=1e-12)
        assert stft_distance(x, y, sr) > 0 and mel_distance(x, y, sr) > 0

    def test_harder_clipping_is_further_away(self):
        sr = 24000
        x = sine(220, sr, 1.0, 0.9)
        mild, hard = np.clip(x, -0.8, 0.8), np.clip(x, -0.45, 0.45)  # hard: clipped at 0.5 of the peak
        assert 0 < stft_distance(x, mild, sr) < stft_distance(x, hard, sr)
        assert 0 < mel_distance(x, mild, sr) < mel_distance(x, hard, sr)

    def test_more_noise_is_further_away(self, speech):
        x, sr = speech
        d = [stft_distance(x, at_snr(x, snr), sr) for snr in (30, 20, 10, 0)]
        m = [mel_distance(x, at_snr(x, snr), sr) for snr in (30, 20, 10, 0)]
        assert d == sorted(d) and m == sorted(m)

    def test_definition_at_one_scale_by_hand(self):
        """One scale, written out with numpy's own rfft over explicitly reflect-padded frames."""
        sr, w = 16000, 512
        x = noise(4000, 1) * 0.1
        y = x + noise(4000, 2) * 0.01

        def mag(s):
            p = np.pad(s, w // 2, mode="reflect")
            win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(w) / w)
            frames = [p[i:i + w] * win for i in range(0, len(p) - w + 1, w // 4)]
            return np.abs(np.fft.rfft(frames, axis=-1))

        a, b = mag(x), mag(y)
        assert a.shape == (1 + 4000 // (w // 4), w // 2 + 1)
        expected = (np.mean(np.abs(np.log10(np.maximum(a, 1e-5) ** 2) - np.log10(np.maximum(b, 1e-5) ** 2)))
                    + np.mean(np.abs(a - b)))
        assert stft_distance(x, y, sr, window_lengths=(w,)) == pytest.approx(expected, rel=1e-12)
        fb = mel_filterbank(sr, w, 40)
        ma, mb = a @ fb.T, b @ fb.T
        expected_mel = (np.mean(np.abs(np.log10(np.maximum(ma, 1e-5) ** 2) - np.log10(np.maximum(mb, 1e-5) ** 2)))
                        + np.mean(np.abs(ma - mb)))
        got = mel_distance(x, y, sr, n_mels=(40,), window_lengths=(w,), mel_fmin=(0.0,), mel_fmax=(None,))
        assert got == pytest.approx(expected_mel, rel=1e-12)

    def test_matches_torch_stft(self):
        x = noise(5000, 3)
        for w in (2048, 512):
            ours = _stft_magnitude(x, w, w // 4)
            ref = torch.stft(torch.from_numpy(x), n_fft=w, hop_length=w // 4,
                             window=torch.hann_window(w, dtype=torch.float64), center=True, pad_mode="reflect",
                             return_complex=True).abs().numpy()
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)

    @pytest.mark.parametrize("sr,n_fft,n_mels", [(24000, 2048, 150), (24000, 512, 80), (44100, 512, 80),
                                                 (16000, 2048, 150), (22050, 1024, 64)])
    @pytest.mark.filterwarnings("ignore:Empty filters detected")
    def test_mel_filterbank_equals_librosa(self, sr, n_fft, n_mels):
        librosa = pytest.importorskip("librosa")
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float64)
        np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels), expected, rtol=1e-12, atol=1e-15)
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=50.0, fmax=7000.0, dtype=np.float64)
        np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, 50.0, 7000.0), expected, rtol=1e-12,
                                   atol=1e-15)

    def test_too_short_for_the_largest_window(self):
        x = noise(1024)
        with pytest.raises(ValueError, match="too short for a 2048-sample STFT"):
            stft_distance(x, x, 16000)
        assert stft_distance(noise(1025), noise(1025), 16000) == 0.0


# ---------------------------------------------------------------------------------------------------------
# Parity with descript-audiotools (goldens)
# ---------------------------------------------------------------------------------------------------------
def _goldens():
    data = json.loads(GOLDENS.read_text())
    spec = importlib.util.spec_from_file_location("audiotools_make_goldens", MAKE_GOLDENS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return data, module


GOLDEN_DATA, GOLDEN_MAKER = _goldens()


@pytest.mark.parametrize("case", GOLDEN_DATA["cases"], ids=[c["name"] for c in GOLDEN_DATA["cases"]])
def test_parity_with_audiotools(case):
    ref, est, sr = GOLDEN_MAKER.build_case(case["name"])
    assert sr == case["sample_rate"]
    np.testing.assert_allclose(GOLDEN_MAKER.checksum(ref), case["ref_checksum"], rtol=1e-9)
    np.testing.assert_allclose(GOLDEN_MAKER.checksum(est), case["est_checksum"], rtol=1e-9)
    assert stft_distance(ref, est, sr) == pytest.approx(case["stft_distance"], rel=1e-5)
    assert mel_distance(ref, est, sr) == pytest.approx(case["mel_distance"], rel=1e-5)
    assert si_sdr(ref, est) == pytest.approx(case["si_sdr"], abs=1e-4)


def test_goldens_cover_the_cases():
    assert [c["name"] for c in GOLDEN_DATA["cases"]] == list(GOLDEN_MAKER.CASES)
    assert GOLDEN_DATA["oracle"]["audiotools"] == "0.7.2"


# ---------------------------------------------------------------------------------------------------------
# SI-SDR
# ---------------------------------------------------------------------------------------------------------
class TestSiSdr:
    def test_identical_is_infinite(self, speech):
        x, _ = speech
        assert si_sdr(x, x) == math.inf

    @pytest.mark.parametrize("snr", [20.0, 0.0])
    def test_white_noise_at_known_snr(self, snr):
        x = noise(200_000, 7) * 0.1  # long: the sample cross-correlation of signal and noise is ~0
        assert si_sdr(x, at_snr(x, snr, seed=8)) == pytest.approx(snr, abs=0.5)

    def test_speech_with_noise_at_known_snr(self, speech):
        x, _ = speech
        assert si_sdr(x, at_snr(x, 20.0)) == pytest.approx(20.0, abs=0.5)
        assert si_sdr(x, at_snr(x, 0.0)) == pytest.approx(0.0, abs=0.5)

    def test_scale_and_offset_invariant(self, speech):
        x, _ = speech
        y = at_snr(x, 10.0)
        base = si_sdr(x, y)
        for gain in (2.0, 0.01, -0.5):
            assert si_sdr(x, gain * y) == pytest.approx(base, abs=1e-9)
        assert si_sdr(x + 0.3, y - 0.2) == pytest.approx(base, abs=1e-9)  # zero-mean first
        assert si_sdr(3 * x, y) == pytest.approx(base, abs=1e-9)  # scaling the reference too

    def test_silence(self, speech):
        x, _ = speech
        with pytest.warns(MetricUndefinedWarning, match="reference is silent"):
            assert math.isnan(si_sdr(np.zeros_like(x), x))
        with pytest.warns(MetricUndefinedWarning, match="reference is silent"):
            assert math.isnan(si_sdr(np.full_like(x, 0.25), x))  # constant = silent once zero-mean
        assert si_sdr(x, np.zeros_like(x)) == -math.inf


# ---------------------------------------------------------------------------------------------------------
# PESQ, STOI
# ---------------------------------------------------------------------------------------------------------
class TestPesq:
    def test_identical_scores_the_maximum(self, speech):
        need("pesq")
        x, sr = speech
        assert pesq_wb(x, x, sr) == pytest.approx(4.6439, abs=1e-3)
        x16 = perceptual._resample(x, sr, 16000)
        assert pesq_wb(x16, x16, 16000) == pytest.approx(4.6439, abs=1e-3)

    def test_decreases_with_noise(self, speech):
        need("pesq")
        x, sr = speech
        scores = [pesq_wb(x, at_snr(x, snr), sr) for snr in (40, 25, 10, 0)]
        assert all(a > b for a, b in zip(scores, scores[1:])), scores
        assert 1.0 < scores[-1] < 1.5

    def test_undefined_cases_return_nan_with_the_reason(self, speech):
        need("pesq")
        x, sr = speech
        with pytest.warns(MetricUndefinedWarning, match="reference is silent"):
            assert math.isnan(pesq_wb(np.zeros_like(x), x, sr))
        with pytest.warns(MetricUndefinedWarning, match="estimate is silent"):
            assert math.isnan(pesq_wb(x, np.zeros_like(x), sr))
        with pytest.warns(MetricUndefinedWarning, match="BufferTooShortError"):
            assert math.isnan(pesq_wb(x[:4000], x[:4000], sr))  # 1/6 s


class TestStoi:
    def test_identical_is_one(self, speech):
        need("pystoi")
        x, sr = speech
        assert stoi(x, x, sr) == pytest.approx(1.0, abs=1e-6)
        assert stoi(x, x, sr, extended=True) == pytest.approx(1.0, abs=1e-6)

    @pytest.mark.parametrize("extended", [False, True])
    def test_decreases_with_noise(self, speech, extended):
        need("pystoi")
        x, sr = speech
        scores = [stoi(x, at_snr(x, snr), sr, extended=extended) for snr in (30, 10, 0, -10)]
        assert all(a > b for a, b in zip(scores, scores[1:])), scores

    def test_undefined_cases_return_nan_with_the_reason(self, speech):
        need("pystoi")
        x, sr = speech
        with pytest.warns(MetricUndefinedWarning, match="reference is silent"):
            assert math.isnan(stoi(np.zeros_like(x), x, sr))
        with pytest.warns(MetricUndefinedWarning, match="fewer than 30 frames"):
            assert math.isnan(stoi(x[:6000], x[:6000], sr))  # 0.25 s


# ---------------------------------------------------------------------------------------------------------
# V/UV F1
# ---------------------------------------------------------------------------------------------------------
class TestVuvF1:
    def test_speech_with_itself_is_one(self, speech):
        need("pyworld")
        x, sr = speech
        assert vuv_f1(x, x, sr) == 1.0
        assert vuv_f1(x, 0.3 * x, sr) == 1.0  # voicing does not depend on level

    def test_speech_against_white_noise_is_low(self, speech):
        need("pyworld")
        x, sr = speech
        assert vuv_f1(x, 0.1 * noise(x.size), sr) < 0.2

    def test_degrades_with_noise(self, speech):
        need("pyworld")
        x, sr = speech
        assert vuv_f1(x, at_snr(x, 20), sr) > 0.9
        assert vuv_f1(x, at_snr(x, 20), sr) > vuv_f1(x, at_snr(x, -10), sr)

    def test_frame_grid_at_16k(self, speech):
        need("pyworld")
        x, sr = speech
        x16 = perceptual._resample(x, sr, 16000)
        assert vuv_f1(x16, x16, 16000) == 1.0
        frames = perceptual._voiced(x16, 16000)
        assert frames.shape == (1 + int(1000 * x16.size / 16000 / 10),)
        assert 0.5 < frames.mean() < 0.9  # running speech with pauses and unvoiced consonants

    def test_silence(self, speech):
        need("pyworld")
        x, sr = speech
        with pytest.warns(MetricUndefinedWarning, match="neither signal has a voiced frame"):
            assert math.isnan(vuv_f1(np.zeros_like(x), np.zeros_like(x), sr))
        assert vuv_f1(x, np.zeros_like(x), sr) == 0.0
        assert vuv_f1(np.zeros_like(x), x, sr) == 0.0
