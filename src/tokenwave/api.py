"""The tokenizer contract every codec meets, and its typed results.

Callers (CLI, evaluation, training, TTS, pipelines) depend on :class:`AudioTokenizer`, never on a
concrete codec class.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
from dataclasses import dataclass

import torch

__all__ = ["AudioTokenizer", "EncodedAudio", "DecodedAudio", "TokenwaveError", "InvalidAudioError",
           "InvalidCodesError", "CodesFileError", "CheckpointError", "ModelNotFoundError", "config_hash"]


class TokenwaveError(Exception):
    """Base class of every error tokenwave raises on purpose."""


class InvalidAudioError(TokenwaveError, ValueError):
    """Audio that cannot be tokenized (empty, too short, NaN/inf, wrong shape or dtype)."""


class InvalidCodesError(TokenwaveError, ValueError):
    """Codes that cannot be decoded (wrong shape, dtype, codebook count or value range)."""


class CodesFileError(InvalidCodesError):
    """A codes file that is not one, is damaged, or does not fit the tokenizer decoding it."""


class CheckpointError(TokenwaveError):
    """A model folder or checkpoint that cannot be loaded as asked."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """No local folder and no (reachable) hub repository for the requested model."""


@dataclass
class EncodedAudio:
    """Codes of a batch.

    Attributes:
        codes: ``[B, K, T]`` int64, ``K`` codebooks, ``T`` the longest item's frame count. Frames past an
            item's ``lengths`` are padding (filled with 0).
        lengths: ``[B]`` int64, valid frames per item.
        audio_lengths: ``[B]`` int64, input samples per item (to crop decoded audio to the input length).
        frame_rate: frames per second.
        sample_rate: sample rate of the audio the codes came from.
    """

    codes: torch.Tensor
    lengths: torch.Tensor
    audio_lengths: torch.Tensor
    frame_rate: float
    sample_rate: int

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[1]

    def unbatch(self) -> list[torch.Tensor]:
        """Each item's codes ``[K, T_i]`` without padding."""
        return [c[:, :n] for c, n in zip(self.codes, self.lengths.tolist())]


@dataclass
class DecodedAudio:
    """Audio of a batch.

    Attributes:
        audio: ``[B, 1, N]`` float; samples past an item's ``lengths`` are padding (zeros).
        lengths: ``[B]`` int64, valid samples per item.
        sample_rate: sample rate in Hz.
    """

    audio: torch.Tensor
    lengths: torch.Tensor
    sample_rate: int

    def unbatch(self) -> list[torch.Tensor]:
        """Each item's waveform ``[N_i]`` without padding."""
        return [a[0, :n] for a, n in zip(self.audio, self.lengths.tolist())]


def config_hash(config: dict) -> str:
    """First 16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys, no spaces)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class AudioTokenizer(abc.ABC):
    """Audio <-> discrete codes. ``encode`` then ``decode`` reconstructs the audio at ``sample_rate``."""

    #: where the weights came from (folder or hub id); set by :func:`tokenwave.load_tokenizer`.
    model_id: str | None = None

    @abc.abstractmethod
    def config_dict(self) -> dict:
        """The model's configuration as the JSON object its checkpoint carries."""

    @property
    def config_hash(self) -> str:
        """:func:`config_hash` of :meth:`config_dict`: identifies the geometry codes were made with."""
        return config_hash(self.config_dict())

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the audio ``encode`` takes and ``decode`` returns."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Code frames per second."""

    @property
    @abc.abstractmethod
    def hop_length(self) -> int:
        """Audio samples per code frame."""

    @property
    @abc.abstractmethod
    def num_codebooks(self) -> int:
        """Codebooks at full bandwidth."""

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """Entries per codebook (codes lie in ``[0, codebook_size)``)."""

    def codebooks_for_bandwidth(self, bandwidth: float | None) -> int:
        """Codebooks that carry ``bandwidth`` kbps (None: all of them).

        Raises:
            ValueError: a bandwidth this model does not offer (the message lists those it does).
        """
        if bandwidth is None:
            return self.num_codebooks
        per = self.frame_rate * math.ceil(math.log2(self.codebook_size)) / 1000
        offered = {k: k * per for k in range(1, self.num_codebooks + 1)}
        for k, kbps in offered.items():
            if math.isclose(float(bandwidth), kbps, rel_tol=1e-6):
                return k
        raise ValueError(f"unknown bandwidth {bandwidth!r} kbps: this model offers "
                         + ", ".join(f"{v:g}" for v in offered.values()))

    @abc.abstractmethod
    def encode(self, audio, sample_rate: int | None = None, **options) -> EncodedAudio:
        """Audio ``[L]``, ``[B, L]`` or ``[B, 1, L]`` (or a list of 1-D arrays) -> :class:`EncodedAudio`."""

    @abc.abstractmethod
    def decode(self, codes, lengths=None, **options) -> DecodedAudio:
        """Codes ``[B, K, T]`` or ``[K, T]`` (or an :class:`EncodedAudio`) -> :class:`DecodedAudio`."""
