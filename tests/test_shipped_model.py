"""The model shipped inside the package (tokenwave-small, docs/tokenwave_small.md): present, within the size
budget, loaded by default and by name without a network, what its model card and recipe say it is, and still
as good on the shipped example as when it was measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import tokenwave
from tokenwave.codecs.wavtokenizer import WavTokenizerConfig, preset
from tokenwave.demo import example_audio_path
from tokenwave.loading import SHIPPED_MODEL, shipped_models
from tokenwave.training.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

# mel distance (tokenwave.eval, DAC/audiotools definition) of the shipped example through the shipped model,
# measured at 1.4910 when the model was shipped; the bound catches damaged weights or a changed decoder
EXAMPLE_MEL_DISTANCE_MAX = 1.55


@pytest.fixture(scope="module")
def model():
    return tokenwave.load_tokenizer(SHIPPED_MODEL)


def test_shipped_folder_and_size_budget():
    folder = shipped_models()[SHIPPED_MODEL]
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 25_000_000  # the 25 MB budget
    card = (folder / "README.md").read_text()
    assert "2.25 kbps" in card and "Codec2" in card and "Opus" in card


def test_default_model_is_the_shipped_one(monkeypatch):
    monkeypatch.delenv("TOKENWAVE_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tokenwave.load_tokenizer()
    assert tok.model_id == SHIPPED_MODEL
    assert (tok.sample_rate, tok.frame_rate, tok.num_codebooks, tok.codebook_size) == (24000, 75.0, 3, 1024)


def test_config_is_the_recipe_geometry(model):
    recipe = load_recipe("tokenwave-small")
    expected = WavTokenizerConfig.from_dict({**preset(recipe.model.preset).to_dict(), **recipe.model.config})
    assert model.config == expected
    assert model.config.bandwidth == pytest.approx(2.25)
    folder = shipped_models()[SHIPPED_MODEL]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "wavtokenizer"


def test_quality_on_the_shipped_example(model):
    from tokenwave.eval.metrics.signal import mel_distance

    audio, rate = sf.read(example_audio_path(), dtype="float32")
    enc = model.encode(torch.from_numpy(audio))
    out = model.decode(enc, crop=True).audio[0, 0].numpy()
    assert out.shape == audio.shape and np.isfinite(out).all()
    assert mel_distance(audio, out, rate) < EXAMPLE_MEL_DISTANCE_MAX
    # the contract: a batch of different lengths gives each item its own codes
    half = torch.from_numpy(audio[: len(audio) // 2 + 123])
    batch = model.encode([torch.from_numpy(audio), half])
    assert torch.equal(batch.codes[1, :, : int(batch.lengths[1])], model.encode(half).codes[0])
    assert torch.equal(batch.codes[0], enc.codes[0])
