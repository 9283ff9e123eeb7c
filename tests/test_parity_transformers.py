"""Parity with transformers 5.23's HiggsAudioV2TokenizerModel (live oracle, same random weights)."""

from __future__ import annotations

import pytest
import torch

BANDWIDTHS = (0.5, 1, 1.5, 2)


def _wave(seconds: float, seed: int) -> torch.Tensor:
    n = int(round(seconds * 24000))
    return 0.1 * torch.randn(1, 1, n, generator=torch.Generator().manual_seed(seed))


def _check(ref, ours, seconds: float, seed: int):
    x = _wave(seconds, seed)
    for bw in BANDWIDTHS:
        with torch.inference_mode():
            want = ref.encode(x, bandwidth=bw).audio_codes
        got = ours.encode(x, bandwidth=bw, alignment="transformers")
        assert got.codes.shape == want.shape
        assert torch.equal(got.codes, want), f"{seconds}s bw={bw}: {(got.codes != want).sum()} codes differ"
    with torch.inference_mode():
        want_audio = ref.decode(want).audio_values
    got_audio = ours.decode(got.codes).audio
    assert got_audio.shape == want_audio.shape
    peak = want_audio.abs().max()
    assert peak > 0
    assert (got_audio - want_audio).abs().max() <= 1e-5 * peak


@pytest.mark.parametrize("seconds", [1.0, 3.7, 10.0])
def test_tiny_matches_transformers(tiny_pair, seconds):
    _check(*tiny_pair, seconds, seed=int(seconds * 10))


@pytest.mark.parametrize("seconds", [1.0, 3.7])
def test_published_geometry_matches_transformers(published_pair, seconds):
    _check(*published_pair, seconds, seed=int(seconds * 10) + 1)


@pytest.mark.slow
def test_published_geometry_matches_transformers_10s(published_pair):
    _check(*published_pair, 10.0, seed=101)


def test_forward_crop_matches(tiny_pair):
    """transformers' forward crops the decoded audio to the input length; so does decode(crop=True)."""
    ref, ours = tiny_pair
    x = _wave(3.7, 7)
    with torch.inference_mode():
        want = ref(x).audio_values
    got = ours.decode(ours.encode(x, alignment="transformers"), crop=True)
    assert got.audio.shape == want.shape == (1, 1, x.shape[-1])
    assert (got.audio - want).abs().max() <= 1e-5 * want.abs().max()


def test_transformers_loads_what_we_save(tiny_model, tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny_model.save_pretrained(tmp_path)
    ref = transformers.HiggsAudioV2TokenizerModel.from_pretrained(tmp_path).eval()
    x = _wave(2.3, 3)
    with torch.inference_mode():
        want = ref.encode(x).audio_codes
        want_audio = ref.decode(want).audio_values
    got = tiny_model.encode(x, alignment="transformers")
    assert torch.equal(got.codes, want)
    assert (tiny_model.decode(got).audio - want_audio).abs().max() <= 1e-5 * want_audio.abs().max()


def test_state_dict_keys_equal_transformers(tiny_pair):
    ref, ours = tiny_pair
    assert set(ours.state_dict()) == set(ref.state_dict())
