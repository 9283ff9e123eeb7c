"""Time tokenwave's Higgs Audio v2 tokenizer against transformers' HiggsAudioV2TokenizerModel.

Both run on the same random weights (transformers model -> save_pretrained -> tokenwave.load_tokenizer)
and the same inputs, in one process. Every timing row also reports whether the results agree (codes
identical, decoded audio max|diff| / peak), so no speed number is read for a wrong result.

    .venv/bin/python benchmarks/bench_higgs.py --geometry published --seconds 1 10
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

ROOT = Path(__file__).resolve().parents[1]
STUB_DIRS = (ROOT / "tests" / "stubs",)


def add_torchaudio_stub() -> Path:
    """transformers' Higgs model imports torchaudio (only for resample); use our stand-in, never the real one."""
    for d in STUB_DIRS:
        if (d / "torchaudio" / "__init__.py").is_file():
            sys.path.insert(0, str(d))
            return d
    sys.exit("no torchaudio stand-in found; looked for " + " and ".join(str(d / "torchaudio") for d in STUB_DIRS))


def make_config(geometry: str):
    from transformers import HiggsAudioV2TokenizerConfig

    dac = dict(model_type="dac", downsampling_ratios=[8, 5, 4, 2, 3], upsampling_ratios=[8, 5, 4, 2, 3])
    if geometry == "published":  # the released bosonai/higgs-audio-v2-tokenizer architecture
        dims, dac_sizes = 64, dict(encoder_hidden_size=64, decoder_hidden_size=1024, hidden_size=256)
        hubert = dict(model_type="hubert", mask_time_prob=0.0)
    else:  # same 24 kHz / 960-hop / 25 fps / 8 x 1024 geometry, tiny widths
        dims, dac_sizes = 4, dict(encoder_hidden_size=4, decoder_hidden_size=32, hidden_size=8)
        hubert = dict(model_type="hubert", mask_time_prob=0.0, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, conv_dim=[8] * 7, num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2)
    return HiggsAudioV2TokenizerConfig(
        target_bandwidths=[0.5, 1, 1.5, 2], sample_rate=24000, codebook_size=1024, codebook_dim=dims,
        semantic_sample_rate=16000, downsample_factor=320, acoustic_model_config={**dac, **dac_sizes},
        semantic_model_config=hubert,
    )


def random_reference(geometry: str):
    """transformers' model of ``geometry`` with its initialisation, and random codebook content."""
    import torch
    from transformers import HiggsAudioV2TokenizerModel

    ref = HiggsAudioV2TokenizerModel(make_config(geometry)).eval()
    with torch.no_grad():  # codebooks are EMA buffers, zero after init: give them random content
        for q in ref.quantizer.quantizers:
            q.codebook.embed.normal_()
            q.codebook.embed_avg.copy_(q.codebook.embed)
    return ref


def build_pair(geometry: str, device):
    """(ours, reference) holding identical random weights."""
    import tokenwave

    ref = random_reference(geometry)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = tokenwave.load_tokenizer(tmp, alignment="transformers", device=device)
    return ours, ref.to(device)


def timed_pair(ref_fn, ours_fn, repeats: int, device):
    """Warm both up once, then alternate timed calls (so drift hits both alike).

    Returns (ref result, ours result, ref times ms, ours times ms); the results come from the warm-up calls.
    """
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    outs, times = [], ([], [])
    for fn in (ref_fn, ours_fn):
        outs.append(fn())
        sync()
    for _ in range(repeats):
        for fn, ms in zip((ref_fn, ours_fn), times):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ms.append((time.perf_counter() - t0) * 1e3)
    return (*outs, *times)


def compare(ours_out, ref_out, what: str):
    """(exact?, relative max diff, text) for two tensors."""
    if ours_out.shape != ref_out.shape:
        return False, float("nan"), f"{what} SHAPES DIFFER ours {list(ours_out.shape)} ref {list(ref_out.shape)}"
    ours_out, ref_out = ours_out.cpu(), ref_out.cpu()
    if what == "codes":
        differ = (ours_out != ref_out).float().mean().item()
        text = "identical" if differ == 0 else f"DIFFER in {differ:.1%}"
        return differ == 0, differ, f"codes {text} {list(ref_out.shape)}"
    rel = ((ours_out - ref_out).abs().max() / ref_out.abs().max().clamp_min(1e-30)).item()
    return rel == 0, rel, f"audio max|diff|/peak {rel:.1e} {list(ref_out.shape)}"


def bench_case(ours, ref, geometry: str, seconds: float, args, device) -> list[dict]:
    """Encode and decode rows for one input length."""
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    x = (0.1 * torch.randn(args.batch, 1, round(seconds * ours.sample_rate), generator=gen)).to(device)
    with torch.inference_mode():
        ref_codes, ours_codes, ref_enc, ours_enc = timed_pair(
            lambda: ref.encode(x).audio_codes, lambda: ours.encode(x).codes, args.repeats, device)
        # both decode the reference codes, so the timings compare like with like
        ref_audio, ours_audio, ref_dec, ours_dec = timed_pair(
            lambda: ref.decode(ref_codes).audio_values, lambda: ours.decode(ref_codes).audio, args.repeats, device)
    rows = []
    for op, o_t, r_t, (exact, diff, check), fn in (
        ("encode", ours_enc, ref_enc, compare(ours_codes, ref_codes, "codes"), lambda: ours.encode(x)),
        ("decode", ours_dec, ref_dec, compare(ours_audio, ref_audio, "audio"), lambda: ours.decode(ref_codes)),
    ):
        o_ms, r_ms = statistics.median(o_t), statistics.median(r_t)
        rows.append(dict(geometry=geometry, seconds=seconds, batch=args.batch, op=op, ours_ms=round(o_ms, 2),
                         ref_ms=round(r_ms, 2), ratio_ref_over_ours=round(r_ms / o_ms, 3),
                         ratio_of_min=round(min(r_t) / min(o_t), 3), ours_times_ms=[round(t, 1) for t in o_t],
                         ref_times_ms=[round(t, 1) for t in r_t],
                         gflop_ours=round(count_flops(fn) / 1e9, 3) if args.flops else None,
                         exact=exact, diff=diff, check=check))
    return rows


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def machine(device) -> dict:
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return dict(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), device=str(device), device_name=name,
                torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
                loadavg_1min=round(os.getloadavg()[0], 2))  # > 0 before we start: something else shares the CPU


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--geometry", nargs="+", choices=["published", "tiny"], default=["published"])
    p.add_argument("--seconds", nargs="+", type=float, default=[1.0, 10.0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--flops", action="store_true", help="also count forward FLOPs of ours (one extra call per op)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = p.parse_args(argv)

    stubs = add_torchaudio_stub()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()) + f"  (torchaudio stand-in: {stubs})")

    rows = []
    header = (f"{'geometry':<10}{'seconds':>8}{'batch':>6}  {'op':<7}{'ours_ms':>10}{'ref_ms':>10}"
              f"{'ref/ours':>9}{'of min':>7}  {'GFLOP':>7}  check")
    for geometry in args.geometry:
        torch.manual_seed(args.seed)
        ours, ref = build_pair(geometry, device)
        params = sum(t.numel() for t in ref.parameters())
        print(f"\n{geometry}: {params / 1e6:.1f} M parameters, {ours.num_codebooks} codebooks x {ours.codebook_size}")
        print(header)
        for seconds in args.seconds:
            for r in bench_case(ours, ref, geometry, seconds, args, device):
                rows.append(r)
                flops = f"{r['gflop_ours']:7.1f}" if args.flops else f"{'-':>7}"
                print(f"{geometry:<10}{seconds:>8g}{args.batch:>6}  {r['op']:<7}{r['ours_ms']:>10.1f}"
                      f"{r['ref_ms']:>10.1f}{r['ratio_ref_over_ours']:>9.2f}{r['ratio_of_min']:>7.2f}  {flops}  "
                      f"{r['check']}", flush=True)
        del ours, ref
    print(f"\nms: median of {args.repeats} after 1 warm-up; ref/ours > 1 means tokenwave is faster "
          f"('of min': the same ratio of the fastest calls); "
          f"1-min load average at start {info['loadavg_1min']}, at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(machine=info, repeats=args.repeats, rows=rows), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
