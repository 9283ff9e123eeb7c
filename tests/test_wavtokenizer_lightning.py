"""Published WavTokenizer files: LightningCLI yamls, the 1091-entry Lightning ``.ckpt`` layout, safe loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from tokenwave.api import CheckpointError
from tokenwave.codecs.higgs.checkpoint import state_mismatch, unfold_weight_norm
from tokenwave.codecs.wavtokenizer.config import PRESETS
from tokenwave.codecs.wavtokenizer.lightning import (
    config_from_yaml,
    infer_config,
    lightning_to_tokenwave,
    load_lightning,
    read_lightning_checkpoint,
)
from tokenwave.codecs.wavtokenizer.model import WavTokenizer
from wavtokenizer_fixtures import (
    published_keys,
    tiny_config,
    tiny_model,
    to_published_state,
    write_lightning_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

YAMLS = {
    "wavtokenizer-75": FIXTURES / "wavtokenizer_smalldata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml",
    "wavtokenizer-40": FIXTURES / "wavtokenizer_smalldata_frame40_3s_nq1_code4096_dim512_kmeans200_attn.yaml",
}
TRAINING_PREFIXES = ("multiperioddisc.", "multiresddisc.", "dac.", "dacdiscriminator.", "melspec_loss.")
DECODER = "feature_extractor.encodec.decoder."


# ---- yaml ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(YAMLS))
def test_published_yamls_give_the_presets(preset):
    assert config_from_yaml(YAMLS[preset]) == PRESETS[preset]
    assert config_from_yaml(str(YAMLS[preset])) == PRESETS[preset]
    assert config_from_yaml(YAMLS[preset].read_text()) == PRESETS[preset]


def test_yaml_numbers_given_as_strings_are_cast():
    """PyYAML (YAML 1.1) reads ``2.4e4`` as a string; quoted numbers too."""
    text = YAMLS["wavtokenizer-75"].read_text()
    text = text.replace("sample_rate: 24000", "sample_rate: 2.4e4").replace("vq_bins: 4096", 'vq_bins: "4096"')
    assert config_from_yaml(text) == PRESETS["wavtokenizer-75"]


_HEAD_75 = "        dim: 768\n        n_fft: 1280"
_HEAD_SECTION = YAMLS["wavtokenizer-75"].read_text().split("    head:\n")[1].split("\ntrainer:")[0]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("padding: same", "padding: center", "model.init_args.head.init_args.padding"),
        ("hop_length: 320", "hop_length: 600", "model.init_args.head.init_args.hop_length"),
        ("num_quantizers: 1", "num_quantizers: 2", "model.init_args.feature_extractor.init_args.num_quantizers"),
        ("    head:\n" + _HEAD_SECTION, "", "model.init_args.head is missing"),
        ("vq_bins: 4096", "vq_bins: many", "model.init_args.feature_extractor.init_args.vq_bins"),
        ("dowmsamples: [8, 5, 4, 2]", "dowmsamples: 8", "model.init_args.feature_extractor.init_args.dowmsamples"),
        ("decoder.heads.ISTFTHead", "decoder.heads.IMDCTCosHead", "model.init_args.head.class_path"),
        (_HEAD_75, "        dim: 512\n        n_fft: 1280", "model.init_args.head.init_args.dim"),
        ("input_channels: 512", "input_channels: 256", "model.init_args.backbone.init_args.input_channels"),
        ("adanorm_num_embeddings: 4", "adanorm_num_embeddings: 3", "adanorm_num_embeddings"),
        ("n_fft: 1280", "n_fft: 1281", "n_fft"),
    ],
)
def test_broken_yaml_names_file_and_field(tmp_path, old, new, field):
    text = YAMLS["wavtokenizer-75"].read_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(CheckpointError) as err:
        config_from_yaml(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("model: [unclosed\n  - x: {\n", "is not valid yaml"), ("- a\n- b\n", "not a LightningCLI config"),
     ("data:\n  x: 1\n", "model is missing")],
)
def test_not_a_wavtokenizer_yaml(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=message):
        config_from_yaml(path)
    with pytest.raises(CheckpointError, match="cannot read"):
        config_from_yaml(tmp_path / "absent.yaml")


# ---- the published key layout ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_published_layout_maps_onto_our_model(preset, caplog):
    """Every published generator key maps to exactly one of ours (weight-norm pairs to one weight), strictly
    covering our model; the unused decoder and the 802 training entries of spec 4.3 are dropped and logged."""
    keys = published_keys(preset)
    assert len(keys) == 1091
    fake = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    with caplog.at_level(logging.DEBUG, logger="tokenwave.codecs.wavtokenizer"):
        ours, dropped = lightning_to_tokenwave(fake, source=preset)
    with torch.device("meta"):
        model = WavTokenizer(PRESETS[preset])
    assert state_mismatch({k: v.shape for k, v in model.state_dict().items()}, ours) == []
    model.load_state_dict(ours, strict=True, assign=True)

    training = {k for k in keys if k.startswith(TRAINING_PREFIXES)}
    decoder = {k for k in keys if k.startswith(DECODER)}
    assert len(training) == 802 and len(decoder) == 62
    assert sorted(dropped) == sorted(training | decoder)
    log = caplog.text
    assert "dropped 864 entries" in log and f"{DECODER[:-1]}.* 62" in log and "dacdiscriminator.* 324" in log

    # one published key (or weight_g/weight_v pair) -> one of our keys, all distinct
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key not in training and key not in decoder:
            groups.setdefault(key.removesuffix("_g").removesuffix("_v") if "weight_" in key else key, []).append(key)
    targets = [next(iter(lightning_to_tokenwave({k: fake[k] for k in group})[0])) for group in groups.values()]
    assert all(len(lightning_to_tokenwave({k: fake[k] for k in g})[0]) == 1 for g in groups.values())
    assert len(targets) == len(set(targets)) == len(ours)
    assert sum(len(g) for g in groups.values()) == 1091 - 802 - 62


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_infer_config_from_shapes(preset):
    fake = {k: torch.empty(shape, device="meta") for k, shape in published_keys(preset).items()}
    assert infer_config(lightning_to_tokenwave(fake)[0]) == PRESETS[preset]
    with torch.device("meta"):
        state = WavTokenizer(PRESETS[preset]).state_dict()
    assert infer_config(state) == PRESETS[preset]


def test_infer_config_needs_the_head():
    with torch.device("meta"):
        state = WavTokenizer(tiny_config()).state_dict()
    del state["head.out.weight"]
    with pytest.raises(CheckpointError, match="head.out.weight"):
        infer_config(state, source="x.ckpt")


def test_unfold_weight_norm_gives_legacy_shapes_and_folds_back():
    w = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(0))
    g, v = unfold_weight_norm(w)
    assert g.shape == (8, 1, 1) and v.shape == w.shape
    assert (torch._weight_norm(v, g, 0) - w).abs().max() <= 1e-7 * w.abs().max()


# ---- tiny checkpoints -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> WavTokenizer:
    return tiny_model(seed=5)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny) -> Path:
    return write_lightning_checkpoint(tiny, tmp_path_factory.mktemp("wt") / "tiny.ckpt")


def _same_behaviour(ours: WavTokenizer, ref: WavTokenizer):
    audio = 0.3 * torch.randn(2, 1, 4321, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        enc_ref, enc = ref.encode(audio, ref.sample_rate), ours.encode(audio, ours.sample_rate)
        assert torch.equal(enc.codes, enc_ref.codes) and enc.codes.unique().numel() > 8
        assert (ours.decode(enc_ref).audio - ref.decode(enc_ref).audio).abs().max() <= 1e-6


@pytest.mark.parametrize("config", [None, "tiny"])
def test_tiny_checkpoint_loads_back(tiny, tiny_ckpt, config):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    assert list(ckpt) == ["epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                          "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters"]
    loaded = load_lightning(tiny_ckpt, tiny_config() if config else None)
    assert loaded.config == tiny_config() and not loaded.training
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    _same_behaviour(loaded, tiny)


def test_bare_and_minimal_checkpoints(tmp_path, tiny):
    minimal = write_lightning_checkpoint(tiny, tmp_path / "min.ckpt", with_training_keys=False)
    assert list(torch.load(minimal, weights_only=True)) == ["state_dict"]
    bare = tmp_path / "bare.ckpt"
    torch.save(to_published_state(tiny.state_dict()), bare)
    legacy = tmp_path / "legacy.ckpt"  # torch < 1.6 serialization: not a zip file, cannot be memory-mapped
    torch.save(torch.load(minimal, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    for path in (minimal, bare, legacy):
        _same_behaviour(load_lightning(path), tiny)


def test_a_yaml_next_to_the_checkpoint_is_not_used_implicitly(tmp_path, tiny):
    """Explicit beats guessing: a (here mismatching) yaml with the checkpoint's stem is ignored."""
    path = write_lightning_checkpoint(tiny, tmp_path / "model.ckpt")
    (tmp_path / "model.yaml").write_text(YAMLS["wavtokenizer-75"].read_text())
    assert load_lightning(path).config == tiny_config()


def test_config_that_disagrees_with_the_weights(tiny_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_lightning(tiny_ckpt, YAMLS["wavtokenizer-75"])
    assert str(YAMLS["wavtokenizer-75"]) in str(err.value) and str(tiny_ckpt) in str(err.value)
    assert "latent_dim: 512 vs 16" in str(err.value)
    with pytest.raises(CheckpointError, match="preset 'wavtokenizer-40'"):
        load_lightning(tiny_ckpt, "wavtokenizer-40")


def _rewrite(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt["state_dict"])
    torch.save(ckpt, dst)
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("backbone.final_layer_norm.bias"), "1 missing: backbone.final_layer_norm.bias"),
        (lambda s: s.update({"backbone.extra.weight": torch.zeros(1)}), "1 unexpected: backbone.extra.weight"),
        (lambda s: s.update({"head.istft.window": torch.zeros(7)}), "wrong shape: head.istft.window"),
        (lambda s: s.update({"feature_extractor.encodec.quantizer.vq.layers.1._codebook.embed": torch.zeros(1)}),
         "more than one quantizer layer"),
        (lambda s: s.pop("feature_extractor.encodec.encoder.model.0.conv.conv.weight_g"),
         "incomplete weight-norm pair"),
    ],
)
def test_damaged_state_dict_is_named(tmp_path, tiny_ckpt, edit, message):
    path = _rewrite(tiny_ckpt, tmp_path / "bad.ckpt", edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_lightning(path, tiny_config())
    assert str(path) in str(err.value)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no WavTokenizer checkpoint file"):
        read_lightning_checkpoint(tmp_path / "absent.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="junk.ckpt is not a readable torch checkpoint"):
        read_lightning_checkpoint(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="neither a Lightning checkpoint"):
        read_lightning_checkpoint(other)


def _leave_marker(path: str) -> None:
    Path(path).write_text("the pickle ran code")


class _Trap:
    """Unpickles by calling :func:`_leave_marker`: a stand-in for a malicious object."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return _leave_marker, (str(self.marker),)


def test_foreign_object_is_refused_and_never_run(tmp_path, tiny_ckpt):
    marker = tmp_path / "ran"
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["trap"] = _Trap(marker)
    path = tmp_path / "trap.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"weights_only=True\): it pickles test_wavtokenizer_lightning._leave_m"
                       ) as err:
        load_lightning(path)
    assert str(path) in str(err.value) and "never executes untrusted pickles" in str(err.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the trap is live: an unrestricted unpickler runs it
    assert marker.read_text() == "the pickle ran code"
