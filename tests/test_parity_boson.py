"""Parity with the original boson-multimodal 0.1.1 code through golden files.

The goldens and the tiny original-format checkpoint come from tools/goldens/boson/make_goldens.sh, which
runs the original code once in a separate venv (it needs transformers<4.47); see the fixture README.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import tokenwave
from conftest import FIXTURES
from tokenwave.codecs.higgs.checkpoint import original_to_transformers

FOLDER = FIXTURES / "higgs_boson_tiny"
INDEX = json.loads((FOLDER / "goldens.json").read_text())
CASES = {c["L"]: c for c in INDEX["cases"]}
BANDWIDTHS = {"none": None, "0.5": 0.5, "1": 1, "1.5": 1.5, "2": 2}


@pytest.fixture(scope="module")
def goldens():
    return load_file(str(FOLDER / "goldens.safetensors"))


@pytest.fixture(scope="module")
def model():
    return tokenwave.load_tokenizer(FOLDER)  # original format: config.json + model.pth


@pytest.mark.parametrize("length", [961, 24000, 30000, 88800])
def test_codes_and_audio_equal_original(model, goldens, length):
    x = goldens[f"L{length}/x"]
    for key, bw in BANDWIDTHS.items():
        want = goldens[f"L{length}/codes_bw_{key}"]
        got = model.encode(x, bandwidth=bw, alignment="original").codes
        assert torch.equal(got, want), f"L={length} bw={key}: {(got != want).sum()} of {want.numel()} codes differ"
    want_audio = goldens[f"L{length}/audio"]
    got_audio = model.decode(goldens[f"L{length}/codes_bw_none"]).audio
    assert got_audio.shape == want_audio.shape
    assert (got_audio - want_audio).abs().max() <= 1e-5 * want_audio.abs().max()


def test_lower_bandwidth_audio(model, goldens):
    want = goldens["L24000/audio_bw_0.5"]
    got = model.decode(goldens["L24000/codes_bw_0.5"]).audio
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_padding_branch_intermediates(model, goldens):
    """L=30000 takes the original's 320|320 re-padding; check the branch outputs, not only the codes."""
    x = goldens["L30000/x"]
    case = CASES[30000]
    assert case["Ta_formula"] != case["Ts_formula"]
    fused, frames = model._embed(x, None, "original")
    assert frames is None
    fused = fused.transpose(1, 2)  # the original keeps fc_prior's output as [B, T, C]
    want = goldens["L30000/fused_prequant"]
    assert fused.shape == want.shape
    assert (fused - want).abs().max() <= 1e-5 * want.abs().max()


def test_batch_where_original_supports_it(model, goldens):
    x = goldens["batch_L24000/x"]
    assert torch.equal(model.encode(x).codes, goldens["batch_L24000/codes_bw_none"])


def test_batch_in_padding_branch_where_original_fails(model, goldens):
    """The original raises for B>1 when it re-pads (spec 7 #2); ours gives each item its single-item codes."""
    assert "error" in next(b for b in INDEX["batch"] if b["L"] == 30000)
    x = goldens["L30000/x"]
    other = 0.1 * torch.randn(1, 1, 30000, generator=torch.Generator().manual_seed(5))
    batch = model.encode(torch.cat([x, other]), alignment="original").codes
    assert torch.equal(batch[:1], goldens["L30000/codes_bw_none"])
    assert torch.equal(batch[1:], model.encode(other, alignment="original").codes)


def test_short_input_gets_frames_where_original_crashes(model, goldens):
    """Under 632 samples the original's unpadded acoustic pass raises; we follow its padding rule instead."""
    assert "error" in CASES[200]["codes"]["none"]
    enc = model.encode(goldens["L200/x"], alignment="original")
    assert enc.codes.shape == (1, 8, 1)


def test_original_checkpoint_converts_to_transformers_keys(model):
    state = torch.load(FOLDER / "model.pth", weights_only=True)
    assert any(k.endswith("weight_g") for k in state) and "semantic_model.masked_spec_embed" in state
    converted = original_to_transformers(state)
    assert set(converted) == set(model.state_dict())
    # weight_g differs from ||weight_v|| in the fixture, so folding is exercised
    g, v = state["encoder.block.0.weight_g"], state["encoder.block.0.weight_v"]
    assert not torch.allclose(g.flatten(), v.flatten(1).norm(dim=1))
    assert torch.allclose(converted["acoustic_encoder.conv1.weight"], g * v / v.flatten(1).norm(dim=1)[:, None, None])


def test_original_equals_transformers_rule_when_no_repadding(model, goldens):
    x = goldens["L24000/x"]
    assert torch.equal(model.encode(x, alignment="transformers").codes, goldens["L24000/codes_bw_none"])
