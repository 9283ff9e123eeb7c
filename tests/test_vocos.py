"""Vocos / WavTokenizer decoder blocks against vocos 0.1.0 (test-only dependency) and hand-computed math."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tokenwave.dsp.istft import ISTFT, istft_output_length, istft_same
from tokenwave.nn.vocos import AdaLayerNorm, AttnBlock, ISTFTHead, ResnetBlock, VocosBackbone

# WavTokenizer (spec section 1): both published geometries share the backbone
WT_BACKBONE = dict(input_channels=512, dim=768, intermediate_dim=2304, num_layers=12, adanorm_num_embeddings=4)
WT_HEADS = {"frame75": dict(n_fft=1280, hop_length=320), "frame40": dict(n_fft=2400, hop_length=600)}


@functools.cache
def _import_vocos_modules():
    return _vocos_modules_uncached()


def _vocos_modules():
    if importlib.util.find_spec("vocos") is None if "vocos" not in sys.modules else False:
        pytest.skip("vocos==0.1.0 (test-only dependency) is not installed")
    return _import_vocos_modules()


def _vocos_modules_uncached():
    """vocos' ``models``, ``heads`` and ``spectral_ops`` without the package ``__init__``.

    ``vocos/__init__`` imports the pretrained wrapper (encodec, hf hub, torchaudio); the modules we
    compare with need only torch/numpy/scipy and, in ``heads``, two private torchaudio mel helpers
    used by the IMDCT head only. Those two names get a placeholder when torchaudio lacks them.
    """
    if importlib.util.find_spec("vocos") is None:
        pytest.skip("vocos==0.1.0 (test-only dependency) is not installed")
    try:
        import vocos  # noqa: F401
    except ImportError:
        spec = importlib.util.find_spec("vocos")
        pkg = types.ModuleType("vocos")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["vocos"] = pkg
    try:
        importlib.import_module("torchaudio.functional.functional")
    except ImportError:
        placeholder = types.ModuleType("torchaudio.functional.functional")

        def _unavailable(*args, **kwargs):
            raise NotImplementedError("placeholder for torchaudio mel helpers (unused by ISTFTHead)")

        placeholder._hz_to_mel = placeholder._mel_to_hz = _unavailable
        sys.modules["torchaudio.functional.functional"] = placeholder
    models = importlib.import_module("vocos.models")
    heads = importlib.import_module("vocos.heads")
    return models, heads


@pytest.fixture(scope="module")
def vocos_ref():
    return _vocos_modules()


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter away from its init (AdaLN rows differ, gamma non-trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if (
                name.endswith(("scale.weight", "norm1.weight", "norm2.weight", "norm.weight"))
                or name == "pos_net.5.weight"
            ):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("gamma"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def backbones(vocos_ref):
    models, _ = vocos_ref
    torch.manual_seed(0)
    ref = models.VocosBackbone(**WT_BACKBONE).eval()
    _randomize(ref, 1)
    ours = VocosBackbone(**WT_BACKBONE).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


@pytest.mark.parametrize(("batch", "frames"), [(1, 1), (2, 7), (1, 75)])
def test_backbone_equals_vocos(backbones, batch, frames):
    ours, ref = backbones
    x = torch.randn(batch, 512, frames, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        for bw in (0, 3):
            want = ref(x, bandwidth_id=torch.tensor([bw]))
            got = ours(x, bandwidth_id=torch.tensor([bw]))
            assert got.shape == (batch, frames, 768)
            assert torch.equal(got, want), _maxdiff(got, want)
        assert torch.equal(ours(x, bandwidth_id=3), want)


def test_backbone_per_item_bandwidth(backbones):
    ours, _ = backbones
    x = torch.randn(2, 512, 5, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        both = ours(x, bandwidth_id=torch.tensor([1, 2]))
        assert torch.equal(both[0], ours(x, bandwidth_id=1)[0])
        assert torch.equal(both[1], ours(x, bandwidth_id=torch.tensor(2))[1])
        assert not torch.allclose(both[0], ours(x, bandwidth_id=2)[0])


def test_backbone_keys_match_wavtokenizer():
    """State-dict keys and shapes of spec section 4.3 (backbone.* minus the prefix)."""
    bb = VocosBackbone(**WT_BACKBONE, pos_net=True)
    sd = bb.state_dict()
    assert sum(1 for k in sd if k.startswith("pos_net.")) == 44
    assert sum(p.numel() for p in bb.parameters()) == 61_961_472
    assert sum(p.numel() for n, p in bb.named_parameters() if n.startswith("pos_net.")) == 16_539_648
    shapes = {
        "embed.weight": (768, 512, 7),
        "norm.scale.weight": (4, 768),
        "norm.shift.weight": (4, 768),
        "convnext.11.gamma": (768,),
        "convnext.0.dwconv.weight": (768, 1, 7),
        "convnext.3.norm.scale.weight": (4, 768),
        "convnext.5.pwconv1.weight": (2304, 768),
        "convnext.5.pwconv2.weight": (768, 2304),
        "final_layer_norm.weight": (768,),
        "final_layer_norm.bias": (768,),
        "pos_net.0.conv1.weight": (768, 768, 3),
        "pos_net.4.norm2.bias": (768,),
        "pos_net.3.conv2.weight": (768, 768, 3),
        "pos_net.2.norm.weight": (768,),
        "pos_net.2.q.weight": (768, 768, 1),
        "pos_net.2.k.bias": (768,),
        "pos_net.2.v.weight": (768, 768, 1),
        "pos_net.2.proj_out.weight": (768, 768, 1),
        "pos_net.5.weight": (768,),
        "pos_net.5.bias": (768,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert list(sd)[-1].startswith("pos_net.5")  # created last, as in the reference


def test_backbone_with_pos_net_equals_vocos_after_pos_net(vocos_ref):
    """Spec 5 oracle: vocos' backbone with ``embed`` replaced by ``pos_net(embed(x))``."""
    models, _ = vocos_ref
    small = dict(input_channels=16, dim=64, intermediate_dim=96, num_layers=3, adanorm_num_embeddings=4)
    ours = VocosBackbone(**small, pos_net=True).eval()
    _randomize(ours, 5)
    ref = models.VocosBackbone(**small).eval()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and all(k.startswith("pos_net.") for k in unexpected) and len(unexpected) == 44
    ref.embed = torch.nn.Sequential(ours.embed, ours.pos_net)
    x = torch.randn(2, 16, 9, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        assert torch.equal(ours(x, bandwidth_id=torch.tensor([2])), ref(x, bandwidth_id=torch.tensor([2])))


@pytest.mark.parametrize("cfg", sorted(WT_HEADS))
@pytest.mark.parametrize("frames", [1, 2, 5, 40, 75])
def test_head_equals_vocos(vocos_ref, cfg, frames):
    _, heads = vocos_ref
    kw = WT_HEADS[cfg]
    torch.manual_seed(0)
    ref = heads.ISTFTHead(dim=768, padding="same", **kw).eval()
    _randomize(ref, 2)
    ours = ISTFTHead(dim=768, padding="same", **kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert sorted(ours.state_dict()) == ["istft.window", "out.bias", "out.weight"]
    assert ours.out.out_features == kw["n_fft"] + 2
    x = torch.randn(2, frames, 768, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        want, got = ref(x), ours(x)
    assert got.shape == (2, frames * kw["hop_length"]) == want.shape
    assert ours.output_length(frames) == frames * kw["hop_length"]
    assert torch.equal(got, want), _maxdiff(got, want)


def test_head_center_padding_equals_vocos(vocos_ref):
    _, heads = vocos_ref
    ref = heads.ISTFTHead(dim=32, n_fft=64, hop_length=16, padding="center").eval()
    _randomize(ref, 3)
    ours = ISTFTHead(dim=32, n_fft=64, hop_length=16, padding="center").eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = ours(x)
        assert torch.equal(got, ref(x))
    assert got.shape[-1] == ours.output_length(10) == 9 * 16


@pytest.mark.parametrize(("n_fft", "hop"), [(1280, 320), (2400, 600), (64, 16)])
def test_istft_same_inverts_same_padded_stft(n_fft, hop):
    """Analysis with the same framing (pad (n_fft - hop) / 2 both ends) is inverted on the kept samples."""
    frames = 6
    pad = (n_fft - hop) // 2
    x = torch.randn(1, frames * hop, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    padded = F.pad(x, (pad, pad))
    spec = torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)
    assert spec.shape[-1] == frames
    y = istft_same(spec, n_fft, hop, window)
    assert y.shape == x.shape and istft_output_length(frames, n_fft, hop) == frames * hop
    torch.testing.assert_close(y, x, rtol=0, atol=1e-9)


def test_istft_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ISTFT(64, 16, padding="valid")
    with pytest.raises(ValueError):
        ISTFT(64, 16, win_length=32, padding="same")
    with pytest.raises(ValueError):  # hop == n_fft with Hann: envelope is zero at the frame edges
        ISTFT(64, 64)(torch.ones(1, 33, 3, dtype=torch.complex64))


def test_adalayernorm_by_hand():
    ln = AdaLayerNorm(3, 4)
    with torch.no_grad():
        ln.scale.weight.copy_(torch.arange(12.0).reshape(3, 4))
        ln.shift.weight.copy_(-torch.arange(12.0).reshape(3, 4))
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    norm = (x - 2.5) / math.sqrt(1.25 + 1e-6)
    torch.testing.assert_close(ln(x, 2), norm * torch.arange(8.0, 12.0) - torch.arange(8.0, 12.0))


def test_attn_block_by_hand():
    """C = 32 (one channel per group), T = 3: every step written out with explicit loops."""
    torch.manual_seed(0)
    blk = AttnBlock(32).eval()
    _randomize(blk, 4)
    x = torch.randn(1, 32, 3, dtype=torch.float64)
    blk = blk.double()
    with torch.no_grad():
        got = blk(x)
        # GroupNorm with 32 groups of 1 channel = per-channel normalisation over time (biased variance)
        mean = x.mean(dim=2, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=2, keepdim=True)
        h = (x - mean) / torch.sqrt(var + 1e-6) * blk.norm.weight[None, :, None] + blk.norm.bias[None, :, None]

        def conv1x1(m, t):
            return torch.einsum("oc,bct->bot", m.weight[:, :, 0], t) + m.bias[None, :, None]

        q, k, v = conv1x1(blk.q, h), conv1x1(blk.k, h), conv1x1(blk.v, h)
        T, C = 3, 32
        o = torch.zeros(1, C, T, dtype=torch.float64)
        for i in range(T):
            logits = [sum(q[0, c, i] * k[0, c, j] for c in range(C)) / math.sqrt(C) for j in range(T)]
            m = max(logits)
            e = [math.exp(float(s - m)) for s in logits]
            a = [ej / sum(e) for ej in e]
            for c in range(C):
                o[0, c, i] = sum(v[0, c, j] * a[j] for j in range(T))
        want = x + conv1x1(blk.proj_out, o)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_attn_block_matches_sdpa_and_is_per_item():
    blk = AttnBlock(64).eval()
    _randomize(blk, 7)
    x = torch.randn(2, 64, 11, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        h = blk.norm(x)
        q, k, v = (m(h).transpose(1, 2).unsqueeze(1) for m in (blk.q, blk.k, blk.v))
        o = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        torch.testing.assert_close(blk(x), x + blk.proj_out(o), rtol=0, atol=1e-5)
        # no mixing across the batch (bitwise equality is up to the BLAS kernel choice for the batch size)
        torch.testing.assert_close(blk(x)[1:], blk(x[1:]), rtol=0, atol=1e-5)


def test_resnet_block_by_hand_and_dropout_only_in_training():
    blk = ResnetBlock(32, dropout=0.1).eval()
    _randomize(blk, 9)
    x = torch.randn(2, 32, 6, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        h = F.group_norm(x, 32, blk.norm1.weight, blk.norm1.bias, eps=1e-6)
        h = F.conv1d(F.silu(h), blk.conv1.weight, blk.conv1.bias, padding=1)
        h = F.group_norm(h, 32, blk.norm2.weight, blk.norm2.bias, eps=1e-6)
        h = F.conv1d(F.silu(h), blk.conv2.weight, blk.conv2.bias, padding=1)
        torch.testing.assert_close(blk(x), x + h, rtol=0, atol=1e-5)
        assert not any(n.startswith("temb") or "shortcut" in n for n, _ in blk.named_parameters())
        blk.train()
        assert not torch.equal(blk(x), x + h)


@pytest.mark.parametrize("cfg", sorted(WT_HEADS))
def test_full_decoder_shapes(cfg):
    """Features (B, 512, T) -> backbone with pos_net -> head: audio (B, T * hop) (spec 2.7), tiny widths."""
    kw = WT_HEADS[cfg]
    bb = VocosBackbone(
        input_channels=512, dim=64, intermediate_dim=96, num_layers=2, adanorm_num_embeddings=4, pos_net=True
    ).eval()
    head = ISTFTHead(64, padding="same", **kw).eval()
    for frames in (1, 40):
        with torch.inference_mode():
            audio = head(bb(torch.randn(2, 512, frames), bandwidth_id=torch.tensor([0])))
        assert audio.shape == (2, frames * kw["hop_length"])
        assert torch.isfinite(audio).all()


def test_conditioned_backbone_needs_bandwidth_id():
    bb = VocosBackbone(input_channels=8, dim=32, intermediate_dim=48, num_layers=1, adanorm_num_embeddings=2)
    with pytest.raises(ValueError):
        bb(torch.randn(1, 8, 4))
    plain = VocosBackbone(input_channels=8, dim=32, intermediate_dim=48, num_layers=1)
    assert plain(torch.randn(1, 8, 4)).shape == (1, 4, 32)
