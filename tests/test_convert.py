"""Checkpoint conversion original <-> transformers, HiggsConfig.to_original_dict, model folder descriptions.

Tolerances: original -> transformers folds weight norm with the op the original runs, so the weights and
every output are bit-identical. transformers -> original unfolds (g = ||w||, v = w); re-folding gives the
weights back within float rounding (measured max abs diff 6e-8 on the tiny fixture's O(1) weights, asserted
<= 1e-6); codes are identical and decoded audio agrees within 1e-5 (measured 9e-8 for the fixture, 1.3e-6
for the tiny model).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tokenwave
from conftest import FIXTURES, tiny_config
from tokenwave.api import CheckpointError
from tokenwave.codecs.higgs import HiggsAudioTokenizer, HiggsConfig
from tokenwave.codecs.higgs.checkpoint import (
    fold_weight_norm,
    original_to_transformers,
    transformers_to_original,
    unfold_weight_norm,
)
from tokenwave.codecs.higgs.convert import convert_checkpoint, describe_model_folder, folder_format

BOSON = FIXTURES / "higgs_boson_tiny"
MASKED = "semantic_model.masked_spec_embed"
# The published original config.json, verbatim (spec 4.1).
PUBLISHED_ORIGINAL_CONFIG = {
    "n_filters": 32, "D": 256, "codebook_dim": 64, "target_bandwidths": [0.5, 1, 1.5, 2, 4],
    "ratios": [8, 5, 4, 2, 3], "sample_rate": 24000, "bins": 1024, "n_q": 8, "semantic_techer": "hubert_base_general",
}
UNFOLD_ATOL = 1e-6  # weights re-folded after unfolding
AUDIO_ATOL = 1e-5  # decoded audio of an unfolded checkpoint (measured <= 1.3e-6)


pytestmark = pytest.mark.usefixtures("one_thread")


def _pth(folder):
    return torch.load(folder / "model.pth", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def boson_raw():
    return _pth(BOSON)


@pytest.fixture(scope="module")
def signal():
    return 0.1 * torch.randn(30000, generator=torch.Generator().manual_seed(7))


def _outputs(folder, signal):
    tok = tokenwave.load_tokenizer(folder)
    enc = tok.encode(signal, tok.sample_rate)
    return enc.codes, tok.decode(enc).audio, tok.config_hash


# ---- conversions -------------------------------------------------------------------------------------
def test_original_to_transformers_to_original(tmp_path, boson_raw, signal):
    hf = convert_checkpoint(BOSON, tmp_path / "hf", "transformers")
    back = convert_checkpoint(hf, tmp_path / "orig", to="original")
    assert hf == tmp_path / "hf" and back == tmp_path / "orig"
    assert sorted(p.name for p in hf.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(p.name for p in back.iterdir()) == ["config.json", "model.pth"]
    assert json.loads((hf / "config.json").read_text())["model_type"] == "higgs_audio_v2_tokenizer"
    assert folder_format(hf) == "transformers" and folder_format(back) == "original"

    # Folding is the original's own op: the transformers weights are bit-identical to reading the fixture.
    folded = original_to_transformers(boson_raw)
    st = load_file(hf / "model.safetensors")
    assert st.keys() == folded.keys() and all(torch.equal(st[k], folded[k]) for k in st)

    # The written model.pth is a plain tensor dict with the fixture's keys and shapes; only the training-only
    # masked_spec_embed (absent from the transformers format) is left out.
    state = _pth(back)
    assert set(state) == set(boson_raw) - {MASKED}
    assert all(type(v) is torch.Tensor and v.shape == boson_raw[k].shape for k, v in state.items())
    for k in (k for k in state if k.endswith(".weight_g")):
        v = k[:-1] + "v"
        diff = (fold_weight_norm(state[k], state[v]) - fold_weight_norm(boson_raw[k], boson_raw[v])).abs().max()
        assert diff <= UNFOLD_ATOL, k
    assert all(torch.equal(state[k], boson_raw[k]) for k in state if not k.endswith(("weight_g", "weight_v")))

    codes0, audio0, hash0 = _outputs(BOSON, signal)
    codes1, audio1, hash1 = _outputs(hf, signal)
    codes2, audio2, hash2 = _outputs(back, signal)
    assert torch.equal(codes1, codes0) and torch.equal(audio1, audio0)
    assert torch.equal(codes2, codes0)
    torch.testing.assert_close(audio2, audio0, atol=AUDIO_ATOL, rtol=0)
    assert hash0 == hash1 == hash2


def test_transformers_to_original_and_back(tmp_path, tiny_model, tiny_checkpoint, signal):
    orig = convert_checkpoint(tiny_checkpoint, tmp_path / "orig", "original")
    state = _pth(orig)
    boson_keys = set(_pth(BOSON))
    assert set(state) == boson_keys - {MASKED}  # the tiny geometry is the fixture's
    assert sum(k.endswith("weight_g") for k in state) == 74

    hf = convert_checkpoint(orig, tmp_path / "hf", "transformers")
    st = load_file(hf / "model.safetensors")
    ref = tiny_model.state_dict()
    assert st.keys() == ref.keys()
    worst = max((st[k] - ref[k]).abs().max().item() for k in st)
    assert worst <= UNFOLD_ATOL
    assert all(torch.equal(st[k], ref[k]) for k in st if not k.startswith(("acoustic_encoder", "acoustic_decoder")))

    codes0, audio0, hash0 = _outputs(tiny_checkpoint, signal)
    for folder in (orig, hf):
        codes, audio, h = _outputs(folder, signal)
        assert torch.equal(codes, codes0)
        torch.testing.assert_close(audio, audio0, atol=AUDIO_ATOL, rtol=0)
        assert h == hash0


def test_same_format_rewrite_normalises(tmp_path, boson_raw, tiny_checkpoint):
    # original -> original keeps the tensors exactly, masked_spec_embed included; config in canonical form.
    orig = convert_checkpoint(BOSON, tmp_path / "orig", "original")
    state = _pth(orig)
    assert state.keys() == boson_raw.keys() and all(torch.equal(state[k], boson_raw[k]) for k in state)
    written = json.loads((orig / "config.json").read_text())
    assert HiggsConfig.from_original_dict(written) == HiggsConfig.from_original_dict(
        json.loads((BOSON / "config.json").read_text())
    )
    # transformers -> transformers: same tensors.
    hf = convert_checkpoint(tiny_checkpoint, tmp_path / "hf", "transformers")
    a, b = load_file(hf / "model.safetensors"), load_file(tiny_checkpoint / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_overwrite_replaces_the_other_format(tmp_path, tiny_checkpoint):
    dst = shutil.copytree(tiny_checkpoint, tmp_path / "dst")
    (dst / "README.md").write_text("kept")
    with pytest.raises(CheckpointError, match=rf"{dst}.*not empty.*overwrite"):
        convert_checkpoint(BOSON, dst, "original")
    convert_checkpoint(BOSON, dst, "original", overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["README.md", "config.json", "model.pth"]
    assert folder_format(dst) == "original"
    tokenwave.load_tokenizer(dst)


# ---- weight norm and key mapping ---------------------------------------------------------------------
def test_unfold_fold_round_trip(tiny_model):
    n = 0
    for k, w in tiny_model.state_dict().items():
        if k.startswith(("acoustic_encoder.", "acoustic_decoder.")) and k.endswith(".weight"):
            g, v = unfold_weight_norm(w)
            assert g.shape == (w.shape[0],) + (1,) * (w.dim() - 1) and torch.equal(v, w)
            assert (fold_weight_norm(g, v) - w).abs().max() <= UNFOLD_ATOL
            n += 1
    assert n == 74
    w = torch.randn(3, 2, 5)
    w[1] = 0
    g, v = unfold_weight_norm(w)
    assert g[1].item() == 0 and torch.equal(fold_weight_norm(g, v)[1], torch.zeros(2, 5))


def test_renaming_is_the_exact_inverse(boson_raw):
    config = HiggsConfig.from_original_dict(json.loads((BOSON / "config.json").read_text()))
    back = transformers_to_original(original_to_transformers(boson_raw), config, masked_spec_embed=boson_raw[MASKED])
    assert back.keys() == boson_raw.keys()
    assert all(back[k].shape == boson_raw[k].shape for k in back)
    assert torch.equal(back[MASKED], boson_raw[MASKED])


def test_published_geometry_key_layout():
    """601 of the published 602 tensors (all but masked_spec_embed), with the spec's weight_g shapes."""
    config = HiggsConfig()
    with torch.device("meta"):
        state = HiggsAudioTokenizer(config).state_dict()
    out = transformers_to_original(state, config)
    assert len(state) == 527 and len(out) == 601 and sum(k.endswith("weight_g") for k in out) == 74
    shapes = {  # spec, Appendix A
        "encoder.block.0.weight_g": (64, 1, 1), "encoder.block.0.weight_v": (64, 1, 7),
        "encoder.block.5.block.4.weight_g": (2048, 1, 1), "encoder.block.7.weight_v": (256, 2048, 3),
        "encoder.block.6.alpha": (1, 2048, 1),
        "decoder_2.model.1.block.1.weight_g": (1024, 1, 1), "decoder_2.model.1.block.1.weight_v": (1024, 512, 16),
        "decoder_2.model.5.block.4.block.3.weight_g": (32, 1, 1), "decoder_2.model.7.weight_g": (1, 1, 1),
        "encoder_semantic.conv_blocks.1.res_units.0.conv2.weight": (768, 768, 1),
        "decoder_semantic.conv2.conv.weight": (768, 768, 3), "quantizer.vq.layers.7._codebook.embed": (1024, 64),
        "fc_prior.weight": (1024, 1024), "fc_post1.bias": (768,), "fc_post2.weight": (256, 1024),
    }
    assert {k: tuple(out[k].shape) for k in shapes} == shapes


# ---- config ------------------------------------------------------------------------------------------
def test_to_original_dict_published():
    out = HiggsConfig().to_original_dict()
    assert out == PUBLISHED_ORIGINAL_CONFIG and list(out) == list(PUBLISHED_ORIGINAL_CONFIG)
    assert HiggsConfig.from_original_dict(out) == HiggsConfig()


def test_to_original_dict_round_trip():
    fixture = json.loads((BOSON / "config.json").read_text())
    for config in (tiny_config(), HiggsConfig.from_original_dict(fixture)):
        out = config.to_original_dict()
        assert HiggsConfig.from_original_dict(out) == config
        assert out["tokenwave_geometry"]["acoustic_decoder_hidden_size"] == 32
    out = HiggsConfig.from_original_dict(fixture).to_original_dict()
    assert {k: v for k, v in out.items() if k != "tokenwave_geometry"} == {
        k: v for k, v in fixture.items() if k != "tokenwave_geometry"
    }
    assert HiggsConfig(semantic_sample_rate=24000).to_original_dict()["semantic_sample_rate"] == 24000


@pytest.mark.parametrize(
    "changes,match",
    [({"upsampling_ratios": (3, 2, 4, 5, 8)}, "one 'ratios' list"), ({"downsample_factor": 160}, "hop 320")],
)
def test_to_original_dict_refuses_what_it_cannot_express(changes, match):
    with pytest.raises(ValueError, match=match):
        HiggsConfig(**changes).to_original_dict()


# ---- describe ----------------------------------------------------------------------------------------
def test_describe_both_formats(tmp_path):
    hf = convert_checkpoint(BOSON, tmp_path / "hf", "transformers")
    orig = describe_model_folder(BOSON)
    assert orig["format"] == "original" and orig["weights"] == "model.pth"
    assert orig["num_tensors"] == 442 and orig["num_parameters"] == 318999 and orig["dtypes"] == ["float32"]
    assert orig["files"]["model.pth"] == (BOSON / "model.pth").stat().st_size
    assert {"config.json", "model.pth", "goldens.safetensors", "README.md"} <= set(orig["files"])

    desc = describe_model_folder(hf)
    assert desc["format"] == "transformers" and desc["weights"] == "model.safetensors"
    assert desc["num_tensors"] == 367 and desc["dtypes"] == ["float32"]
    assert desc["num_parameters"] == sum(v.numel() for v in load_file(hf / "model.safetensors").values())
    assert set(desc["files"]) == {"config.json", "model.safetensors", "preprocessor_config.json"}

    for d in (orig, desc):
        json.dumps(d)
        assert d["model_type"] == "higgs_audio_v2_tokenizer"
        assert (d["sample_rate"], d["frame_rate"], d["hop_length"]) == (24000, 25, 960)
        assert (d["num_codebooks"], d["codebook_size"], d["codebook_dim"]) == (8, 1024, 4)
        assert d["target_bandwidths"] == [0.5, 1, 1.5, 2]
        assert (d["acoustic_hidden_size"], d["semantic_hidden_size"], d["semantic_num_layers"]) == (8, 16, 2)
        assert d["config_hash"] == tokenwave.load_tokenizer(d["path"]).config_hash
    assert orig["config_hash"] == desc["config_hash"]


def test_describe_without_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(BOSON / "config.json", folder)
    d = describe_model_folder(folder)
    assert d["weights"] is None and d["num_tensors"] is None and d["format"] == "original"


# ---- errors ------------------------------------------------------------------------------------------
def test_errors(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'onnx'"):
        convert_checkpoint(BOSON, tmp_path / "x", "onnx")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'nope'} does not exist"):
        convert_checkpoint(tmp_path / "nope", tmp_path / "x", "original")
    with pytest.raises(CheckpointError, match="does not exist"):
        describe_model_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "x", "original")
    other = tmp_path / "dac"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "dac"}))
    with pytest.raises(CheckpointError, match="model_type 'dac'"):
        describe_model_folder(other)
    with pytest.raises(CheckpointError, match="source folder"):
        convert_checkpoint(tiny_checkpoint, tiny_checkpoint / ".." / tiny_checkpoint.name, "original", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        convert_checkpoint(tiny_checkpoint, tmp_path / "file", "original")
    assert not (tmp_path / "x").exists()


def test_incomplete_weights_are_refused(tmp_path, tiny_checkpoint):
    src = shutil.copytree(tiny_checkpoint, tmp_path / "src")
    state = load_file(src / "model.safetensors")
    del state["fc2.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, src / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing: fc2.bias; 1 unexpected: extra.weight"):
        convert_checkpoint(src, tmp_path / "dst", "original")
    assert not (tmp_path / "dst").exists()
    raw = _pth(BOSON)
    del raw["encoder.block.0.weight_g"]
    bad = shutil.copytree(BOSON, tmp_path / "bad")
    torch.save(raw, bad / "model.pth")
    with pytest.raises(CheckpointError, match="incomplete weight-norm pair"):
        convert_checkpoint(bad, tmp_path / "dst", "transformers")


def test_original_config_the_original_cannot_express(tmp_path):
    config = tiny_config().replace(upsampling_ratios=(3, 2, 4, 5, 8))
    src = tmp_path / "src"
    HiggsAudioTokenizer(config).save_pretrained(src)
    with pytest.raises(CheckpointError, match=rf"{src / 'config.json'}.*one 'ratios' list"):
        convert_checkpoint(src, tmp_path / "dst", "original")
    assert not (tmp_path / "dst").exists()
