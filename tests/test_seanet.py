"""SEANet encoder (+LSTM) and WavTokenizer's single VQ against the PyPI ``encodec==0.1.1`` classes.

encodec is a test-only oracle (it imports torchaudio at import time; tests/stubs stands in for it).
Same random weights on both sides (encodec's state dict loaded into ours), outputs compared with
``torch.equal``.
"""

from __future__ import annotations

import pytest
import torch

from tokenwave.nn.seanet import WAVTOKENIZER_RATIOS, SEANetEncoder, fold_encodec_state_dict, pad1d
from tokenwave.quantization.rvq import CodebookQuantizer

encodec_modules = pytest.importorskip("encodec.modules")
encodec_quantization = pytest.importorskip("encodec.quantization")

SEANET_KW = dict(
    channels=1,
    dimension=512,
    n_filters=32,
    n_residual_layers=1,
    activation="ELU",
    norm="weight_norm",
    kernel_size=7,
    last_kernel_size=7,
    residual_kernel_size=3,
    dilation_base=2,
    causal=False,
    pad_mode="reflect",
    true_skip=False,
    compress=2,
    lstm=2,
)
# spec 2.7 length list
SPEC_LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8, 100, 319, 320, 321, 599, 600, 601, 1000, 4799, 4800, 24000, 24001, 88800]
PARITY_LENGTHS = [1, 2, 3, 7, 8, 100, 319, 320, 321, 599, 600, 601, 1000, 4799, 6001]


def _randomize_weight_norm_(module: torch.nn.Module, seed: int) -> None:
    """Make every ``weight_g`` differ from ``||weight_v||`` so that folding is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module", params=sorted(WAVTOKENIZER_RATIOS))
def encoders(request):
    hop = request.param
    torch.manual_seed(hop)
    ref = encodec_modules.SEANetEncoder(ratios=list(WAVTOKENIZER_RATIOS[hop]), **SEANET_KW).eval()
    _randomize_weight_norm_(ref, hop)
    ours = SEANetEncoder.wavtokenizer(hop).eval()
    ours.load_encodec_state_dict(ref.state_dict())
    return hop, ref, ours


def test_encoder_structure(encoders):
    hop, ref, ours = encoders
    assert ours.hop_length == hop == int(ref.hop_length)
    n_ref = sum(p.numel() for n, p in ref.named_parameters() if not n.endswith("weight_g"))
    assert sum(p.numel() for p in ours.parameters()) == n_ref
    assert sum(p.numel() for p in ours.parameters()) == {320: 8_802_816, 600: 8_303_104}[hop] - sum(
        p.numel() for n, p in ref.named_parameters() if n.endswith("weight_g")
    )
    assert set(fold_encodec_state_dict(ref.state_dict())) == set(ours.state_dict())


def test_encoder_bit_identical(encoders):
    hop, ref, ours = encoders
    gen = torch.Generator().manual_seed(hop + 1)
    with torch.inference_mode():
        for length in PARITY_LENGTHS:
            x = 0.5 * torch.randn(2, 1, length, generator=gen)
            expected = ref(x)
            got = ours(x)
            assert got.shape == expected.shape == (2, 512, -(-length // hop))
            assert torch.equal(got, expected), (length, (got - expected).abs().max().item())


def test_output_length_matches_actual(encoders):
    hop, _, ours = encoders
    with torch.inference_mode():
        for length in SPEC_LENGTHS:
            t = ours(torch.zeros(1, 1, length).uniform_(-1, 1)).shape[-1]
            assert ours.output_length(length) == t == -(-length // hop), length
    lengths = torch.tensor(SPEC_LENGTHS)
    assert torch.equal(ours.output_length(lengths), -(-lengths // hop))


def _quantizer_pair(seed: int, dim: int = 512, bins: int = 4096, embed: torch.Tensor | None = None):
    ref = encodec_quantization.ResidualVectorQuantizer(
        dimension=dim, n_q=1, bins=bins, decay=0.99, kmeans_init=True, kmeans_iters=200
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    sd = ref.state_dict()
    assert set(sd) == {f"vq.layers.0._codebook.{b}" for b in ("inited", "cluster_size", "embed", "embed_avg")}
    sd["vq.layers.0._codebook.inited"] = torch.ones(1)
    sd["vq.layers.0._codebook.embed"] = torch.randn(bins, dim, generator=gen) if embed is None else embed
    sd["vq.layers.0._codebook.embed_avg"] = torch.randn(bins, dim, generator=gen)
    sd["vq.layers.0._codebook.cluster_size"] = torch.rand(bins, generator=gen)
    ref.load_state_dict(sd, strict=True)  # before any forward: a fresh kmeans_init codebook would run k-means
    ours = CodebookQuantizer(dim, bins).eval()
    ours.load_encodec_state_dict(ref.state_dict())
    return ref, ours


def test_quantizer_codes_and_decode_bit_identical(encoders):
    hop, _, encoder = encoders
    gen = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        z = encoder(0.5 * torch.randn(2, 1, 12001, generator=gen))
        # codebook built from (noisy) latent frames, so that the nearest codes are well spread
        frames = z.permute(0, 2, 1).reshape(-1, 512)
        embed = frames[torch.randint(frames.shape[0], (4096,), generator=gen)]
        embed = embed + 0.1 * (frames - frames.mean(0)).std() * torch.randn(embed.shape, generator=gen)
        ref, ours = _quantizer_pair(hop, embed=embed)
        for x in (z, z[:, :, :1], torch.randn(3, 512, 17, generator=gen)):
            expected = ref.encode(x, hop, None)  # [n_q=1, B, T]
            codes = ours.encode(x)
            assert codes.dtype == torch.int64
            assert torch.equal(codes, expected[0])
            assert torch.equal(ours.decode(codes), ref.decode(expected))
            assert torch.equal(ours.decode(codes), ref(x, hop).quantized)
        assert ours.encode(z).unique().numel() > 20, ours.encode(z).unique().numel()


def test_quantizer_ties_pick_same_index():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(16, 8, generator=gen)
    embed = torch.cat([base, base, base[:4] * 1.0])  # every codeword duplicated: exact ties
    ref, ours = _quantizer_pair(0, dim=8, bins=embed.shape[0], embed=embed)
    x = torch.cat([base.t()[None], torch.randn(1, 8, 16, generator=gen)], dim=-1)
    with torch.inference_mode():
        expected = ref.encode(x, 75)[0]
        assert torch.equal(ours.encode(x), expected)
        assert (expected[0, :16] < 16).all()  # the first of the tied rows


def test_pad1d_short_reflect():
    x = torch.arange(1.0, 3.0).view(1, 1, 2)
    assert torch.equal(pad1d(x, (3, 3), mode="reflect"), torch.tensor([[[0.0, 0.0, 2.0, 1.0, 2.0, 0.0, 0.0, 0.0]]]))
    with pytest.raises(ValueError):
        pad1d(x, (-1, 0))


def test_load_rejects_incomplete_weight_norm_pair():
    sd = {"model.0.conv.conv.weight_v": torch.zeros(32, 1, 7)}
    with pytest.raises(KeyError):
        fold_encodec_state_dict(sd)
