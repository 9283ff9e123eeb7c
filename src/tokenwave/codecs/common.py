"""Input checks and batch helpers shared by every codec (one definition of what valid audio and codes are)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..api import DecodedAudio, InvalidAudioError, InvalidCodesError
from ..nn.lengths import zero_pad_frames

BATCHING = ("auto", "padded", "per_item")


def prepare_audio(audio, lengths, *, min_samples: int, sample_rate: int, device, dtype):
    """Audio as a right-padded ``[B, 1, L]`` batch on ``device``/``dtype`` and its lengths (None: unpadded).

    Accepts ``[L]``, ``[B, L]``, ``[B, 1, L]`` tensors/arrays with optional ``lengths``, or a list of 1-D
    arrays. Raises :class:`InvalidAudioError` for empty, too short (< ``min_samples``), non-float, NaN/inf or
    wrongly shaped input, naming the item. Whatever lies past an item's length is zeroed.
    """
    if isinstance(audio, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths cannot be given with a list of arrays (they carry their own lengths)")
        items = [as_float_tensor(a, f"audio[{i}]") for i, a in enumerate(audio)]
        if not items:
            raise InvalidAudioError("empty list of audio")
        for i, a in enumerate(items):
            if a.dim() != 1:
                raise InvalidAudioError(f"audio[{i}] must be 1-D (mono samples), got shape {tuple(a.shape)}")
        sizes = [a.shape[0] for a in items]
        x = torch.zeros(len(items), 1, max(sizes), dtype=torch.float32)
        for i, a in enumerate(items):
            x[i, 0, : a.shape[0]] = a
        lengths = torch.tensor(sizes)
    else:
        x = as_float_tensor(audio, "audio")
        if x.dim() == 1:
            x = x[None, None]
        elif x.dim() == 2:
            x = x[:, None]
        elif x.dim() != 3:
            raise InvalidAudioError(f"audio must be [L], [B, L] or [B, 1, L], got shape {tuple(x.shape)}")
        if x.shape[1] != 1:
            raise InvalidAudioError(
                f"audio must be mono [B, 1, L], got {x.shape[1]} channels (average them to mono first)"
            )
        if x.shape[0] == 0:
            raise InvalidAudioError("audio batch is empty")
    if lengths is not None:
        lengths = as_lengths(lengths, x.shape[0], x.shape[-1], "lengths", "samples")
    item_lengths = lengths if lengths is not None else torch.full((x.shape[0],), x.shape[-1])
    short = [(i, int(n)) for i, n in enumerate(item_lengths) if n < min_samples]
    if short:
        raise InvalidAudioError(
            f"audio too short (need at least {min_samples} samples, "
            f"{min_samples / sample_rate * 1000:.0f} ms): "
            + ", ".join(f"item {i} has {n}" for i, n in short)
        )
    bad = [i for i in range(x.shape[0]) if not bool(torch.isfinite(x[i, :, : int(item_lengths[i])]).all())]
    if bad:
        raise InvalidAudioError(f"audio contains NaN or inf in item(s) {bad}")
    if lengths is not None:
        if bool((lengths == x.shape[-1]).all()):
            lengths = None
        else:
            x = zero_pad_frames(x, lengths)  # whatever lies past an item's end must not reach any layer
    return x.to(device, dtype), lengths


def prepare_codes(codes, lengths, *, num_codebooks: int, codebook_size: int, device):
    """Codes as a ``[B, K, T]`` int64 batch on ``device`` and their lengths (None: unpadded).

    Raises :class:`InvalidCodesError` for non-integer, empty or wrongly shaped codes, more than
    ``num_codebooks`` codebooks, or values outside ``[0, codebook_size)`` in the valid frames. Frames past
    an item's length are set to 0.
    """
    if isinstance(codes, np.ndarray):
        codes = torch.from_numpy(codes)
    if not isinstance(codes, torch.Tensor):
        raise InvalidCodesError(f"codes must be a tensor or numpy array, got {type(codes).__name__}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise InvalidCodesError(f"codes must be integers, got {codes.dtype}")
    if codes.dim() == 2:
        codes = codes[None]
    if codes.dim() != 3:
        raise InvalidCodesError(f"codes must be [B, K, T] or [K, T], got shape {tuple(codes.shape)}")
    b, k, t = codes.shape
    if not 1 <= k <= num_codebooks:
        raise InvalidCodesError(f"codes have {k} codebooks; this tokenizer decodes 1..{num_codebooks}")
    if b == 0 or t == 0:
        raise InvalidCodesError(f"codes are empty (shape {tuple(codes.shape)})")
    if lengths is not None:
        lengths = as_lengths(lengths, b, t, "lengths", "frames")
        if bool((lengths < 1).any()):
            raise InvalidCodesError(f"every item needs at least one frame, got lengths {lengths.tolist()}")
    valid = codes if lengths is None else codes.masked_fill(
        torch.arange(t)[None, None, :] >= lengths[:, None, None], 0
    )
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= codebook_size:
        raise InvalidCodesError(f"codes must lie in [0, {codebook_size}), found values in [{lo}, {hi}]")
    codes = valid.long().to(device)
    if lengths is not None and bool((lengths == t).all()):
        lengths = None
    return codes, lengths


def stack_right_padded(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[1, C, T_i]`` tensors into ``[B, C, max T_i]`` (zeros past each item) and the ``T_i``."""
    lengths = torch.tensor([p.shape[-1] for p in parts])
    out = parts[0].new_zeros(len(parts), parts[0].shape[1], int(lengths.max()))
    for i, p in enumerate(parts):
        out[i, :, : p.shape[-1]] = p[0]
    return out, lengths


def runs_per_item(batching: str, x: torch.Tensor) -> bool:
    """Whether a batch ``x`` runs one item at a time under ``batching`` (``"auto"``: on CPU, where it
    measured faster for both codecs; one item is never split)."""
    if x.shape[0] == 1:
        return False
    if batching == "auto":
        return x.device.type == "cpu"
    return batching == "per_item"


def check_batching(batching: str) -> str:
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    return batching


def as_float_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise InvalidAudioError(f"{name} must be a torch tensor or numpy array, got {type(a).__name__}")
    if not a.is_floating_point():
        raise InvalidAudioError(
            f"{name} must be floating point samples in [-1, 1], got {a.dtype} (convert integer PCM to float first)"
        )
    if a.numel() == 0:
        raise InvalidAudioError(f"{name} is empty")
    return a


def as_lengths(lengths: Sequence[int] | torch.Tensor, batch: int, limit: int, name: str, unit: str) -> torch.Tensor:
    t = torch.as_tensor(lengths).reshape(-1).cpu()
    if t.is_floating_point() or t.shape[0] != batch:
        raise ValueError(f"{name} must be {batch} integers, got {lengths!r}")
    if bool((t > limit).any()) or bool((t < 0).any()):
        raise ValueError(f"{name} must lie in [0, {limit}] {unit}, got {t.tolist()}")
    return t.long()


def decoded_audio(audio: torch.Tensor, out_lengths: torch.Tensor, sample_rate: int, *, crop: bool = False,
                  audio_lengths=None) -> DecodedAudio:
    """:class:`DecodedAudio` of a decoded batch: cropped to ``audio_lengths`` with ``crop``, zeros past each
    item's valid samples."""
    if crop:
        if audio_lengths is None:
            raise ValueError("crop=True needs audio_lengths (or an EncodedAudio to decode)")
        out_lengths = torch.minimum(out_lengths, torch.as_tensor(audio_lengths).reshape(-1).cpu())
        audio = audio[..., : int(out_lengths.max())]
    if bool((out_lengths < audio.shape[-1]).any()):
        audio = zero_pad_frames(audio, out_lengths.to(audio.device))
    return DecodedAudio(audio, out_lengths.long(), sample_rate)


class ConfigGeometry:
    """The tokenizer contract's geometry read from ``self.config``, whose ``sample_rate``, ``frame_rate``,
    ``hop_length``, ``num_quantizers`` and ``codebook_size`` fields both codec families' configs have. Put it
    before :class:`~tokenwave.api.AudioTokenizer` in the bases."""

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size
