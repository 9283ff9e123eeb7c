"""The jobs behind ``tokenwave encode`` and ``tokenwave decode``.

* :func:`plan_jobs`: which files, and where each output goes (the input tree mirrored under the output
  folder, the suffix replaced), with clashing outputs turned into per-file errors.
* :class:`Run`: progress bar, per-file warnings, counts and the closing summary.
* :func:`encode_files`: short files several per forward pass, long ones through
  :func:`tokenwave.streaming.encode_chunked`; :func:`decode_files`: codes files to WAV, long ones streamed.

A file that cannot be done (unreadable, empty, too short, NaN, damaged codes file, codes of another model)
fails alone: it is recorded with its error and the run goes on.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..api import CodesFileError, TokenwaveError

__all__ = ["CODES_SUFFIX", "WAV_SUFFIX", "UsageError", "Job", "Run", "plan_jobs", "encode_files", "decode_files"]

CODES_SUFFIX = ".twc"
WAV_SUFFIX = ".wav"

#: What fails one file without stopping the run (OOM on an accelerator is a RuntimeError too).
FILE_ERRORS = (TokenwaveError, OSError, ValueError, RuntimeError, MemoryError)


class UsageError(Exception):
    """Arguments that cannot work together (exit code 2)."""


@dataclass
class Job:
    """One input file and its output.

    Attributes:
        src: the input file.
        rel: ``src`` relative to its input root (the folder given, or the file's own folder), POSIX style.
        dst: the output file.
        error: why this file cannot be done before even reading it (its output clashes with another's).
    """

    src: Path
    rel: str
    dst: Path
    error: str | None = None


def find_inputs(inputs: Sequence[Path], suffixes: frozenset[str] | set[str]) -> list[tuple[Path, str]]:
    """``(file, name relative to its input root)`` for every input: files as given, folders walked.

    Folders are walked recursively in sorted order for files whose lower-cased suffix is in ``suffixes``;
    names starting with a dot (hidden files and folders, editor and macOS ``._`` droppings) are left out.
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                        continue
                    path = Path(dirpath) / name
                    found.append((path, path.relative_to(root).as_posix()))
        elif root.exists():
            found.append((root, root.name))
        else:
            raise UsageError(f"{root}: no such file or folder")
    return found


def plan_jobs(inputs: Sequence[Path], output: Path, *, suffixes: frozenset[str] | set[str],
              out_suffix: str) -> list[Job]:
    """Jobs for ``inputs`` (files and folders) writing under ``output``.

    Naming: ``output / rel`` with the suffix replaced by ``out_suffix``, ``rel`` being the input's path
    relative to its root (a folder given: the folder; a file given: its own folder). One input file and an
    ``output`` ending in ``out_suffix`` (and not an existing folder): exactly that file. Two inputs with the
    same output (``b.wav`` and ``b.flac`` side by side) both get an error instead of overwriting each other;
    the same file reached twice is done once.

    Raises:
        UsageError: an input does not exist, or ``output`` names one file for several inputs, or is a file.
    """
    found = find_inputs(inputs, suffixes)
    single_file = len(inputs) == 1 and Path(inputs[0]).is_file()
    if output.suffix.lower() == out_suffix and not output.is_dir():
        if not single_file:
            raise UsageError(f"-o {output} names one {out_suffix} file, but the inputs are not a single file; "
                             f"give a folder for -o")
        jobs = [Job(found[0][0], found[0][1], output)]
    else:
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output} is a file; give a folder (or, for one input file, a name ending "
                             f"in {out_suffix})")
        jobs, seen = [], set()
        for src, rel in found:
            key = os.path.realpath(src)
            if key in seen:
                continue
            seen.add(key)
            jobs.append(Job(src, rel, output / Path(rel).with_suffix(out_suffix)))
    by_output: dict[str, list[Job]] = {}
    for job in jobs:
        if os.path.realpath(job.dst) == os.path.realpath(job.src):
            job.error = f"its output {job.dst} is the input itself"
        by_output.setdefault(os.path.normcase(os.path.abspath(job.dst)), []).append(job)
    for group in by_output.values():
        if len(group) > 1:
            for job in group:
                others = ", ".join(str(o.src) for o in group if o is not job)
                job.error = (f"its output {job.dst} would also be written from {others}; rename one of them "
                             f"or run them separately")
    return jobs


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _error_text(error: BaseException | str, src: Path) -> str:
    """The message of ``error`` without a leading ``"<src>: "`` (the summary names the file already)."""
    if isinstance(error, str):
        return error
    text = str(error) or type(error).__name__
    for prefix in (f"{src}: ", f"{os.fspath(src)}: ", f"{src.resolve()}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if not isinstance(error, TokenwaveError):
        text = f"{type(error).__name__}: {text}"
    return text


@dataclass
class Run:
    """Progress, messages and counts of one encode/decode run.

    Use as a context manager around the work: the progress bar (rich, on stderr) shows files done / total,
    files/s and seconds of audio per second; it appears only when ``show_progress`` and stderr is a
    terminal. Messages (warnings, failures as they happen) go above the bar, or to ``echo_err`` without one.
    """

    verb: str
    total: int
    echo_err: Callable[[str], None]
    show_progress: bool = True
    skipped: int = 0
    done: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed: float = 0.0
    _partial: float = 0.0
    _t0: float = 0.0
    _progress: object = None
    _task: object = None

    def __enter__(self) -> Run:
        if self.show_progress and self.total:
            from rich.console import Console

            console = Console(stderr=True)
            if console.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self._progress = Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                    TextColumn("{task.fields[rates]}"), TimeElapsedColumn(), console=console,
                )
                self._task = self._progress.add_task(self.verb, total=self.total, rates="")
                self._progress.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.perf_counter() - self._t0
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None

    # ---- reporting -------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.echo_err(text)

    @contextmanager
    def shown_warnings(self) -> Iterator[None]:
        """Show each distinct warning raised inside once (for this file), even when the file fails."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                seen = set()
                for w in caught:
                    text = f"warning: {w.message}"
                    if text not in seen:
                        seen.add(text)
                        self.message(text)

    def _refresh(self) -> None:
        if self._progress is None:
            return
        dt = max(time.perf_counter() - self._t0, 1e-9)
        finished = self.done + len(self.failed)
        seconds = self.audio_seconds + self._partial
        self._progress.update(self._task, completed=finished,
                              rates=f"{finished / dt:.1f} files/s  {seconds / dt:.1f} s audio/s")

    def partial(self, seconds: float) -> None:
        """Audio seconds done so far of the file in progress."""
        self._partial = seconds
        self._refresh()

    def succeeded(self, seconds: float) -> None:
        self.done += 1
        self.audio_seconds += seconds
        self._partial = 0.0
        self._refresh()

    def fail(self, job: Job, error: BaseException | str) -> None:
        text = _error_text(error, job.src)
        self.failed.append((job.src, text))
        self._partial = 0.0
        if self._progress is not None:  # interactive: say it now; the summary lists it again
            self.message(f"failed: {job.src}: {text}")
        self._refresh()

    # ---- summary ---------------------------------------------------------------------------------
    def summary(self) -> str:
        speed = f", {self.audio_seconds / self.elapsed:.1f}x real time" if self.done and self.elapsed > 0 else ""
        skipped = f"skipped {self.skipped}"
        if self.skipped:
            skipped += " (output exists; --overwrite replaces it)"
        return (f"{self.verb} {_plural(self.done, 'file')}, {self.audio_seconds:.2f} s of audio in "
                f"{self.elapsed:.2f} s{speed}; {skipped}; failed {len(self.failed)}")

    def failure_lines(self) -> list[str]:
        return [f"  {src}: {text}" for src, text in self.failed]


# ------------------------------------------------------------------------------------------------ encode

def encode_files(tok, jobs: Sequence[Job], run: Run, *, bandwidth: float | None = None, batch_size: int = 8,
                 chunk_seconds: float = 30.0, context_seconds: float = 5.0) -> None:
    """Encode ``jobs`` with ``tok`` and write a codes file for each.

    Files no longer than one window of :func:`~tokenwave.streaming.encode_chunked` (``chunk_seconds +
    2 * context_seconds`` at the model's rate; every file when ``chunk_seconds`` is 0) are read whole and
    encoded ``batch_size`` per call of ``tok.encode``; if a batch fails, its files are encoded one by one so
    one bad file fails alone. Longer files are streamed from disk through ``encode_chunked``.
    """
    from ..audio import AudioReader
    from ..codesfile import write_codes
    from ..streaming import encode_chunked

    sr = tok.sample_rate
    window = (chunk_seconds + 2 * context_seconds) * sr if chunk_seconds > 0 else math.inf
    pending: list[tuple[Job, object, object]] = []

    def write(job: Job, codes, info, chunked: bool) -> None:
        extra = {"bandwidth": bandwidth, "source_sample_rate": info.sample_rate, "source_channels": info.channels}
        if chunked:
            extra.update(chunk_seconds=chunk_seconds, context_seconds=context_seconds)
        try:
            write_codes(job.dst, codes, sample_rate=sr, frame_rate=tok.frame_rate, codebook_size=tok.codebook_size,
                        num_samples=info.num_samples, model_id=tok.model_id, config_hash=tok.config_hash,
                        source=job.rel, extra=extra)
        except FILE_ERRORS as e:
            run.fail(job, e)
        else:
            run.succeeded(info.num_samples / sr)

    def flush() -> None:
        items = pending[:]
        pending.clear()
        if not items:
            return
        results: list = []
        try:
            results = tok.encode([audio for _, audio, _ in items], bandwidth=bandwidth).unbatch()
        except FILE_ERRORS as e:
            if len(items) == 1:
                results = [e]
            else:  # find the bad one(s): each file alone
                results = []
                for _, audio, _ in items:
                    try:
                        results.append(tok.encode(audio, bandwidth=bandwidth).unbatch()[0])
                    except FILE_ERRORS as e1:
                        results.append(e1)
        for (job, _, info), result in zip(items, results):
            if isinstance(result, BaseException):
                run.fail(job, result)
            else:
                write(job, result, info, chunked=False)

    for job in jobs:
        if job.error:
            run.fail(job, job.error)
            continue
        try:
            with run.shown_warnings(), AudioReader(job.src, sr) as reader:
                info = reader.info
                if info.num_samples > window:
                    codes = encode_chunked(tok, reader, chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                                           bandwidth=bandwidth, progress=lambda n: run.partial(n / sr))
                else:
                    codes, audio = None, reader.read()
        except FILE_ERRORS as e:
            run.fail(job, e)
            continue
        if codes is not None:
            write(job, codes, info, chunked=True)
        else:
            pending.append((job, audio, info))
            if len(pending) >= batch_size:
                flush()
    flush()


# ------------------------------------------------------------------------------------------------ decode

def check_header(header, tok, name: str, *, ignore_model_mismatch: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
    """Raise :class:`CodesFileError` unless codes with ``header`` can be decoded by ``tok``.

    The geometry must fit (sample rate, frame rate, codebook size equal; no more codebooks than the model
    has; ``num_samples`` within the frames' span). A different (or missing) ``config_hash`` means another
    model made the codes: an error, or only a warning through ``warn`` with ``ignore_model_mismatch``.
    """
    problems = []
    if header.sample_rate != tok.sample_rate:
        problems.append(f"audio at {header.sample_rate} Hz, the model's is {tok.sample_rate} Hz")
    if header.frame_rate != float(tok.frame_rate):
        problems.append(f"{header.frame_rate:g} frames/s, the model's is {tok.frame_rate:g}")
    if header.codebook_size != tok.codebook_size:
        problems.append(f"codebook size {header.codebook_size}, the model's is {tok.codebook_size}")
    if header.num_codebooks > tok.num_codebooks:
        problems.append(f"{header.num_codebooks} codebooks, the model has {tok.num_codebooks}")
    if problems:
        raise CodesFileError(f"{name}: codes do not fit the model {tok.model_id}: " + "; ".join(problems))
    span = (header.num_frames + 1) * tok.hop_length
    if header.num_samples > span:
        raise CodesFileError(f"{name}: header says {header.num_samples} samples, but {header.num_frames} frames "
                             f"cover at most {span}")
    if header.config_hash != tok.config_hash:
        recorded = "records no config hash" if header.config_hash is None else f"config hash {header.config_hash}"
        text = (f"{name}: encoded with model {header.model_id!r} ({recorded}), but the loaded model "
                f"{tok.model_id!r} has config hash {tok.config_hash}")
        if not ignore_model_mismatch:
            raise CodesFileError(text + "; decode with the model that made the codes, or pass "
                                        "--ignore-model-mismatch")
        if warn is not None:
            warn(f"warning: {text}; decoding anyway (--ignore-model-mismatch)")


def decoded_chunks(tok, codes, num_samples: int) -> Iterator:
    """Audio of codes ``[K, T]``, exactly ``num_samples`` long in total, in chunks.

    Through :func:`~tokenwave.streaming.iter_decode` (one call equal to ``tok.decode`` for codes that fit
    one window; memory bounded by the window for longer ones), cropped to ``num_samples``; if the frames
    cover fewer samples (the last < hop_length input samples may fall short of a frame), the rest is zeros.
    """
    import torch

    from ..streaming import iter_decode

    produced = 0
    for chunk in iter_decode(tok, torch.as_tensor(codes), num_samples=num_samples):
        produced += chunk.shape[0]
        if chunk.shape[0]:
            yield chunk
    if produced < num_samples:
        yield torch.zeros(num_samples - produced)


def decode_files(tok, jobs: Sequence[Job], run: Run, *, subtype: str = "FLOAT",
                 ignore_model_mismatch: bool = False) -> None:
    """Decode the codes files of ``jobs`` with ``tok`` into mono WAV files of the original length."""
    from ..audio import AudioWriter
    from ..codesfile import read_codes

    sr = tok.sample_rate
    for job in jobs:
        if job.error:
            run.fail(job, job.error)
            continue
        try:
            with run.shown_warnings():
                codes, header = read_codes(job.src)
                check_header(header, tok, str(job.src), ignore_model_mismatch=ignore_model_mismatch,
                             warn=run.message)
                with AudioWriter(job.dst, sr, subtype) as writer:
                    for chunk in decoded_chunks(tok, codes, header.num_samples):
                        writer.write(chunk)
                        run.partial(writer.frames_written / sr)
        except FILE_ERRORS as e:
            run.fail(job, e)
        else:
            run.succeeded(header.num_samples / sr)
