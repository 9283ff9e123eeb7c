"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenwave.api import InvalidAudioError, InvalidCodesError, TokenwaveError


@pytest.mark.parametrize(
    "audio,match",
    [
        (torch.zeros(0), "empty"),
        (torch.zeros(119), "too short.*119"),
        (torch.zeros(2, 1, 4, 1000), r"\[L\], \[B, L\] or \[B, 1, L\]"),
        (torch.zeros(1, 2, 24_000), "mono.*2 channels"),
        (np.zeros(24_000, dtype=np.int16), "floating point.*int16"),
        ("not audio", "tensor or numpy"),
        ([], "empty list"),
        ([torch.zeros(2, 100)], r"audio\[0\] must be 1-D"),
        (torch.zeros(0, 1, 1000), "is empty"),
    ],
)
def test_bad_audio(tiny_model, audio, match):
    with pytest.raises(InvalidAudioError, match=match):
        tiny_model.encode(audio)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_audio_names_the_item(tiny_model, value):
    x = torch.zeros(3, 1, 2_000)
    x[1, 0, 500] = value
    with pytest.raises(InvalidAudioError, match=r"NaN or inf in item\(s\) \[1\]"):
        tiny_model.encode(x)


def test_nan_in_padding_is_ignored(tiny_model):
    x = torch.zeros(2, 1, 2_000)
    x[0, 0, 1_500:] = float("nan")
    enc = tiny_model.encode(x, lengths=[1_500, 2_000])
    assert torch.equal(enc.codes[:1], tiny_model.encode(x[0, :, :1_500]).codes)


def test_short_item_in_batch_is_named(tiny_model):
    with pytest.raises(InvalidAudioError, match="item 1 has 50"):
        tiny_model.encode([torch.zeros(1_000), torch.zeros(50)])


def test_bad_options(tiny_model):
    x = torch.zeros(2_000)
    with pytest.raises(ValueError, match=r"unknown bandwidth 3.0 kbps.*\[0.5, 1, 1.5, 2\]"):
        tiny_model.encode(x, bandwidth=3.0)
    with pytest.raises(ValueError, match=r"num_codebooks must be an integer in 1..8"):
        tiny_model.encode(x, num_codebooks=9)
    with pytest.raises(ValueError, match="not both"):
        tiny_model.encode(x, bandwidth=1, num_codebooks=4)
    with pytest.raises(ValueError, match="alignment must be one of"):
        tiny_model.encode(x, alignment="centre")
    with pytest.raises(InvalidAudioError, match="44100 Hz.*24000 Hz"):
        tiny_model.encode(x, sample_rate=44_100)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 2000\]"):
        tiny_model.encode(x[None], lengths=[2_001])
    with pytest.raises(ValueError, match="lengths must be 1 integers"):
        tiny_model.encode(x[None], lengths=[100, 200])


@pytest.mark.parametrize(
    "codes,lengths,match",
    [
        (torch.full((1, 8, 5), 1024), None, r"\[0, 1024\).*\[1024, 1024\]"),
        (torch.full((1, 8, 5), -1), None, r"\[0, 1024\).*\[-1, -1\]"),
        (torch.zeros(1, 9, 5, dtype=torch.long), None, "9 codebooks.*1..8"),
        (torch.zeros(1, 0, 5, dtype=torch.long), None, "0 codebooks"),
        (torch.zeros(1, 8, 5), None, "integers.*float32"),
        (torch.zeros(8, dtype=torch.long), None, r"\[B, K, T\] or \[K, T\]"),
        (torch.zeros(1, 8, 0, dtype=torch.long), None, "empty"),
        ([[1, 2]], None, "tensor or numpy"),
        (torch.zeros(2, 8, 5, dtype=torch.long), [5, 0], "at least one frame"),
    ],
)
def test_bad_codes(tiny_model, codes, lengths, match):
    with pytest.raises(InvalidCodesError, match=match):
        tiny_model.decode(codes, lengths)


def test_out_of_range_codes_in_padding_are_ignored(tiny_model):
    codes = torch.zeros(2, 8, 5, dtype=torch.long)
    codes[1, :, 3:] = 5_000
    assert tiny_model.decode(codes, [5, 3]).lengths.tolist() == [4_800, 2_880]


def test_lengths_longer_than_codes(tiny_model):
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\] frames"):
        tiny_model.decode(torch.zeros(1, 8, 5, dtype=torch.long), [6])


def test_crop_needs_audio_lengths(tiny_model):
    with pytest.raises(ValueError, match="crop=True needs audio_lengths"):
        tiny_model.decode(torch.zeros(1, 8, 5, dtype=torch.long), crop=True)


def test_errors_share_a_base_class():
    assert issubclass(InvalidAudioError, TokenwaveError) and issubclass(InvalidCodesError, TokenwaveError)
