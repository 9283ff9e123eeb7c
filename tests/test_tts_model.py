"""Higgs Audio v2 generation model (tokenwave.tts.model / config / checkpoint): parity with transformers 5.23 on a
tiny random model, the KV cache with right-padded batches, both checkpoint formats, the published geometry on the
meta device, and the errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tokenwave.api import CheckpointError, ModelNotFoundError
from tokenwave.tts import checkpoint as ckpt
from tokenwave.tts.config import HiggsGenConfig
from tokenwave.tts.model import CacheOverflowError, HiggsGenModel, KVCache, scatter_frames

pytestmark = pytest.mark.usefixtures("one_thread")

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ref_runs" / "fixtures"
if not REF.is_dir():
    REF = Path("/work/shared/reference/ref_runs/fixtures")

# Tiny geometry with its own small vocabulary: placeholder ids inside it, 8 codebooks of 16 codes + 2 stream ids.
V, OUT, DELAY, AUDIO_BOS, EOS_TEXT = 300, 290, 289, 288, 287
K, CB = 8, 16
TOL = 1e-5


def tiny_hf_config(**kw):
    transformers = pytest.importorskip("transformers")
    return transformers.HiggsAudioV2Config(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_codebooks=K, codebook_size=CB + 2, audio_stream_bos_id=CB,
        audio_stream_eos_id=CB + 1, audio_token_id=OUT, audio_delay_token_id=DELAY, audio_bos_token_id=AUDIO_BOS,
        pad_token_id=0, bos_token_id=1, eos_token_id=EOS_TEXT, **kw)


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """O(1) random weights everywhere; norm weights 1 + noise so that text and audio norms differ."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return model


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A random transformers model with the text head, saved by transformers, and ours loaded from that folder."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref = randomize_(transformers.HiggsAudioV2ForConditionalGeneration(tiny_hf_config(), use_text_head=True), 0)
    folder = tmp_path_factory.mktemp("hf_gen")
    ref.eval().save_pretrained(folder)
    ours = ckpt.load_pretrained(folder)
    return ref, ours, folder


def prompt(seed: int, n_text: tuple[int, int] = (5, 3), n_ref: int = 6, n_out: int = 3):
    """[T]-style ids: text, a reference audio span (frames + 7 delay-tail frames), text, <|audio_out_bos|>,
    ``n_out`` generated audio-out frames; and its compact frames ``[1, F, K]``."""
    gen = torch.Generator().manual_seed(seed)
    t = [torch.randint(3, 280, (n,), generator=gen).tolist() for n in n_text]
    ids = t[0] + [OUT] * n_ref + [DELAY] * 7 + t[1] + [AUDIO_BOS] + [OUT] * n_out
    ids = torch.tensor([ids])
    n_frames = int(((ids == OUT) | (ids == DELAY)).sum())
    frames = torch.randint(0, CB + 2, (1, n_frames, K), generator=gen)
    return ids, frames


def ref_logits(ref, ids, frames):
    with torch.no_grad():
        hs = ref.model(input_ids=ids, audio_input_ids=frames).last_hidden_state
        return ref.text_lm_head(hs), ref.audio_lm_head(hs).view(*hs.shape[:2], K, CB + 2)


def our_inputs(ids, frames):
    mask = (ids == OUT) | (ids == DELAY)
    return ids, scatter_frames(mask, frames), mask


# ---- parity with transformers ----------------------------------------------------------------------------------
def test_prefill_logits_match_transformers(hf_pair):
    ref, ours, _ = hf_pair
    ids, frames = prompt(1)
    rt, ra = ref_logits(ref, ids, frames)
    with torch.no_grad():
        t, a = ours(*our_inputs(ids, frames))
        default_mask = ours(ids, our_inputs(ids, frames)[1])  # audio mask from the ids
    assert t.shape == (1, ids.shape[1], V) and a.shape == (1, ids.shape[1], K, CB + 2)
    assert t.dtype == a.dtype == torch.float32
    d_text, d_audio = (t - rt).abs().max().item(), (a - ra).abs().max().item()
    print(f"prefill max|diff| vs transformers: text {d_text:.3g}, audio {d_audio:.3g} "
          f"(scale {rt.abs().max():.3g} / {ra.abs().max():.3g})")
    assert d_text <= TOL and d_audio <= TOL
    assert torch.equal(default_mask.text_logits, t) and torch.equal(default_mask.audio_logits, a)


def test_bf16_matches_transformers(hf_pair):
    """In bf16 the casts matter (RMSNorm normalises in float32 and casts back before the weight multiply; RoPE
    cos/sin in the model dtype): same prompt, both models in bf16."""
    _, _, folder = hf_pair
    transformers = pytest.importorskip("transformers")
    ref = transformers.HiggsAudioV2ForConditionalGeneration.from_pretrained(folder, use_text_head=True,
                                                                           dtype=torch.bfloat16).eval()
    ours = ckpt.load_pretrained(folder, dtype=torch.bfloat16)
    ids, frames = prompt(9)
    rt, ra = ref_logits(ref, ids, frames)
    with torch.no_grad():
        t, a = ours(*our_inputs(ids, frames))
    d_text, d_audio = (t - rt.float()).abs().max().item(), (a - ra.float()).abs().max().item()
    print(f"bf16 prefill max|diff| vs transformers: text {d_text:.3g}, audio {d_audio:.3g}")
    assert d_text <= 1e-3 and d_audio <= 1e-3  # bf16 resolution at these logits is ~2e-2


def test_cached_decode_matches_transformers(hf_pair):
    """Prefill up to <|audio_out_bos|>, then audio-only decode steps (no text ids, as [T] decodes) and one text step;
    every step's logits equal transformers' full forward at that position."""
    ref, ours, _ = hf_pair
    ids, frames = prompt(2, n_out=4)
    ids = torch.cat([ids, torch.tensor([[EOS_TEXT]])], dim=1)  # a text position after the audio-out frames
    rt, ra = ref_logits(ref, ids, frames)
    ids, codes, mask = our_inputs(ids, frames)
    n_pre = int((ids[0] == AUDIO_BOS).nonzero()) + 1
    cache = ours.new_cache(1, 64)
    assert tuple(cache.k.shape) == (1, 2, 2, 64, 8) and cache.v.shape == cache.k.shape
    with torch.no_grad():
        t, a = ours(ids[:, :n_pre], codes[:, :n_pre], mask[:, :n_pre], cache=cache, last_only=True)
        worst = max((t[:, 0] - rt[:, n_pre - 1]).abs().max(), (a[:, 0] - ra[:, n_pre - 1]).abs().max())
        for p in range(n_pre, ids.shape[1]):
            if mask[0, p]:
                t, a = ours(None, codes[:, p:p + 1], cache=cache)
            else:
                t, a = ours(ids[:, p:p + 1], cache=cache)
            worst = max(worst, (t[:, 0] - rt[:, p]).abs().max(), (a[:, 0] - ra[:, p]).abs().max())
    print(f"cached decode max|diff| vs transformers: {float(worst):.3g}")
    assert float(worst) <= TOL
    assert int(cache.lengths[0]) == ids.shape[1]


def test_save_transformers_format_loads_in_transformers(hf_pair, tmp_path):
    transformers = pytest.importorskip("transformers")
    _, ours, _ = hf_pair
    ours.save_pretrained(tmp_path, format="transformers", max_shard_bytes=40_000)
    assert (tmp_path / ckpt.INDEX_FILE).is_file() and len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    back = transformers.HiggsAudioV2ForConditionalGeneration.from_pretrained(tmp_path, use_text_head=True)
    theirs = back.state_dict()
    ours_sd = ours.state_dict()
    assert set(theirs) - {"model.embed_audio_tokens.audio_tokens_offsets"} == set(ours_sd)
    assert all(torch.equal(theirs[k], v) for k, v in ours_sd.items())
    assert back.config.codebook_size == CB + 2 and back.config.audio_delay_token_id == DELAY


# ---- KV cache and right-padded batches -------------------------------------------------------------------------
def test_right_padded_batch_matches_solo_runs(hf_pair):
    """Two prompts of different lengths in one right-padded batch (prefill + decode steps mixing an audio step for
    one sequence and a text step for the other) give each sequence the logits of running it alone."""
    _, ours, _ = hf_pair
    a_ids, a_frames = prompt(3, n_text=(7, 4), n_ref=9, n_out=2)
    b_ids, b_frames = prompt(4, n_text=(2, 1), n_ref=3, n_out=1)
    inputs = [our_inputs(a_ids, a_frames), our_inputs(b_ids, b_frames)]
    n = [x[0].shape[1] for x in inputs]
    assert n[0] != n[1]
    s = max(n)
    gen = torch.Generator().manual_seed(5)
    steps = [  # per step: (ids, codes, mask) of each sequence, length 1
        [(torch.tensor([[OUT]]), torch.randint(0, CB + 2, (1, 1, K), generator=gen), torch.tensor([[True]])),
         (torch.tensor([[17]]), torch.zeros(1, 1, K, dtype=torch.long), torch.tensor([[False]]))]
        for _ in range(3)
    ]

    def pad(x, fill):
        return torch.cat([x, x.new_full((1, s - x.shape[1], *x.shape[2:]), fill)], dim=1)

    with torch.no_grad():
        solo = []
        for i, (ids, codes, mask) in enumerate(inputs):
            cache = ours.new_cache(1, 40)
            outs = [ours(ids, codes, mask, cache=cache)]
            outs += [ours(*step[i], cache=cache) for step in steps]
            solo.append(outs)
        cache = KVCache.for_model(ours, 2, 40)
        batch_in = [torch.cat([pad(x[j], fill) for x in inputs]) for j, fill in ((0, 0), (1, 0), (2, False))]
        full = ours(*batch_in, cache=cache, lengths=torch.tensor(n))
        outs = [ours(*batch_in, cache=cache.__class__.for_model(ours, 2, 40), lengths=torch.tensor(n),
                     last_only=True)]
        assert cache.lengths.tolist() == n
        outs += [ours(*[torch.cat(parts) for parts in zip(*step)], cache=cache) for step in steps]
    worst = 0.0
    for i in range(2):
        for x_b, x_s in zip(full, solo[i][0]):  # prefill, every valid position
            worst = max(worst, float((x_b[i, :n[i]] - x_s[0]).abs().max()))
        for x_b, x_s in zip(outs[0], solo[i][0]):  # last_only prefill
            worst = max(worst, float((x_b[i, 0] - x_s[0, -1]).abs().max()))
        for o_b, o_s in zip(outs[1:], solo[i][1:]):  # decode steps
            for x_b, x_s in zip(o_b, o_s):
                worst = max(worst, float((x_b[i] - x_s[0]).abs().max()))
    print(f"right-padded batch vs solo max|diff|: {worst:.3g}")
    assert worst <= TOL
    assert cache.lengths.tolist() == [n[0] + 3, n[1] + 3]


def test_decode_audio_equals_forward(hf_pair):
    """The lean audio step (:meth:`HiggsGenModel.decode_audio`, what generation calls) gives the logits and the
    cache of :meth:`forward` fed the same frames, for aligned and right-padded batches, with a row not fed."""
    _, ours, _ = hf_pair
    a = our_inputs(*prompt(3, n_text=(7, 4), n_ref=9, n_out=2))
    b = our_inputs(*prompt(4, n_text=(2, 1), n_ref=3, n_out=1))
    gen = torch.Generator().manual_seed(9)
    for inputs in ([a, a], [a, b]):
        n = [x[0].shape[1] for x in inputs]
        s = max(n)
        batch_in = [torch.cat([torch.cat([x[j], x[j].new_zeros((1, s - x[j].shape[1], *x[j].shape[2:]))], dim=1)
                               for x in inputs]) for j in range(3)]
        lean, full = KVCache.for_model(ours, 2, 40), KVCache.for_model(ours, 2, 40)
        with torch.no_grad():
            for cache in (lean, full):
                ours(*batch_in, cache=cache, lengths=torch.tensor(n))
            for active in (None, [True, False], [False, True], None):
                frames = torch.randint(0, CB + 2, (2, K), generator=gen)
                got = ours.decode_audio(frames, lean, active=active)
                fed = [True, True] if active is None else active
                want = ours(torch.full((2, 1), OUT), frames[:, None], torch.ones(2, 1, dtype=torch.bool), cache=full,
                            lengths=torch.tensor(fed, dtype=torch.long)).audio_logits[:, 0]
                assert got.shape == (2, K, CB + 2) and got.dtype == torch.float32
                rows = torch.tensor(fed)
                assert torch.equal(got[rows], want[rows])
        assert lean.host_lengths == full.host_lengths == [n[0] + 3, n[1] + 3]
        assert torch.equal(lean.k, full.k) and torch.equal(lean.v, full.v)
    with pytest.raises(ValueError, match=r"frames must be \[B, K\]"):
        ours.decode_audio(torch.zeros(2, K + 1, dtype=torch.long), lean)
    with pytest.raises(ValueError, match="one flag per sequence"):
        ours.decode_audio(torch.zeros(2, K, dtype=torch.long), lean, active=[True])
    with pytest.raises(CacheOverflowError):
        full = KVCache.for_model(ours, 2, 1)
        full.advance([1, 0])
        ours.decode_audio(torch.zeros(2, K, dtype=torch.long), full)
    ours.decode_audio(torch.zeros(2, K, dtype=torch.long), full, active=[False, True])  # the full row is not fed
    assert full.host_lengths == [1, 1]


def test_cache_overflow_is_an_error_and_leaves_the_cache_unchanged(hf_pair):
    _, ours, _ = hf_pair
    ids, frames = prompt(6)
    cache = ours.new_cache(1, ids.shape[1] - 1)
    with pytest.raises(CacheOverflowError, match=rf"needs {ids.shape[1]} positions .* holds {ids.shape[1] - 1}"):
        ours(*our_inputs(ids, frames), cache=cache)
    assert int(cache.lengths[0]) == 0
    cache = ours.new_cache(1, ids.shape[1])
    with torch.no_grad():
        ours(*our_inputs(ids, frames), cache=cache)
    with pytest.raises(CacheOverflowError):
        ours(torch.tensor([[5]]), cache=cache)
    with pytest.raises(ValueError, match="holds 1 sequences"):
        ours(torch.tensor([[5], [6]]), cache=ours.new_cache(1, 8))


def test_input_errors(hf_pair):
    _, ours, _ = hf_pair
    with pytest.raises(ValueError, match="need audio_codes"):
        ours(torch.tensor([[5, OUT]]))
    with pytest.raises(ValueError, match=r"audio_codes out of range 0\.\.17"):
        ours(torch.tensor([[5, OUT]]), torch.full((1, 2, K), CB + 2))
    with pytest.raises(ValueError, match=r"\[B, S, K\]"):
        ours(torch.tensor([[5, OUT]]), torch.zeros(1, 2, K - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids out of range"):
        ours(torch.tensor([[V]]))
    with pytest.raises(ValueError, match="lengths"):
        ours(torch.tensor([[5, 6]]), lengths=torch.tensor([3]))


def test_dtype_choice_and_bf16_forward(hf_pair):
    _, ours, folder = hf_pair
    bf = ckpt.load_pretrained(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in bf.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in bf.parameters())
    assert {p.dtype for p in ckpt.load_pretrained(folder).parameters()} == {torch.float32}  # the stored dtype
    ids, frames = prompt(7)
    with torch.no_grad():
        t32, a32 = ours(*our_inputs(ids, frames))
        t16, a16 = bf(*our_inputs(ids, frames))
    assert a16.dtype == torch.float32  # logits always float32
    assert float((a16 - a32).abs().max()) < 0.1 * float(a32.abs().max())


# ---- checkpoint formats ----------------------------------------------------------------------------------------
def test_loader_builds_on_meta_and_assigns_the_tensors_it_reads(hf_pair, monkeypatch):
    """No second copy: the model is built on the meta device and its parameters are the very tensors read."""
    _, _, folder = hf_pair
    built_on_meta = []
    read: dict[str, int] = {}

    class Spy(HiggsGenModel):
        def __init__(self, config):
            super().__init__(config)
            built_on_meta.append(all(p.is_meta for p in self.parameters()))

    real_read = ckpt._read

    def spy_read(*args, **kwargs):
        for key, tensor in real_read(*args, **kwargs):
            read[key] = tensor.data_ptr()
            yield key, tensor

    monkeypatch.setattr(ckpt, "HiggsGenModel", Spy)
    monkeypatch.setattr(ckpt, "_read", spy_read)
    model = ckpt.load_pretrained(folder)
    assert built_on_meta == [True]
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == read


def test_original_format_gives_identical_tensors(hf_pair, tmp_path):
    ref, ours, _ = hf_pair
    ours.save_pretrained(tmp_path, format="original", max_shard_bytes=60_000)
    index = json.loads((tmp_path / ckpt.INDEX_FILE).read_text())
    expected = {_to_original(k) for k in ref.state_dict() if k != "model.embed_audio_tokens.audio_tokens_offsets"}
    assert set(index["weight_map"]) == expected and len(expected) == 2 * 14 + 5
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "higgs_audio" and data["text_config"]["model_type"] == "llama"
    assert data["audio_codebook_size"] == CB and data["audio_dual_ffn_layers"] == [0, 1]
    back = ckpt.load_pretrained(tmp_path)
    assert back.checkpoint_format == "original" and back.config == ours.config
    assert _same_tensors(back, ours)


def _to_original(key: str) -> str:
    """Spec 3.5's rule form, written independently of the code under test."""
    if key.startswith("model.embed_audio_tokens."):
        return "audio_codebook_embeddings.weight"
    if key.startswith("model."):
        return key[len("model."):]
    return "audio_decoder_proj." + key


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _write_original(folder: Path, state: dict[str, torch.Tensor], config: HiggsGenConfig, shards: int = 2):
    """An [O] folder written by hand (not by save_pretrained): config, ``shards`` shards and the index."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_original_dict("float32")))
    keys = list(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k].contiguous() for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (folder / ckpt.INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


def test_original_training_checkpoint_with_split_tensors(hf_pair, tmp_path):
    """Frozen/trainable halves (PartiallyFrozenEmbedding/Linear) are concatenated; rotary inv_freq is ignored."""
    _, ours, _ = hf_pair
    state = {_to_original(k): v for k, v in ours.state_dict().items()}
    for key, kind, pivot in (("embed_tokens", "embedding", 256), ("audio_decoder_proj.text_lm_head", "linear", 100),
                             ("audio_decoder_proj.audio_lm_head", "linear", 128)):
        w = state.pop(f"{key}.weight")
        state[f"{key}.{kind}_frozen.weight"], state[f"{key}.{kind}_trainable.weight"] = w[:pivot], w[pivot:]
    state["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    mapped, sd = ckpt.original_to_ours(state), ours.state_dict()
    assert set(mapped) == set(sd) and all(torch.equal(mapped[k], sd[k]) for k in sd)
    _write_original(tmp_path / "split", state, ours.config)
    assert _same_tensors(ckpt.load_pretrained(tmp_path / "split"), ours)

    del state["audio_decoder_proj.audio_lm_head.linear_trainable.weight"]
    _write_original(tmp_path / "half", state, ours.config)
    with pytest.raises(CheckpointError, match=r"audio_decoder_proj\.audio_lm_head\.weight has only its \['frozen'\]"):
        ckpt.load_pretrained(tmp_path / "half")


@pytest.mark.parametrize("fmt", ["original", "transformers"])
def test_mismatched_tensors_are_named(hf_pair, tmp_path, fmt):
    _, ours, _ = hf_pair
    state = ours.state_dict()
    if fmt == "original":
        state = {_to_original(k): v for k, v in state.items()}
    emb = "embed_tokens.weight" if fmt == "original" else "model.embed_tokens.weight"
    norm = ("" if fmt == "original" else "model.") + "layers.1.audio_input_layernorm.weight"
    state = dict(state)
    state.pop(norm)
    state[emb] = state[emb][:-1]
    state["layers.2.mlp.up_proj.weight" if fmt == "original" else "model.layers.2.mlp.up_proj.weight"] = torch.ones(2)
    if fmt == "original":
        _write_original(tmp_path, state, ours.config)
    else:
        from safetensors.torch import save_file

        (tmp_path / "config.json").write_text(json.dumps(ours.config.to_transformers_dict("float32")))
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        ckpt.load_pretrained(tmp_path)
    msg = str(err.value)
    assert f"1 missing: {norm}" in msg
    assert "layers.2.mlp.up_proj.weight" in msg.split("unexpected:")[1]
    assert f"{emb}: checkpoint ({V - 1}, 32) vs model ({V}, 32)" in msg


def test_text_head_choice(hf_pair, tmp_path):
    _, ours, folder = hf_pair
    no_head = ckpt.load_pretrained(folder, text_head=False)
    assert no_head.text_lm_head is None and not no_head.config.use_text_head
    ids, frames = prompt(8)
    with torch.no_grad():
        t, a = no_head(*our_inputs(ids, frames))
        assert t is None and torch.equal(a, ours(*our_inputs(ids, frames)).audio_logits)
    no_head.save_pretrained(tmp_path)
    assert not ckpt.load_pretrained(tmp_path).config.use_text_head
    with pytest.raises(CheckpointError, match="no text head"):
        ckpt.load_pretrained(tmp_path, text_head=True)
    with pytest.raises(ValueError, match="always has the text head"):
        no_head.save_pretrained(tmp_path / "o", format="original")


def test_folder_errors(hf_pair, tmp_path):
    _, ours, folder = hf_pair
    with pytest.raises(ModelNotFoundError):
        ckpt.load_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        ckpt.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(ours.config.to_transformers_dict()))
    with pytest.raises(CheckpointError, match="neither model.safetensors.index.json nor model.safetensors"):
        ckpt.load_pretrained(tmp_path)
    ours.save_pretrained(tmp_path / "sharded", max_shard_bytes=40_000)
    shard = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"names shard\(s\) that are not in .*{shard.name}"):
        ckpt.load_pretrained(tmp_path / "sharded")


# ---- config ----------------------------------------------------------------------------------------------------
def published_original_config() -> dict:
    return json.loads((REF / "higgs_gen_config_original.json").read_text())


def published_transformers_config() -> dict:
    """The [T] config.json of spec 3.4 (values from the converter)."""
    return {
        "architectures": ["HiggsAudioV2ForConditionalGeneration"], "model_type": "higgs_audio_v2",
        "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 0.125,
                            "high_freq_factor": 0.5, "original_max_position_embeddings": 1024},
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "num_codebooks": 8,
        "codebook_size": 1026, "audio_token_id": 128016, "audio_bos_token_id": 128013,
        "audio_delay_token_id": 128014, "audio_stream_bos_id": 1024, "audio_stream_eos_id": 1025,
        "bos_token_id": 1, "eos_token_id": 128009, "pad_token_id": 128001, "dtype": "bfloat16",
    }


def test_published_configs_of_both_formats():
    o = HiggsGenConfig.from_original_dict(published_original_config())
    assert o == HiggsGenConfig()  # our defaults are the published model
    t = HiggsGenConfig.from_transformers_dict(published_transformers_config(), use_text_head=True)
    same = ("rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_position_embeddings",
            "max_position_embeddings", "bos_token_id", "eos_token_id")
    assert t == o.replace(**{k: getattr(t, k) for k in same})
    assert (t.rope_low_freq_factor, t.rope_high_freq_factor, t.rope_original_max_position_embeddings) == \
        (0.125, 0.5, 1024)
    # the two llama3 parameterisations give bitwise the same frequencies, and transformers' own
    assert torch.equal(o.rope_inv_freq(), t.rope_inv_freq()) and o.rope_inv_freq().shape == (64,)
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    theirs, scale = ROPE_INIT_FUNCTIONS["llama3"](transformers.HiggsAudioV2Config(), "cpu")
    assert torch.equal(theirs, t.rope_inv_freq()) and scale == 1.0
    assert not torch.equal(o.rope_inv_freq(), o.replace(rope_type="default").rope_inv_freq())


def test_config_writers_round_trip_and_match_the_published_file():
    published = published_original_config()
    written = HiggsGenConfig().to_original_dict()
    for key, value in written.items():
        if key == "text_config":
            for k, v in value.items():
                assert published["text_config"][k] == v, k
        else:
            assert published[key] == value, key
    assert HiggsGenConfig.from_original_dict(written) == HiggsGenConfig()
    t = HiggsGenConfig.from_transformers_dict(published_transformers_config(), use_text_head=False)
    t_written = t.to_transformers_dict()
    assert t_written == published_transformers_config() | {"attention_dropout": 0.0}
    with pytest.raises(ValueError, match="cannot carry .*audio_in_token_id"):
        HiggsGenConfig(audio_in_token_id=5).to_transformers_dict()


@pytest.mark.parametrize("change, message", [
    ({"some_new_field": 1}, r"config has unknown field\(s\) \['some_new_field'\]"),
    ({"text_config": {"rope_foo": 2}}, r"text_config has unknown field\(s\) \['rope_foo'\]"),
    ({"audio_dual_ffn_layers": list(range(27))}, "must list every layer"),
    ({"use_rq_transformer": True}, "use_rq_transformer = True is not implemented"),
    ({"audio_adapter_type": "stack"}, "audio_adapter_type 'stack' is not implemented"),
    ({"text_config": {"attention_bias": True}}, "attention_bias true is not implemented"),
    ({"text_config": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}}, "rope type 'yarn' is not implemented"),
])
def test_config_errors(tmp_path, change, message):
    data = published_original_config()
    for key, value in change.items():
        if key == "text_config":
            data["text_config"].update(value)
        else:
            data[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_pretrained(tmp_path)


def test_transformers_config_unknown_field(tmp_path):
    data = published_transformers_config() | {"use_text_headz": True}
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['use_text_headz'\]"):
        HiggsGenConfig.from_transformers_dict(data)
    with pytest.raises(ValueError, match="model_type 'llama'"):
        HiggsGenConfig.from_transformers_dict(data | {"model_type": "llama"})


# ---- published geometry on the meta device --------------------------------------------------------------------
# Shapes of spec 3.5's table (original names; i = layer).
SPEC_SHAPES = [
    (r"embed_tokens\.weight", (128256, 3072)),
    (r"layers\.\d+\.self_attn\.[qo]_proj\.weight", (3072, 3072)),
    (r"layers\.\d+\.self_attn\.[kv]_proj\.weight", (1024, 3072)),
    (r"layers\.\d+\.(audio_)?mlp\.(gate|up)_proj\.weight", (8192, 3072)),
    (r"layers\.\d+\.(audio_)?mlp\.down_proj\.weight", (3072, 8192)),
    (r"layers\.\d+\.(audio_)?(input|post_attention)_layernorm\.weight", (3072,)),
    (r"norm\.weight", (3072,)),
    (r"audio_codebook_embeddings\.weight", (8208, 3072)),
    (r"audio_decoder_proj\.audio_lm_head\.weight", (8208, 3072)),
    (r"audio_decoder_proj\.text_lm_head\.weight", (128256, 3072)),
]


def test_published_geometry_on_meta_matches_the_index():
    config = HiggsGenConfig.from_original_dict(published_original_config())
    with torch.device("meta"):
        model = HiggsGenModel(config)
    assert all(p.is_meta for p in model.parameters()) and not list(model.buffers())
    index = json.loads((REF / "higgs_gen_model.safetensors.index.json").read_text())
    ours = {ckpt.our_key_to_original(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(index["weight_map"]) and len(ours) == 397
    for key, shape in ours.items():
        want = [s for pattern, s in SPEC_SHAPES if re.fullmatch(pattern, key)]
        assert want == [shape], key
    total = sum(p.numel() for p in model.parameters())
    print(f"published geometry: {len(ours)} tensors, {total} parameters")
    assert total == 5_771_283_456 == config.num_parameters()
    assert 2 * total == index["metadata"]["total_size"]  # bf16
    with torch.device("meta"):
        no_head = HiggsGenModel(config.replace(use_text_head=False))
    assert sum(p.numel() for p in no_head.parameters()) == 5_377_281_024 == config.num_parameters(text_head=False)
    assert len(no_head.state_dict()) == 396
    # the rename is a bijection between the two formats' key sets
    assert {ckpt.original_key_to_ours(k) for k in index["weight_map"]} == set(model.state_dict())
