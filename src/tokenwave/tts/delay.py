"""The delay pattern of Higgs Audio v2's audio streams (spec ``spec_generation.md`` section 5).

Codebook ``k`` of a frame is predicted ``k`` steps after codebook 0, so the language model sees the codes
"delayed": row ``k`` of the delayed block is row ``k`` of the codes shifted right by ``k`` columns, the
empty corner before it filled with the stream-BOS id and the one after it with the stream-EOS id. With the
published checkpoint: ``K = 8`` codebooks of ``1024`` codes, stream BOS ``1024``, stream EOS ``1025``
(``codebook_size`` and ``codebook_size + 1`` in both references).

Layouts: codes and delayed blocks are codebook-major, ``[K, T]`` or batched ``[B, K, T]`` (the original
code's ``audio_out_ids`` layout). transformers keeps frames first (``audio_input_ids`` is ``[B, F, K]``);
transpose the last two axes to go between the two.

* :func:`build_delay_pattern` / :func:`revert_delay_pattern`: codes <-> delayed block, exact inverses.
* :func:`generated_codes`: the codes of a *generated* block, trimmed the way each reference does it.
* :class:`DelayReverter`: the incremental revert: delayed frames pushed one at a time come out as
  undelayed frames as soon as they are complete (frame ``t`` is complete once delayed column
  ``t + K - 1`` has arrived).
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import torch

from ..api import InvalidCodesError

__all__ = [
    "NUM_CODEBOOKS", "CODEBOOK_SIZE", "STREAM_BOS_ID", "STREAM_EOS_ID",
    "build_delay_pattern", "revert_delay_pattern", "generated_codes", "DelayReverter",
]

NUM_CODEBOOKS = 8
CODEBOOK_SIZE = 1024
STREAM_BOS_ID = CODEBOOK_SIZE  # 1024: stream begin-of-audio id, also fills the delay ramp at the start
STREAM_EOS_ID = CODEBOOK_SIZE + 1  # 1025: stream end-of-audio id, also fills the delay ramp at the end


def _check_ids(x: torch.Tensor, what: str, high: int, *, min_frames: int = 0) -> None:
    """Integer tensor ``[K, N]`` or ``[B, K, N]`` with ``K >= 1``, ``N >= min_frames`` and ids in ``[0, high)``."""
    if not isinstance(x, torch.Tensor):
        raise InvalidCodesError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise InvalidCodesError(f"{what} must be an integer tensor, got dtype {x.dtype}")
    if x.dim() not in (2, 3):
        raise InvalidCodesError(f"{what} must be [K, T] or [B, K, T], got shape {tuple(x.shape)}")
    if x.shape[-2] < 1:
        raise InvalidCodesError(f"{what} has no codebooks (shape {tuple(x.shape)})")
    if x.shape[-1] < min_frames:
        raise InvalidCodesError(f"{what} has {x.shape[-1]} frames, needs at least {min_frames} for "
                                f"{x.shape[-2]} codebooks (shape {tuple(x.shape)})")
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= high:
            raise InvalidCodesError(f"{what} holds ids outside [0, {high - 1}]: min {lo}, max {hi}")


def build_delay_pattern(codes: torch.Tensor, *, codebook_size: int = CODEBOOK_SIZE,
                        stream_markers: bool = True) -> torch.Tensor:
    """Codes ``[K, T]`` / ``[B, K, T]`` (ids in ``[0, codebook_size)``) -> delayed block, same dtype and device.

    With ``stream_markers`` (what both references feed the model for every audio span): one all-BOS column
    is prepended and one all-EOS column appended first, giving ``[.., K, T + K + 1]`` where row ``k`` is
    ``[BOS] * (k + 1) ++ codes[k] ++ [EOS] * (K - k)`` (``T + 9`` columns for 8 codebooks; column 0 all BOS,
    the last column all EOS). Without: ``[.., K, T + K - 1]``, row ``k`` = ``[BOS] * k ++ codes[k] ++
    [EOS] * (K - 1 - k)`` (the bare pattern of the original ``build_delay_pattern_mask`` and of
    transformers' ``HiggsAudioV2Processor.build_delay_pattern``; the processor adds the marker columns
    before calling it). BOS = ``codebook_size``, EOS = ``codebook_size + 1``.
    """
    _check_ids(codes, "codes", codebook_size)
    bos, eos = codebook_size, codebook_size + 1
    if stream_markers:
        shape = (*codes.shape[:-1], 1)
        codes = torch.cat([codes.new_full(shape, bos), codes, codes.new_full(shape, eos)], dim=-1)
    k, t = codes.shape[-2], codes.shape[-1]
    n = t + k - 1
    col = torch.arange(n, device=codes.device)
    row = torch.arange(k, device=codes.device)[:, None]
    src = col - row  # [K, N]: index into the codes' time axis for each delayed position
    shape = (*codes.shape[:-1], n)
    fill = torch.where(src < 0, bos, eos).to(codes.dtype)
    if t == 0:
        return fill.expand(shape).clone()
    gathered = codes.gather(-1, src.clamp(0, t - 1).expand(shape))
    return torch.where((src >= 0) & (src < t), gathered, fill)


def revert_delay_pattern(delayed: torch.Tensor, *, codebook_size: int = CODEBOOK_SIZE,
                         stream_markers: bool = True) -> torch.Tensor:
    """Delayed block ``[K, N]`` / ``[B, K, N]`` -> codes, the inverse of :func:`build_delay_pattern`.

    Row ``k`` keeps columns ``k .. k + N - K`` (both references' ``revert_delay_pattern``) -> ``N - K + 1``
    frames; with ``stream_markers`` the first and the last of those frames (the BOS and EOS frames) are
    dropped as well -> ``N - K - 1`` frames, which is the original serve engine's ``[:, 1:-1]``. The
    discarded corners and marker frames are *not* checked, and ids are returned as they are (a generated
    block may hold BOS/EOS ids inside; both references clip to ``[0, codebook_size - 1]`` before decoding,
    see :func:`generated_codes`). Ids must lie in ``[0, codebook_size + 1]``.
    """
    k = delayed.shape[-2] if isinstance(delayed, torch.Tensor) and delayed.dim() >= 2 else 1
    _check_ids(delayed, "delayed block", codebook_size + 2, min_frames=k - 1 + (2 if stream_markers else 0))
    n = delayed.shape[-1]
    frames = n - k + 1
    col = torch.arange(k, device=delayed.device)[:, None] + torch.arange(frames, device=delayed.device)
    out = delayed.gather(-1, col.expand(*delayed.shape[:-1], frames))
    return out[..., 1:-1] if stream_markers else out


def generated_codes(delayed: torch.Tensor, *, rule: Literal["original", "transformers"] = "original",
                    codebook_size: int = CODEBOOK_SIZE) -> torch.Tensor | list[torch.Tensor]:
    """Codes ``[K, T]`` (ids clipped to ``[0, codebook_size - 1]``) of a generated delayed block, per reference.

    ``delayed`` is ``[K, N]`` (one item; ``[B, K, N]`` gives a list of ``B`` results, items may differ in
    length).

    * ``"original"`` (serve engine, ``examples/generation.py``): ``delayed`` is one generated audio span,
      from its all-BOS frame to the step that ended it; revert, clip, drop the first and last frame
      (``revert_delay_pattern(x).clip(0, 1023)[:, 1:-1]``) -> ``N - K - 1`` frames (none if ``N <= K + 1``).
    * ``"transformers"`` (``HiggsAudioV2Processor.batch_decode``): take the frames strictly between the
      **last** all-BOS column and the **first** all-EOS column after it (or the end), revert, clip. The
      block may include prompt frames before the generated ones. Differences from transformers: a block
      without an all-BOS column raises here (transformers fails with an IndexError), and for a batch the
      start is found per item (transformers takes the last all-BOS column of the last item that has one,
      which is the same column when the items' prompts are padded to one length, its own setting).

    With a trained model both rules give the same ``T`` frames; where codebook 0 is forced to EOS one frame
    early (random weights), transformers keeps one more frame (made of clipped EOS ids); spec 9 rows 10-11.
    """
    if rule not in ("original", "transformers"):
        raise ValueError(f"rule must be 'original' or 'transformers', got {rule!r}")
    if isinstance(delayed, torch.Tensor) and delayed.dim() == 3:
        return [generated_codes(item, rule=rule, codebook_size=codebook_size) for item in delayed]
    if not isinstance(delayed, torch.Tensor) or delayed.dim() != 2:
        shape = tuple(delayed.shape) if isinstance(delayed, torch.Tensor) else type(delayed).__name__
        raise InvalidCodesError(f"generated block must be [K, N] or [B, K, N], got {shape}")
    k = delayed.shape[0]
    _check_ids(delayed, "generated block", codebook_size + 2)
    bos, eos = codebook_size, codebook_size + 1
    if rule == "original":
        if delayed.shape[1] < k - 1:
            raise InvalidCodesError(f"generated block has {delayed.shape[1]} frames, needs at least {k - 1}")
        body = revert_delay_pattern(delayed, codebook_size=codebook_size, stream_markers=False)[:, 1:-1]
    else:
        starts = (delayed == bos).all(0).nonzero()
        if starts.numel() == 0:
            raise InvalidCodesError("generated block has no all-BOS column (the start of generation)")
        start = int(starts[-1, 0])
        ends = (delayed[:, start:] == eos).all(0).nonzero()
        end = start + int(ends[0, 0]) if ends.numel() else delayed.shape[1]
        between = delayed[:, start + 1:end]
        frames = max(between.shape[1] - k + 1, 0)
        if frames == 0:
            body = between[:, :0]
        else:
            body = revert_delay_pattern(between, codebook_size=codebook_size, stream_markers=False)
    return body.clamp(0, codebook_size - 1)


class DelayReverter:
    """Incremental :func:`revert_delay_pattern`: push delayed frames one at a time, get undelayed frames out
    as soon as they are complete.

    ``push(frame)`` takes one delayed column ``[K]`` (or ``[B, K]`` for ``B`` streams advancing together)
    and returns the undelayed frames it completed, ``[K, n]`` (or ``[B, K, n]``) with ``n`` 0 or 1: pushing
    column ``c`` completes frame ``c - K + 1``, whose row ``k`` is row ``k`` of column ``c - K + 1 + k``. So
    the output lags the input by ``K - 1`` frames, the least possible.

    With ``stream_markers`` (default, for generated spans and marked blocks) the first completed frame (the
    all-BOS frame) is not returned, nor the frame completed by a push with ``final=True`` (the EOS frame):
    pushing every column of a block, the last one with ``final=True``, returns exactly
    ``revert_delay_pattern(block, stream_markers=True)``; for a generated span that is the original serve
    engine's ``[:, 1:-1]`` (:func:`generated_codes` with ``rule="original"`` before clipping). Push the
    frames the original generation loop emits, from the all-BOS frame on, and mark the step that ended the
    span ``final``. For transformers' rule, push the frames strictly between its all-BOS and all-EOS frames
    into a reverter with ``stream_markers=False``. Without ``stream_markers`` every completed frame is
    returned (``revert_delay_pattern(block, stream_markers=False)``).

    Ids are returned unchanged (clip to ``[0, codebook_size - 1]`` before decoding, as both references do).
    Streams of a batch that end at different steps need one reverter each. After ``final`` the reverter
    refuses further frames until :meth:`reset`.
    """

    def __init__(self, num_codebooks: int = NUM_CODEBOOKS, *, codebook_size: int = CODEBOOK_SIZE,
                 stream_markers: bool = True) -> None:
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.stream_markers = stream_markers
        self.reset()

    def reset(self) -> None:
        """Forget every pushed frame (start a new stream)."""
        self._columns: deque[torch.Tensor] = deque(maxlen=self.num_codebooks)
        self._batch_shape: tuple[int, ...] | None = None
        self.frames_pushed = 0
        self.frames_completed = 0
        self.finished = False

    def push(self, frame: torch.Tensor, *, final: bool = False) -> torch.Tensor:
        """Add delayed column ``frame`` (``[K]`` or ``[B, K]``); return the frames completed (``[.., K, 0|1]``)."""
        if self.finished:
            raise RuntimeError("DelayReverter: the stream was pushed with final=True; call reset() for a new one")
        if not isinstance(frame, torch.Tensor) or frame.dim() not in (1, 2) or frame.shape[-1] != self.num_codebooks:
            shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
            raise InvalidCodesError(f"DelayReverter.push takes one delayed frame [{self.num_codebooks}] or "
                                    f"[B, {self.num_codebooks}], got {shape}")
        _check_ids(frame[..., None], "delayed frame", self.codebook_size + 2)
        batch = tuple(frame.shape[:-1])
        if self._batch_shape is None:
            self._batch_shape = batch
        elif batch != self._batch_shape:
            raise InvalidCodesError(f"DelayReverter.push: frame batch shape {batch} differs from the stream's "
                                    f"{self._batch_shape}")
        self._columns.append(frame)
        self.frames_pushed += 1
        self.finished = final
        empty = frame.new_empty((*batch, self.num_codebooks, 0))
        if len(self._columns) < self.num_codebooks:
            return empty
        # row k of the completed frame comes from the column pushed K - 1 - k pushes ago
        done = torch.stack([self._columns[k][..., k] for k in range(self.num_codebooks)], dim=-1)[..., None]
        index = self.frames_completed
        self.frames_completed += 1
        if self.stream_markers and (index == 0 or final):
            return empty
        return done

    def push_many(self, frames: torch.Tensor, *, final: bool = False) -> torch.Tensor:
        """Push the columns of ``frames`` (``[K, N]`` or ``[B, K, N]``) in order, ``final`` applying to the last;
        return all frames completed, concatenated (``[.., K, n]``)."""
        if not isinstance(frames, torch.Tensor) or frames.dim() not in (2, 3):
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InvalidCodesError(f"DelayReverter.push_many takes [K, N] or [B, K, N], got {shape}")
        n = frames.shape[-1]
        outs = [self.push(frames[..., i], final=final and i == n - 1) for i in range(n)]
        if not outs:
            return frames.new_empty((*frames.shape[:-1], 0))
        return torch.cat(outs, dim=-1)
