"""Codec statistics that need no audio: bitrate, token rate and codebook usage (numpy only).

* :func:`bitrate` -- ``frame_rate * num_codebooks * log2(codebook_size)`` bits per second: the information
  rate of the token stream when every code is equally likely and no entropy coding is applied (the usual
  figure quoted for neural codecs, e.g. Higgs Audio v2 25 fps x 8 x 1024 = 2000 bps). For a codebook size
  that is not a power of two the bits per code are fractional; a packed file spends ``ceil(log2(size))``
  bits per code instead (see :func:`tokenwave.codesfile.code_bits`).
* :func:`token_rate` -- ``frame_rate * num_codebooks`` tokens per second (what an audio language model must
  predict per second of audio).
* :class:`CodebookUsage` -- per-codebook histogram of the codes seen over an evaluated set, with utilisation,
  entropy, normalised entropy and perplexity; mergeable across parallel workers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CodebookUsage", "bitrate", "token_rate"]


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _positive_int(name: str, value: int) -> int:
    try:
        value = operator.index(value)
    except TypeError as err:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from err
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def token_rate(frame_rate: float, num_codebooks: int) -> float:
    """Tokens per second: ``frame_rate * num_codebooks`` (one token per codebook per frame)."""
    return _positive("frame_rate", frame_rate) * _positive_int("num_codebooks", num_codebooks)


def bitrate(frame_rate: float, num_codebooks: int, codebook_size: int) -> float:
    """Bits per second of the token stream: ``frame_rate * num_codebooks * log2(codebook_size)``.

    This is the uncompressed, fixed-length rate (each code costs ``log2(codebook_size)`` bits, fractional for
    sizes that are not powers of two), as reported for neural codecs; entropy coding could go lower (see
    :meth:`CodebookUsage.entropy`). Examples: Higgs Audio v2, 25 fps x 8 x 1024 -> 2000 bps; WavTokenizer,
    75 fps x 1 x 4096 -> 900 bps.
    """
    size = _positive_int("codebook_size", codebook_size)
    return token_rate(frame_rate, num_codebooks) * math.log2(size)


def _as_int_codes(codes: Any) -> np.ndarray:
    if hasattr(codes, "detach"):  # torch.Tensor, without importing torch
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = " (for a batch, pass each item of EncodedAudio.unbatch(): batch padding must not be counted)"
        raise ValueError(f"codes must be [K, T], got shape {tuple(arr.shape)}" + (hint if arr.ndim == 3 else ""))
    return arr.astype(np.int64, copy=False)


class CodebookUsage:
    """Accumulates how often each entry of each codebook is used over an evaluated set.

    Args:
        codebook_size: entries per codebook (codes lie in ``[0, codebook_size)``), one int for all codebooks
            or one per codebook.
        num_codebooks: ``K``; taken from the first :meth:`update` when omitted (and from
            ``len(codebook_size)`` when that is a sequence).

    Definitions, per codebook ``k`` with counts ``n_k[i]`` over ``N`` frames and ``p_k[i] = n_k[i] / N``:

    * utilization: ``#{i : n_k[i] > 0} / codebook_size_k`` -- fraction of entries used at least once;
    * entropy: ``H_k = -sum_{i: p_k[i] > 0} p_k[i] log2 p_k[i]`` bits (the empirical, plug-in estimate; it is
      biased low when ``N`` is not much larger than the codebook size);
    * normalized_entropy: ``H_k / log2(codebook_size_k)`` in ``[0, 1]`` (1 = uniform use; nan for size 1);
    * perplexity: ``2 ** H_k``, the effective number of equally used entries.

    With no frames counted yet all four are nan. :meth:`merge` adds another accumulator's counts, so workers
    can each accumulate a shard and combine the results (the object pickles with its counts).
    """

    def __init__(self, codebook_size: int | Sequence[int], num_codebooks: int | None = None) -> None:
        if np.ndim(codebook_size) > 0:
            sizes = [_positive_int("codebook_size", s) for s in np.asarray(codebook_size).tolist()]
            if not sizes:
                raise ValueError("codebook_size must not be an empty sequence")
            if num_codebooks is not None and _positive_int("num_codebooks", num_codebooks) != len(sizes):
                raise ValueError(f"num_codebooks={num_codebooks} but {len(sizes)} codebook sizes were given")
            self._sizes: np.ndarray | None = np.asarray(sizes, dtype=np.int64)
            self._size = None
        else:
            self._size = _positive_int("codebook_size", codebook_size)
            self._sizes = None
            if num_codebooks is not None:
                self._sizes = np.full(_positive_int("num_codebooks", num_codebooks), self._size, dtype=np.int64)
        self.counts: np.ndarray | None = None  # [K, max size] int64, entries past a codebook's size stay 0
        self.num_frames = 0
        if self._sizes is not None:
            self._allocate()

    def _allocate(self) -> None:
        self.counts = np.zeros((len(self._sizes), int(self._sizes.max())), dtype=np.int64)

    @property
    def codebook_sizes(self) -> np.ndarray | None:
        """``[K]`` entries per codebook (None until ``K`` is known)."""
        return None if self._sizes is None else self._sizes.copy()

    @property
    def num_codebooks(self) -> int | None:
        return None if self._sizes is None else len(self._sizes)

    def update(self, codes: Any) -> CodebookUsage:
        """Count the codes ``[K, T]`` (integer numpy array or torch tensor) of one item; returns self."""
        arr = _as_int_codes(codes)
        if self._sizes is None:
            self._sizes = np.full(arr.shape[0], self._size, dtype=np.int64)
            self._allocate()
        k, width = self.counts.shape
        if arr.shape[0] != k:
            raise ValueError(f"expected codes with {k} codebooks, got shape {tuple(arr.shape)}")
        if arr.size:
            low, high = int(arr.min()), arr.max(axis=1)
            if low < 0 or np.any(high >= self._sizes):
                bad = int(np.argmax(high >= self._sizes)) if low >= 0 else None
                where = f" in codebook {bad} (size {int(self._sizes[bad])})" if bad is not None else ""
                raise ValueError(f"codes out of range{where}: min {low}, max {int(high.max())}")
            flat = (arr + (np.arange(k, dtype=np.int64) * width)[:, None]).ravel()
            self.counts += np.bincount(flat, minlength=k * width).reshape(k, width)
        self.num_frames += arr.shape[1]
        return self

    def merge(self, other: CodebookUsage) -> CodebookUsage:
        """Add ``other``'s counts to this accumulator (in place); returns self."""
        if not isinstance(other, CodebookUsage):
            raise TypeError(f"can only merge a CodebookUsage, got {type(other).__name__}")
        if other._sizes is None:  # nothing counted and K unknown: nothing to add
            if other._size is not None and self._size is not None and other._size != self._size:
                raise ValueError(f"codebook sizes differ: {self._size} vs {other._size}")
            return self
        if self._sizes is None:
            if self._size != int(other._sizes[0]) or np.any(other._sizes != other._sizes[0]):
                raise ValueError(f"codebook sizes differ: {self._size} vs {other._sizes.tolist()}")
            self._sizes = other._sizes.copy()
            self._allocate()
        if not np.array_equal(self._sizes, other._sizes):
            raise ValueError(f"codebook sizes differ: {self._sizes.tolist()} vs {other._sizes.tolist()}")
        self.counts += other.counts
        self.num_frames += other.num_frames
        return self

    def _probabilities(self) -> np.ndarray:
        if self.counts is None:
            raise ValueError("num_codebooks is unknown until the first update()")
        if self.num_frames == 0:
            return np.full(self.counts.shape, np.nan)
        return self.counts / self.num_frames

    def utilization(self) -> np.ndarray:
        """``[K]`` fraction of each codebook's entries used at least once (nan before any frame)."""
        if self.counts is None:
            raise ValueError("num_codebooks is unknown until the first update()")
        if self.num_frames == 0:
            return np.full(len(self._sizes), np.nan)
        return np.count_nonzero(self.counts, axis=1) / self._sizes

    def entropy(self) -> np.ndarray:
        """``[K]`` entropy in bits of each codebook's empirical code distribution (nan before any frame)."""
        p = self._probabilities()
        if self.num_frames == 0:
            return np.full(len(self._sizes), np.nan)
        logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
        return np.abs(-(p * logs).sum(axis=1))  # abs: turn -0.0 (a single used code) into 0.0

    def normalized_entropy(self) -> np.ndarray:
        """``[K]`` entropy / ``log2(codebook_size)``: 1 for uniform use, 0 for a single code (nan for size 1)."""
        h = self.entropy()
        max_h = np.log2(self._sizes.astype(np.float64))
        return np.divide(h, max_h, out=np.full_like(h, np.nan), where=max_h > 0)

    def perplexity(self) -> np.ndarray:
        """``[K]`` ``2 ** entropy``: the effective number of equally used entries."""
        return np.exp2(self.entropy())

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON-ready) summary: per-codebook lists and their means over codebooks."""
        if self.counts is None:
            raise ValueError("num_codebooks is unknown until the first update()")
        out: dict[str, Any] = {
            "num_codebooks": len(self._sizes),
            "codebook_size": self._sizes.tolist(),
            "num_frames": int(self.num_frames),
        }
        for name, values in (("utilization", self.utilization()), ("entropy", self.entropy()),
                             ("normalized_entropy", self.normalized_entropy()), ("perplexity", self.perplexity())):
            out[name] = [float(v) for v in values]
            out[f"mean_{name}"] = float(np.mean(values))
        return out

    def __repr__(self) -> str:
        sizes = None if self._sizes is None else self._sizes.tolist()
        return f"CodebookUsage(codebook_size={sizes if sizes is not None else self._size}, frames={self.num_frames})"
