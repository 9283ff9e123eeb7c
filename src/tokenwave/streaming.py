"""Long audio in bounded memory, and streaming decode.

Both work on any tokenizer that meets the contract (:class:`tokenwave.AudioTokenizer`), through windows
whose frames line up with the whole file's frames (a window starting at sample ``s * hop_length`` gives
frames ``s, s + 1, ...``). Each window carries context on both sides; only its centre is kept, so every
kept frame or sample saw ``context`` frames of its neighbourhood, and the window edges (where the
layers' zero padding differs from the whole file) fall into discarded context. Memory is bounded by the
window, whatever the input length.

* :func:`encode_chunked`: audio (array, or a reader of a file of any length) -> codes ``[K, T]``.
* :class:`StreamingDecoder`: push frame chunks as they arrive, get audio out after a fixed look-ahead.
* :func:`decode_chunked`: codes ``[K, T]`` -> audio, through a :class:`StreamingDecoder`.

How far these agree with whole-file processing depends on the receptive field of the model (see
``docs/long_audio.md`` for the Higgs tokenizer: HuBERT attends to the whole window, the DAC decoder sees
10 frames on each side) and is measured there and in ``tests/test_streaming.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .api import AudioTokenizer, InvalidAudioError, InvalidCodesError

__all__ = ["ChunkPlan", "encode_chunked", "decode_chunked", "StreamingDecoder", "ArraySource", "plan_windows"]

# Defaults for the Higgs tokenizer, chosen from measurements in docs/long_audio.md.
DEFAULT_ENCODE_CHUNK_SECONDS = 30.0
DEFAULT_ENCODE_CONTEXT_SECONDS = 5.0
DEFAULT_DECODE_CHUNK_FRAMES = 250
DEFAULT_DECODE_CONTEXT_FRAMES = 12


@dataclass(frozen=True)
class ChunkPlan:
    """One window: keep frames ``[keep_start, keep_end)``, computed from frames ``[start, end)``."""

    start: int
    end: int
    keep_start: int
    keep_end: int


def plan_windows(num_frames: int, chunk_frames: int, context_frames: int) -> list[ChunkPlan]:
    """Windows of ``chunk_frames`` kept frames with ``context_frames`` of context on each side (clipped
    at the file ends). A file of at most ``chunk_frames + 2 * context_frames`` frames is one window."""
    if chunk_frames < 1 or context_frames < 0:
        raise ValueError(f"chunk_frames must be >= 1 and context_frames >= 0, got {chunk_frames}, {context_frames}")
    if num_frames <= chunk_frames + 2 * context_frames:
        return [ChunkPlan(0, num_frames, 0, num_frames)]
    plans = []
    for keep_start in range(0, num_frames, chunk_frames):
        keep_end = min(keep_start + chunk_frames, num_frames)
        plans.append(ChunkPlan(max(0, keep_start - context_frames), min(num_frames, keep_end + context_frames),
                               keep_start, keep_end))
    return plans


class ArraySource:
    """An in-memory signal behind the reader protocol of :func:`encode_chunked` (``num_samples``, ``read``)."""

    def __init__(self, audio):
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().to("cpu", torch.float32).numpy()
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise InvalidAudioError(f"chunked encoding takes one mono signal [L], got shape {audio.shape}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise InvalidAudioError(f"audio must be floating point samples in [-1, 1], got {audio.dtype}")
        self._audio = audio
        self._pos = 0
        self.num_samples = audio.shape[0]

    def read(self, n: int) -> np.ndarray:
        out = self._audio[self._pos : self._pos + n]
        self._pos += out.shape[0]
        return out


def _seconds_to_frames(tokenizer: AudioTokenizer, seconds: float, name: str) -> int:
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {seconds}")
    return max(1, round(seconds * tokenizer.frame_rate))


def encode_chunked(
    tokenizer: AudioTokenizer,
    source,
    *,
    chunk_seconds: float = DEFAULT_ENCODE_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_ENCODE_CONTEXT_SECONDS,
    bandwidth: float | None = None,
    num_codebooks: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Encode one signal of any length in windows: codes ``[K, T]`` with ``T`` = the whole file's frames.

    Args:
        tokenizer: any :class:`AudioTokenizer`. A codec whose output depends on the whole signal supplies
            hooks that keep windows on the whole signal's terms: ``_encode_window`` (the Higgs tokenizer:
            the acoustic padding the whole length gets) and ``_chunked_statistics`` (a first pass over the
            windows: the Higgs tokenizer's HuBERT GroupNorm statistics of the whole signal).
        source: 1-D float array/tensor at ``tokenizer.sample_rate``, or a reader with ``num_samples`` and
            ``read(n) -> float32 array`` (e.g. :class:`tokenwave.audio.AudioReader`), read in order. A
            codec with a first pass reads the source twice, through ``source.reopen()`` for readers.
        chunk_seconds: audio whose codes each window keeps.
        context_seconds: audio on each side of the kept part that the window also sees.
        bandwidth, num_codebooks: as in ``encode``.
        progress: called with the number of input samples encoded after each window.

    Memory holds one window (``chunk + 2 * context``) of audio and its activations, plus the codes.
    A signal no longer than one window is encoded whole, identical to ``tokenizer.encode``.
    """
    reader = source if hasattr(source, "read") else ArraySource(source)
    total = int(reader.num_samples)
    num_frames = tokenizer.num_frames(total)
    chunk = _seconds_to_frames(tokenizer, chunk_seconds, "chunk_seconds")
    context = _seconds_to_frames(tokenizer, context_seconds, "context_seconds") if context_seconds else 0
    plans = plan_windows(num_frames, chunk, context)
    if len(plans) == 1:
        (_, segment), = _windows(reader, plans, tokenizer.hop_length, total)
        codes = tokenizer.encode(segment, bandwidth=bandwidth, num_codebooks=num_codebooks).codes[0].cpu()
        if progress is not None:
            progress(total)
        return codes
    stats_fn = getattr(tokenizer, "_chunked_statistics", None)
    options = {}
    if stats_fn is not None:
        options["statistics"] = stats_fn(_windows(reader, plans, tokenizer.hop_length, total), num_frames)
        if hasattr(reader, "reopen"):
            reader = reader.reopen()
        elif hasattr(source, "read"):
            raise TypeError(f"{type(source).__name__} has no reopen(): this codec reads the source twice "
                            f"(pass an array, or a reader with reopen() such as tokenwave.audio.AudioReader)")
        else:
            reader = ArraySource(source)
        try:
            return _encode_windows(tokenizer, reader, plans, total, bandwidth, num_codebooks, progress, options)
        finally:
            if hasattr(reader, "close"):
                reader.close()
    return _encode_windows(tokenizer, reader, plans, total, bandwidth, num_codebooks, progress, options)


def _encode_windows(tokenizer, reader, plans, total, bandwidth, num_codebooks, progress, options) -> torch.Tensor:
    window_fn = getattr(tokenizer, "_encode_window", None)
    parts = []
    for plan, segment in _windows(reader, plans, tokenizer.hop_length, total):
        s0 = plan.start * tokenizer.hop_length
        if window_fn is not None:
            codes = window_fn(segment, s0, total, bandwidth=bandwidth, num_codebooks=num_codebooks, **options)
        else:
            codes = tokenizer.encode(segment, bandwidth=bandwidth, num_codebooks=num_codebooks).codes[0]
        expected = plan.end - plan.start
        if codes.shape[-1] != expected:
            raise RuntimeError(f"window [{plan.start}, {plan.end}) gave {codes.shape[-1]} frames, expected {expected}")
        parts.append(codes[:, plan.keep_start - plan.start : plan.keep_end - plan.start].cpu())
        if progress is not None:
            progress(min(s0 + segment.shape[0], total))
    return torch.cat(parts, dim=-1)


def _windows(reader, plans: list[ChunkPlan], hop: int, total: int) -> Iterator[tuple[ChunkPlan, torch.Tensor]]:
    """``(plan, samples of its window)`` for each plan, reading ``reader`` once, in order."""
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # sample index of buf[0]
    num_frames = plans[-1].end
    for plan in plans:
        s0 = plan.start * hop
        s1 = total if plan.end == num_frames else plan.end * hop
        need = s1 - (buf_start + buf.shape[0])
        if need > 0:
            buf = np.concatenate([buf, _read_exactly(reader, need, buf_start + buf.shape[0], total)])
        buf = buf[s0 - buf_start :]
        buf_start = s0
        yield plan, torch.from_numpy(np.ascontiguousarray(buf[: s1 - s0]))


def _read_exactly(source, n: int, position: int, total: int) -> np.ndarray:
    chunks, got = [], 0
    while got < n:
        block = np.asarray(source.read(n - got), dtype=np.float32)
        if block.shape[0] == 0:
            raise InvalidAudioError(
                f"audio source ended at sample {position + got}, but it announced {total} samples"
            )
        chunks.append(block)
        got += block.shape[0]
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


class StreamingDecoder:
    """Decode codes that arrive in chunks (from a file, a network, a TTS model) into audio chunks.

    Latency: audio for frame ``t`` comes out once frame ``t + lookahead_frames`` has been pushed
    (``lookahead_frames / frame_rate`` seconds; by default 12 frames = 0.48 s for the Higgs tokenizer,
    whose decoder output at frame ``t`` depends on frames ``t - 10 .. t + 10``),
    or at :meth:`flush`. Each decode pass sees ``context_frames`` of already-emitted frames on its left.

    The concatenated output equals ``tokenizer.decode`` of all frames, up to the effect of the frames
    beyond the look-ahead and context; with the defaults that is below 1e-4 of the peak for the Higgs
    tokenizer (measured in ``docs/long_audio.md`` and tested). Output length is ``hop_length`` samples
    per frame, as ``decode``; crop the total to the input length yourself (codes files store it).

    Example::

        stream = StreamingDecoder(tokenizer)
        for frames in frame_chunks:          # [K, n] each
            play(stream.push(frames))        # [m] samples, m may be 0
        play(stream.flush())
    """

    def __init__(self, tokenizer: AudioTokenizer, *, lookahead_frames: int = DEFAULT_DECODE_CONTEXT_FRAMES,
                 context_frames: int | None = None):
        if lookahead_frames < 0:
            raise ValueError(f"lookahead_frames must be >= 0, got {lookahead_frames}")
        self.tokenizer = tokenizer
        self.lookahead_frames = int(lookahead_frames)
        self.context_frames = int(lookahead_frames if context_frames is None else context_frames)
        if self.context_frames < 0:
            raise ValueError(f"context_frames must be >= 0, got {context_frames}")
        self._codes: torch.Tensor | None = None  # [K, n] frames from self._start on
        self._start = 0  # global frame index of self._codes[:, 0]
        self._emitted = 0  # frames whose audio has been returned
        self._pushed = 0
        self._closed = False

    @property
    def frames_pushed(self) -> int:
        return self._pushed

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def push(self, codes) -> torch.Tensor:
        """Add frames ``[K, n]``; return the audio that is now final (``[m]``, ``m`` a multiple of hop)."""
        if self._closed:
            raise RuntimeError("this StreamingDecoder was flushed; make a new one for a new stream")
        codes = _as_codes(codes)
        if self._codes is not None and codes.shape[0] != self._codes.shape[0]:
            raise InvalidCodesError(
                f"chunk has {codes.shape[0]} codebooks, earlier chunks had {self._codes.shape[0]}"
            )
        self._codes = codes if self._codes is None else torch.cat([self._codes, codes], dim=-1)
        self._pushed += codes.shape[-1]
        return self._emit(self._pushed - self.lookahead_frames)

    def flush(self) -> torch.Tensor:
        """Decode what is left (the last ``lookahead_frames``); the stream ends."""
        out = self._emit(self._pushed) if self._codes is not None else torch.zeros(0)
        self._closed = True
        return out

    def _emit(self, ready: int) -> torch.Tensor:
        if ready <= self._emitted:
            return torch.zeros(0)
        hop = self.tokenizer.hop_length
        first = max(self._start, self._emitted - self.context_frames)
        window = self._codes[:, first - self._start :]
        audio = self.tokenizer.decode(window[None]).audio[0, 0]
        out = audio[(self._emitted - first) * hop : (ready - first) * hop].cpu()
        self._emitted = ready
        keep_from = max(0, self._emitted - self.context_frames)  # frames the next window needs
        self._codes = self._codes[:, keep_from - self._start :]
        self._start = keep_from
        return out


def _as_codes(codes) -> torch.Tensor:
    if isinstance(codes, np.ndarray):
        codes = torch.from_numpy(codes)
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        shape = tuple(codes.shape) if hasattr(codes, "shape") else type(codes).__name__
        raise InvalidCodesError(f"a streamed chunk must be codes [K, n], got {shape}")
    return codes


def decode_window(tokenizer: AudioTokenizer) -> tuple[int, int]:
    """Default ``(chunk_frames, context_frames)`` of :func:`iter_decode` for ``tokenizer``: its
    ``decode_chunk_seconds`` / ``decode_context_seconds`` attributes when it has them (a decoder with global
    attention needs long windows), else :data:`DEFAULT_DECODE_CHUNK_FRAMES` and
    :data:`DEFAULT_DECODE_CONTEXT_FRAMES` (the Higgs tokenizer's convolutional decoder)."""
    chunk = getattr(tokenizer, "decode_chunk_seconds", None)
    context = getattr(tokenizer, "decode_context_seconds", None)
    return (DEFAULT_DECODE_CHUNK_FRAMES if chunk is None else _seconds_to_frames(tokenizer, chunk, "chunk"),
            DEFAULT_DECODE_CONTEXT_FRAMES if context is None else _seconds_to_frames(tokenizer, context, "context"))


def iter_decode(tokenizer: AudioTokenizer, codes, *, chunk_frames: int | None = None,
                context_frames: int | None = None,
                num_samples: int | None = None) -> Iterator[torch.Tensor]:
    """Audio chunks of ``codes`` ``[K, T]``, decoded ``chunk_frames`` at a time with ``context_frames`` of
    context on each side (defaults: :func:`decode_window`); cropped to ``num_samples`` in total when given.
    Codes that fit one window (``chunk_frames + 2 * context_frames``) are decoded in one call, identical to
    ``tokenizer.decode``."""
    default_chunk, default_context = decode_window(tokenizer)
    chunk_frames = default_chunk if chunk_frames is None else chunk_frames
    context_frames = default_context if context_frames is None else context_frames
    codes = _as_codes(codes)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    stream = StreamingDecoder(tokenizer, lookahead_frames=context_frames)
    remaining = None if num_samples is None else int(num_samples)

    def crop(a: torch.Tensor) -> torch.Tensor:
        nonlocal remaining
        if remaining is None:
            return a
        a = a[:remaining]
        remaining -= a.shape[0]
        return a

    if codes.shape[-1] <= chunk_frames + 2 * context_frames:
        yield crop(tokenizer.decode(codes[None]).audio[0, 0].cpu())
        return
    for t in range(0, codes.shape[-1], chunk_frames):
        out = stream.push(codes[:, t : t + chunk_frames])
        if out.numel():
            yield crop(out)
    yield crop(stream.flush())


def decode_chunked(tokenizer: AudioTokenizer, codes, *, chunk_frames: int | None = None,
                   context_frames: int | None = None,
                   num_samples: int | None = None) -> torch.Tensor:
    """Decode ``[K, T]`` codes in windows of ``chunk_frames`` (+ ``context_frames`` each side): audio ``[N]``.

    Use :func:`iter_decode` to write chunks out as they come (memory bounded by the window)."""
    return torch.cat(list(iter_decode(tokenizer, codes, chunk_frames=chunk_frames, context_frames=context_frames,
                                      num_samples=num_samples)))
