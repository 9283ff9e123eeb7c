"""``tokenwave`` command line.

Importing this module loads no model code (no torch): each command imports what it needs when it runs.
Exit codes: 0 success; 1 a file (or the path given to ``info`` / ``convert``) failed; 2 usage errors and
models that cannot be found.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import DType, WavFormat
from .common import error as _error

app = typer.Typer(help="tokenwave: audio <-> discrete tokens.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model folder, hub id (e.g. bosonai/higgs-audio-v2-tokenizer) or shipped "
                 "model name (default: $TOKENWAVE_MODEL, else the shipped tokenwave-small, which works offline)."),
]


class CheckpointFormat(str, Enum):
    original = "original"
    transformers = "transformers"


DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu, cuda or cuda:1.")]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Model parameter dtype.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist (default: skip them).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line; warnings and "
                                        "failures are still printed (stderr).")]


@app.callback()
def _main() -> None:
    """tokenwave: audio <-> discrete tokens."""


@app.command()
def demo(
    model: ModelOpt = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="24 kHz audio file (default: shipped example).")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where to write codes and audio.")
    ] = Path("out"),
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")] = "cpu",
    bandwidth: Annotated[float | None, typer.Option(help="kbps: 0.5, 1, 1.5 or 2 (default: all codebooks).")] = None,
) -> None:
    """Encode and decode an example recording and print what happened."""
    from ..api import ModelNotFoundError, TokenwaveError
    from ..demo import run_demo

    try:
        run_demo(model, input, output_dir, device=device, bandwidth=bandwidth, echo=typer.echo)
    except ModelNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except (TokenwaveError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------------------------------- helpers

def _load_tokenizer(model: str | None, device: str, dtype: DType):
    """The tokenizer, or exit: 2 when the model cannot be found or the device is unusable, 1 when its
    checkpoint is broken."""
    from ..api import ModelNotFoundError, TokenwaveError
    from ..loading import load_tokenizer

    try:
        return load_tokenizer(model, device=device, dtype=dtype.value)
    except ModelNotFoundError as e:
        raise _error(str(e), 2) from None
    except TokenwaveError as e:
        raise _error(str(e), 1) from None
    except (RuntimeError, AssertionError, ValueError) as e:  # unknown or unavailable device
        raise _error(f"cannot put the model on device {device!r} as {dtype.value}: {e}", 2) from None


def _plan(inputs: list[Path], output: Path, suffixes, out_suffix: str, overwrite: bool):
    from . import batch

    try:
        jobs = batch.plan_jobs(inputs, output, suffixes=suffixes, out_suffix=out_suffix)
    except batch.UsageError as e:
        raise _error(str(e), 2) from None
    todo = [j for j in jobs if overwrite or j.error or not j.dst.exists()]
    return jobs, todo


def _finish(run, quiet: bool) -> None:
    if not quiet:
        typer.echo(run.summary())
    if run.failed:
        if quiet:
            typer.echo(run.summary(), err=True)
        typer.echo("failed:", err=True)
        for line in run.failure_lines():
            typer.echo(line, err=True)
        raise typer.Exit(1)


def _no_files(inputs: list[Path], kinds: str) -> None:
    folders = [str(p) for p in inputs if p.is_dir()]
    typer.echo(f"warning: no {kinds} found in {', '.join(folders) or 'the inputs'}", err=True)


# ---------------------------------------------------------------------------------------------- encode

@app.command(short_help="Encode audio files and folders into codes files (.twc).")
def encode(
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUT", show_default=False,
        help="Audio files and/or folders; folders are searched recursively for audio files (.wav, .flac, .ogg, "
             ".opus, .mp3, .aiff, .au, .w64, .rf64, .caf; hidden names skipped).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", show_default=False,
        help="Output folder: each input's tree is mirrored below it, IN/a/b.flac -> OUT/a/b.twc (a file given "
             "directly -> OUT/<name>.twc). For one input file, a name ending in .twc is written exactly.")],
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DTypeOpt = DType.float32,
    bandwidth: Annotated[float | None, typer.Option(
        help="kbps: 0.5, 1, 1.5 or 2 for the Higgs tokenizer (2, 4, 6, 8 codebooks; default: all).")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Short files encoded per forward pass.")] = 8,
    chunk_seconds: Annotated[float, typer.Option(
        "--chunk-seconds", min=0.0,
        help="Files longer than chunk + 2 x context seconds are streamed from disk and encoded in windows of "
             "this many seconds (bounded memory); 0 encodes every file whole.")] = 30.0,
    context_seconds: Annotated[float, typer.Option(
        "--context-seconds", min=0.0, help="Audio each window also sees on each side.")] = 5.0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode audio files into codes files (.twc), several files per forward pass.

    Audio of any rate and channel count is read as mono at the model's rate (channels averaged, with a warning).
    Outputs that exist are skipped unless --overwrite.
    A file that fails (unreadable, empty, too short, NaN) does not stop the others; the summary lists it, exit code 1.
    """
    from ..audio import AUDIO_EXTENSIONS
    from . import batch

    jobs, todo = _plan(inputs, output, AUDIO_EXTENSIONS, batch.CODES_SUFFIX, overwrite)
    if not jobs:
        _no_files(inputs, "audio files")
    run = batch.Run("encoded", len(todo), echo_err=lambda s: typer.echo(s, err=True), show_progress=not quiet,
                    skipped=len(jobs) - len(todo))
    if todo:
        tok = _load_tokenizer(model, device, dtype)
        if bandwidth is not None:
            try:
                tok.codebooks_for_bandwidth(bandwidth)
            except ValueError as e:
                raise _error(f"--bandwidth: {e}", 2) from None
        with run:
            batch.encode_files(tok, todo, run, bandwidth=bandwidth, batch_size=batch_size,
                               chunk_seconds=chunk_seconds, context_seconds=context_seconds)
    _finish(run, quiet)


# ---------------------------------------------------------------------------------------------- decode

@app.command(short_help="Decode codes files (.twc) and folders into WAV files.")
def decode(
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUT", show_default=False,
        help="Codes files (.twc) and/or folders, searched recursively for .twc files (hidden names skipped).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", show_default=False,
        help="Output folder: IN/a/b.twc -> OUT/a/b.wav (a file given directly -> OUT/<name>.wav). For one "
             "input file, a name ending in .wav is written exactly.")],
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DTypeOpt = DType.float32,
    format: Annotated[WavFormat, typer.Option(
        "--format", help="WAV sample format: float (32-bit float, exact; the default) or pcm16 (16-bit).")
    ] = WavFormat.float,
    ignore_model_mismatch: Annotated[bool, typer.Option(
        "--ignore-model-mismatch",
        help="Decode codes whose recorded config hash differs from the model's (warns instead of failing).")
    ] = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode codes files (.twc) into mono WAV files at the model's sample rate.

    Each output has exactly the original input's length (samples at the model's rate, recorded in the codes file).
    Long files are decoded in windows (bounded memory). Outputs that exist are skipped unless --overwrite.
    Codes that do not fit the model (rates, codebook size or count) or come from another model (config hash) fail.
    A file that fails does not stop the others; the summary lists it, exit code 1.
    """
    from . import batch

    jobs, todo = _plan(inputs, output, {batch.CODES_SUFFIX}, batch.WAV_SUFFIX, overwrite)
    if not jobs:
        _no_files(inputs, "codes files (.twc)")
    run = batch.Run("decoded", len(todo), echo_err=lambda s: typer.echo(s, err=True), show_progress=not quiet,
                    skipped=len(jobs) - len(todo))
    if todo:
        tok = _load_tokenizer(model, device, dtype)
        with run:
            batch.decode_files(tok, todo, run, subtype="FLOAT" if format is WavFormat.float else "PCM_16",
                               ignore_model_mismatch=ignore_model_mismatch)
    _finish(run, quiet)


# ---------------------------------------------------------------------------------------------- convert

@app.command(short_help="Convert a checkpoint between the transformers and original formats.")
def convert(
    src: Annotated[Path, typer.Argument(metavar="SRC", show_default=False, help="Model folder, either format.")],
    dst: Annotated[Path, typer.Argument(metavar="DST", show_default=False,
                                        help="Folder to write (must be new or empty).")],
    to: Annotated[CheckpointFormat, typer.Option(
        "--to", case_sensitive=False, show_default=False,
        help="transformers (config.json + model.safetensors) or original (boson-multimodal config.json + "
             "model.pth).")],
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into a non-empty DST, replacing the checkpoint files there.")] = False,
) -> None:
    """Convert a Higgs tokenizer checkpoint between the transformers and the original format."""
    from ..api import TokenwaveError
    from ..codecs.higgs.convert import convert_checkpoint, folder_format

    try:
        source_format = folder_format(src)
        out = convert_checkpoint(src, dst, to.value, overwrite=overwrite)
    except (TokenwaveError, OSError) as e:
        raise _error(str(e), 1) from None
    typer.echo(f"wrote {out} ({to.value} format, from {src}, {source_format} format):")
    for path in sorted(out.iterdir()):
        if path.is_file():
            typer.echo(f"  {path.name:28} {path.stat().st_size:>14,} bytes")


# ---------------------------------------------------------------------------------------------- info

def _codes_info(path: Path) -> dict:
    from dataclasses import asdict

    from ..codesfile import read_header

    header = read_header(path)
    return {
        "kind": "codes_file",
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "duration_seconds": header.num_samples / header.sample_rate,
        "bitrate_bps": header.num_codebooks * header.bits_per_code * header.frame_rate,
        **asdict(header),
    }


def _print_codes_info(d: dict) -> None:
    import json

    rows = [
        ("codes file", d["path"]),
        ("size", f"{d['file_bytes']:,} bytes (payload {d['payload_bytes']:,}, crc32 {d['payload_crc32']:#010x})"),
        ("model", str(d["model_id"])),
        ("config hash", str(d["config_hash"])),
        ("audio", f"{d['duration_seconds']:.3f} s = {d['num_samples']:,} samples at {d['sample_rate']} Hz"),
        ("codes", f"{d['num_codebooks']} codebooks x {d['num_frames']:,} frames at {d['frame_rate']:g} frames/s"),
        ("codebook size", f"{d['codebook_size']} ({d['bits_per_code']} bits per code)"),
        ("bitrate", f"{d['bitrate_bps'] / 1000:g} kbps"),
        ("source", str(d["source"])),
        ("written by", f"tokenwave {d['tokenwave_version']}"),
    ]
    if d["extra"]:
        rows.append(("extra", json.dumps(d["extra"], sort_keys=True)))
    for key, value in rows:
        typer.echo(f"{key:14} {value}")


def _describe_folder(path: Path) -> dict:
    """describe_model_folder of the codec family the folder's config.json names."""
    import json

    from ..codecs.wavtokenizer.config import MODEL_TYPE as WAVTOKENIZER

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None  # the Higgs reader gives the detailed error
    if model_type == WAVTOKENIZER:
        from ..codecs.wavtokenizer.checkpoint import describe_folder

        return describe_folder(path)
    from ..codecs.higgs.convert import describe_model_folder

    return describe_model_folder(path)


def _print_model_info(d: dict) -> None:
    weights = "none"
    if d["weights"]:
        weights = (f"{d['weights']} ({d['num_tensors']} tensors, {d['num_parameters']:,} values, "
                   f"{', '.join(d['dtypes'])})")
    rows = [
        ("model folder", d["path"]),
        ("format", f"{d['format']} ({d['model_type']})"),
        ("weights", weights),
        ("audio", f"{d['sample_rate']} Hz, {d['frame_rate']:g} frames/s, hop {d['hop_length']} samples"),
        ("codebooks", f"{d['num_codebooks']} x {d['codebook_size']} entries of dim {d['codebook_dim']}"),
        ("bandwidths", ", ".join(f"{b:g}" for b in d["target_bandwidths"]) + " kbps"),
    ]
    if "acoustic_hidden_size" in d:
        rows += [("acoustic", f"hidden size {d['acoustic_hidden_size']}"),
                 ("semantic", f"hidden size {d['semantic_hidden_size']}, {d['semantic_num_layers']} layers")]
    if "decoder" in d:
        rows.append(("decoder", d["decoder"]))
    rows.append(("config hash", d["config_hash"]))
    for key, value in rows:
        typer.echo(f"{key:14} {value}")
    typer.echo("files")
    for name, size in d["files"].items():
        typer.echo(f"  {name:28} {size:>14,} bytes")


@app.command(short_help="Describe a model folder or a codes file.")
def info(
    path: Annotated[Path, typer.Argument(metavar="PATH", show_default=False,
                                         help="A model folder or a codes file (.twc).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of aligned lines.")] = False,
) -> None:
    """Describe a model folder (format, weights, geometry) or a codes file (header, duration, bitrate, size)."""
    import json

    from ..api import CodesFileError, TokenwaveError

    if path.is_dir():
        try:
            data = {"kind": "model_folder", **_describe_folder(path)}
        except (TokenwaveError, OSError) as e:
            raise _error(str(e), 1) from None
        show = _print_model_info
    elif path.is_file():
        try:
            data = _codes_info(path)
        except CodesFileError as e:
            if path.suffix.lower() == ".twc":
                raise _error(str(e), 1) from None
            reason = str(e).removeprefix(f"{path}: ")
            raise _error(f"{path} is neither a model folder nor a tokenwave codes file ({reason})", 1) from None
        except OSError as e:
            raise _error(f"cannot read {path}: {e}", 1) from None
        show = _print_codes_info
    else:
        raise _error(f"{path}: no such file or folder (expected a model folder or a codes file)", 1)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        show(data)


# ------------------------------------------------------------------------------------------------ eval

@app.command("eval", short_help="Measure codecs on a folder or manifest: CSV, JSON, tables, plots.")
def eval_(
    codec: Annotated[list[str], typer.Option(
        "--codec", "-c", show_default=False,
        help="Codec to evaluate (repeat for several): a model folder or hub id, or baseline:NAME with NAME one "
             "of identity, opus-6k, codec2-1.3k, codec2-2.4k, codec2-3.2k.")],
    data: Annotated[Path, typer.Option(
        "--data", "-d", show_default=False,
        help="A manifest CSV (clip_path, category[, split, text]) or a folder (category = first sub-folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False, help="Output folder (resumable).")],
    split: Annotated[str | None, typer.Option(help="Only manifest rows of this split, e.g. dev.")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Metric to compute (repeat; default: all). Speech-only metrics apply to category speech.")
    ] = None,
    bandwidth: Annotated[float | None, typer.Option(help="kbps for tokenizer codecs (default: all codebooks).")] = None,
    device: DeviceOpt = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Clips per codec forward pass.")] = 4,
    workers: Annotated[int | None, typer.Option(min=1, help="Metric processes (default: CPU count).")] = None,
    plots: Annotated[int, typer.Option(min=0, help="Spectrogram figures per category (0: no plots).")] = 3,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate codecs (tokenizers and classical baselines) with the Higgs card's and WavTokenizer paper's
    metrics. A second run with the same --out resumes: finished (codec, clip) pairs are not redone."""
    from ..api import ModelNotFoundError, TokenwaveError

    try:
        from ..eval.runner import open_codec, read_clips, run_eval

        clips = read_clips(data, split=split)
        codecs = [open_codec(c, device=device, bandwidth=None if c.startswith("baseline:") else bandwidth)
                  for c in codec]
    except ModelNotFoundError as e:
        raise _error(str(e), 2) from None
    except (TokenwaveError, ValueError, OSError, RuntimeError, ImportError) as e:
        raise _error(str(e), 2) from None
    bar = None
    if not quiet:
        import sys

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if sys.stderr.isatty():
            bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("eval", total=1)

    def progress(label: str, done: int, total: int) -> None:
        if bar is not None:
            bar.update(task, completed=done, total=total, description=label[:40])

    try:
        summary = run_eval(codecs, clips, out, metrics=metric, batch_size=batch_size, workers=workers, plots=plots,
                           progress=progress)
    except ValueError as e:
        raise _error(str(e), 2) from None
    finally:
        if bar is not None:
            bar.stop()
    errors = sum(st.get("errors", 0) for c in summary["codecs"].values() for st in c["categories"].values())
    if not quiet or errors:
        typer.echo(f"evaluated {len(codecs)} codec(s) on {len(clips)} clips in {summary['wall_seconds']} s; "
                   f"{errors} failed; tables in {out / 'tables'}")
    if errors:
        raise typer.Exit(1)


@app.command(short_help="Put several evaluation folders side by side in one set of tables.")
def compare(
    results: Annotated[list[Path], typer.Argument(metavar="EVAL_DIR", show_default=False,
                                                  help="Folders written by tokenwave eval.")],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False, help="Where the tables go.")],
) -> None:
    """Merge the summaries of several `tokenwave eval` runs into side-by-side tables per category."""
    from ..eval.report import compare as compare_

    try:
        merged = compare_(results, out)
    except (OSError, ValueError, KeyError) as e:
        raise _error(str(e), 1) from None
    typer.echo(f"{len(merged['codecs'])} codecs side by side in {out / 'tables'}")


@app.command(short_help="Train a codec from a YAML recipe (shipped name or file) with key=value overrides.",
             context_settings={"allow_extra_args": False})
def train(
    overrides: Annotated[list[str] | None, typer.Argument(
        metavar="[KEY=VALUE]...", show_default=False,
        help="Recipe overrides, values in YAML: train.max_steps=2000 data.root=/data 'optim.betas=[0.8,0.99]'.",
    )] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Recipe: a shipped name (see --list) or a YAML file, which may name a 'base'.")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", "-o", help="Where logs, samples and checkpoints go (default: runs/<recipe name>).")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue from a checkpoint tag folder (RUN/checkpoints/latest); overrides apply to "
        "its recipe.")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="torch device (default: the recipe's train.device, 'auto').")] = None,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, help="Processes on this machine (torchrun; one per GPU, or gloo on CPU).")] = 1,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the resolved recipe as JSON and exit.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped recipes and exit.")] = False,
) -> None:
    """Train or fine-tune a codec. Writes metrics.csv, valid.csv, TensorBoard logs, audio samples and
    checkpoints (latest, best, step tags) under the run folder; `tokenwave info RUN/checkpoints/best/model`
    describes the result and every tokenwave command loads it with --model."""
    from ..training.recipe import RecipeError, load_recipe, shipped_recipes

    if list_:
        for name in shipped_recipes():
            typer.echo(name)
        return
    overrides = list(overrides or [])
    if (config is None) == (resume is None):
        raise _error("give --config RECIPE (a new run) or --resume CHECKPOINT (continue one)", 2)
    try:
        if resume is not None:
            from ..training.recipe import Recipe, apply_overrides
            from ..training.state import read_checkpoint

            recipe = Recipe.from_dict(apply_overrides(read_checkpoint(resume)[2], overrides), str(resume))
        else:
            recipe = load_recipe(config, overrides)
    except (RecipeError, OSError, ValueError) as e:
        raise _error(str(e), 2) from None
    if dry_run:
        typer.echo(recipe.to_json())
        return
    if run_dir is None:
        run_dir = resume.parent.parent if resume is not None else Path("runs") / Path(config).stem
    if nproc > 1 and "WORLD_SIZE" not in __import__("os").environ:
        import subprocess
        import sys

        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "tokenwave.cli.main", "train", "--run-dir", str(run_dir)]
        args += ["--resume", str(resume)] if resume is not None else ["--config", str(config)]
        args += ["--device", device] if device else []
        raise typer.Exit(subprocess.call(args + overrides))
    from ..training.run import train as train_

    try:
        latest = train_(None if resume is not None else recipe, run_dir, resume=resume, device=device,
                        overrides=overrides if resume is not None else ())
    except (ValueError, FileNotFoundError) as e:
        raise _error(str(e), 1) from None
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        typer.echo(f"done: {latest}")


from .tts import SHORT_HELP as _TTS_HELP  # noqa: E402  (a torch-free module, like this one)
from .tts import tts as _tts  # noqa: E402

app.command("tts", short_help=_TTS_HELP)(_tts)


if __name__ == "__main__":  # pragma: no cover
    app()
