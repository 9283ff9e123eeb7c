"""WavTokenizer batching: one padded forward pass vs one pass per item, speed and agreement with items alone.

    .venv/bin/python benchmarks/bench_wavtokenizer.py [--preset wavtokenizer-75] [--threads 2] [--device cpu]

Random weights at the published geometry (no network here), the codebook drawn from the encoder's own
latents so that codes vary. Prints one JSON line per batching mode: encode/decode seconds for a batch of
items of 1 sample to 10 s, whether every item's codes equal encoding it alone, and the largest audio
difference to decoding it alone relative to its peak. docs/wavtokenizer.md records a run.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from tokenwave.codecs.wavtokenizer import WavTokenizer, preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="wavtokenizer-75")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, nargs="+", default=[3, 5, 7, 10, 1 / 24000, 0.2])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WavTokenizer(preset(args.preset)).to(args.device)
    sr = model.sample_rate
    items = []
    for i, s in enumerate(args.seconds):
        n = max(1, round(s * sr))
        t = torch.arange(n) / sr
        items.append(0.2 * torch.sin(2 * math.pi * (150 + 50 * i) * t) * (1 + torch.sin(2 * math.pi * 3 * t))
                     + 0.01 * torch.randn(n))
    with torch.no_grad():
        longest = max(len(x) for x in items)
        z = model.encoder(torch.stack([torch.nn.functional.pad(x, (0, longest - len(x))) for x in items])[:, None]
                          .to(args.device))
        frames = z.permute(0, 2, 1).reshape(-1, z.shape[1])
        rows = torch.randint(len(frames), (model.codebook_size,))
        model.quantizer.codebook.embed.copy_(frames[rows] + 0.01 * frames.std() * torch.randn_like(frames[rows]))
    alone = [model.encode(x) for x in items]
    alone_audio = [model.decode(a, crop=True).audio[0, 0].cpu() for a in alone]
    for batching in ("per_item", "padded"):
        model.batching = batching
        model.encode(items)  # warm-up
        t0 = time.perf_counter()
        enc = model.encode(items)
        t1 = time.perf_counter()
        dec = model.decode(enc, crop=True)
        t2 = time.perf_counter()
        same_codes = all(torch.equal(a.codes[0], b) for a, b in zip(alone, enc.unbatch()))
        worst = max(float((b.cpu() - a).abs().max() / a.abs().max().clamp_min(1e-12))
                    for a, b in zip(alone_audio, dec.unbatch()))
        print(json.dumps({"preset": args.preset, "device": args.device, "threads": args.threads,
                          "batching": batching, "items_seconds": args.seconds, "encode_s": round(t1 - t0, 3),
                          "decode_s": round(t2 - t1, 3), "codes_equal_alone": same_codes,
                          "audio_max_diff_over_peak": worst, "distinct_codes": int(enc.codes.unique().numel())}))


if __name__ == "__main__":
    main()
