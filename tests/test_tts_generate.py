"""Higgs Audio v2 generation (tokenwave.tts.generate) and the TTS engine (tokenwave.tts.engine).

Oracle: transformers 5.23's ``HiggsAudioV2ForConditionalGeneration.generate`` on a tiny random model that
transformers builds and saves; ours is loaded from that folder with our loader. With the transformers rules
(``SamplingConfig(reference="transformers")``) the frames must be identical, alone and in a batch of prompts of
different lengths (transformers left-pads the text, we right-pad). The original's rules are checked against the
same run up to the first stream EOS (where the references differ, spec 9), by a replay of the exact sequence the
original feeds (one uncached forward), and by batch == one by one.

The tiny model's audio head is random with the stream-EOS rows scaled by ``EOS_SCALE``, so that items end by
themselves (at different steps) within a few dozen frames. Prompts are rendered with the synthetic tokenizer of
test_tts_prompt (the real special-token ids). Audio: the tiny random Higgs tokenizer of conftest.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from test_tts_prompt import _write_tokenizer
from tokenwave.api import CheckpointError, InvalidAudioError, ModelNotFoundError
from tokenwave.audio import load_audio
from tokenwave.tts.checkpoint import load_pretrained
from tokenwave.tts.delay import generated_codes
from tokenwave.tts.engine import TTSEngine, TTSRequest
from tokenwave.tts.generate import (
    LongTextPlan,
    generate,
    generate_long,
    prompt_inputs,
    render,
    stream,
    stream_long,
)
from tokenwave.tts.model import CacheOverflowError
from tokenwave.tts.prompt import (
    SPECIAL_TOKENS,
    Audio,
    PromptError,
    Reference,
    build_context,
    build_prompt,
    continue_prompt,
    render_original,
)
from tokenwave.tts.sampling import AudioStreamState, SamplingConfig, next_audio_frame
from tokenwave.tts.text import TextTokenizer, chunk_transcript, normalize_transcript

pytestmark = pytest.mark.usefixtures("one_thread")

K, BOS, EOS = 8, 1024, 1025
EOS_SCALE = 1.1
AUDIO_OUT, AUDIO_OUT_BOS, AUDIO_EOS = (SPECIAL_TOKENS[t] for t in ("<|AUDIO_OUT|>", "<|audio_out_bos|>",
                                                                  "<|audio_eos|>"))
EOT = SPECIAL_TOKENS["<|eot_id|>"]
GREEDY_T = SamplingConfig(do_sample=False, ras_window=None, reference="transformers")
GREEDY_O = SamplingConfig(do_sample=False, ras_window=None)
# RAS on with a window of 16 frames and 1 repeat allowed, so that it redraws often with this random model
SAMPLED = SamplingConfig(temperature=0.9, top_k=4, top_p=0.95, ras_window=16, ras_max_repeat=1)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """O(1) random weights (norm weights 1 + noise); the stream-EOS rows of the audio head scaled up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
        model.audio_lm_head.weight.view(K, EOS + 1, -1)[:, EOS] *= EOS_SCALE


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return _write_tokenizer(tmp_path_factory.mktemp("gen_tok") / "tok", merging=False)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return TextTokenizer.from_folder(tok_dir)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tok_dir):
    """transformers' tiny random model (real vocabulary and special ids, text head) saved by transformers, with the
    text tokenizer's files next to it; ours loaded from that folder."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = transformers.HiggsAudioV2Config(
        vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, num_codebooks=K, codebook_size=EOS + 1)
    torch.manual_seed(0)
    ref = transformers.HiggsAudioV2ForConditionalGeneration(cfg, use_text_head=True).eval()
    _randomize(ref, 0)
    ref.generation_config.ras_win_len = None
    folder = tmp_path_factory.mktemp("gen_model")
    ref.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / name, folder / name)
    return ref, load_pretrained(folder), folder


def _codes(frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 1024, (K, frames), generator=torch.Generator().manual_seed(seed))


def _prompts(tok):
    """Three prompts of different lengths: a cloned voice, plain, two described speakers."""
    voice = Reference("Hello there.", Audio(codes=_codes(5, 1)))
    return [render(build_prompt("Say this please.", voices=[voice]), tok),
            render(build_prompt("Hi."), tok),
            render(build_prompt("[SPEAKER0] One thing. [SPEAKER1] Another thing, longer."), tok)]


def _hf_generate(ref, inputs, max_new_tokens: int, **kwargs):
    """transformers' generate on a batch: text left-padded (pad 128001), prompt frames right-padded (1025)."""
    b = len(inputs)
    n = max(x.length for x in inputs)
    f = max(int(x.audio_mask.sum()) for x in inputs)
    ids, attention = torch.full((b, n), 128001), torch.zeros(b, n, dtype=torch.long)
    frames, frames_mask = torch.full((b, f, K), EOS), torch.zeros(b, f, dtype=torch.bool)
    for i, x in enumerate(inputs):
        ids[i, n - x.length:], attention[i, n - x.length:] = x.input_ids, 1
        mine = x.audio_codes[x.audio_mask]
        frames[i, :mine.shape[0]], frames_mask[i, :mine.shape[0]] = mine, True
    audio = dict(audio_input_ids=frames, audio_input_ids_mask=frames_mask) if f else {}  # no audio: none given
    with torch.no_grad():
        out = ref.generate(input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                           return_dict_in_generate=True, **audio, **kwargs)
    return out, f


# ---- against transformers --------------------------------------------------------------------------------------
def test_greedy_matches_transformers_generate(pair, tok):
    """Greedy, RAS off: every generated frame identical to transformers', alone and as a batch (text left-padded
    there, right-padded here), until each item's all-EOS frame; the codes equal transformers' rule on its block."""
    ref, ours, _ = pair
    prompts = _prompts(tok)[:2]
    inputs = [prompt_inputs(p, ours) for p in prompts]
    batch = generate(ours, prompts, sampling=GREEDY_T, max_frames=60)
    hf_batch, f_batch = _hf_generate(ref, inputs, 60, do_sample=False)
    for i, (p, x) in enumerate(zip(prompts, inputs)):
        alone = generate(ours, p, sampling=GREEDY_T, max_frames=60)
        hf, f = _hf_generate(ref, [x], 60, do_sample=False)
        want = hf.audio_sequences[0, f:].T
        print(f"prompt {i}: {x.length} positions, {want.shape[1]} frames, ends {alone.stop_reason}")
        assert alone.stop_reason == "audio_end" and alone.steps < 60 and (want[:, -1] == EOS).all()
        assert int(hf.sequences[0, -1]) == EOT  # transformers ended the item with its eos token
        assert torch.equal(alone.delayed, want)
        assert torch.equal(alone.codes, generated_codes(hf.audio_sequences[0].T, rule="transformers"))
        n = batch[i].delayed.shape[1]
        assert torch.equal(batch[i].delayed, hf_batch.audio_sequences[i, f_batch:f_batch + n].T)
        assert torch.equal(batch[i].delayed, alone.delayed)
    assert batch[0].steps != batch[1].steps


def test_sampling_with_ras_matches_transformers_generate(pair, tok):
    """Sampling (temperature, top-k, top-p) with RAS (redrawing often) from torch's global generator: the same
    random stream as transformers, so the same frames, for a batch whose items end at different steps."""
    ref, ours, _ = pair
    prompts = _prompts(tok)[:2]
    inputs = [prompt_inputs(p, ours) for p in prompts]
    conf = SamplingConfig(temperature=0.9, top_k=4, top_p=0.95, ras_window=16, ras_max_repeat=1,
                          reference="transformers")
    ref.generation_config.ras_win_len, ref.generation_config.ras_win_max_num_repeat = 16, 1
    try:
        torch.manual_seed(0)
        hf, f = _hf_generate(ref, inputs, 60, do_sample=True, temperature=0.9, top_k=4, top_p=0.95)
    finally:
        ref.generation_config.ras_win_len = None
    torch.manual_seed(0)
    ours_out = generate(ours, prompts, sampling=conf, max_frames=60)
    for i, r in enumerate(ours_out):
        assert torch.equal(r.delayed, hf.audio_sequences[i, f:f + r.delayed.shape[1]].T)
    print("sampled frames per item:", [r.delayed.shape[1] for r in ours_out], [r.stop_reason for r in ours_out],
          "RAS redraws:", [r.resampled for r in ours_out])
    assert all(r.resampled > 5 for r in ours_out)
    # both ended by themselves, at different steps (the one that ended first went on being sampled, as there)
    assert [r.stop_reason for r in ours_out] == ["audio_end"] * 2 and ours_out[0].steps != ours_out[1].steps


def test_original_rules_agree_with_transformers_until_the_first_eos(pair, tok):
    """The original's rules give transformers' frames up to the first frame holding a stream EOS; from there
    codebooks below the first EOS codebook i are EOS at once and the span ends 7 - i frames later (spec 9 row 9)."""
    ref, ours, _ = pair
    for p in _prompts(tok)[:2]:
        x = prompt_inputs(p, ours)
        hf, f = _hf_generate(ref, [x], 60, do_sample=False)
        want = hf.audio_sequences[0, f:].T
        first = int((want == EOS).any(0).nonzero()[0, 0])
        ours_o = generate(ours, p, sampling=GREEDY_O, max_frames=60)
        got = ours_o.delayed
        assert torch.equal(got[:, :first], want[:, :first])
        i = int((want[:, first] == EOS).nonzero()[0, 0])
        assert got[:, first].tolist() == [EOS] * i + want[i:, first].tolist()
        assert got.shape[1] == first + 1 + (K - 1 - i) and ours_o.stop_reason == "audio_end"
        assert ours_o.text_ids == (AUDIO_OUT, AUDIO_EOS)
        assert torch.equal(ours_o.codes, generated_codes(got, rule="original"))
        assert ours_o.codes.shape[1] == got.shape[1] - K - 1


# ---- the loop's own properties ---------------------------------------------------------------------------------
def test_batch_equals_one_by_one(pair, tok):
    """Prompts of different lengths in one right-padded batch give each item exactly what it gives alone: greedy
    with RAS off, and sampling with RAS on and one seed per item (per-item generators)."""
    _, ours, _ = pair
    prompts = _prompts(tok)
    assert len({p.input_ids.shape[0] for p in prompts}) == 3
    for conf, seeds in ((GREEDY_O, None), (SAMPLED, [3, 4, 5])):
        batch = generate(ours, prompts, sampling=conf, max_frames=48, seed=seeds)
        for i, p in enumerate(prompts):
            alone = generate(ours, p, sampling=conf, max_frames=48, seed=None if seeds is None else seeds[i])
            assert torch.equal(batch[i].delayed, alone.delayed), (conf.do_sample, i)
            assert torch.equal(batch[i].codes, alone.codes)
            assert (batch[i].text_ids, batch[i].stop_reason, batch[i].steps) == \
                (alone.text_ids, alone.stop_reason, alone.steps)
        print("steps per item:", [r.steps for r in batch], [r.stop_reason for r in batch], "RAS redraws:",
              [r.resampled for r in batch])
        assert conf.do_sample == (sum(r.resampled for r in batch) > 10)
        assert len({r.steps for r in batch}) > 1  # the items stopped at different steps


def test_seed_reproducibility(pair, tok):
    _, ours, _ = pair
    p = _prompts(tok)[1]
    a = generate(ours, p, sampling=SAMPLED, max_frames=30, seed=7)
    b = generate(ours, p, sampling=SAMPLED, max_frames=30, seed=7)
    c = generate(ours, p, sampling=SAMPLED, max_frames=30, seed=8)
    assert torch.equal(a.delayed, b.delayed) and not torch.equal(a.delayed, c.delayed)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(generate(ours, p, sampling=SAMPLED, max_frames=30, generator=gen).delayed, a.delayed)


def _script_text_head(model, tokens: list[int]):
    """Make the text head's argmax ``tokens[n]`` at its n-th call; record each call's input (last position)."""
    calls = []

    def hook(module, args, out):
        out = torch.full_like(out, -1e4)
        out[..., tokens[min(len(calls), len(tokens) - 1)]] = 1e4
        calls.append(args[0][0, -1].clone())
        return out

    return model.text_lm_head.register_forward_hook(hook), calls


def test_text_mode_switches_to_audio_as_the_original(pair, tok):
    """A prompt without <|audio_out_bos|>: the model writes text first (scripted text head: a word, then
    <|audio_out_bos|>), the audio span follows, and with continue_after_audio <|audio_eos|> is fed and text mode
    resumes until <|eot_id|>. A replay of the sequence the original feeds (prompt, word, <|audio_out_bos|>, every
    frame but the last as audio positions, <|audio_eos|>) in one uncached forward gives the same frames, and the
    text head saw the hidden states of the replay's text-mode positions (prompt end, word, <|audio_eos|>)."""
    _, ours, _ = pair
    p = render(build_prompt("Hi."), tok, force_audio=False)
    word = tok.encode("Sure")[0]
    handle, calls = _script_text_head(ours, [word, AUDIO_OUT_BOS, EOT])
    try:
        full = generate(ours, p, sampling=GREEDY_O, max_frames=80, continue_after_audio=True)
        seen = list(calls)
        assert len(seen) == 3
        calls.clear()
        short = generate(ours, p, sampling=GREEDY_O, max_frames=80)
        assert len(calls) == 2
    finally:
        handle.remove()
    n = full.delayed.shape[1]
    assert full.text_ids == (word, AUDIO_OUT_BOS, AUDIO_OUT, AUDIO_EOS, EOT) and full.stop_reason == "end_of_turn"
    assert full.steps == 2 + n + 1 and len(full.spans) == 1
    assert short.text_ids == full.text_ids[:-1] and short.stop_reason == "audio_end"
    assert torch.equal(short.delayed, full.delayed)

    x = prompt_inputs(p, ours)
    frames = full.delayed[:, :-1].T  # the last frame is never fed
    ids = torch.cat([x.input_ids, torch.tensor([word, AUDIO_OUT_BOS]), torch.full((n - 1,), AUDIO_OUT),
                     torch.tensor([AUDIO_EOS])])
    codes = torch.cat([x.audio_codes, torch.zeros(2, K, dtype=torch.long), frames, torch.zeros(1, K, dtype=torch.long)])
    mask = ids == AUDIO_OUT
    hidden = []
    handle = ours.text_lm_head.register_forward_hook(lambda m, args, out: hidden.append(args[0][0]))
    try:
        with torch.no_grad():
            logits = ours(ids[None], codes[None], mask[None]).audio_logits[0]
    finally:
        handle.remove()
    for got, pos in zip(seen, (x.length - 1, x.length, ids.shape[0] - 1)):
        assert torch.allclose(got, hidden[0][pos], atol=1e-5), pos
    state, replay = AudioStreamState.start(1), []
    for pos in range(x.length + 1, x.length + 1 + n):  # <|audio_out_bos|>, then each fed frame
        step = next_audio_frame(logits[pos][None], state, GREEDY_O)
        state = step.state
        replay.append(step.frame[0])
    assert torch.equal(torch.stack(replay, 1), full.delayed) and bool(step.ended)


def test_limits_and_errors(pair, tok):
    _, ours, folder = pair
    p = _prompts(tok)[0]
    r = generate(ours, p, sampling=GREEDY_O, max_frames=5)
    assert (r.stop_reason, r.steps, r.delayed.shape, r.codes.shape) == ("max_frames", 5, (K, 5), (K, 0))
    assert (r.delayed[:, 0] == BOS).all()
    n = p.input_ids.shape[0]
    r = generate(ours, p, sampling=GREEDY_O, max_frames=100, max_context=n + 9)
    assert (r.stop_reason, r.steps) == ("context_full", 10)
    with pytest.raises(CacheOverflowError, match=rf"prompt 0 has {n} positions.*context of {n} positions"):
        generate(ours, p, max_context=n)
    ctx = build_prompt("Say it.", voices=[Reference("Hello.", Audio(codes=_codes(4, 2)))])
    with pytest.raises(PromptError, match="render the prompt with expand=True"):
        generate(ours, render_original(ctx, tok, force_audio=True))
    with pytest.raises(PromptError, match="has no codes"):
        generate(ours, render(build_prompt("Say it.", voices=[Reference("Hello.", Audio(source="a.wav"))]), tok))
    plain = render(build_prompt("Hi."), tok, force_audio=False)
    with pytest.raises(PromptError, match="transformers rules only generate audio"):
        generate(ours, plain, sampling=GREEDY_T)
    no_head = load_pretrained(folder, text_head=False)
    with pytest.raises(PromptError, match="needs its text head"):
        generate(no_head, plain)
    with pytest.raises(ValueError, match="continue_after_audio"):
        generate(ours, p, sampling=GREEDY_T, continue_after_audio=True)
    with pytest.raises(ValueError, match="max_frames"):
        generate(ours, p, max_frames=0)
    with pytest.raises(ValueError, match="one per prompt"):
        generate(ours, [p, p], seed=[1])


def test_generate_long_keeps_earlier_chunks_in_context(pair, tok):
    """Chunk k's prompt is the context + every earlier chunk (user text, its generated codes as assistant audio) +
    chunk k; the codes are the chunks' codes concatenated; buffer_size bounds the chunks kept."""
    _, ours, _ = pair
    text = normalize_transcript("The first part is here. And a second part follows it. Then a third one ends.")
    voice = Reference("Hello there.", Audio(codes=_codes(5, 1)))
    long = generate_long(ours, tok, text, voices=[voice], chunk_method="word", max_words=5, sampling=GREEDY_O,
                         max_frames=40)
    assert long.chunks == tuple(chunk_transcript(text, "word", max_words=5)) and len(long.chunks) >= 3
    assert torch.equal(long.codes, torch.cat([r.codes for r in long.results], dim=1))
    context = build_context(text, voices=[voice])
    done = []
    for chunk, result in zip(long.chunks, long.results):
        again = generate(ours, render(continue_prompt(context, done, chunk), tok), sampling=GREEDY_O, max_frames=40)
        assert torch.equal(again.delayed, result.delayed) and again.prompt_length == result.prompt_length
        done.append((chunk, Audio(codes=result.codes)))
    lengths = [r.prompt_length for r in long.results]
    assert lengths == sorted(set(lengths))  # every chunk's prompt holds the earlier ones
    short = generate_long(ours, tok, text, voices=[voice], chunk_method="word", max_words=5, sampling=GREEDY_O,
                          max_frames=40, buffer_size=0)
    assert short.results[2].prompt_length == short.results[0].prompt_length + \
        len(tok.encode(long.chunks[2])) - len(tok.encode(long.chunks[0]))
    plan = LongTextPlan(tok, text, chunk_method="word", max_words=5)
    with pytest.raises(ValueError, match="needs the codes of chunks 0..0"):
        plan.prompt(1)


# ---- streaming -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reference", ["original", "transformers"])
def test_stream_equals_offline_decode(pair, tok, tiny_model, reference):
    """The streamed chunks (incremental de-delay + the tokenizer's streaming decode) concatenated equal decoding
    the offline result's codes within 1e-4 of the peak; the stream's codes equal generate's; stats are kept."""
    _, ours, _ = pair
    p = _prompts(tok)[0]
    conf = SamplingConfig(temperature=0.9, top_k=50, top_p=0.95, reference=reference)
    offline = generate(ours, p, sampling=conf, max_frames=70, seed=21)
    s = stream(ours, p, tiny_model, sampling=conf, max_frames=70, seed=21, chunk_frames=4)
    chunks = list(s)
    assert torch.equal(s.codes, offline.codes) and offline.num_frames > 20
    assert s.results[0].stop_reason == offline.stop_reason
    audio = torch.cat(chunks)
    want = tiny_model.decode(offline.codes[None]).audio[0, 0]
    assert audio.shape == want.shape == (offline.num_frames * tiny_model.hop_length,)
    err = float((audio - want).abs().max() / want.abs().max())
    st = s.stats
    print(f"{reference}: {len(chunks)} chunks, {offline.num_frames} frames, stream vs offline max|diff|/peak "
          f"{err:.2e}, time to first audio {st.time_to_first_audio_s * 1e3:.1f} ms (prefill "
          f"{st.prefill_s * 1e3:.1f} ms), total {st.elapsed_s * 1e3:.1f} ms")
    assert err <= 1e-4
    assert len(chunks) > 2 and st.chunks == len(chunks) and st.samples == audio.shape[0]
    assert st.frames == offline.num_frames and st.steps == offline.steps
    assert 0 < st.prefill_s <= st.time_to_first_audio_s < st.elapsed_s


@pytest.mark.parametrize("reference", ["original", "transformers"])
def test_stream_codes_of_cut_spans_equal_offline(pair, tok, tiny_model, reference):
    """Spans cut by max_frames around the delay length (no frame, one frame, a few) give the same codes streamed
    (incremental de-delay) as offline (each reference's trimming rule on the whole block)."""
    _, ours, _ = pair
    p = _prompts(tok)[1]
    conf = SamplingConfig(do_sample=False, ras_window=None, reference=reference)
    for max_frames in (1, 7, 8, 9, 10, 12):
        offline = generate(ours, p, sampling=conf, max_frames=max_frames)
        s = stream(ours, p, tiny_model, sampling=conf, max_frames=max_frames)
        audio = list(s)
        assert offline.stop_reason == "max_frames" and torch.equal(s.codes, offline.codes), max_frames
        assert sum(a.shape[0] for a in audio) == offline.num_frames * tiny_model.hop_length
        # original: revert (N - 7 frames), drop the first and last; transformers: drop the all-BOS frame, revert
        assert offline.num_frames == max(max_frames - K - 1 if reference == "original" else max_frames - K, 0)


def test_stream_long_equals_generate_long(pair, tok, tiny_model):
    _, ours, _ = pair
    text = "One small chunk here. Another chunk there."
    kw = dict(chunk_method="word", max_words=4, sampling=SAMPLED, max_frames=40, seed=3)
    long = generate_long(ours, tok, text, **kw)
    s = stream_long(ours, tok, text, tiny_model, **kw)
    audio = torch.cat(list(s))
    assert len(long.chunks) == 2 and torch.equal(s.codes, long.codes)
    want = tiny_model.decode(long.codes[None]).audio[0, 0]
    assert float((audio - want).abs().max()) <= 1e-4 * float(want.abs().max())


# ---- the engine ------------------------------------------------------------------------------------------------
def _write_wav(path, seconds: float, rate: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32), rate)


@pytest.fixture(scope="module")
def engine(pair, tiny_checkpoint, tmp_path_factory):
    _, _, folder = pair
    voices = tmp_path_factory.mktemp("voices")
    _write_wav(voices / "alice.wav", 0.6, 16000)
    (voices / "alice.txt").write_text("Hello there, this is Alice.\n")
    return TTSEngine(folder, tiny_checkpoint, voices_dir=voices)


def test_engine_generate_matches_the_loop(engine, pair, tok, tiny_model):
    """A cloned voice from a 16 kHz file (resampled to 24 kHz), greedy: the engine's codes are those of the loop on
    the prompt built by hand, its audio their decoding; a preset voice of the same file gives the same result."""
    _, ours, _ = pair
    wav = engine.voices_dir / "alice.wav"
    request = TTSRequest("Good morning to you", reference_audio=wav, reference_text="Hello there, this is Alice.",
                         sampling=GREEDY_O, max_frames=60)
    result = engine.generate(request)
    audio24, info = load_audio(wav, 24000)
    assert info.sample_rate == 16000 and info.resampled
    ref_codes = tiny_model.encode(torch.from_numpy(audio24)[None]).codes[0]
    voice = Reference("Hello there, this is Alice.", Audio(codes=ref_codes))
    want = generate(ours, render(build_prompt("Good morning to you.", voices=[voice]), tok), sampling=GREEDY_O,
                    max_frames=60)
    assert torch.equal(result.codes, want.codes) and result.codes.shape[1] > 0
    assert result.sample_rate == 24000
    assert torch.equal(result.audio, tiny_model.decode(want.codes[None]).audio[0, 0])
    st = result.stats
    assert (st.frames, st.chunks, st.stop_reasons, st.steps) == (want.num_frames, 1, (want.stop_reason,), want.steps)
    assert st.prompt_tokens == want.prompt_length and st.audio_s == result.audio.shape[0] / 24000
    assert st.elapsed_s >= st.generation_s + st.decode_s
    preset = engine.generate(TTSRequest("Good morning to you", voice="alice", sampling=GREEDY_O, max_frames=60))
    assert torch.equal(preset.codes, result.codes)
    assert engine.voices() == ["alice"]


def test_engine_stream_equals_generate(engine):
    request = TTSRequest("[SPEAKER0] Hello you.\n[SPEAKER1] Hello to you too.", speaker_descriptions={
        0: "calm female voice", 1: "deep male voice"}, seed=5, max_frames=60, chunk_method="speaker")
    plan = engine.plan(request)
    assert len(plan.chunks) == 2 and "SPEAKER1: deep male voice" in plan.prompt(0).text
    whole = engine.generate(request)
    s = engine.stream(request, chunk_frames=5)
    audio = torch.cat(list(s))
    assert torch.equal(s.codes, whole.codes) and whole.stats.chunks == 2
    err = float((audio - whole.audio).abs().max() / whole.audio.abs().max())
    print(f"engine stream vs generate max|diff|/peak {err:.2e}; time to first audio "
          f"{s.stats.time_to_first_audio_s * 1e3:.1f} ms of {s.stats.elapsed_s * 1e3:.1f} ms")
    assert err <= 1e-4 and s.stats.time_to_first_audio_s < s.stats.elapsed_s


def test_engine_errors_name_the_problem(engine, pair, tiny_checkpoint, tmp_path):
    _, _, folder = pair
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        TTSEngine(tmp_path / "nowhere", tiny_checkpoint)
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        TTSEngine(bare, tiny_checkpoint)
    with pytest.raises(ModelNotFoundError, match="no_audio_tokenizer"):
        TTSEngine(folder, tmp_path / "no_audio_tokenizer")

    def speak(**kw):
        return engine.generate(TTSRequest(**({"text": "Hi there.", "max_frames": 12} | kw)))

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio at all")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(4000, np.nan, dtype=np.float32), 24000, subtype="FLOAT")
    for path in (empty, junk, nan, tmp_path / "missing.wav"):
        with pytest.raises(InvalidAudioError, match=path.name):
            speak(reference_audio=path, reference_text="Hello.")
    with pytest.raises(PromptError, match="reference_audio and reference_text go together"):
        TTSRequest("Hi.", reference_audio=empty)
    with pytest.raises(PromptError, match=r"unknown speaker \[SPEAKER1\]"):
        speak(text="[SPEAKER0] Hi. [SPEAKER1] Bye.", speakers=["alice"])
    with pytest.raises(PromptError, match="unknown voice 'bob'.*available: alice"):
        speak(voice="bob")
    with pytest.raises(PromptError, match="give one of reference_audio, voice and speakers"):
        TTSRequest("Hi.", voice="alice", speakers=["alice"])
    with pytest.raises(PromptError, match="empty text"):
        TTSRequest("  ")
    small = TTSEngine(engine.model, engine.audio_tokenizer, text_tokenizer=engine.text_tokenizer, max_context=40)
    with pytest.raises(CacheOverflowError, match="leaves no room for generation in a context of 40"):
        small.generate(TTSRequest("Hi there.", voice=None))
    with pytest.raises(CacheOverflowError):
        small.stream(TTSRequest("Hi there."))
