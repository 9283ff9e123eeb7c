"""``tokenwave eval``: run codecs over a set of clips, compute metrics in parallel, resume, report.

Layout of an output folder::

    OUT/results.jsonl            one line per (codec, clip): metrics or the error; the resume log
    OUT/codes/<codec>/<clip>.twc codes of tokenizer codecs (codebook usage is computed from these)
    OUT/clips.csv                per-clip table (rebuilt from results.jsonl at the end of every run)
    OUT/summary.json             per codec and category: mean, std, count of every metric; codec facts
    OUT/tables/<category>.md     the Higgs card's layout: one row per codec
    OUT/plots/*.png              spectrograms of a few clips, metric distributions per category

A run with the same OUT skips every (codec, clip) already in ``results.jsonl``.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Clip", "read_clips", "EvalCodec", "open_codec", "run_eval", "SPEECH_METRICS", "ALL_METRICS"]

# metric name -> (applies to categories: None = all, higher is better)
ALL_METRICS = {
    "stft_distance": (None, False),
    "mel_distance": (None, False),
    "si_sdr": (None, True),
    "pesq_wb": ({"speech"}, True),
    "stoi": ({"speech"}, True),
    "vuv_f1": ({"speech"}, True),
    "wer": ({"speech"}, False),
    "speaker_similarity": ({"speech"}, True),
    "dnsmos_ovrl": ({"speech"}, True),
    "dnsmos_sig": ({"speech"}, True),
    "dnsmos_bak": ({"speech"}, True),
}
SPEECH_METRICS = [m for m, (cats, _) in ALL_METRICS.items() if cats == {"speech"}]
FAST_METRICS = ["stft_distance", "mel_distance", "si_sdr", "pesq_wb", "stoi"]


@dataclass(frozen=True)
class Clip:
    """One evaluation item: ``path`` to audio, its ``category`` and, where known, its transcript."""

    id: str
    path: Path
    category: str
    text: str | None = None


def read_clips(data: str | os.PathLike, *, split: str | None = None) -> list[Clip]:
    """Clips of a manifest (CSV with ``clip_path`` or ``path``, ``category``, optional ``split``,
    ``text``/``transcript``; paths relative to the manifest) or of a folder (category = first sub-folder,
    ``all`` for files directly in it)."""
    from ..audio import AUDIO_EXTENSIONS

    data = Path(data)
    if data.is_file():
        with open(data, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{data}: manifest has no rows")
        key = "clip_path" if "clip_path" in rows[0] else "path" if "path" in rows[0] else None
        if key is None or "category" not in rows[0]:
            raise ValueError(f"{data}: manifest needs columns clip_path (or path) and category, "
                             f"has {sorted(rows[0])}")
        clips = []
        for r in rows:
            if split is not None and r.get("split") != split:
                continue
            text = r.get("text") or r.get("transcript") or None
            clips.append(Clip(r[key], (data.parent / r[key]).resolve(), r["category"], text))
        if not clips:
            raise ValueError(f"{data}: no clips" + (f" in split {split!r}" if split else ""))
        return clips
    if data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(data).parts))
        if not files:
            raise ValueError(f"{data}: no audio files")
        out = []
        for p in files:
            rel = p.relative_to(data)
            out.append(Clip(rel.as_posix(), p, rel.parts[0] if len(rel.parts) > 1 else "all"))
        return out
    raise FileNotFoundError(f"{data}: no such manifest or folder")


@dataclass
class EvalCodec:
    """A codec under evaluation: a tokenizer (codes + reconstruction) or a reconstruction-only baseline."""

    name: str
    sample_rate: int | None  # None: works at any rate (the clip's own)
    bitrate: float | None
    frame_rate: float | None = None
    num_codebooks: int | None = None
    codebook_size: int | None = None
    categories: set[str] | None = None
    tokenizer: object = None
    baseline: object = None
    bandwidth: float | None = None
    facts: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_") or "codec"

    def applies_to(self, category: str) -> bool:
        return self.categories is None or category in self.categories

    def run(self, audios: list[np.ndarray], rates: list[int]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Reconstructions (at the inputs' rates and lengths) and codes ``[K, T]`` (None for baselines).
        Tokenizers take their own rate; baselines take any rate and resample inside."""
        if self.baseline is not None:
            return [self.baseline.reconstruct(a, r) for a, r in zip(audios, rates)], [None] * len(audios)
        enc = self.tokenizer.encode(list(audios), bandwidth=self.bandwidth)
        dec = self.tokenizer.decode(enc, crop=True)
        recs = []
        for a, r in zip(audios, dec.unbatch()):
            r = r.detach().float().cpu().numpy()
            recs.append(np.pad(r, (0, a.shape[0] - r.shape[0])) if r.shape[0] < a.shape[0] else r[: a.shape[0]])
        return recs, [c.cpu().numpy() for c in enc.unbatch()]


def open_codec(spec: str, *, device: str = "cpu", bandwidth: float | None = None) -> EvalCodec:
    """``baseline:NAME`` (identity, opus-6k, codec2-1.3k, ...) or a tokenizer folder / hub id."""
    if spec.startswith("baseline:"):
        from .baselines import get_baseline

        b = get_baseline(spec.split(":", 1)[1])
        return EvalCodec(b.name, b.sample_rate, b.bitrate, categories=set(b.categories) if b.categories else None,
                         baseline=b)
    from ..loading import load_tokenizer
    from .metrics.codec_stats import bitrate

    tok = load_tokenizer(spec, device=device)
    k = tok.codebooks_for_bandwidth(bandwidth)
    name = Path(spec).name if Path(spec).exists() else spec
    if bandwidth is not None:
        name += f"@{bandwidth:g}kbps"
    return EvalCodec(name, tok.sample_rate, bitrate(tok.frame_rate, k, tok.codebook_size), tok.frame_rate, k,
                     tok.codebook_size, tokenizer=tok, bandwidth=bandwidth,
                     facts=dict(model_id=tok.model_id, config_hash=tok.config_hash))


# ---- metrics (run in worker processes) ---------------------------------------------------------------

def compute_metrics(ref: np.ndarray, est: np.ndarray, sample_rate: int, category: str, text: str | None,
                    metrics: Iterable[str]) -> dict:
    """Every requested metric that applies to ``category``; a metric that fails is recorded as an error
    string under ``<name>_error`` and its value as NaN, so one bad clip never stops a run."""
    from .metrics import models, perceptual, signal

    out: dict = {}
    wanted = [m for m in metrics if ALL_METRICS[m][0] is None or category in ALL_METRICS[m][0]]
    calls: dict[str, Callable[[], object]] = {
        "stft_distance": lambda: signal.stft_distance(ref, est, sample_rate),
        "mel_distance": lambda: signal.mel_distance(ref, est, sample_rate),
        "si_sdr": lambda: signal.si_sdr(ref, est),
        "pesq_wb": lambda: perceptual.pesq_wb(ref, est, sample_rate),
        "stoi": lambda: perceptual.stoi(ref, est, sample_rate),
        "vuv_f1": lambda: perceptual.vuv_f1(ref, est, sample_rate),
        "wer": lambda: models.wer(ref, est, sample_rate, reference_text=text)["wer"],
        "speaker_similarity": lambda: models.speaker_similarity(ref, est, sample_rate),
    }
    dnsmos_done = False
    for m in wanted:
        try:
            if m.startswith("dnsmos_"):
                if not dnsmos_done:
                    dnsmos_done = True
                    scores = models.dnsmos(est, sample_rate)
                    for key in ("ovrl", "sig", "bak"):
                        if f"dnsmos_{key}" in wanted:
                            out[f"dnsmos_{key}"] = float(scores[key])
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out[m] = float(calls[m]())
            if math.isnan(out[m]) and caught:
                out[f"{m}_error"] = "; ".join(str(w.message) for w in caught)
        except Exception as e:  # noqa: BLE001 - recorded per clip, the run goes on
            out[m] = math.nan
            out[f"{m}_error"] = f"{type(e).__name__}: {e}"
    return out


def _metrics_job(args) -> tuple[str, str, dict]:
    codec, clip_id, ref, est, sr, category, text, metrics = args
    import torch

    torch.set_num_threads(1)
    return codec, clip_id, compute_metrics(ref, est, sr, category, text, metrics)


# ---- the run -----------------------------------------------------------------------------------------

def _drop_torn_line(path: Path) -> None:
    """Cut a last line that an interrupted run left without its newline (that clip is redone)."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def _load_done(path: Path) -> dict[tuple[str, str], dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run: that clip is redone
                done[(row["codec"], row["clip"])] = row
    return done


def run_eval(
    codecs: list[EvalCodec],
    clips: list[Clip],
    out: str | os.PathLike,
    *,
    metrics: list[str] | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    plots: int = 3,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Evaluate ``codecs`` on ``clips`` into ``out`` (module docstring); returns the summary.

    Reconstruction runs in this process, ``batch_size`` clips per forward pass; metrics run in
    ``workers`` processes (default: CPU count). Clips are read at their own rate, given to each codec
    at its rate (soxr HQ) and compared at the clip's rate.
    """
    from ..audio import load_audio
    from ..codesfile import write_codes

    metrics = list(metrics or ALL_METRICS)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(ALL_METRICS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "results.jsonl"
    _drop_torn_line(log_path)
    done = _load_done(log_path)
    workers = workers or os.cpu_count() or 1
    total = sum(1 for c in codecs for clip in clips if c.applies_to(clip.category))
    finished = sum(1 for c in codecs for clip in clips if (c.name, clip.id) in done)
    t_start = time.perf_counter()
    # forkserver: workers start clean (no inherited torch/OpenMP thread state, which can hang after fork)
    context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                                          else "spawn")
    plot_ids = {c.id for c in _plot_clips(clips, plots)}  # their reconstructions are kept for the figures
    with open(log_path, "a") as log, ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = []

        def drain(block: bool) -> None:
            nonlocal finished
            keep = []
            for fut, meta in pending:
                if block or fut.done():
                    codec_name, clip_id, values = fut.result()
                    row = {**meta, **values}
                    log.write(json.dumps(row, allow_nan=True) + "\n")
                    log.flush()
                    done[(codec_name, clip_id)] = row
                    finished += 1
                    if progress:
                        progress(f"{codec_name} {clip_id}", finished, total)
                else:
                    keep.append((fut, meta))
            pending[:] = keep

        for codec in codecs:
            todo = [c for c in clips if codec.applies_to(c.category) and (codec.name, c.id) not in done]
            for i in range(0, len(todo), batch_size):
                batch = todo[i : i + batch_size]
                refs, inputs, rates, good = [], [], [], []
                for clip in batch:
                    try:
                        ref, info = load_audio(clip.path, _native_rate(clip.path))
                        inp, _ = load_audio(ref, codec.sample_rate or info.sample_rate, sample_rate=info.sample_rate)
                    except Exception as e:  # noqa: BLE001 - a bad clip is reported, the run goes on
                        _log_error(log, done, codec, clip, f"reading: {type(e).__name__}: {e}")
                        finished += 1
                        continue
                    refs.append(ref)
                    inputs.append(inp)
                    rates.append(info.sample_rate)
                    good.append(clip)
                if not good:
                    continue
                t0 = time.perf_counter()
                in_rates = [codec.sample_rate or r for r in rates]
                try:
                    recs, codes = codec.run(inputs, in_rates)
                except Exception as e:  # noqa: BLE001
                    if len(good) == 1:
                        _log_error(log, done, codec, good[0], f"codec: {type(e).__name__}: {e}")
                        finished += 1
                        continue
                    recs, codes = [], []
                    for inp, in_rate in zip(inputs, in_rates):  # one bad clip must not fail its batch mates
                        try:
                            r, c = codec.run([inp], [in_rate])
                            recs.append(r[0])
                            codes.append(c[0])
                        except Exception as e2:  # noqa: BLE001
                            recs.append(e2)
                            codes.append(None)
                seconds = time.perf_counter() - t0
                for clip, ref, inp, rate, rec, code in zip(good, refs, inputs, rates, recs, codes):
                    if isinstance(rec, Exception):
                        _log_error(log, done, codec, clip, f"codec: {type(rec).__name__}: {rec}")
                        finished += 1
                        continue
                    est, _ = load_audio(rec.astype(np.float32), rate, sample_rate=codec.sample_rate or rate)
                    est = est[: ref.shape[0]] if est.shape[0] >= ref.shape[0] else np.pad(
                        est, (0, ref.shape[0] - est.shape[0]))
                    if code is not None:
                        write_codes(out / "codes" / codec.slug / (clip.id + ".twc"), code,
                                    sample_rate=codec.sample_rate, frame_rate=codec.frame_rate,
                                    codebook_size=codec.codebook_size, num_samples=inp.shape[0],
                                    model_id=codec.facts.get("model_id"), config_hash=codec.facts.get("config_hash"),
                                    source=clip.id)
                    if clip.id in plot_ids:
                        _save_reconstruction(out, codec, clip, est, rate)
                    meta = dict(codec=codec.name, clip=clip.id, category=clip.category,
                                seconds=round(ref.shape[0] / rate, 3), codec_seconds=round(seconds / len(good), 4))
                    pending.append((pool.submit(_metrics_job, (codec.name, clip.id, ref, est, rate, clip.category,
                                                               clip.text, metrics)), meta))
                drain(block=False)
        drain(block=True)
    summary = write_reports(out, codecs, clips, metrics, plots=plots)
    summary["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    return summary


def _native_rate(path: Path) -> int:
    import soundfile as sf

    try:
        return int(sf.info(str(path)).samplerate)
    except Exception:  # noqa: BLE001 - load_audio gives the clear error
        return 24000


def _log_error(log, done, codec: EvalCodec, clip: Clip, message: str) -> None:
    row = dict(codec=codec.name, clip=clip.id, category=clip.category, error=message)
    log.write(json.dumps(row) + "\n")
    log.flush()
    done[(codec.name, clip.id)] = row


def _plot_clips(clips: list[Clip], n: int) -> list[Clip]:
    """The first ``n`` clips of every category (the spectrogram figures)."""
    seen: dict[str, int] = {}
    out = []
    for c in clips:
        if seen.get(c.category, 0) < n:
            seen[c.category] = seen.get(c.category, 0) + 1
            out.append(c)
    return out


def _save_reconstruction(out: Path, codec: EvalCodec, clip: Clip, est: np.ndarray, rate: int) -> None:
    from ..audio import write_audio

    write_audio(out / "audio" / codec.slug / (Path(clip.id).with_suffix("").as_posix() + ".wav"), est, rate)


# ---- reports -----------------------------------------------------------------------------------------

def write_reports(out: Path, codecs: list[EvalCodec], clips: list[Clip], metrics: list[str], *, plots: int) -> dict:
    from .metrics.codec_stats import CodebookUsage
    from .report import write_csv, write_plots, write_tables

    rows = list(_load_done(out / "results.jsonl").values())
    names = [c.name for c in codecs]
    rows = [r for r in rows if r["codec"] in names]
    summary: dict = {"codecs": {}, "metrics": metrics}
    for codec in codecs:
        facts = dict(bitrate_bps=codec.bitrate, frame_rate=codec.frame_rate, num_codebooks=codec.num_codebooks,
                     codebook_size=codec.codebook_size, sample_rate=codec.sample_rate, **codec.facts)
        codes_dir = out / "codes" / codec.slug
        if codec.tokenizer is not None and codes_dir.is_dir():
            from ..codesfile import read_codes

            usage = CodebookUsage(codec.codebook_size, codec.num_codebooks)
            for p in sorted(codes_dir.rglob("*.twc")):
                usage.update(read_codes(p)[0])
            facts["token_rate"] = codec.frame_rate * codec.num_codebooks
            facts["codebook_usage"] = usage.to_dict()
        per_cat: dict = {}
        for cat in sorted({c.category for c in clips}):
            sel = [r for r in rows if r["codec"] == codec.name and r["category"] == cat]
            if not sel:
                continue
            stats = {"clips": len(sel), "errors": sum(1 for r in sel if "error" in r)}
            for m in metrics:
                vals = np.array([r[m] for r in sel if isinstance(r.get(m), (int, float))], dtype=float)
                vals = vals[~np.isnan(vals)]  # +-inf stays (SI-SDR of an exact copy is +inf)
                if vals.size:
                    with np.errstate(invalid="ignore"):  # std of values with +-inf is nan, not an error
                        stats[m] = dict(mean=float(vals.mean()), std=float(vals.std()), n=int(vals.size))
            per_cat[cat] = stats
        summary["codecs"][codec.name] = dict(facts=facts, categories=per_cat)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    write_csv(out / "clips.csv", rows, metrics)
    write_tables(out / "tables", summary)
    if plots:
        write_plots(out, rows, summary, _plot_clips(clips, plots), [c.slug for c in codecs], names)
    return summary
