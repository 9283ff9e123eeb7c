"""Delay pattern and audio-frame sampling of the Higgs Audio v2 TTS model (tokenwave.tts.delay / .sampling).

Oracles: transformers 5.23 where the logic exists there (the processor's delay-pattern helpers, the logits
warpers, and a whole ``HiggsAudioV2ForConditionalGeneration.generate`` run with scripted audio logits);
hand-computed cases and the frames recorded by the reference runs (spec ``ref_runs/out``) for the original
(boson_multimodal 0.1.1), which cannot run next to transformers 5.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tokenwave.api import InvalidCodesError
from tokenwave.tts.delay import (
    STREAM_BOS_ID,
    STREAM_EOS_ID,
    DelayReverter,
    build_delay_pattern,
    generated_codes,
    revert_delay_pattern,
)
from tokenwave.tts.sampling import (
    AudioStreamState,
    SamplingConfig,
    forced_stream_ids,
    make_generator,
    next_audio_frame,
    process_logits,
    repetition_counts,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BOS, EOS = STREAM_BOS_ID, STREAM_EOS_ID
V = 1026

# serve_engine.generate of the original (ref_runs/05_gen_boson.py: tiny random model, greedy, RAS 7/2, codebook-0
# EOS logit forced from the 15th audio step): the generated delayed block, one line per column (codebooks 0..7).
ORIGINAL_RUN = """
1024 1024 1024 1024 1024 1024 1024 1024
21 1024 1024 1024 1024 1024 1024 1024
693 22 1024 1024 1024 1024 1024 1024
697 1003 311 1024 1024 1024 1024 1024
529 188 440 793 1024 1024 1024 1024
190 610 887 853 212 1024 1024 1024
862 1 594 241 529 305 1024 1024
425 1022 42 382 957 461 911 1024
21 231 561 114 450 407 806 924
166 742 521 228 324 145 872 305
986 523 575 524 98 498 902 639
472 329 434 905 952 844 138 811
343 582 461 600 284 973 841 787
71 960 838 376 65 673 334 739
1025 225 893 652 576 992 246 537
1025 983 990 899 565 817 661 1025
1025 1025 613 690 201 441 8 390
1025 1025 1025 353 450 674 217 130
1025 1025 1025 1025 893 664 185 969
1025 1025 1025 1025 1025 689 1020 813
1025 1025 1025 1025 1025 1025 112 1017
1025 1025 1025 1025 1025 1025 1025 982
"""
# transformers generate (ref_runs/04_gen_hf.py: tiny random model, greedy, no RAS, codebook-0 EOS logit forced from
# the 15th step): the generated frames, and the text tokens it appended.
TRANSFORMERS_RUN = """
1024 1024 1024 1024 1024 1024 1024 1024
23 1024 1024 1024 1024 1024 1024 1024
223 568 1024 1024 1024 1024 1024 1024
701 984 105 1024 1024 1024 1024 1024
327 23 929 986 1024 1024 1024 1024
558 568 698 939 641 1024 1024 1024
294 984 389 644 179 902 1024 1024
701 647 98 986 878 825 977 1024
423 999 583 213 987 263 874 103
370 1001 990 541 111 678 671 1021
708 236 214 830 600 350 567 609
633 294 23 102 798 140 183 302
901 929 231 51 851 735 882 81
50 901 1004 115 362 738 920 988
1025 1024 132 724 385 121 389 959
1025 959 58 627 831 933 233 732
1025 1025 328 369 883 400 240 426
1025 1025 1025 76 249 881 671 594
1025 1025 1025 1025 566 400 423 985
1025 1025 1025 1025 1025 453 550 598
1025 1025 1025 1025 1025 1025 407 925
1025 1025 1025 1025 1025 1025 1025 149
1025 1025 1025 1025 1025 1025 1025 1025
"""
TRANSFORMERS_RUN_TEXT = [128016] * 14 + [128014] * 8 + [128009]


def _table(text: str) -> torch.Tensor:
    """Columns listed one per line -> [K, N]."""
    return torch.tensor([[int(x) for x in line.split()] for line in text.strip().splitlines()]).T


def _codes(*shape: int, seed: int, high: int = 1024) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def _processor_helpers():
    """transformers' HiggsAudioV2Processor delay helpers, called without building a processor (they only read the
    two stream ids from it)."""
    pytest.importorskip("transformers")
    from transformers.models.higgs_audio_v2.processing_higgs_audio_v2 import HiggsAudioV2Processor

    ns = SimpleNamespace(audio_stream_bos_id=BOS, audio_stream_eos_id=EOS)
    return (lambda x: HiggsAudioV2Processor.build_delay_pattern(ns, x),
            lambda x: HiggsAudioV2Processor.revert_delay_pattern(ns, x))


# ---------------------------------------------------------------------------------------------------- delay


def test_build_matches_the_spec_example():
    """Spec section 5's 4x3 toy (B/P = bos/eos fill), and the marked layout's corners for 8 codebooks."""
    b, p = 100, 101
    got = build_delay_pattern(torch.arange(1, 13).view(4, 3), codebook_size=100, stream_markers=False)
    assert got.tolist() == [[1, 2, 3, p, p, p], [b, 4, 5, 6, p, p], [b, b, 7, 8, 9, p], [b, b, b, 10, 11, 12]]
    codes = _codes(8, 5, seed=0)
    marked = build_delay_pattern(codes)
    assert marked.shape == (8, 5 + 9)
    for k in range(8):
        row = marked[k].tolist()
        assert row == [BOS] * (k + 1) + codes[k].tolist() + [EOS] * (8 - k)


@pytest.mark.parametrize("k,t", [(8, 11), (8, 1), (3, 6), (1, 4)])
def test_build_and_revert_match_transformers(k, t):
    tf_build, tf_revert = _processor_helpers()
    codes = _codes(3, k, t, seed=k * 10 + t)
    bare = build_delay_pattern(codes, stream_markers=False)
    assert torch.equal(bare, tf_build(codes))
    ends = torch.full((3, k, 1), BOS), torch.full((3, k, 1), EOS)
    marked = build_delay_pattern(codes)
    assert torch.equal(marked, tf_build(torch.cat([ends[0], codes, ends[1]], -1)))  # what the processor feeds
    # transformers reverts one item, frames first
    for item_marked, item_bare in zip(marked, bare):
        assert torch.equal(revert_delay_pattern(item_marked, stream_markers=False), tf_revert(item_marked.T).T)
        assert torch.equal(revert_delay_pattern(item_bare, stream_markers=False), tf_revert(item_bare.T).T)


@pytest.mark.parametrize("t", [0, 1, 2, 17])
@pytest.mark.parametrize("markers", [True, False])
def test_round_trip(t, markers):
    codes = _codes(2, 8, t, seed=t)
    delayed = build_delay_pattern(codes, stream_markers=markers)
    assert delayed.shape == (2, 8, t + (9 if markers else 7))
    assert torch.equal(revert_delay_pattern(delayed, stream_markers=markers), codes)
    assert torch.equal(revert_delay_pattern(delayed[1], stream_markers=markers), codes[1])
    assert delayed.dtype == codes.dtype


@pytest.mark.parametrize("markers", [True, False])
def test_streaming_revert_emits_each_frame_when_complete(markers):
    codes = _codes(8, 9, seed=3)
    delayed = build_delay_pattern(codes, stream_markers=markers)
    n = delayed.shape[1]
    rev = DelayReverter(8, stream_markers=markers)
    outs = []
    for c in range(n):
        out = rev.push(delayed[:, c], final=c == n - 1)
        # column c completes undelayed frame c - 7; with markers frame 0 (BOS) and the last (EOS) are withheld
        frame = c - 7
        expect_one = frame >= 0 and not (markers and (frame == 0 or c == n - 1))
        assert out.shape == (8, 1 if expect_one else 0), c
        if expect_one:
            assert torch.equal(out[:, 0], codes[:, frame - 1 if markers else frame])
        outs.append(out)
    assert torch.equal(torch.cat(outs, -1), codes)
    with pytest.raises(RuntimeError, match="final=True"):
        rev.push(delayed[:, 0])
    rev.reset()
    assert torch.equal(rev.push_many(delayed, final=True), codes)


def test_streaming_revert_batched():
    codes = _codes(3, 4, 6, seed=4)
    delayed = build_delay_pattern(codes)
    rev = DelayReverter(4)
    got = torch.cat([rev.push(delayed[..., c], final=c == delayed.shape[-1] - 1) for c in range(delayed.shape[-1])],
                    -1)
    assert torch.equal(got, codes)
    rev = DelayReverter(4)
    rev.push(delayed[..., 0])
    with pytest.raises(InvalidCodesError, match="batch shape"):
        rev.push(delayed[0, :, 1])


def test_generated_codes_original_run():
    """The original serve engine's block: 22 frames -> 13 codes per codebook (logged), taken diagonally and clipped."""
    block = _table(ORIGINAL_RUN)
    codes = generated_codes(block, rule="original")
    assert codes.shape == (8, 13)
    assert codes[0].tolist() == block[0, 1:14].tolist()
    assert codes[7].tolist() == [min(x, 1023) for x in block[7, 8:21].tolist()]  # holds a sampled EOS, clipped
    assert 1023 in codes[7].tolist()
    rev = DelayReverter(8)
    streamed = rev.push_many(block, final=True)
    assert torch.equal(streamed.clamp(0, 1023), codes)
    assert torch.equal(revert_delay_pattern(block).clamp(0, 1023), codes)


def test_generated_codes_transformers_run():
    """transformers' batch_decode rule on its run (prompt frames + 23 generated): 14 frames (logged: 13 440
    samples), the last one made of codebook 0's first EOS clipped to 1023 (spec 9, row 11)."""
    gen = _table(TRANSFORMERS_RUN)
    prompt = build_delay_pattern(_codes(8, 5, seed=5))  # starts with an all-BOS column of its own
    tail = torch.full((8, 3), EOS)  # padding after the end
    block = torch.cat([prompt, gen, tail], -1)
    codes = generated_codes(block, rule="transformers")
    assert codes.shape == (8, 14)
    assert codes[0].tolist() == gen[0, 1:14].tolist() + [1023]
    assert codes[3].tolist() == [min(x, 1023) for x in gen[3, 4:18].tolist()]
    # the same frames through the incremental reverter, fed strictly between the all-BOS and all-EOS frames
    assert torch.equal(DelayReverter(8, stream_markers=False).push_many(gen[:, 1:-1]).clamp(0, 1023), codes)
    both = generated_codes(torch.stack([block, block]), rule="transformers")
    assert isinstance(both, list) and all(torch.equal(c, codes) for c in both)
    with pytest.raises(InvalidCodesError, match="no all-BOS column"):
        generated_codes(gen[:, 1:], rule="transformers")


def test_delay_errors_name_the_problem():
    with pytest.raises(InvalidCodesError, match=r"outside \[0, 1023\]"):
        build_delay_pattern(torch.tensor([[1, 1024]]))
    with pytest.raises(InvalidCodesError, match=r"outside \[0, 1023\]"):
        build_delay_pattern(torch.tensor([[-1, 3]]))
    with pytest.raises(InvalidCodesError, match="integer"):
        build_delay_pattern(torch.zeros(8, 3))
    with pytest.raises(InvalidCodesError, match=r"\[K, T\] or \[B, K, T\]"):
        build_delay_pattern(torch.zeros(3, dtype=torch.long))
    with pytest.raises(InvalidCodesError, match=r"outside \[0, 1025\]"):
        revert_delay_pattern(torch.full((8, 12), 1026))
    with pytest.raises(InvalidCodesError, match="needs at least 9"):
        revert_delay_pattern(torch.full((8, 8), BOS))
    with pytest.raises(InvalidCodesError, match=r"one delayed frame \[8\]"):
        DelayReverter(8).push(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="rule"):
        generated_codes(build_delay_pattern(_codes(8, 2, seed=0)), rule="boson")


# ------------------------------------------------------------------------------------------------- sampling


def _hf_warpers(temperature, top_k, top_p):
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    chain = []
    if temperature != 1.0:
        chain.append(TemperatureLogitsWarper(float(temperature)))
    if top_k:
        chain.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))

    def apply(scores):
        for w in chain:
            scores = w(None, scores)
        return scores

    return apply


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (0.7, None, 0.95), (0.3, 50, 0.95), (1.0, 50, 0.95), (1.3, 7, None), (1.0, None, 0.5), (0.5, 2000, 0.999),
    (1.0, None, 1e-8),  # 1 - p rounds to 1 in float32: only the always-kept top entry survives
])
def test_process_logits_matches_transformers_warpers(temperature, top_k, top_p):
    """Same scores (bit for bit, -inf included) as transformers' warpers applied to (B*K, V) rows; ties included."""
    gen = torch.Generator().manual_seed(int(temperature * 10) + (top_k or 0))
    logits = torch.randn(3, 8, V, generator=gen) * 3
    logits[0] = torch.randint(0, 4, (8, V), generator=gen).float()  # many ties at the top-k boundary
    got = process_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    want = _hf_warpers(temperature, top_k, top_p)(logits.reshape(-1, V)).reshape(3, 8, V)
    assert torch.equal(got, want)
    assert torch.isinf(got).any()  # every case filters something


def test_process_logits_per_codebook():
    temps = (0.5, 1.0, 0.9, 1.2)
    ks = (None, 3, 0, 40)
    ps = (0.9, None, 0.6, 1.0)
    logits = torch.randn(2, 4, V, generator=torch.Generator().manual_seed(9)) * 2
    got = process_logits(logits, temperature=temps, top_k=ks, top_p=ps)
    for k in range(4):
        want = _hf_warpers(temps[k], ks[k], ps[k])(logits[:, k])
        assert torch.equal(got[:, k], want), k
    assert (torch.isfinite(got[:, 1]).sum(-1) == 3).all()  # top-k 3, no ties in random logits


def test_repetition_counts_by_hand():
    # one item, two codebooks, six frames (oldest first)
    history = torch.tensor([[[5, 5, 1, 5, BOS, 5], [BOS, BOS, 2, BOS, 3, EOS]]])
    tokens = torch.tensor([[5, BOS]])
    assert repetition_counts(tokens, history, window=3).tolist() == [[2, 1]]
    assert repetition_counts(tokens, history, window=6).tolist() == [[4, 3]]
    assert repetition_counts(tokens, history, window=100).tolist() == [[4, 3]]
    assert repetition_counts(tokens, history, window=6, count_stream_ids=False).tolist() == [[4, 0]]
    # ragged batch: item 1's real frames are the first four; its window is frames 1..3
    hist2 = torch.cat([history, torch.tensor([[[5, 5, 5, 1, 9, 9], [2, 2, 0, 0, 0, 0]]])])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    toks = torch.tensor([[5, BOS], [5, 2]])
    assert repetition_counts(toks, hist2, window=3, history_mask=mask).tolist() == [[2, 1], [2, 1]]


def _scripted(argmax: torch.Tensor, *, vocab: int = V) -> torch.Tensor:
    """Logits [.., K, vocab] whose argmax is ``argmax`` [.., K]."""
    logits = torch.zeros(*argmax.shape, vocab)
    logits.scatter_(-1, argmax[..., None], 5.0)
    return logits


def _run(argmaxes: list[torch.Tensor], config: SamplingConfig, state: AudioStreamState, **kw):
    frames, ended, states = [], [], []
    for a in argmaxes:
        step = next_audio_frame(_scripted(a, vocab=kw.get("codebook_size", 1024) + 2), state, config, **kw)
        state = step.state
        frames.append(step.frame)
        ended.append(step.ended)
        states.append(state)
    return torch.stack(frames, -1), torch.stack(ended, -1), states


def test_original_rules_by_hand():
    """Greedy, 4 codebooks of 10 codes (BOS 10, EOS 11), three items; the expected frames are written out from the
    original's rules (spec 6.1, steps 4-5)."""
    greedy = SamplingConfig(do_sample=False, ras_window=None)
    c = 3  # the code every free codebook picks
    e = 11
    steps = 11
    argmax = torch.full((steps, 3, 4), c)
    argmax[5:, 0, 0] = e  # item 0: codebook 0 wants EOS from step 5 on (i = 0)
    argmax[6, 1, 2:] = e  # item 1: codebooks 2 and 3 want EOS at step 6 (i = 2)
    argmax[4, 2, 3] = e  # item 2: codebook 3 wants EOS at step 4 (i = 3 = K - 1)
    frames, ended, states = _run(list(argmax), greedy, AudioStreamState.start(3), codebook_size=10)
    b = 10
    want0 = [[b, b, b, b], [c, b, b, b], [c, c, b, b], [c, c, c, b], [c, c, c, c], [e, c, c, c], [e, c, c, c],
             [e, e, c, c], [e, e, e, c], [e, e, e, e], [e, e, e, e]]
    want1 = [[b, b, b, b], [c, b, b, b], [c, c, b, b], [c, c, c, b], [c, c, c, c], [c, c, c, c], [e, e, e, e],
             [e, e, e, c], [e, e, e, e], [e, e, e, e], [e, e, e, e]]
    want2 = [[b, b, b, b], [c, b, b, b], [c, c, b, b], [c, c, c, b], [e, e, e, e], [e, e, e, e], [e, e, e, e],
             [e, e, e, e], [e, e, e, e], [e, e, e, e], [e, e, e, e]]
    assert frames.permute(0, 2, 1).tolist() == [want0, want1, want2]
    assert [row.nonzero().flatten().tolist() for row in ended] == [[8], [7], [4]]
    assert states[-1].finished.all()
    # the marked block of item 0 up to its end reverts to its 4 codes per codebook ([:, 1:-1])
    assert generated_codes(frames[0, :, :9], codebook_size=10).tolist() == [[c] * 4] * 4


def test_original_rules_replay_the_recorded_original_run():
    """Script greedy argmaxes to the recorded frames everywhere except where the recording holds a BOS/EOS that the
    delay rules imposed (there the script asks for code 7): our rules must put those BOS/EOS back and end on the
    recorded last frame. Sampled stream ids stay scripted: codebook 0's EOS at frame 14 (the forced logit) and
    codebook 7's EOS at frame 15."""
    block = _table(ORIGINAL_RUN)
    sampled_stream_ids = {(14, 0), (15, 7)}
    argmax = block.T.clone()
    for j, k in ((j, k) for j in range(block.shape[1]) for k in range(8)):
        if block[k, j] >= BOS and (j, k) not in sampled_stream_ids:
            argmax[j, k] = 7
    frames, ended, _ = _run([a[None] for a in argmax], SamplingConfig(do_sample=False), AudioStreamState.start(1),
                            history=None)
    assert torch.equal(frames[0], block)
    assert ended[0].nonzero().flatten().tolist() == [21]


def test_transformers_rules_replay_the_recorded_transformers_run():
    """Same idea for transformers' recorded run, and its text tokens from the documented rule of AudioStep."""
    gen = _table(TRANSFORMERS_RUN)
    argmax = gen.T.clone()
    for j, k in ((j, k) for j in range(gen.shape[1]) for k in range(8)):
        if gen[k, j] >= BOS and (j, k) not in {(14, 0), (14, 1)}:  # EOS forced logit; a BOS greedy picked
            argmax[j, k] = 7
    argmax[15:, 0] = EOS  # the forced logit stays on
    conf = SamplingConfig(do_sample=False, ras_window=None, reference="transformers")
    frames, ended, states = _run([a[None] for a in argmax], conf, AudioStreamState.start(1))
    assert torch.equal(frames[0], gen)
    assert ended[0].nonzero().flatten().tolist() == [22]
    text = [128009 if (f == EOS).all() else 128014 if s.eos_steps[0] >= 0 else 128016
            for f, s in zip(frames[0].T, states)]
    assert text == TRANSFORMERS_RUN_TEXT


def test_references_differ_at_the_end_as_the_spec_says():
    """Codebook 0 wants EOS from step 10: the original stops 7 steps later leaving codebook 7 free; transformers
    forces one more codebook per step and stops on the all-EOS frame 8 steps later (spec 9, row 9). With the first
    EOS on codebook 2, the original sets codebooks 0-1 to EOS at once and transformers does not."""
    argmax = torch.full((20, 1, 8), 5)
    argmax[10:, 0, 0] = EOS
    o_frames, o_end, _ = _run(list(argmax), SamplingConfig(do_sample=False), AudioStreamState.start(1))
    t_frames, t_end, _ = _run(list(argmax), SamplingConfig(do_sample=False, reference="transformers"),
                              AudioStreamState.start(1))
    assert o_end[0].nonzero().flatten().tolist() == [17]
    assert t_end[0].nonzero().flatten().tolist() == [18]
    assert torch.equal(o_frames[0, :, :18], t_frames[0, :, :18])
    assert o_frames[0, 7, 17] == 5 and (t_frames[0, :, 18] == EOS).all()
    argmax = torch.full((12, 1, 8), 5)
    argmax[10, 0, 2] = EOS
    o_frames, _, _ = _run(list(argmax), SamplingConfig(do_sample=False), AudioStreamState.start(1))
    t_frames, _, _ = _run(list(argmax), SamplingConfig(do_sample=False, reference="transformers"),
                          AudioStreamState.start(1))
    assert o_frames[0, :3, 10].tolist() == [EOS] * 3 and t_frames[0, :3, 10].tolist() == [5, 5, EOS]
    assert o_frames[0, :4, 11].tolist() == [EOS] * 3 + [5] and t_frames[0, :3, 11].tolist() == [EOS, 5, 5]


def test_original_ras_draw_order_by_hand():
    """The original's random calls, step by step: one multinomial over the K rows of the processed scores, then one
    (with replacement) over the rows RAS redraws from softmax(raw logits) -- inside the delay ramp too (the redrawn
    id of a BOS-forced codebook is then overwritten, but its draw still uses the generator)."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(1, 4, 12, generator=gen)
    raw[..., 6] = raw.amax(-1) + 0.5  # top-1 is code 6 everywhere: the first draw (top_k=1) is certain, but it
    # uses random numbers; softmax(raw) is spread, so the redraw is not
    history = torch.tensor([[[6, 0, 6, 1], [2, 2, 2, 2], [1, 6, 6, 1], [6, 6, 6, 6]]])
    state = AudioStreamState(torch.tensor([3]), torch.tensor([-1]), torch.tensor([0]), torch.tensor([False]))
    conf = SamplingConfig(temperature=0.9, top_k=1, ras_window=3, ras_max_repeat=2)
    step = next_audio_frame(raw, state, conf, history=history, generator=make_generator(11), codebook_size=10)
    g = make_generator(11)
    scores = process_logits(raw.float(), temperature=0.9, top_k=1)
    first = torch.multinomial(scores[0].softmax(-1), 1, generator=g).squeeze(1)
    assert first.tolist() == [6, 6, 6, 6]
    # window 3 (frames 1..3): codebook 0 holds 6 once, codebook 1 never, codebook 2 twice, codebook 3 three times
    assert step.resampled.tolist() == [[False, False, True, True]]
    redraw = torch.multinomial(raw[0, [2, 3]].softmax(-1), 1, replacement=True, generator=g).squeeze(1)
    assert redraw[0] != 6  # so the test tells a redraw from raw logits from one from the top-1 scores
    want = [6, 6, int(redraw[0]), 10]  # codebook 3 is still in the ramp (frames = 3): BOS
    assert step.frame.tolist() == [want]
    assert step.state.frames.tolist() == [4]


@pytest.mark.parametrize("reference", ["original", "transformers"])
def test_random_numbers_of_the_first_frame(reference):
    """The original emits the all-BOS frame without drawing (its AUDIO_INIT step); transformers draws for it (the
    frame comes from masking), so both random streams stay aligned with their reference."""
    g = make_generator(3)
    before = g.get_state()
    step = next_audio_frame(torch.randn(2, 8, V), AudioStreamState.start(2), SamplingConfig(reference=reference),
                            history=torch.full((2, 8, 1), BOS), generator=g)
    assert step.frame.tolist() == [[BOS] * 8] * 2 and step.state.frames.tolist() == [1, 1]
    assert torch.equal(g.get_state(), before) == (reference == "original")


def test_transformers_ras_ignores_stream_ids():
    history = torch.tensor([[[BOS] * 7, [EOS] * 7]])
    logits = _scripted(torch.tensor([[BOS, EOS]]))
    state = AudioStreamState(torch.tensor([8]), torch.tensor([-1]), torch.tensor([0]), torch.tensor([False]))
    for reference, resampled in (("original", True), ("transformers", False)):
        conf = SamplingConfig(do_sample=False, reference=reference)
        step = next_audio_frame(logits, state, conf, history=history, generator=make_generator(0), codebook_size=1024)
        assert step.resampled.any() == resampled


def test_seed_reproducibility_and_per_item_generators():
    """Same seed, same frames; per-item generators make an item's frames independent of its batch neighbours (here
    at different phases: one starting, one mid-span)."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(12, 2, 8, V, generator=gen)
    logits[..., :4] += 4  # repeats happen, so RAS redraws
    conf = SamplingConfig(temperature=0.8, top_k=30, top_p=0.9)

    def run(batch_logits, state, generator, history):
        frames = []
        for step_logits in batch_logits:
            step = next_audio_frame(step_logits, state, conf, history=history, generator=generator)
            state, history = step.state, torch.cat([history, step.frame[..., None]], -1)
            frames.append(step.frame)
        return torch.stack(frames, -1)

    hist = build_delay_pattern(_codes(2, 8, 3, seed=1, high=4))
    state = AudioStreamState.start(2)
    state = AudioStreamState(torch.tensor([0, 5]), state.eos_steps, state.eos_codebook, state.finished)
    a = run(logits, state, make_generator(5), hist)
    b = run(logits, state, make_generator(5), hist)
    c = run(logits, state, make_generator(6), hist)
    assert torch.equal(a, b) and not torch.equal(a, c)
    pair = run(logits, state, [make_generator(7), make_generator(8)], hist)
    alone = run(logits[:, 1:], AudioStreamState(*(t[1:] for t in (state.frames, state.eos_steps, state.eos_codebook,
                                                                   state.finished))), [make_generator(8)], hist[1:])
    assert torch.equal(pair[1:], alone)
    # a batch of one with one generator draws exactly like the per-item list
    one = run(logits[:, 1:], AudioStreamState(*(t[1:] for t in (state.frames, state.eos_steps, state.eos_codebook,
                                                                 state.finished))), make_generator(8), hist[1:])
    assert torch.equal(one, alone)


def test_item_restarted_mid_batch_matches_running_alone():
    """Item 1 abandons its span after 4 steps and starts a new one (reset) while item 0 goes on: from then on its
    frames equal those of a run of its own, given the same logits and a fresh generator; its RAS window sees only
    the new span's frames through history_mask (the old ones are masked out). Its span ends on its own step."""
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(20, 2, 8, V, generator=gen)
    logits[..., :3] += 8  # ~90 % of the mass on three codes: repeats are common
    logits[8, 1, 0, EOS] = 40  # item 1's codebook 0 ends at its own step 4 (the span ends 7 steps later)
    conf = SamplingConfig(temperature=0.9, top_p=0.8)
    state, history, mask = AudioStreamState.start(2), torch.full((2, 8, 0), BOS), torch.ones(2, 0, dtype=torch.bool)
    gens = [make_generator(1), make_generator(2)]
    batched = []
    for s, step_logits in enumerate(logits):
        if s == 4:
            state = state.reset(torch.tensor([False, True]))
            mask = mask & torch.tensor([[True], [False]])
            gens[1] = make_generator(9)
        step = next_audio_frame(step_logits, state, conf, history=history, history_mask=mask, generator=gens)
        state = step.state
        history = torch.cat([history, step.frame[..., None]], -1)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], -1)
        batched.append(step)
    state, history, alone, g = AudioStreamState.start(1), torch.full((1, 8, 0), BOS), [], make_generator(9)
    for step_logits in logits[4:, 1:]:
        step = next_audio_frame(step_logits, state, conf, history=history, generator=g)
        state, history = step.state, torch.cat([history, step.frame[..., None]], -1)
        alone.append(step)
    assert all(torch.equal(x.frame[1:], y.frame) for x, y in zip(batched[4:], alone))
    assert sum(int(x.resampled[1].sum()) for x in batched[4:]) > 0  # RAS acted on the new span
    assert [x.ended[1].item() for x in batched].index(True) == 4 + [y.ended[0].item() for y in alone].index(True)
    assert batched[4].frame[1].tolist() == [BOS] * 8 and not batched[4].frame[0].eq(BOS).all()


def test_state_helpers():
    # the original's continuation state: num_delay = K - #BOS, remaining = K - first EOS - 1
    last = torch.tensor([[BOS] * 8, [4, 4, 4, BOS, BOS, BOS, BOS, BOS], [4] * 8, [EOS, EOS, 4, EOS, 4, 4, 4, 4]])
    st = AudioStreamState.from_last_frame(last)
    assert st.frames.tolist() == [1, 4, 8, 8]
    assert st.eos_steps.tolist() == [-1, -1, -1, 0] and st.eos_codebook.tolist() == [0, 0, 0, 0]
    forced = forced_stream_ids(st, 8)
    assert forced[1].tolist() == [-1] * 4 + [BOS] * 4
    assert forced[3].tolist() == [EOS] + [-1] * 7  # remaining 7 -> codebooks [: 8 - 7]
    last2 = torch.tensor([[4, 4, EOS, 4, EOS, 4, 4, 4]])
    st2 = AudioStreamState.from_last_frame(last2)
    assert st2.eos_codebook.tolist() == [2] and forced_stream_ids(st2, 8)[0].tolist() == [EOS] * 3 + [-1] * 5
    fresh = AudioStreamState.start(2)
    assert forced_stream_ids(fresh, 8).tolist() == [[BOS] * 8] * 2
    reset = st.reset(torch.tensor([False, True, False, False]))
    assert reset.frames.tolist() == [1, 0, 8, 8] and reset.eos_steps.tolist() == [-1, -1, -1, 0]


def test_transformers_generate_parity():
    """A whole transformers 5.23 generate (tiny random model, batch of 3 with a reference-audio prompt) whose audio
    logits a hook replaces by scripted ones: replaying those logits through next_audio_frame with reference=
    "transformers" and the same global seed gives the same frames and text tokens, with sampling (temperature,
    top-k, top-p) and greedy, RAS 7/2 redrawing often, the items ending at different steps."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = transformers.HiggsAudioV2Config(
        vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, num_codebooks=8, codebook_size=V, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = transformers.HiggsAudioV2ForConditionalGeneration(cfg).eval()
    b, steps = 3, 40
    gen = torch.Generator().manual_seed(1)
    prompt_audio = build_delay_pattern(torch.randint(0, 6, (b, 8, 4), generator=gen))  # [B, K, F]
    f = prompt_audio.shape[-1]
    text = [128000, 10, 11, 128013] + [128016] * (f - 7) + [128014] * 7 + [128012] + list(range(20, 30)) + [128013]
    ids = torch.tensor([text] * b)
    scripted = torch.randn(steps, b, 8, V, generator=gen)
    scripted[..., :6] += 5.0  # a few likely codes: repeats within 7 frames are common
    scripted[12, 0, 0, EOS] = 50  # item 0: codebook 0 ends at step 12
    scripted[11, 1, 3, EOS] = 50  # item 1: codebook 3 first, then all codebooks two steps later (ends early, its
    scripted[13, 1, :, EOS] = 50  # EOS countdown frozen at "codebooks < 2" while it keeps being sampled)
    scripted[9, 2, 5, EOS] = 50  # item 2
    calls = {"n": 0}

    def hook(module, args, out):
        out = out.clone()
        out[:, -1] = scripted[calls["n"]].reshape(b, -1)
        calls["n"] += 1
        return out

    model.audio_lm_head.register_forward_hook(hook)
    model.generation_config.ras_win_len = 7
    model.generation_config.ras_win_max_num_repeat = 2
    for do_sample in (True, False):
        calls["n"] = 0
        kw = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9) if do_sample else dict(do_sample=False)
        torch.manual_seed(123)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 audio_input_ids=prompt_audio.transpose(1, 2),
                                 audio_input_ids_mask=torch.ones(b, f, dtype=torch.bool), max_new_tokens=steps,
                                 return_dict_in_generate=True, **kw)
        want = out.audio_sequences.transpose(1, 2)[..., f:]
        want_text = out.sequences[:, len(text):]
        conf = SamplingConfig(do_sample=do_sample, temperature=0.8, top_k=20, top_p=0.9, reference="transformers")
        torch.manual_seed(123)
        history, state, frames, texts, ended, redrawn = prompt_audio, AudioStreamState.start(b), [], [], [], 0
        for s in range(want.shape[-1]):
            step = next_audio_frame(scripted[s], state, conf, history=history)
            texts.append(torch.where((step.frame == EOS).all(-1), 128009,
                                     torch.where(step.state.eos_steps >= 0, 128014, 128016)))
            history, state = torch.cat([history, step.frame[..., None]], -1), step.state
            frames.append(step.frame)
            redrawn += int(step.resampled.sum())
            ended.append(step.ended)
        assert want.shape[-1] == 21 and state.finished.all()  # everything ended, as in transformers
        assert [int(e.nonzero()[0, 0]) for e in torch.stack(ended, -1)] == [20, 13, 17]
        assert torch.equal(torch.stack(frames, -1), want), do_sample
        assert torch.equal(torch.stack(texts, -1), want_text)
        assert redrawn > 20


def test_sampling_errors_name_the_problem():
    with pytest.raises(ValueError, match="temperature.*do_sample=False"):
        SamplingConfig(temperature=0.0)
    SamplingConfig(do_sample=False, temperature=0.0)  # unused when greedy
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        SamplingConfig(top_k=-1)
    with pytest.raises(ValueError, match="top_k"):
        SamplingConfig(top_k=2.5)
    with pytest.raises(ValueError, match="ras_max_repeat"):
        SamplingConfig(ras_max_repeat=0)
    with pytest.raises(ValueError, match="ras_window"):
        SamplingConfig(ras_window=-3)
    with pytest.raises(ValueError, match="reference"):
        SamplingConfig(reference="boson")
    with pytest.raises(ValueError, match="3 per-codebook values but the logits have 8"):
        process_logits(torch.zeros(8, V), temperature=(1.0, 0.5, 0.7))
    state, logits = AudioStreamState.start(2), torch.zeros(2, 8, V)
    with pytest.raises(ValueError, match="expected codebook_size \\+ 2 = 1026"):
        next_audio_frame(torch.zeros(2, 8, 1024), state)
    with pytest.raises(ValueError, match="floating tensor \\[B, K, V\\]"):
        next_audio_frame(torch.zeros(8, V), state)
    with pytest.raises(ValueError, match="state is for 2 items but the logits have batch size 3"):
        next_audio_frame(torch.zeros(3, 8, V), state)
    with pytest.raises(InvalidCodesError, match=r"history holds ids outside \[0, 1025\]"):
        next_audio_frame(logits, state, history=torch.full((2, 8, 4), 2000))
    with pytest.raises(InvalidCodesError, match=r"history must be \[B, K, F\] = \[2, 8, F\]"):
        next_audio_frame(logits, state, history=torch.zeros(2, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="sequence of 2"):
        next_audio_frame(logits, state, generator=[make_generator(0)])
    assert SamplingConfig.serve_engine(temperature=0.0, ras_win_len=0) == SamplingConfig(do_sample=False,
                                                                                       top_p=0.95, ras_window=None)


@pytest.mark.parametrize("reference", ["original", "transformers"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_quiet_step_equals_the_full_rules(reference, do_sample):
    """``quiet=True`` (the loop's shortcut once no id can be forced) gives the frame, state, ended flags, RAS
    redraws and random stream of the full rules, with and without a stream EOS among the drawn ids; without one
    the state object comes back as it was."""
    from tokenwave.tts.sampling import next_audio_frame_unchecked

    b, k = 3, 8
    conf = SamplingConfig(do_sample=do_sample, temperature=0.8, top_k=50, top_p=0.9, reference=reference)
    quiet_state = AudioStreamState(torch.full((b,), k), torch.full((b,), -1), torch.zeros(b, dtype=torch.long),
                                   torch.zeros(b, dtype=torch.bool))
    assert quiet_state.is_quiet(k) and not AudioStreamState.start(b).is_quiet(k)
    gen = torch.Generator().manual_seed(7)
    seen = set()
    for trial in range(40):
        logits = torch.randn(b, k, V, generator=gen) * 3
        if trial % 3 == 0:  # make a stream EOS the most likely id of one codebook of item 1
            logits[1, trial % k, EOS] = 40.0
        history = torch.randint(0, 1024, (b, k, 7), generator=gen)
        history[..., -3:] = torch.randint(0, 4, (b, k, 3), generator=gen)  # repeats, so RAS redraws some ids
        logits[..., :4] += 6.0
        out = []
        for quiet in (False, True):
            g = make_generator(trial)
            step = next_audio_frame_unchecked(logits, quiet_state, conf, history=history, history_mask=None,
                                              generator=g, codebook_size=1024, quiet=quiet)
            out.append((step, g.get_state()))
        (full, g_full), (short, g_short) = out
        assert torch.equal(full.frame, short.frame) and torch.equal(full.ended, short.ended)
        assert torch.equal(full.resampled, short.resampled) and torch.equal(g_full, g_short)
        for name in ("frames", "eos_steps", "eos_codebook", "finished"):
            assert torch.equal(getattr(full.state, name), getattr(short.state, name)), name
        eos_drawn = bool((full.frame == EOS).any())
        assert (short.state is quiet_state) == (not eos_drawn)
        seen.add(eos_drawn)
        seen.add(("ras", bool(full.resampled.any())))
    assert seen >= {True, False, ("ras", True)}
