"""The semantic branch's resampler equals torchaudio's default windowed sinc (spec 2.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokenwave.dsp.resample import resample, resampled_length


def direct_sinc_resample(x: np.ndarray, orig: int, new: int, lpw: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Float64 evaluation of the band-limited interpolation formula, one output sample at a time:
    ``y[n] = sum_i x[i] h((i - n P/Q) / P)``, ``h(u) = sinc(pi t) cos^2(pi t / (2 lpw)) fc / P``, ``t = clip(u fc)``."""
    g = math.gcd(orig, new)
    p, q = orig // g, new // g
    fc = min(p, q) * rolloff
    n_out = math.ceil(q * len(x) / p)
    i = np.arange(len(x))[None, :]
    n = np.arange(n_out)[:, None]
    t = np.clip((i - n * p / q) / p * fc, -lpw, lpw)
    h = np.sinc(t) * np.cos(np.pi * t / lpw / 2) ** 2 * fc / p
    return h @ x.astype(np.float64)


@pytest.mark.parametrize("length", [1, 119, 2000, 4801])
def test_24k_to_16k_matches_formula(length):
    x = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    got = resample(torch.from_numpy(x), 24000, 16000).numpy()
    want = direct_sinc_resample(x, 24000, 16000)
    assert got.shape == want.shape == (resampled_length(length, 24000, 16000),)
    assert np.abs(got - want).max() < 1e-6


@pytest.mark.parametrize("orig,new", [(16000, 24000), (44100, 24000), (48000, 24000)])
def test_other_ratios_match_formula(orig, new):
    # Like torchaudio, the taps are computed in float32; with long polyphase filters (44.1k: P=147) that
    # rounding reaches a few 1e-6 of full scale, so the bound here is 1e-5.
    x = np.random.default_rng(0).uniform(-1, 1, 3000).astype(np.float32)
    got = resample(torch.from_numpy(x), orig, new).numpy()
    assert np.abs(got - direct_sinc_resample(x, orig, new)).max() < 1e-5


def test_matches_the_test_stand_in():
    """tests/stubs/torchaudio (written from torchaudio's docs, used by the reference oracles) agrees."""
    import importlib.util

    from conftest import TESTS

    spec = importlib.util.spec_from_file_location("stub_functional", TESTS / "stubs" / "torchaudio" / "functional.py")
    stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub)
    x = 0.3 * torch.randn(2, 1, 10007, generator=torch.Generator().manual_seed(0))
    assert (resample(x, 24000, 16000) - stub.resample(x, 24000, 16000)).abs().max() < 1e-6


def test_batch_shape_and_identity():
    x = torch.randn(3, 1, 999)
    assert resample(x, 24000, 16000).shape == (3, 1, 666)
    assert resample(x, 24000, 24000) is x
    with pytest.raises(TypeError):
        resample(torch.ones(10, dtype=torch.int16), 24000, 16000)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)
