"""Long audio: peak memory of chunked encode/decode against length, and agreement with whole-file processing.

    # peak RSS for 1, 10 and 30 minutes (each stage in its own process)
    .venv/bin/python benchmarks/bench_long_audio.py memory --model DIR --minutes 1 10 30
    # codes / audio agreement of chunked vs whole-file on 3 minutes of real speech from ../shared/corpus
    .venv/bin/python benchmarks/bench_long_audio.py agreement --model DIR --seconds 180

``--model`` is any checkpoint folder tokenwave loads; without one (no network here) make a random one
with the published geometry: ``.venv/bin/python benchmarks/bench_long_audio.py make-model /tmp/higgs-random``
(transformers initialisation, the same weights the parity benchmark uses; needs the ``dev`` extra).
Results are printed as JSON lines; docs/long_audio.md records a run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "src" / "tokenwave" / "assets" / "example_speech_en.wav"
CORPUS = ROOT.parent / "shared" / "corpus"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_model(folder: str) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_higgs
    import torch

    bench_higgs.add_torchaudio_stub()
    torch.manual_seed(0)
    bench_higgs.random_reference("published").save_pretrained(folder)
    print(f"wrote {folder}")


def write_long_file(path: Path, minutes: float) -> None:
    """The shipped 4.3 s speech example repeated to ``minutes``, written block by block (16-bit wav)."""
    import numpy as np
    import soundfile as sf

    clip, sr = sf.read(EXAMPLE, dtype="float32")
    total = round(minutes * 60 * sr)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        done = 0
        while done < total:
            n = min(clip.shape[0], total - done)
            f.write(np.asarray(clip[:n]))
            done += n


def stage(args) -> None:
    """One measured stage in this process: ``encode`` a wav to a codes file, or ``decode`` it back."""
    import torch

    torch.set_num_threads(args.threads)
    import tokenwave
    from tokenwave.audio import AudioReader, AudioWriter
    from tokenwave.codesfile import read_codes, write_codes
    from tokenwave.streaming import encode_chunked, iter_decode

    tok = tokenwave.load_tokenizer(args.model)
    after_load = peak_rss_mb()
    t0 = time.perf_counter()
    if args.stage == "encode":
        with AudioReader(args.input, tok.sample_rate) as reader:
            codes = encode_chunked(tok, reader)
            n = reader.num_samples
        write_codes(args.output, codes, sample_rate=tok.sample_rate, frame_rate=tok.frame_rate,
                    codebook_size=tok.codebook_size, num_samples=n)
    else:
        codes, header = read_codes(args.input)
        n = header.num_samples
        with AudioWriter(args.output, tok.sample_rate) as writer:
            for chunk in iter_decode(tok, codes, num_samples=n):
                writer.write(chunk.numpy())
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(stage=args.stage, audio_s=round(n / tok.sample_rate, 1), wall_s=round(seconds, 1),
                          rtf=round(seconds / (n / tok.sample_rate), 3), peak_rss_mb_after_load=round(after_load),
                          peak_rss_mb=round(peak_rss_mb()), threads=args.threads)), flush=True)


def memory(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            wav, twc, out = (Path(tmp) / f"{minutes}min.{ext}" for ext in ("wav", "twc", "out.wav"))
            write_long_file(wav, minutes)
            for name, src, dst in (("encode", wav, twc), ("decode", twc, out)):
                cmd = [sys.executable, __file__, "stage", name, "--model", args.model, "--input", str(src),
                       "--output", str(dst), "--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode:
                    sys.exit(f"{name} of {minutes} min failed:\n{res.stderr[-3000:]}")
                row = json.loads(res.stdout.strip().splitlines()[-1])
                print(json.dumps(dict(minutes=minutes, **row)), flush=True)
            for p in (wav, twc, out):
                p.unlink()


def corpus_speech(seconds: float):
    """The dev speech clips of ../shared/corpus joined in manifest order, cut to ``seconds``."""
    import numpy as np
    import soundfile as sf

    rows = [r for r in csv.DictReader(open(CORPUS / "manifest.csv")) if r["category"] == "speech"]
    audio = np.concatenate([sf.read(CORPUS / r["clip_path"], dtype="float32")[0] for r in rows])
    n = round(seconds * 24000)
    if audio.shape[0] < n:
        sys.exit(f"the corpus speech is only {audio.shape[0] / 24000:.1f} s long")
    return audio[:n]


def agreement(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import tokenwave
    from tokenwave.streaming import decode_chunked, encode_chunked

    if not CORPUS.is_dir():
        sys.exit(f"{CORPUS} not found (the agreement run needs the team's shared corpus)")
    tok = tokenwave.load_tokenizer(args.model)
    x = torch.from_numpy(corpus_speech(args.seconds))
    t0 = time.perf_counter()
    whole = tok.encode(x).codes[0]
    print(json.dumps(dict(op="whole encode", seconds=args.seconds, wall_s=round(time.perf_counter() - t0, 1))))
    for spec in args.encode:
        chunk, context = (float(v) for v in spec.split("/"))
        t0 = time.perf_counter()
        codes = encode_chunked(tok, x, chunk_seconds=chunk, context_seconds=context)
        same = codes == whole
        print(json.dumps(dict(op="chunked encode", chunk_s=chunk, context_s=context,
                              frames_all_codes_equal=round(same.all(0).float().mean().item(), 4),
                              codebook0_equal=round(same[0].float().mean().item(), 4),
                              codes_equal=round(same.float().mean().item(), 4),
                              wall_s=round(time.perf_counter() - t0, 1))), flush=True)
    audio = tok.decode(whole).audio[0, 0]
    peak = audio.abs().max()
    for context in args.decode_context:
        out = decode_chunked(tok, whole, chunk_frames=args.decode_chunk, context_frames=context)
        rel = ((out - audio).abs().max() / peak).item()
        print(json.dumps(dict(op="chunked decode", chunk_frames=args.decode_chunk, context_frames=context,
                              max_abs_diff_over_peak=float(f"{rel:.3g}"))), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("folder")
    p = sub.add_parser("memory")
    p.add_argument("--model", required=True)
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p = sub.add_parser("stage")
    p.add_argument("stage", choices=["encode", "decode"])
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p = sub.add_parser("agreement")
    p.add_argument("--model", required=True)
    p.add_argument("--seconds", type=float, default=180)
    p.add_argument("--encode", nargs="+", default=["30/5", "60/5", "30/10"], help="chunk/context seconds")
    p.add_argument("--decode-chunk", type=int, default=250)
    p.add_argument("--decode-context", type=int, nargs="+", default=[4, 8, 12, 16])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    {"make-model": lambda a: make_model(a.folder), "memory": memory, "stage": stage, "agreement": agreement}[
        args.cmd](args)


if __name__ == "__main__":
    main()
