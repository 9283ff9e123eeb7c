"""Loading: both formats, strictness, model types, hub ids, dtype."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tokenwave
from tokenwave.api import CheckpointError, ModelNotFoundError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_save_load_round_trip(tiny_model, tiny_checkpoint):
    loaded = tokenwave.load_tokenizer(tiny_checkpoint)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert json.loads((tiny_checkpoint / "config.json").read_text())["model_type"] == "higgs_audio_v2_tokenizer"


def test_missing_and_unexpected_keys_are_listed(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    del state["fc2.bias"]
    state["fc3.weight"] = torch.zeros(2)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing: fc2.bias; 1 unexpected: fc3.weight"):
        tokenwave.load_tokenizer(folder)


def test_wrong_shape_is_listed(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    state["fc2.bias"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shape: fc2.bias: checkpoint \(3,\) vs model \(8,\)"):
        tokenwave.load_tokenizer(folder)


@pytest.mark.parametrize(
    "config,match",
    [
        ({"model_type": "dac", "sampling_rate": 44100}, "model_type 'dac'.*cannot load"),
        ({"model_type": "wav2vec2"}, "model_type 'wav2vec2'"),
        ({"model_type": "higgs_audio_v2_tokenizer", "acoustic_model_config": {"model_type": "dac"}},
         "refusing to guess"),
    ],
)
def test_config_of_another_model(tiny_checkpoint, tmp_path, config, match):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        tokenwave.load_tokenizer(folder)


def test_broken_folders(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        tokenwave.load_tokenizer(folder)
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt2")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.pth"):
        tokenwave.load_tokenizer(folder)
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt3")
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot read"):
        tokenwave.load_tokenizer(folder)
    with pytest.raises(CheckpointError, match="is a file"):
        tokenwave.load_tokenizer(folder / "config.json")


def test_pickle_with_code_is_refused(tmp_path):
    """model.pth is read with weights_only=True: a pickle that would run code is an error, not executed."""
    from conftest import FIXTURES

    folder = _copy(FIXTURES / "higgs_boson_tiny", tmp_path / "ckpt")
    torch.save({"payload": print}, folder / "model.pth")
    with pytest.raises(CheckpointError, match="tensor-only state dict"):
        tokenwave.load_tokenizer(folder)


def test_unknown_model_ids(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="neither an existing folder nor a hub id"):
        tokenwave.load_tokenizer("no_such_model")
    with pytest.raises(ModelNotFoundError, match=r"not in the local Hugging Face cache.*hf download someone/nothing"):
        tokenwave.load_tokenizer("someone/nothing")


def test_default_model_comes_from_env(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("TOKENWAVE_MODEL", str(tiny_checkpoint))
    assert tokenwave.load_tokenizer().num_codebooks == 8


def test_dtype_and_device(tiny_checkpoint):
    model = tokenwave.load_tokenizer(tiny_checkpoint, dtype="bfloat16", device="cpu")
    assert model.fc.weight.dtype == torch.bfloat16
    assert model.quantizer.quantizers[0].codebook.embed.dtype == torch.float32  # search stays float32
    enc = model.encode(0.1 * torch.randn(24_000))
    assert enc.codes.shape == (1, 8, 25)
    assert model.decode(enc).audio.dtype == torch.bfloat16


def test_original_format_with_both_weight_files_prefers_safetensors(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (folder / "model.pth").write_bytes(b"garbage that must not be read")
    assert tokenwave.load_tokenizer(folder).num_codebooks == 8


def test_hub_id_from_local_cache_without_network(tiny_checkpoint, tmp_path, monkeypatch):
    """A hub id already in the Hugging Face cache loads offline (the cache layout huggingface_hub writes)."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-higgs"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / commit)
    model = tokenwave.load_tokenizer("someone/tiny-higgs")
    assert model.num_codebooks == 8
