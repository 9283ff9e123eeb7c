"""Time tokenwave's Higgs Audio v2 generation loop against transformers' HiggsAudioV2ForConditionalGeneration.generate.

Both run on the same random weights and the same prompts, in one process, greedy with repetition-aware sampling
off, for the same number of frames (the stream-EOS rows of the audio head are zero, so no span ends early), and
every row says whether both made the same frames, so no speed number is read for a wrong result.

    .venv/bin/python benchmarks/bench_tts.py                       # tiny model on the CPU, batch 1 and 4
    .venv/bin/python benchmarks/bench_tts.py --full-size --device cuda --batch 1 16

Default (tiny): transformers builds a tiny random model (the geometry of tests/test_tts_generate.py: real vocabulary
and special ids, text head, 2 layers of width 16), saves it, and tokenwave loads that folder with its own loader.
--full-size: the published geometry (Llama-3.2-3B + DualFFN, 5.8 B parameters) with random bfloat16 weights, ours
built on the meta device and materialised on the device, transformers' model built on the device and given the same
tensors (``--no-reference``: ours only). Both modes also measure tokenwave's time to first audio (streaming, with a
random audio tokenizer of the matching geometry).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

K, BOS, EOS = 8, 1024, 1025
AUDIO_OUT, AUDIO_OUT_BOS = 128016, 128013


# ---------------------------------------------------------------------------------------------------- models
def hf_config(full_size: bool):
    """transformers' config: the published geometry, or the tiny one of tests/test_tts_generate.py."""
    from transformers import HiggsAudioV2Config

    if full_size:
        from tokenwave.tts.config import HiggsGenConfig

        return HiggsAudioV2Config(**{k: v for k, v in HiggsGenConfig().to_transformers_dict().items()
                                     if k not in ("architectures", "model_type", "dtype")})
    return HiggsAudioV2Config(vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_codebooks=K,
                              codebook_size=EOS + 1)


def randomize_(model, seed: int, full_size: bool) -> None:
    """Random weights; the stream-EOS rows of the audio head set to zero, so that greedy decoding never picks EOS
    (a zero logit against the largest of 1024 random ones) and every run makes exactly the frames asked for.

    tiny: O(1) weights (norms 1 + noise, matrices randn / sqrt(fan_in)), as the tests; full size: matrices
    0.02 * randn (the usual initialisation scale), norms 1."""
    import torch

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1 + (0.0 if full_size else 0.3) * torch.randn(p.shape, generator=gen, device=device))
            else:
                scale = 0.02 if full_size else p.shape[-1] ** -0.5
                p.copy_(scale * torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32))
        model.audio_lm_head.weight.view(K, EOS + 1, -1)[:, EOS] = 0


def build_tiny(device):
    """(ours, reference): transformers' tiny random model saved and loaded with tokenwave's loader."""
    import torch
    import transformers

    from tokenwave.tts.checkpoint import load_pretrained

    torch.manual_seed(0)
    ref = transformers.HiggsAudioV2ForConditionalGeneration(hf_config(False), use_text_head=True).eval()
    randomize_(ref, 0, full_size=False)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = load_pretrained(tmp, device=device)
    return ours, ref.to(device)


def build_full(device, reference: bool):
    """(ours, reference or None): the published geometry in bfloat16 with random weights. Ours is built on the meta
    device and materialised on ``device``; transformers' model is built on ``device`` and gets ours' tensors."""
    import torch

    from tokenwave.tts.config import HiggsGenConfig
    from tokenwave.tts.model import HiggsGenModel

    with torch.device("meta"):
        ours = HiggsGenModel(HiggsGenConfig())
    ours = ours.to(torch.bfloat16).to_empty(device=device).eval()
    randomize_(ours, 0, full_size=True)
    if not reference:
        return ours, None
    import transformers

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            ref = transformers.HiggsAudioV2ForConditionalGeneration(hf_config(True), use_text_head=True).eval()
    finally:
        torch.set_default_dtype(default)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


def audio_tokenizer(full_size: bool, device):
    """A random Higgs audio tokenizer (published geometry, or the tiny one of tests/conftest.py) for streaming."""
    import torch

    from tokenwave.codecs.higgs import HiggsAudioTokenizer, HiggsConfig
    from tokenwave.nn.hubert import HubertConfig

    torch.manual_seed(0)
    if full_size:
        cfg = HiggsConfig()
    else:
        cfg = HiggsConfig(acoustic_encoder_hidden_size=4, acoustic_decoder_hidden_size=32, acoustic_hidden_size=8,
                          codebook_dim=4, semantic=HubertConfig(
                              hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                              conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2))
    return HiggsAudioTokenizer(cfg).eval().to(device)


# --------------------------------------------------------------------------------------------------- prompts
def make_prompts(batch: int, text_tokens: int, ref_frames: int, seed: int):
    """``batch`` prompts of equal length: random text ids, a reference voice of ``ref_frames`` random frames as an
    audio-out span (expanded: one position per delayed frame), more text, then ``<|audio_out_bos|>`` (what a cloned
    voice prompt looks like, without needing a text tokenizer)."""
    import torch

    from tokenwave.tts.prompt import Audio, AudioSpan, RenderedPrompt

    gen = torch.Generator().manual_seed(seed)
    prompts = []
    span_len = ref_frames + K + 1
    for _ in range(batch):
        head = torch.randint(0, 128000, (text_tokens // 2,), generator=gen)
        tail = torch.randint(0, 128000, (text_tokens - text_tokens // 2,), generator=gen)
        ids = torch.cat([head, torch.full((span_len,), AUDIO_OUT), tail, torch.tensor([AUDIO_OUT_BOS])])
        codes = torch.randint(0, 1024, (K, ref_frames), generator=gen)
        span = AudioSpan(start=head.shape[0], length=span_len, kind="out", audio=Audio(codes=codes), turn=1)
        prompts.append(RenderedPrompt(ids, (span,), "original", "", True))
    return prompts


def hf_inputs(ours, prompts, device):
    """transformers' generate inputs for ``prompts`` (equal lengths: no padding)."""
    import torch

    from tokenwave.tts.generate import prompt_inputs

    xs = [prompt_inputs(p, ours) for p in prompts]
    ids = torch.stack([x.input_ids for x in xs]).to(device)
    frames = torch.stack([x.audio_codes[x.audio_mask] for x in xs]).to(device)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), audio_input_ids=frames,
                audio_input_ids_mask=torch.ones(frames.shape[:2], dtype=torch.bool, device=device))


# ---------------------------------------------------------------------------------------------------- timing
def timed(fns: dict, repeats: int, warmup: int, sync) -> dict[str, list[float]]:
    """Warm every function up, then alternate timed calls (so load drifting over the run hits all alike); seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def bench_batch(ours, ref, batch: int, args, device, sync) -> dict:
    """One batch size: total and decode-only frames/s of both sides, and whether their frames agree."""
    import torch

    from tokenwave.tts.generate import generate
    from tokenwave.tts.sampling import SamplingConfig

    greedy = SamplingConfig(do_sample=False, ras_window=None, reference="transformers")
    prompts = make_prompts(batch, args.text_tokens, args.ref_frames, args.seed)
    n = args.frames

    def ours_fn(frames):
        return lambda: generate(ours, prompts, sampling=greedy, max_frames=frames)

    fns = {"ours_n": ours_fn(n), "ours_1": ours_fn(1)}
    if args.default_sampling:  # tokenwave's default sampling (original rules, RAS 7/2), seeded: ours only
        def default_fn(frames):
            return lambda: generate(ours, prompts, sampling=SamplingConfig(), max_frames=frames, seed=args.seed)

        fns |= {"default_n": default_fn(n), "default_1": default_fn(1)}
    if ref is not None:
        inputs = hf_inputs(ours, prompts, device)
        ref.generation_config.ras_win_len = None

        def ref_fn(frames):
            def run():
                with torch.inference_mode():
                    return ref.generate(**inputs, max_new_tokens=frames, do_sample=False,
                                        return_dict_in_generate=True)
            return run

        fns |= {"ref_n": ref_fn(n), "ref_1": ref_fn(1)}
    with torch.inference_mode():
        times = timed(fns, args.repeats, args.warmup, sync)
        check = "ours only"
        ours_out = generate(ours, prompts, sampling=greedy, max_frames=n)
        made = [r.delayed.shape[1] for r in ours_out]
        if ref is not None:
            hf = fns["ref_n"]()
            f = inputs["audio_input_ids"].shape[1]
            same = all(torch.equal(r.delayed, hf.audio_sequences[i, f:f + r.delayed.shape[1]].T.cpu())
                       for i, r in enumerate(ours_out))
            hf_frames = hf.audio_sequences.shape[1] - f
            check = (f"frames identical ({batch} x {n})" if same and made == [hf_frames] * batch else
                     f"FRAMES DIFFER (ours {made}, transformers {hf_frames} per item)")
        elif made != [n] * batch:
            check = f"ours made {made} frames, not {n}"
        if "default_n" in fns:  # sampled: a span may end early, which would make the per-step time wrong
            default_steps = [r.steps for r in generate(ours, prompts, sampling=SamplingConfig(), max_frames=n,
                                                       seed=args.seed)]
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}
    row = dict(batch=batch, frames=n, prompt_positions=int(prompts[0].input_ids.shape[0]), check=check,
               times_s={k: [round(t, 5) for t in v] for k, v in times.items()})
    for side in ("ours", "ref", "default"):
        if f"{side}_n" not in med:
            continue
        total, first = med[f"{side}_n"], med[f"{side}_1"]
        decode = max(total - first, 1e-9)
        decode_min = max(fastest[f"{side}_n"] - fastest[f"{side}_1"], 1e-9)
        row[side] = dict(total_s=round(total, 5), prefill_and_first_s=round(first, 5),
                         fps_total=round(batch * n / total, 2), fps_decode=round(batch * (n - 1) / decode, 2),
                         fps_decode_of_min=round(batch * (n - 1) / decode_min, 2),
                         ms_per_step=round(1e3 * decode / (n - 1), 3))
    if "default" in row:
        row["default"]["steps"] = default_steps
        if default_steps != [n] * batch:
            row["default"]["note"] = f"a span ended early ({default_steps} steps): per-step figures are not valid"
    if "ref" in row:
        for key in ("decode", "decode_of_min", "total"):
            row[f"ratio_{key}"] = round(row["ours"][f"fps_{key}"] / row["ref"][f"fps_{key}"], 3)
    return row


def time_to_first_audio(ours, tokenizer, args, sync) -> dict:
    """tokenwave's streaming (one prompt): seconds from the start of the stream to the first audio chunk (median of
    the repeats after the warm-up), and the prefill within it."""
    import torch

    from tokenwave.tts.generate import stream
    from tokenwave.tts.sampling import SamplingConfig

    greedy = SamplingConfig(do_sample=False, ras_window=None)
    prompt = make_prompts(1, args.text_tokens, args.ref_frames, args.seed)[0]
    ttfa, prefill = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            sync()
            # enough steps for the first chunk (delay ramp + chunk + the decoder's look-ahead), whatever --frames
            s = stream(ours, prompt, tokenizer, sampling=greedy, max_frames=max(args.frames, 100),
                       chunk_frames=args.chunk_frames)
            next(s)
            sync()
            if i >= args.warmup:
                ttfa.append(s.stats.time_to_first_audio_s)
                prefill.append(s.stats.prefill_s)
            steps = s.stats.steps
    return dict(chunk_frames=args.chunk_frames, steps=steps, ttfa_s=round(statistics.median(ttfa), 5),
                prefill_s=round(statistics.median(prefill), 5), ttfa_all_s=[round(t, 5) for t in ttfa])


def machine(device) -> dict:
    import torch

    info = dict(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), device=str(device),
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else
                (platform.processor() or platform.machine()), torch=torch.__version__,
                python=platform.python_version(), loadavg_1min=round(os.getloadavg()[0], 2))
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full-size", action="store_true", help="published geometry, random bfloat16 weights (a GPU)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 1 4; full size 1 16)")
    p.add_argument("--frames", type=int, default=None, help="frames per item (default: 100 tiny, 200 full size)")
    p.add_argument("--text-tokens", type=int, default=64, help="text positions of each prompt")
    p.add_argument("--ref-frames", type=int, default=125, help="reference-voice frames in each prompt (25 = 1 s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each function first")
    p.add_argument("--chunk-frames", type=int, default=10, help="frames per streamed chunk (time to first audio)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--device", default=None, help="default: cpu (tiny), cuda (full size)")
    p.add_argument("--no-reference", action="store_true", help="time tokenwave only (no transformers)")
    p.add_argument("--no-ttfa", action="store_true", help="skip the time-to-first-audio measurement")
    p.add_argument("--default-sampling", action="store_true",
                   help="also time tokenwave's default sampling (original rules, temperature 1, RAS 7/2, seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = p.parse_args(argv)
    args.batch = args.batch or ([1, 16] if args.full_size else [1, 4])
    args.frames = args.frames or (200 if args.full_size else 100)
    if args.frames < 2:
        p.error("--frames must be at least 2 (decode throughput is measured from frames 2..N)")

    if not args.no_reference:
        from bench_higgs import add_torchaudio_stub  # this folder is on sys.path when a benchmark runs

        add_torchaudio_stub()
    import torch

    if not args.no_reference:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if args.full_size else "cpu"))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    info = machine(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))

    t0 = time.perf_counter()
    if args.full_size:
        ours, ref = build_full(device, reference=not args.no_reference)
    else:
        ours, ref = build_tiny(device)
        ref = None if args.no_reference else ref
    cfg = ours.config
    print(f"{'full size' if args.full_size else 'tiny'}: {cfg.num_parameters() / 1e6:.1f} M parameters, "
          f"{cfg.num_hidden_layers} layers of width {cfg.hidden_size}, {ours.dtype}, on {device}; built in "
          f"{time.perf_counter() - t0:.1f} s; greedy, RAS off, {args.frames} frames per item, prompts of "
          f"{args.text_tokens} text + {args.ref_frames + K + 1} audio positions + <|audio_out_bos|>")

    rows = []
    header = (f"{'batch':>5}{'frames':>7}  {'ours f/s':>9}{'ref f/s':>9}{'ratio':>7}{'of min':>7}  {'ours ms/step':>12}"
              f"{'ref ms/step':>12}  {'ours f/s tot':>12}{'ref f/s tot':>12}{'ratio':>7}  check")
    print(header)
    for batch in args.batch:
        r = bench_batch(ours, ref, batch, args, device, sync)
        rows.append(r)
        o, f = r["ours"], r.get("ref")

        def num(x, width, fmt=".1f"):
            return f"{x:>{width}{fmt}}" if x is not None else f"{'-':>{width}}"

        print(f"{batch:>5}{args.frames:>7}  {num(o['fps_decode'], 9)}{num(f and f['fps_decode'], 9)}"
              f"{num(r.get('ratio_decode'), 7, '.2f')}{num(r.get('ratio_decode_of_min'), 7, '.2f')}  "
              f"{num(o['ms_per_step'], 12, '.2f')}"
              f"{num(f and f['ms_per_step'], 12, '.2f')}  {num(o['fps_total'], 12)}{num(f and f['fps_total'], 12)}"
              f"{num(r.get('ratio_total'), 7, '.2f')}  {r['check']}", flush=True)
        if "default" in r:
            d = r["default"]
            print(f"{'':>12}  tokenwave default sampling (RAS 7/2, seeded): {d['fps_decode']:.1f} f/s, "
                  f"{d['ms_per_step']:.2f} ms/step  {d.get('note', f'{args.frames} steps per item')}", flush=True)
    ttfa = None
    if not args.no_ttfa:
        ttfa = time_to_first_audio(ours, audio_tokenizer(args.full_size, device), args, sync)
        print(f"time to first audio (tokenwave, batch 1, {args.chunk_frames}-frame chunks): {ttfa['ttfa_s'] * 1e3:.1f}"
              f" ms after {ttfa['steps']} steps, of which prefill {ttfa['prefill_s'] * 1e3:.1f} ms (median of "
              f"{args.repeats})")
    print(f"\nf/s: audio frames per second over the batch (25 frames = 1 s of audio), decode steps only: "
          f"batch x (N - 1) / (t(N frames) - t(1 frame)); 'tot' includes the prefill: batch x N / t(N). Median of "
          f"{args.repeats} after {args.warmup} warm-up; ratio = ours / transformers (> 1: tokenwave faster); 'of "
          f"min': the decode ratio from the fastest runs (steadier when something else loads the machine). "
          f"1-min load average at start {info['loadavg_1min']}, at end {os.getloadavg()[0]:.2f}")
    ratios = [f"batch {r['batch']} {r['ratio_decode']:.2f} (of min {r['ratio_decode_of_min']:.2f})" for r in rows
              if "ratio_decode" in r]
    if ratios:
        print(f"decode-step throughput ratio ours/transformers: {', '.join(ratios)} (issue 7 target: >= 2)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(machine=info, args={k: str(v) for k, v in vars(args).items()},
                                             rows=rows, time_to_first_audio=ttfa), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
