"""Reports of an evaluation: per-clip CSV, markdown tables per category, plots, and side-by-side comparison."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

# column titles and number formats of the tables (arrow: which way is better)
TITLES = {
    "stft_distance": ("STFT dist. ↓", "{:.3f}"),
    "mel_distance": ("Mel dist. ↓", "{:.3f}"),
    "si_sdr": ("SI-SDR (dB) ↑", "{:.2f}"),
    "pesq_wb": ("PESQ-WB ↑", "{:.2f}"),
    "stoi": ("STOI ↑", "{:.3f}"),
    "vuv_f1": ("V/UV F1 ↑", "{:.3f}"),
    "wer": ("WER ↓", "{:.3f}"),
    "speaker_similarity": ("Spk. sim. ↑", "{:.3f}"),
    "dnsmos_ovrl": ("DNSMOS OVRL ↑", "{:.2f}"),
    "dnsmos_sig": ("DNSMOS SIG ↑", "{:.2f}"),
    "dnsmos_bak": ("DNSMOS BAK ↑", "{:.2f}"),
}


def write_csv(path: Path, rows: list[dict], metrics: list[str]) -> None:
    cols = ["codec", "clip", "category", "seconds", "codec_seconds", *metrics, "error"]
    extra = sorted({k for r in rows for k in r if k.endswith("_error")})
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols + extra, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["codec"], r["clip"])):
            w.writerow(r)
    os.replace(tmp, path)


def _fmt(stat: dict | None, fmt: str) -> str:
    if not stat:
        return "–"
    mean = stat["mean"]
    if math.isinf(mean):
        return "∞" if mean > 0 else "−∞"
    return "–" if math.isnan(mean) else fmt.format(mean)


def category_table(summary: dict, category: str) -> str:
    """Markdown: one row per codec (bitrate, frame rate, then every metric with values in this category),
    as the Higgs tokenizer card lays out its per-category tables."""
    metrics = [m for m in summary["metrics"]
               if any(m in c["categories"].get(category, {}) for c in summary["codecs"].values())]
    head = ["Codec", "kbps", "Frames/s", *[TITLES.get(m, (m, ""))[0] for m in metrics], "Clips"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in summary["codecs"].items():
        stats = c["categories"].get(category)
        if stats is None:
            continue
        facts = c["facts"]
        kbps = "–" if facts.get("bitrate_bps") is None else f"{facts['bitrate_bps'] / 1000:g}"
        fps = "–" if facts.get("frame_rate") is None else f"{facts['frame_rate']:g}"
        cells = [name, kbps, fps, *[_fmt(stats.get(m), TITLES.get(m, (m, "{:.3f}"))[1]) for m in metrics]]
        clips = str(stats["clips"]) + (f" ({stats['errors']} failed)" if stats.get("errors") else "")
        lines.append("| " + " | ".join(cells + [clips]) + " |")
    return "\n".join(lines) + "\n"


def usage_table(summary: dict) -> str:
    rows = [(n, c["facts"]["codebook_usage"]) for n, c in summary["codecs"].items() if "codebook_usage" in c["facts"]]
    if not rows:
        return ""
    lines = ["| Codec | Codebook | Utilisation | Entropy (bits) | Normalised entropy |", "|---|---|---|---|---|"]
    for name, u in rows:
        for k, (util, ent, norm) in enumerate(zip(u["utilization"], u["entropy"], u["normalized_entropy"])):
            lines.append(f"| {name} | {k} | {util:.3f} | {ent:.2f} | {norm:.3f} |")
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, summary: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cats = sorted({cat for c in summary["codecs"].values() for cat in c["categories"]})
    for cat in cats:
        (folder / f"{cat}.md").write_text(f"## {cat}\n\n" + category_table(summary, cat))
    usage = usage_table(summary)
    if usage:
        (folder / "codebook_usage.md").write_text("## Codebook usage over the evaluated set\n\n" + usage)


def write_plots(out: Path, rows: list[dict], summary: dict, plot_clips, slugs: list[str], names: list[str]) -> None:
    """Spectrograms of original and reconstructions for ``plot_clips``; box plots of every metric per
    category across codecs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..audio import load_audio

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    for clip in plot_clips:
        stem = Path(clip.id).with_suffix("").as_posix() + ".wav"
        recs = [(n, out / "audio" / s / stem) for n, s in zip(names, slugs) if (out / "audio" / s / stem).is_file()]
        if not recs:
            continue
        panels = [("original", load_audio(clip.path, 24000)[0])] + [(n, load_audio(p, 24000)[0]) for n, p in recs]
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True, squeeze=False)
        for ax, (title, audio) in zip(axes[:, 0], panels):
            with np.errstate(divide="ignore"):  # digital silence: log of 0 is drawn as the floor
                ax.specgram(audio, NFFT=1024, Fs=24000, noverlap=768, cmap="magma", vmin=-140)
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("Hz")
        axes[-1, 0].set_xlabel("s")
        fig.suptitle(f"{clip.category}: {clip.id}", fontsize=10)
        fig.tight_layout()
        fig.savefig(folder / f"spectrogram_{_safe(clip.id)}.png", dpi=80)
        plt.close(fig)
    for cat in sorted({r["category"] for r in rows}):
        metrics = [m for m in summary["metrics"]
                   if any(np.isfinite(r.get(m, np.nan)) for r in rows if r["category"] == cat and m in r)]
        if not metrics:
            continue
        cols = min(4, len(metrics))
        grid_rows = -(-len(metrics) // cols)
        fig, axes = plt.subplots(grid_rows, cols, figsize=(3.2 * cols, 3.2 * grid_rows), squeeze=False)
        for ax in axes.flat[len(metrics):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, metrics):
            data = [[r[m] for r in rows if r["codec"] == n and r["category"] == cat and np.isfinite(r.get(m, np.nan))]
                    for n in names]
            ax.boxplot([d if d else [np.nan] for d in data])
            ax.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right", fontsize=7)
            ax.set_title(TITLES.get(m, (m,))[0], fontsize=9)
        fig.suptitle(cat)
        fig.tight_layout()
        fig.savefig(folder / f"distributions_{_safe(cat)}.png", dpi=80)
        plt.close(fig)


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def compare(result_dirs: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Side-by-side tables of several evaluation folders (their ``summary.json``) in ``out/tables``."""
    merged: dict = {"codecs": {}, "metrics": []}
    for d in result_dirs:
        path = Path(d) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{d}: no summary.json (not an evaluation folder)")
        s = json.loads(path.read_text())
        for m in s["metrics"]:
            if m not in merged["metrics"]:
                merged["metrics"].append(m)
        for name, c in s["codecs"].items():
            key = name if name not in merged["codecs"] else f"{name} ({Path(d).name})"
            merged["codecs"][key] = c
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(merged, indent=2, allow_nan=True) + "\n")
    write_tables(out / "tables", merged)
    return merged
