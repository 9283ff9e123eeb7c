"""Shared fixtures: tiny and published-geometry Higgs models, with transformers as the oracle."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tokenwave.codecs.higgs import HiggsAudioTokenizer, HiggsConfig
from tokenwave.nn.hubert import HubertConfig

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"

# transformers' Higgs tokenizer imports torchaudio only for functional.resample; we never install
# torchaudio, so tests/stubs provides a stand-in (a windowed-sinc resampler written from its docs).
if importlib.util.find_spec("torchaudio") is None:
    sys.path.insert(0, str(TESTS / "stubs"))

TINY_HUBERT = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=[8] * 7,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)


def tiny_config() -> HiggsConfig:
    """Published framing (24 kHz, hop 960, 8 x 1024 codes) with tiny widths."""
    return HiggsConfig(
        acoustic_encoder_hidden_size=4, acoustic_decoder_hidden_size=32, acoustic_hidden_size=8, codebook_dim=4,
        semantic=HubertConfig(**TINY_HUBERT),
    )


def randomize_(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter (so nothing sits at its default init) and fill the codebooks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
        for name, buf in model.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
            elif name.endswith("codebook.embed_avg"):
                buf.copy_(model.get_buffer(name[: -len("_avg")]))
    return model


@pytest.fixture(scope="session")
def tiny_model() -> HiggsAudioTokenizer:
    return randomize_(HiggsAudioTokenizer(tiny_config()), seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    """Our tiny model saved in the transformers format."""
    folder = tmp_path_factory.mktemp("tiny_ckpt")
    tiny_model.save_pretrained(folder)
    return folder


def transformers_config(cfg: HiggsConfig):
    transformers = pytest.importorskip("transformers")
    return transformers.HiggsAudioV2TokenizerConfig(**_hf_kwargs(cfg.to_transformers_dict()))


def _hf_kwargs(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("architectures", "model_type", "tokenwave_config_version")}


def transformers_pair(cfg: HiggsConfig, folder: Path, seed: int):
    """A random transformers reference model and our model loaded from what it saved."""
    transformers = pytest.importorskip("transformers")
    import tokenwave

    torch.manual_seed(seed)
    ref = transformers.HiggsAudioV2TokenizerModel(transformers_config(cfg)).eval()
    randomize_(ref, seed, scale=0.02)
    ref.save_pretrained(folder)
    ours = tokenwave.load_tokenizer(folder, alignment="transformers")
    return ref, ours


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    return transformers_pair(tiny_config(), tmp_path_factory.mktemp("hf_tiny"), seed=1)


@pytest.fixture(scope="session")
def published_pair(tmp_path_factory):
    return transformers_pair(HiggsConfig(), tmp_path_factory.mktemp("hf_published"), seed=2)


@pytest.fixture(scope="module")
def one_thread():
    """Single-threaded torch for a module of tiny-model tests: thread start-up and contention on this small,
    busy machine cost more than they save (test_convert: 1.6 s instead of 7 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
