"""WavTokenizer codec: geometry of both presets, lengths, parity with the encodec/vocos oracles end to end,
exact batching of mixed lengths, checkpoints, input errors, and the CLI / streaming / eval paths."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from tokenwave import load_tokenizer
from tokenwave.api import CheckpointError, InvalidAudioError, InvalidCodesError
from tokenwave.codecs.wavtokenizer import PRESETS, WavTokenizer, WavTokenizerConfig, preset

pytestmark = pytest.mark.usefixtures("one_thread")

# spec 2.7 length list
SPEC_LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8, 100, 319, 320, 321, 599, 600, 601, 1000, 4799, 4800, 24000, 24001]


def tiny_config(**changes) -> WavTokenizerConfig:
    base = dict(encoder_filters=4, latent_dim=16, codebook_size=64, backbone_dim=64, backbone_intermediate_dim=96,
                backbone_layers=2)
    return WavTokenizerConfig(**{**base, **changes})


def randomized(config: WavTokenizerConfig, seed: int = 0) -> WavTokenizer:
    """A model whose every tensor is away from its init, with a codebook spread over real latents."""
    torch.manual_seed(seed)
    model = WavTokenizer(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("scale.weight", "norm1.weight", "norm2.weight", "norm.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("gamma"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif not name.startswith("encoder"):
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        z = model.encoder(0.3 * torch.randn(4, 1, 24000, generator=gen))
        frames = z.permute(0, 2, 1).reshape(-1, config.latent_dim)
        embed = frames[torch.randint(frames.shape[0], (config.codebook_size,), generator=gen)]
        model.quantizer.codebook.embed.copy_(embed + 0.05 * frames.std() * torch.randn(embed.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    return randomized(tiny_config())


@pytest.fixture(scope="module")
def tiny40():
    return randomized(tiny_config(strides=(4, 5, 5, 6), n_fft=2400), seed=3)


def speechlike(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 24000
    f0 = 120 + 40 * torch.rand(1, generator=gen)
    x = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 8)) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (0.2 * x + 0.01 * torch.randn(n, generator=gen)).float()


# ---- geometry ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "hop", "n_fft", "encoder_params", "head_params"), [
    ("wavtokenizer-75", 320, 1280, 8_802_816, 985_858),
    ("wavtokenizer-40", 600, 2400, 8_303_104, 1_847_138),
])
def test_published_presets(name, hop, n_fft, encoder_params, head_params):
    config = preset(name)
    assert config is PRESETS[name]
    assert (config.hop_length, config.n_fft, config.codebook_size, config.latent_dim) == (hop, n_fft, 4096, 512)
    assert config.frame_rate == 24000 / hop and config.bandwidth == pytest.approx(24000 / hop * 12 / 1000)
    with torch.device("meta"):
        model = WavTokenizer(config)
    assert (model.num_codebooks, model.codebook_size, model.frame_rate) == (1, 4096, 24000 / hop)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # spec 1 counts the encoder with weight_g (one value per output channel of each of its 15 convs)
    weight_g = sum(m.conv.out_channels for m in model.encoder.modules() if hasattr(m, "padding_total"))
    assert count(model.encoder) + weight_g == encoder_params
    assert count(model.backbone) == 61_961_472 and count(model.backbone.pos_net) == 16_539_648
    assert count(model.head) == head_params
    assert model.quantizer.codebook.embed.shape == (4096, 512)
    assert tuple(model.head.out.weight.shape) == (n_fft + 2, 768)
    with pytest.raises(ValueError, match="unknown WavTokenizer preset"):
        preset("wavtokenizer-50")


def test_config_validation_and_json_round_trip():
    config = tiny_config()
    assert WavTokenizerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown WavTokenizer config fields"):
        WavTokenizerConfig.from_dict({**config.to_dict(), "dowmsamples": [8, 5, 4, 2]})
    with pytest.raises(ValueError, match="model_type"):
        WavTokenizerConfig.from_dict({**config.to_dict(), "model_type": "higgs_audio_v2_tokenizer"})
    for bad in (dict(n_fft=400), dict(strides=(2, 0)), dict(backbone_dim=48), dict(bandwidth_id=4)):
        with pytest.raises(ValueError, match="WavTokenizerConfig"):
            tiny_config(**bad)


# ---- lengths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny", "tiny40"])
def test_lengths_follow_spec(fixture, request):
    model = request.getfixturevalue(fixture)
    hop = model.hop_length
    for n in SPEC_LENGTHS:
        enc = model.encode(speechlike(n, n))
        frames = -(-n // hop)
        assert enc.codes.shape == (1, 1, frames) and model.num_frames(n) == frames, n
        dec = model.decode(enc)
        assert dec.audio.shape == (1, 1, frames * hop)
        assert model.decode(enc, crop=True).audio.shape[-1] == n


# ---- parity with the oracles ------------------------------------------------------------------------
def _oracles():
    from test_vocos import _vocos_modules

    encodec_modules = pytest.importorskip("encodec.modules")
    encodec_quantization = pytest.importorskip("encodec.quantization")
    models, heads = _vocos_modules()
    return encodec_modules, encodec_quantization, models, heads


@pytest.mark.parametrize("strides,n_fft", [((2, 4, 5, 8), 1280), ((4, 5, 5, 6), 2400)])
def test_whole_model_equals_encodec_and_vocos(strides, n_fft):
    """The reference pipeline (spec 3) assembled from the PyPI classes with our weights: codes and audio
    bit-identical. vocos' backbone has no pos_net: its ``embed`` is replaced by ``pos_net(embed(x))``."""
    encodec_modules, encodec_quantization, models, heads = _oracles()
    config = tiny_config(strides=strides, n_fft=n_fft)
    torch.manual_seed(11)
    ref_encoder = encodec_modules.SEANetEncoder(
        channels=1, dimension=config.latent_dim, n_filters=config.encoder_filters, n_residual_layers=1,
        ratios=list(reversed(strides)), activation="ELU", norm="weight_norm", kernel_size=7, last_kernel_size=7,
        residual_kernel_size=3, dilation_base=2, causal=False, pad_mode="reflect", true_skip=False, compress=2,
        lstm=2).eval()
    ours = randomized(config, seed=12)
    ours.encoder.load_encodec_state_dict(ref_encoder.state_dict())
    with torch.no_grad():  # codebook spread over the latents of the (new) encoder
        z = ours.encoder(torch.stack([speechlike(24000, s) for s in range(4)])[:, None])
        frames = z.permute(0, 2, 1).reshape(-1, config.latent_dim)
        ours.quantizer.codebook.embed.copy_(frames[torch.randperm(frames.shape[0])[: config.codebook_size]])
    ref_vq = encodec_quantization.ResidualVectorQuantizer(dimension=config.latent_dim, n_q=1,
                                                          bins=config.codebook_size).eval()
    ref_vq.load_state_dict({f"vq.layers.0._codebook.{k}": v for k, v in ours.quantizer.codebook.state_dict().items()})
    ref_backbone = models.VocosBackbone(input_channels=config.latent_dim, dim=config.backbone_dim,
                                        intermediate_dim=config.backbone_intermediate_dim,
                                        num_layers=config.backbone_layers, adanorm_num_embeddings=4).eval()
    missing, unexpected = ref_backbone.load_state_dict(ours.backbone.state_dict(), strict=False)
    assert not missing and all(k.startswith("pos_net.") for k in unexpected)
    ref_backbone.embed = torch.nn.Sequential(ours.backbone.embed, ours.backbone.pos_net)
    ref_head = heads.ISTFTHead(dim=config.backbone_dim, n_fft=n_fft, hop_length=config.hop_length,
                               padding="same").eval()
    ref_head.load_state_dict(ours.head.state_dict(), strict=True)
    with torch.inference_mode():
        for n in (1, 999, 24000, 30001):
            x = speechlike(n, n)[None]
            ref_codes = ref_vq.encode(ref_encoder(x[:, None]), config.frame_rate, None)  # [1, B, T]
            enc = ours.encode(x)
            assert torch.equal(enc.codes[:, 0], ref_codes[0]), n
            if n >= 24000:
                assert enc.codes.unique().numel() > 10  # a spread codebook: the comparison means something
            features = ref_vq.decode(ref_codes)
            for bw in (0, 2):
                want = ref_head(ref_backbone(features, bandwidth_id=torch.tensor([bw])))
                got = ours.decode(enc, bandwidth_id=bw).audio[:, 0]
                assert torch.equal(got, want), (n, bw, (got - want).abs().max().item())


# ---- batching ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batching", ["padded", "per_item"])
def test_mixed_length_batch_equals_items_alone(tiny, batching):
    lengths = [24000, 1, 321, 4000, 17777, 320]
    items = [speechlike(n, 100 + n) for n in lengths]
    tiny.batching = batching
    try:
        enc = tiny.encode(items)
        dec = tiny.decode(enc, crop=True)
    finally:
        tiny.batching = "auto"
    assert enc.lengths.tolist() == [-(-n // 320) for n in lengths]
    assert dec.lengths.tolist() == lengths
    for i, x in enumerate(items):
        alone = tiny.encode(x)
        assert torch.equal(enc.unbatch()[i], alone.codes[0]), i
        audio = tiny.decode(alone, crop=True).audio[0, 0]
        got = dec.unbatch()[i]
        if batching == "per_item":
            assert torch.equal(got, audio), i
        else:  # float summation order may differ with the padded shape
            assert (got - audio).abs().max() <= 1e-5 * audio.abs().max(), i
        assert not dec.audio[i, 0, lengths[i]:].any()
    assert not enc.codes[1, 0, 1:].any()  # padding frames are zeros


def test_padded_batch_masks_attention_and_norms(tiny):
    """Without the masks, padding changes an item's audio: the test above would catch their removal."""
    short, long_ = speechlike(3200, 1), speechlike(24000, 2)
    codes = [tiny.encode(short).codes[0], tiny.encode(long_).codes[0]]
    batch = torch.zeros(2, 1, codes[1].shape[-1], dtype=torch.long)
    batch[0, :, : codes[0].shape[-1]] = codes[0]
    batch[1] = codes[1]
    with torch.inference_mode():
        unmasked = tiny._decode(batch, None, 0)[0, 0, : 3200]
    alone = tiny.decode(codes[0]).audio[0, 0]
    assert (unmasked - alone).abs().max() > 1e-3 * alone.abs().max()


# ---- checkpoints ------------------------------------------------------------------------------------
def test_save_pretrained_loads_back_strictly(tiny, tmp_path):
    folder = tmp_path / "wt"
    tiny.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_tokenizer(folder)
    assert isinstance(loaded, WavTokenizer) and loaded.config == tiny.config
    assert loaded.config_hash == tiny.config_hash and loaded.model_id == str(folder)
    x = speechlike(9000, 5)
    assert torch.equal(loaded.encode(x).codes, tiny.encode(x).codes)
    assert torch.equal(loaded.decode(tiny.encode(x)).audio, tiny.decode(tiny.encode(x)).audio)
    bf16 = load_tokenizer(folder, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.quantizer.codebook.embed.dtype == torch.float32
    codes = tiny.encode(x)
    approx, exact = bf16.decode(codes).audio.float(), tiny.decode(codes).audio
    assert (approx - exact).norm() < 0.05 * exact.norm()  # bf16 weights, float32 iSTFT


def test_strict_loading_names_the_problem(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "wt"
    tiny.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "head.out.bias"}, config, "1 missing: head.out.bias"),
        "unexpected": ({**state, "extra.weight": torch.zeros(1)}, config, "1 unexpected: extra.weight"),
        "shape": ({**state, "head.out.bias": torch.zeros(3)}, config, "wrong shape: head.out.bias"),
        "field": (state, {**config, "vq_bins": 4096}, "unknown WavTokenizer config fields"),
        "geometry": (state, {**config, "backbone_layers": 3}, "missing"),
    }
    for name, (st, cfg, message) in cases.items():
        bad = tmp_path / name
        bad.mkdir()
        save_file(st, str(bad / "model.safetensors"))
        (bad / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(CheckpointError, match=message):
            load_tokenizer(bad)
    (tmp_path / "field" / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "field" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_tokenizer(tmp_path / "field")


# ---- errors -----------------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors(tiny):
    with pytest.raises(InvalidAudioError, match="16000 Hz"):
        tiny.encode(speechlike(100, 0), sample_rate=16000)
    with pytest.raises(InvalidAudioError, match="NaN"):
        tiny.encode(torch.tensor([0.0, float("nan")]))
    with pytest.raises(InvalidAudioError, match="empty"):
        tiny.encode(torch.zeros(0))
    with pytest.raises(InvalidAudioError, match="mono"):
        tiny.encode(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match="offers 0.45"):
        tiny.encode(speechlike(100, 0), bandwidth=2.0)
    with pytest.raises(ValueError, match=r"num_codebooks must lie in \[1, 1\]"):
        tiny.encode(speechlike(100, 0), num_codebooks=2)
    assert tiny.encode(speechlike(100, 0), bandwidth=0.45).codes.shape == (1, 1, 1)
    with pytest.raises(InvalidCodesError, match=r"\[0, 64\)"):
        tiny.decode(torch.tensor([[64]]))
    with pytest.raises(InvalidCodesError, match="2 codebooks"):
        tiny.decode(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(InvalidCodesError, match="integers"):
        tiny.decode(torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="bandwidth_id"):
        tiny.decode(torch.zeros(1, 1, 3, dtype=torch.long), bandwidth_id=4)
    with pytest.raises(ValueError, match="crop=True needs"):
        tiny.decode(torch.zeros(1, 1, 3, dtype=torch.long), crop=True)


def test_bandwidth_id_selects_the_adanorm_row(tiny):
    codes = tiny.encode(speechlike(4000, 9)).codes
    a0, a2 = tiny.decode(codes).audio, tiny.decode(codes, bandwidth_id=2).audio
    assert torch.equal(a0, tiny.decode(codes, bandwidth_id=0).audio)
    assert not torch.allclose(a0, a2)


# ---- the rest of tokenwave, unchanged ---------------------------------------------------------------
def test_cli_encode_decode_info_with_a_tiny_wavtokenizer(tiny, tmp_path):
    from tokenwave.audio import resampled_length
    from tokenwave.cli.main import app
    from tokenwave.codesfile import read_codes

    model = tmp_path / "model"
    tiny.save_pretrained(model)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    clips = {"a.wav": (speechlike(24000, 1), 24000), "sub/b.flac": (speechlike(16000, 2)[:11111], 16000)}
    for name, (x, sr) in clips.items():
        sf.write(src / name, x.numpy(), sr)
    runner = CliRunner()
    res = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "codes"), "--model", str(model), "-q"])
    assert res.exit_code == 0, res.output
    codes, header = read_codes(tmp_path / "codes" / "a.twc")
    assert header.num_codebooks == 1 and header.codebook_size == 64
    assert header.config_hash == tiny.config_hash and header.frame_rate == 75
    assert np.array_equal(codes, tiny.encode(clips["a.wav"][0]).codes[0].numpy())
    res = runner.invoke(app, ["decode", str(tmp_path / "codes"), "-o", str(tmp_path / "wav"), "--model", str(model),
                              "-q"])
    assert res.exit_code == 0, res.output
    info_a = sf.info(tmp_path / "wav" / "a.wav")
    assert (info_a.frames, info_a.samplerate) == (24000, 24000)
    assert sf.info(tmp_path / "wav" / "sub" / "b.wav").frames == resampled_length(11111, 16000, 24000)
    decoded = sf.read(tmp_path / "wav" / "a.wav", dtype="float32")[0]
    want = tiny.decode(tiny.encode(clips["a.wav"][0]), crop=True).audio[0, 0].numpy()
    assert np.abs(decoded - want).max() < 1e-6
    res = runner.invoke(app, ["info", str(model)])
    assert res.exit_code == 0 and "tokenwave (wavtokenizer)" in res.output and "attention pos_net" in res.output
    assert tiny.config_hash in res.output
    res = runner.invoke(app, ["encode", str(src / "a.wav"), "-o", str(tmp_path / "c2"), "--model", str(model),
                              "--bandwidth", "2"])
    assert res.exit_code == 2 and "offers 0.45" in res.output


def test_streaming_and_chunked_paths(tiny):
    from tokenwave.streaming import decode_chunked, decode_window, encode_chunked

    assert decode_window(tiny) == (1500, 150)
    x = speechlike(24000 * 3, 4)
    whole = tiny.encode(x).codes[0]
    chunked = encode_chunked(tiny, x.numpy(), chunk_seconds=1.0, context_seconds=0.5)
    assert chunked.shape == whole.shape
    assert (chunked == whole).float().mean() > 0.9
    audio = tiny.decode(whole).audio[0, 0]
    assert torch.equal(decode_chunked(tiny, whole), audio)  # fits one default window: one call
    windows = decode_chunked(tiny, whole, chunk_frames=75, context_frames=30)
    assert windows.shape == audio.shape


def test_eval_opens_a_wavtokenizer_folder(tiny, tmp_path):
    from tokenwave.eval.runner import open_codec

    tiny.save_pretrained(tmp_path / "m")
    codec = open_codec(str(tmp_path / "m"))
    assert (codec.bitrate, codec.frame_rate, codec.num_codebooks, codec.codebook_size) == (450, 75, 1, 64)


# ---- loading the reference code's checkpoints through load_tokenizer ---------------------------------
def test_load_tokenizer_reads_a_lightning_ckpt(tiny, tmp_path):
    from wavtokenizer_fixtures import write_lightning_checkpoint

    ckpt = write_lightning_checkpoint(tiny, tmp_path / "wavtokenizer_tiny.ckpt")
    x = speechlike(8000, 3)
    for config in (None, tiny.config):
        loaded = load_tokenizer(ckpt, config=config)
        assert isinstance(loaded, WavTokenizer) and loaded.model_id == str(ckpt)
        assert torch.equal(loaded.encode(x).codes, tiny.encode(x).codes)
        assert (loaded.decode(tiny.encode(x)).audio - tiny.decode(tiny.encode(x)).audio).abs().max() < 1e-6
    with pytest.raises(CheckpointError, match="does not match"):
        load_tokenizer(ckpt, config="wavtokenizer-75")
    with pytest.raises(ValueError, match="config= applies to WavTokenizer"):
        tiny.save_pretrained(tmp_path / "folder")
        load_tokenizer(tmp_path / "folder", config="wavtokenizer-75")


def test_published_names_resolve_to_hub_files(tiny, tmp_path, monkeypatch):
    from tokenwave.api import ModelNotFoundError
    from tokenwave.codecs.wavtokenizer import published
    from wavtokenizer_fixtures import write_lightning_checkpoint

    ckpt = write_lightning_checkpoint(tiny, tmp_path / "x.ckpt")
    asked = []

    def fake_fetch(repo, filename, *, revision=None):
        asked.append((repo, filename))
        return ckpt

    monkeypatch.setattr(published, "fetch", fake_fetch)
    # the tiny weights are not the published geometry: the preset check proves the preset was applied
    with pytest.raises(CheckpointError, match="does not match"):
        load_tokenizer("wavtokenizer-small-75")
    assert asked[-1] == ("novateur/WavTokenizer", "WavTokenizer_small_320_24k_4096.ckpt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_tokenizer("novateur/WavTokenizer-large-unify-40token")
    assert asked[-1] == ("novateur/WavTokenizer-large-unify-40token", "wavtokenizer_large_unify_600_24k.ckpt")
    assert load_tokenizer("someone/repo/x.ckpt").config == tiny.config  # any file: config from the shapes
    assert asked[-1] == ("someone/repo", "x.ckpt")
    with pytest.raises(ModelNotFoundError, match="several WavTokenizer checkpoints"):
        load_tokenizer("novateur/WavTokenizer")


def test_unreachable_hub_names_how_to_get_the_file(monkeypatch):
    from tokenwave.api import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="hf download novateur/WavTokenizer-medium-speech-75token"):
        load_tokenizer("wavtokenizer-medium-speech-75")


def test_padded_batch_encodes_near_tie_items_alone(tiny):
    """Codes are an argmax: where two codewords are (nearly) equally close, float summation order decides.
    A padded batch re-encodes items with such frames alone, so their codes still equal the item's own."""
    model = randomized(tiny_config(), seed=21)
    with torch.no_grad():  # every codeword doubled with a 1e-7 nudge: every frame is a near tie
        embed = model.quantizer.codebook.embed
        embed[32:] = embed[:32] * (1 + 1e-7)
    items = [speechlike(n, n) for n in (24000, 5000, 12345)]
    calls = []
    original = model.encoder.forward
    model.encoder.forward = lambda x: calls.append(x.shape) or original(x)
    model.batching = "padded"
    enc = model.encode(items)
    model.encoder.forward = original
    assert len(calls) == 3  # each item re-encoded alone
    for i, x in enumerate(items):
        assert torch.equal(enc.unbatch()[i], model.encode(x).codes[0])
    z = torch.randn(7, 16, generator=torch.Generator().manual_seed(0))
    codes, margin = model.quantizer.codebook.encode_with_margin(z)
    assert torch.equal(codes, model.quantizer.codebook.encode(z)) and bool((margin >= 0).all())
