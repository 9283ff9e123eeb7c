"""Discriminators: reference parameter layout, output shapes and feature-map counts at 1 s of 24 kHz audio,
conditional projection, per-item independence, and equality with vocos 0.1.0 where it has the same network.

Reference numbers: tests/fixtures/wavtokenizer_discriminator_info.json and the key/shape list
tests/fixtures/wavtokenizer_lightning_keys_frame75.txt.gz (spec_wavtokenizer.md sections 4.3 and 6.2)."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from tokenwave.discriminators import (
    DISCRIMINATORS,
    BandSTFTDiscriminator,
    DACDiscriminator,
    MultiBandSTFTDiscriminator,
    MultiDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    PeriodDiscriminator,
    ResolutionDiscriminator,
    build_discriminator,
    from_reference_key,
    load_reference_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"
INFO = json.loads((FIXTURES / "wavtokenizer_discriminator_info.json").read_text())
GROUPS = {"multiperioddisc": "mpd", "multiresddisc": "mrd", "dac": "dac"}


def _reference_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Discriminator entries of the published-layout Lightning checkpoint, by group (prefix stripped)."""
    out: dict[str, dict[str, tuple[int, ...]]] = {g: {} for g in GROUPS}
    with gzip.open(FIXTURES / "wavtokenizer_lightning_keys_frame75.txt.gz", "rt") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.split()
            group, rest = key.split(".", 1)
            if group in out:
                out[group][rest] = tuple(int(s) for s in shape.split(","))
    return out


@pytest.fixture(scope="module")
def reference_discriminators() -> dict[str, torch.nn.Module]:
    """WavTokenizer's three discriminators at published size (spec section 6.2)."""
    torch.manual_seed(0)
    return {"multiperioddisc": build_discriminator("mpd", num_embeddings=4),
            "multiresddisc": build_discriminator("mrd", num_embeddings=4),
            "dac": build_discriminator("dac")}


@pytest.fixture(scope="module")
def one_second_outputs(reference_discriminators):
    y = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return {name: (d(y) if name == "dac" else d(y, torch.tensor([0])))
                for name, d in reference_discriminators.items()}


# ------------------------------------------------------------------------------------------ reference layout
def test_registry():
    assert set(DISCRIMINATORS) == {"mpd", "mrd", "mstft", "dac"}
    with pytest.raises(ValueError, match="unknown discriminator 'msd'"):
        build_discriminator("msd")


@pytest.mark.parametrize("group", list(GROUPS))
def test_parameter_shapes_match_reference(reference_discriminators, group):
    ref = _reference_shapes()[group]
    assert len(ref) == INFO["groups"][group]["entries"]
    ours = {k: tuple(v.shape) for k, v in reference_discriminators[group].state_dict().items()}
    assert ours == {from_reference_key(k): s for k, s in ref.items()}
    assert sum(math.prod(s) for s in ours.values()) == INFO["groups"][group]["numel"]


def test_reference_key_map():
    assert from_reference_key("discriminators.0.convs.3.weight_g") == \
        "discriminators.0.convs.3.parametrizations.weight.original0"
    assert from_reference_key("discriminators.2.convs.4.0.weight_v") == \
        "discriminators.2.convs.4.parametrizations.weight.original1"
    assert from_reference_key("discriminators.5.band_convs.4.3.0.bias") == "discriminators.5.band_convs.4.3.bias"
    assert from_reference_key("discriminators.1.emb.weight") == "discriminators.1.emb.weight"


def test_load_reference_state_dict_is_strict_and_sets_weights():
    ref = {"multiresddisc." + k: torch.randn(s) for k, s in _reference_shapes()["multiresddisc"].items()}
    mrd = MultiResolutionDiscriminator(num_embeddings=4)
    load_reference_state_dict(mrd, ref, prefix="multiresddisc.")
    conv = mrd.discriminators[1].convs[2]
    g = ref["multiresddisc.discriminators.1.convs.2.weight_g"]
    v = ref["multiresddisc.discriminators.1.convs.2.weight_v"]
    torch.testing.assert_close(conv.weight, torch._weight_norm(v, g, 0))
    del ref["multiresddisc.discriminators.0.emb.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        load_reference_state_dict(mrd, ref, prefix="multiresddisc.")


# ------------------------------------------------------------------------------------- outputs at 1 s, 24 kHz
def test_mpd_outputs_one_second(one_second_outputs):
    outs = one_second_outputs["multiperioddisc"]
    assert [list(o.logits.flatten(1).shape) for o in outs] == INFO["mpd_out_shapes"]
    assert [len(o.feature_maps) for o in outs] == INFO["mpd_fmaps_per_disc"]
    assert all(o.feature_maps[-1] is o.logits for o in outs)


def test_mrd_outputs_one_second(one_second_outputs):
    outs = one_second_outputs["multiresddisc"]
    assert [list(o.logits.flatten(1).shape) for o in outs] == INFO["mrd_out_shapes"]
    assert [len(o.feature_maps) for o in outs] == INFO["mrd_fmaps_per_disc"]


def test_dac_outputs_one_second(one_second_outputs, reference_discriminators):
    outs = one_second_outputs["dac"]
    assert [list(o.logits.shape) for o in outs] == INFO["dac_logit_shapes"]
    assert [len(o.feature_maps) for o in outs] == INFO["dac_fmaps_per_disc(last=logits)"]
    stft_discs = reference_discriminators["dac"].discriminators[5:]
    assert [d.window_length for d in stft_discs] == INFO["dac_mrd_window_lengths"]
    assert [[list(b) for b in d.bands] for d in stft_discs] == INFO["dac_mrd_bands"]
    assert [d.period for d in reference_discriminators["dac"].discriminators[:5]] == INFO["dac_mpd_periods"]


@pytest.mark.parametrize("length", [4800, 4801, 5000, 5119])
def test_stft_framing(length):
    """DAC's match_stride gives ceil(L / hop) frames; WavTokenizer's plain torch.stft 1 + L // hop."""
    x = torch.randn(1, length)
    dac = BandSTFTDiscriminator(512, channels=2)
    plain = BandSTFTDiscriminator(512, channels=2, window="rectangular", match_stride=False)
    assert dac.spectrogram(x).shape == (1, 2, math.ceil(length / 128), 257)
    assert plain.spectrogram(x).shape == (1, 2, 1 + length // 128, 257)


def test_window_options_differ():
    x = torch.randn(1, 4000)
    specs = [ResolutionDiscriminator((512, 128, 512), channels=2, window=w).spectrogram(x)
             for w in ("rectangular", "hann", "sqrt_hann")]
    rectangular = torch.stft(x, 512, 128, window=torch.ones(512), return_complex=True).abs().unsqueeze(1)
    torch.testing.assert_close(specs[0], rectangular)
    assert not torch.allclose(specs[0], specs[1]) and not torch.allclose(specs[1], specs[2])


# ------------------------------------------------------------------------------------ conditional projection
def _small(kind: str, **kwargs):
    torch.manual_seed(3)
    if kind == "mpd":
        return MultiPeriodDiscriminator((2, 3), channels=(4, 8, 8, 16), **kwargs)
    if kind == "mrd":
        return MultiResolutionDiscriminator(((256, 64, 256), (128, 32, 128)), channels=8, **kwargs)
    return MultiBandSTFTDiscriminator((256, 128), channels=4, **kwargs)


def _last_hidden(kind: str, fmaps: list[torch.Tensor]) -> torch.Tensor:
    """The activation the projection reads: the last conv's, or for the band discriminator the band outputs
    concatenated along frequency."""
    if kind == "mstft":
        return torch.cat(fmaps[4:-1:5], dim=-1)
    return fmaps[-2]


@pytest.mark.parametrize("kind", ["mpd", "mrd", "mstft"])
def test_condition_acts_only_through_projection(kind):
    disc = _small(kind, num_embeddings=4)
    plain = _small(kind)
    plain.load_state_dict({k: v for k, v in disc.state_dict().items() if ".emb." not in k})  # same convs, no table
    x = torch.randn(2, 3000)
    with torch.no_grad():
        unconditional = plain(x)
        fresh = disc(x, 2)  # zero-initialised table: a fresh conditional discriminator is unconditional
        for d in disc.discriminators:
            torch.nn.init.normal_(d.emb.weight)
        cond = disc(x, torch.tensor([2]))
    for d, u, f, c in zip(disc.discriminators, unconditional, fresh, cond):
        assert torch.equal(u.logits, f.logits)
        assert all(torch.equal(a, b) for a, b in zip(u.feature_maps[:-1], c.feature_maps[:-1]))
        h = _last_hidden(kind, c.feature_maps)
        want = (d.emb.weight[2][None, :, None, None] * h).sum(1, keepdim=True)
        torch.testing.assert_close(c.logits - u.logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mpd", "mrd"])
def test_per_item_condition(kind):
    disc = _small(kind, num_embeddings=4)
    for d in disc.discriminators:
        torch.nn.init.normal_(d.emb.weight)
    x = torch.randn(3, 2500)
    ids = torch.tensor([0, 3, 1])
    with torch.no_grad():
        batch = disc(x, ids)
        for b in range(3):
            alone = disc(x[b : b + 1], int(ids[b]))
            for o, a in zip(batch, alone):
                torch.testing.assert_close(o.logits[b : b + 1], a.logits, rtol=1e-5, atol=1e-6)


def test_unconditional_refuses_a_condition():
    with pytest.raises(ValueError, match="without num_embeddings"):
        PeriodDiscriminator(2, channels=(2, 2, 2, 2))(torch.randn(1, 100), 1)
    with pytest.raises(ValueError, match="unconditional"):
        DACDiscriminator(periods=(2,), window_lengths=(256,))(torch.randn(1, 1000), 1)


# --------------------------------------------------------------------------------- batch == each item alone
@pytest.mark.parametrize("name", ["multiperioddisc", "multiresddisc", "dac"])
def test_batch_equals_items(reference_discriminators, name):
    disc = reference_discriminators[name]
    x = torch.randn(3, 2500, generator=torch.Generator().manual_seed(5))
    x[1] *= 10  # different gains: DAC's per-item normalisation must stay per item
    call = (lambda a: disc(a)) if name == "dac" else (lambda a: disc(a, 1))
    with torch.no_grad():
        batch = call(x)
        for b in range(3):
            for o, a in zip(batch, call(x[b : b + 1])):
                for fb, fa in zip(o.feature_maps, a.feature_maps):
                    torch.testing.assert_close(fb[b : b + 1], fa, rtol=1e-5, atol=1e-5)


def test_dac_is_invariant_to_gain_and_offset():
    torch.manual_seed(0)
    disc = DACDiscriminator(periods=(2,), window_lengths=(256,))
    x = torch.randn(2, 3000)
    with torch.no_grad():
        a, b = disc(x), disc(3.0 * x + 0.2)
    for oa, ob in zip(a, b):
        torch.testing.assert_close(oa.logits, ob.logits, rtol=1e-4, atol=1e-5)


def test_gradients_reach_input_and_every_parameter():
    disc = MultiDiscriminator({"mpd": _small("mpd", num_embeddings=2), "mrd": _small("mrd"),
                               "mstft": _small("mstft")})
    x = torch.randn(2, 3000, requires_grad=True)
    out = disc(x, condition=1)
    sum(t.mean() for t in out.logits()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    for name, p in disc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ------------------------------------------------------------------------------------------- MultiDiscriminator
def test_multi_discriminator_groups_and_condition_routing():
    disc = MultiDiscriminator.from_config({
        "mpd": {"periods": (2, 3), "channels": (2, 4, 4, 8), "num_embeddings": 4},
        "small_dac": {"name": "dac", "periods": (5,), "window_lengths": (256,)},
    })
    assert isinstance(disc.groups["small_dac"], DACDiscriminator)
    assert next(iter(disc.state_dict())).startswith("groups.mpd.discriminators.0.")
    x = torch.randn(2, 2000)
    with torch.no_grad():
        out = disc(x, condition=torch.tensor([3]))  # DAC is unconditional: it does not receive the id
    assert list(out.groups) == ["mpd", "small_dac"]
    assert len(out.logits("mpd")) == 2 and len(out.logits("small_dac")) == 2 and len(out.logits()) == 4
    assert [len(f) for f in out.feature_maps()] == [5, 5, 6, 26]
    with pytest.raises(ValueError, match="unknown discriminator"):
        MultiDiscriminator.from_config({"x": {"name": "nope"}})
    listed = MultiDiscriminator.from_config([{"name": "mrd", "channels": 2}, {"name": "mrd", "channels": 3}])
    assert list(listed.groups) == ["mrd", "mrd_1"]
    with pytest.raises(ValueError, match="has no 'name'"):
        MultiDiscriminator.from_config([{"channels": 2}])


# ------------------------------------------------------------------------------------------ vocos 0.1.0 oracle
class _Spectrogram(torch.nn.Module):
    """torchaudio.transforms.Spectrogram(power=None) with the defaults vocos relies on (Hann, center, reflect)."""

    def __init__(self, n_fft, hop_length, win_length, power=None):
        super().__init__()
        assert power is None
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, x):
        return torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)


@pytest.fixture(scope="module")
def vocos_discriminators():
    if importlib.util.find_spec("vocos") is None or importlib.util.find_spec("einops") is None:
        pytest.skip("vocos==0.1.0 and einops (test-only dependencies) are not installed")
    saved = {k: sys.modules.get(k) for k in ("vocos", "torchaudio.transforms", "vocos.discriminators")}
    try:
        if "vocos" not in sys.modules:
            pkg = types.ModuleType("vocos")  # skip vocos/__init__ (pretrained wrapper, torchaudio, encodec)
            pkg.__path__ = list(importlib.util.find_spec("vocos").submodule_search_locations)
            sys.modules["vocos"] = pkg
        transforms = types.ModuleType("torchaudio.transforms")
        transforms.Spectrogram = _Spectrogram
        sys.modules["torchaudio.transforms"] = transforms
        sys.modules.pop("vocos.discriminators", None)
        yield importlib.import_module("vocos.discriminators")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _copy_from_vocos(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.05)
    load_reference_state_dict(ours, ref.state_dict())


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_mpd_equals_vocos(vocos_discriminators):
    ref = vocos_discriminators.MultiPeriodDiscriminator(periods=(3, 7), num_embeddings=4)
    ours = MultiPeriodDiscriminator(periods=(3, 7), num_embeddings=4)
    _copy_from_vocos(ours, ref)
    y, y_hat = torch.randn(2, 4003), torch.randn(2, 4003)
    with torch.no_grad():
        r_real, r_fake, f_real, _ = ref(y, y_hat, bandwidth_id=torch.tensor([2]))
        mine = ours(y, torch.tensor([2]))
    for o, r, f in zip(mine, r_real, f_real):
        torch.testing.assert_close(o.logits.flatten(1), r, rtol=1e-5, atol=1e-6)
        assert len(o.feature_maps) == len(f)
        for a, b in zip(o.feature_maps, f):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_band_stft_discriminator_equals_vocos(vocos_discriminators):
    """vocos 0.1.0's MRD is DAC's band stack with torchaudio framing and a projection; its feature list skips
    each band's first activation."""
    ref = vocos_discriminators.MultiResolutionDiscriminator(num_embeddings=4)
    ours = MultiBandSTFTDiscriminator(num_embeddings=4, window="hann", match_stride=False)
    _copy_from_vocos(ours, ref)
    y = torch.randn(2, 6000)
    with torch.no_grad():
        r_real, _, f_real, _ = ref(y, y, bandwidth_id=torch.tensor([1]))
        mine = ours(y, 1)
    for o, r, f in zip(mine, r_real, f_real):
        torch.testing.assert_close(o.logits, r, rtol=1e-5, atol=1e-5)
        kept = [m for i, m in enumerate(o.feature_maps[:-1]) if i % 5 != 0] + [o.feature_maps[-1]]
        for a, b in zip(kept, f, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
