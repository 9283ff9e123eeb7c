"""Audio input and output: any file libsndfile reads, any rate, any channel count -> float32 mono.

Reading (:func:`load_audio`, :class:`AudioReader`)

* Files: whatever ``soundfile`` (libsndfile 1.2) opens: WAV, FLAC, OGG (Vorbis, Opus), MP3, AIFF, AU,
  W64, RF64, CAF. Samples are read as float32 by libsndfile itself.
* Arrays: numpy arrays or torch tensors (any device) of shape ``[L]`` or ``[C, L]`` (channels first,
  ``1 <= C <= MAX_CHANNELS`` and ``C <= L``); ``sample_rate=`` is then required. Float arrays are cast to
  float32 (values are not clipped or rescaled). Integer arrays are PCM: int8 / 128, int16 / 32768,
  int32 / 2**31 and (uint8 - 128) / 128, giving values in [-1, 1) (int32 values within 64 of the maximum
  round up to 1.0 in float32). int64, bool and complex arrays are refused as ambiguous.
* More than one channel: the channels are averaged (summed in float64, divided, rounded once to float32)
  and an :class:`AudioConversionWarning` names the source and its channel count.
* Another sample rate: resampled with soxr at ``quality="HQ"``, through ``soxr.ResampleStream`` fed
  blocks of (by default) one second of source audio; no warning (resampling is expected), but
  :attr:`AudioInfo.resampled` records it. The same rate passes through untouched.
* Nothing else is changed: no normalisation, no clipping, no trimming, no dithering.
* Problems raise :class:`tokenwave.api.InvalidAudioError` naming the file (or "array input") and the
  problem: a missing, empty (0 bytes), unreadable or damaged file, no audio (0 frames), a sample rate
  <= 0, NaN or infinite samples (with the time of the first one), a shape that is not ``[L]`` / ``[C, L]``.

:func:`load_audio` on a file runs exactly the block-by-block path of :class:`AudioReader`, so the
streamed output concatenated equals the one-shot output bit for bit (and equals ``soxr.resample`` of
the whole mono signal too: libsoxr's output does not depend on how its input is chunked). Its length
is known before reading: :func:`resampled_length`.

Writing (:func:`write_audio`, :class:`AudioWriter`): WAV, ``subtype="FLOAT"`` (exact) or ``"PCM_16"``
(rounded to the nearest of n / 32768, values beyond [-1, 1] clipped and counted in a warning), parent
folders created, written to a temporary file in the destination folder and moved into place with
``os.replace`` only when complete, so a reader never sees a half-written file.
"""

from __future__ import annotations

import math
import numbers
import os
import secrets
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AUDIO_EXTENSIONS", "MAX_CHANNELS", "AudioConversionWarning", "AudioInfo", "AudioReader", "AudioWriter",
           "load_audio", "resampled_length", "write_audio"]

#: Lower-case file suffixes (with the dot) treated as audio when walking folders; libsndfile reads each.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64",
                              ".rf64", ".caf"})

#: Most channels an array may have; a ``[C, L]`` array with more is refused (it is likely ``[L, C]``).
MAX_CHANNELS = 16

SOXR_QUALITY = "HQ"
WRITE_SUBTYPES = ("FLOAT", "PCM_16")

_ARRAY_NAME = "array input"
_PCM_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


class AudioConversionWarning(UserWarning):
    """Audio was changed on its way in or out: channels averaged to mono, samples clipped when writing."""


def _invalid(message: str) -> Exception:
    # tokenwave.api imports torch; import it only when there is an error to raise.
    from .api import InvalidAudioError

    return InvalidAudioError(message)


def _warn(message: str) -> None:
    """Warn with the location of the first caller outside this module."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, AudioConversionWarning, stacklevel=level)


@dataclass
class AudioInfo:
    """What was read and what it became.

    Attributes:
        path: the file (as given), or None for an array.
        sample_rate: the source's sample rate in Hz.
        channels: the source's channel count (averaged to one when > 1).
        frames: the source's length in frames (samples per channel).
        target_rate: the rate of the returned audio.
        num_samples: the length of the returned audio, ``resampled_length(frames, sample_rate, target_rate)``.
        format: libsndfile's container name (``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``...), None for arrays.
        subtype: libsndfile's encoding name (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``...), None for arrays.
        resampled: whether the rate was converted (``sample_rate != target_rate``).
        downmixed: whether channels were averaged (``channels > 1``).
    """

    path: str | None
    sample_rate: int
    channels: int
    frames: int
    target_rate: int
    num_samples: int
    format: str | None = None
    subtype: str | None = None
    resampled: bool = field(init=False)
    downmixed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.resampled = self.sample_rate != self.target_rate
        self.downmixed = self.channels > 1

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.frames / self.sample_rate


def resampled_length(frames: int, sr_in: int, sr_out: int) -> int:
    """The exact length soxr gives a whole signal of ``frames`` samples resampled from ``sr_in`` to ``sr_out``.

    libsoxr emits ``(uint64) (frames / (sr_in / sr_out) + 0.5)`` samples in all, in double precision:
    the rounded ideal length, where the double arithmetic decides exact halves (for 24000 -> 44100 some
    halves go down). Checked against ``soxr.resample`` for every length 0..2000 and many longer ones.
    """
    frames, sr_in, sr_out = int(frames), int(sr_in), int(sr_out)
    if frames < 0 or sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"need frames >= 0 and positive rates, got {frames} frames, {sr_in} -> {sr_out} Hz")
    if sr_in == sr_out:
        return frames
    return int(frames / (sr_in / sr_out) + 0.5)


def _check_rate(rate, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or rate <= 0 or int(rate) != rate:
        raise ValueError(f"{what} must be a positive integer (Hz), got {rate!r}")
    return int(rate)


def _downmix(block: np.ndarray) -> np.ndarray:
    """``[C, n]`` -> new contiguous float32 ``[n]``: channel 0 as is, or the mean rounded once from float64."""
    if block.shape[0] == 1:
        return np.array(block[0], dtype=np.float32)
    acc = block[0].astype(np.float64)
    for channel in block[1:]:
        acc += channel
    acc /= block.shape[0]
    return acc.astype(np.float32)


class _MonoResampler:
    """Blocks ``[C, n]`` float32 -> NaN/inf check -> mono -> soxr stream, in order, remembering position."""

    def __init__(self, name: str, sample_rate: int, target_rate: int):
        self.name, self.sample_rate = name, sample_rate
        self.frames_in = 0
        self.samples_out = 0
        self._stream = None
        if sample_rate != target_rate:
            self._stream = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality=SOXR_QUALITY)

    def push(self, block: np.ndarray, last: bool) -> np.ndarray:
        mono = _downmix(block)
        bad = ~np.isfinite(mono)
        if bad.any():
            index = int(np.argmax(bad))
            frame = self.frames_in + index
            kind = "NaN" if np.isnan(mono[index]) else "infinite"
            raise _invalid(f"{self.name}: {kind} sample at frame {frame} (about {frame / self.sample_rate:.3f} s)")
        self.frames_in += mono.shape[0]
        out = mono if self._stream is None else self._stream.resample_chunk(mono, last=last)
        self.samples_out += out.shape[0]
        return out


class AudioReader:
    """Stream a file as float32 mono at ``target_rate``, block by block, in memory that does not grow with its length.

    ``info`` (with ``num_samples``) is known on opening. Iterate for chunks of varying length, or call
    ``read(n)`` for up to ``n`` samples (an empty array at the end). Use as a context manager (or call
    ``close()``). ``block_frames`` source frames are read at a time (default: one second).

        >>> with AudioReader("long.flac", 24000) as reader:          # doctest: +SKIP
        ...     for chunk in reader:
        ...         consume(chunk)
    """

    def __init__(self, path: str | os.PathLike, target_rate: int, *, block_frames: int | None = None,
                 _warn_downmix: bool = True):
        self.target_rate = _check_rate(target_rate, "target_rate")
        if block_frames is not None and (isinstance(block_frames, bool) or int(block_frames) != block_frames
                                         or block_frames < 1):
            raise ValueError(f"block_frames must be a positive integer, got {block_frames!r}")
        self.name = name = os.fspath(path)
        if isinstance(name, bytes):
            name = self.name = os.fsdecode(name)
        self._file = None
        self._buffer = np.zeros(0, np.float32)
        if not os.path.exists(name):
            raise _invalid(f"{name}: no such file")
        if os.path.isdir(name):
            raise _invalid(f"{name}: is a directory, not an audio file")
        if os.path.getsize(name) == 0:
            raise _invalid(f"{name}: empty file (0 bytes)")
        try:
            self._file = sf.SoundFile(name)
        except (sf.SoundFileError, RuntimeError, OSError) as e:
            detail = getattr(e, "error_string", None) or str(e)
            raise _invalid(f"{name}: cannot read as audio ({detail.rstrip('.')}); not a format libsndfile reads, "
                           f"or damaged") from e
        try:
            f = self._file
            sample_rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            if sample_rate <= 0:
                raise _invalid(f"{name}: invalid sample rate {sample_rate} Hz")
            if channels <= 0:
                raise _invalid(f"{name}: invalid channel count {channels}")
            if frames <= 0:
                raise _invalid(f"{name}: contains no audio (0 frames)")
            self.info = AudioInfo(name, sample_rate, channels, frames, self.target_rate,
                                  resampled_length(frames, sample_rate, self.target_rate), f.format, f.subtype)
            self.block_frames = int(block_frames) if block_frames is not None else sample_rate
            self._resampler = _MonoResampler(name, sample_rate, self.target_rate)
        except BaseException:
            self.close()
            raise
        if channels > 1 and _warn_downmix:
            _warn(f"{name}: {channels} channels averaged to mono")

    @property
    def num_samples(self) -> int:
        """Samples at ``target_rate`` the whole file gives."""
        return self.info.num_samples

    def reopen(self) -> AudioReader:
        """A new reader of the same file from its start (for a second pass; the mono warning is not repeated)."""
        return AudioReader(self.name, self.target_rate, block_frames=self.block_frames, _warn_downmix=False)

    @property
    def closed(self) -> bool:
        return self._file is None or self._file.closed

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _produce(self) -> np.ndarray | None:
        """The next non-empty resampled chunk, or None at the end of the file."""
        info, res = self.info, self._resampler
        while res.frames_in < info.frames:
            if self.closed:
                raise ValueError(f"{self.name}: read from a closed AudioReader")
            want = min(self.block_frames, info.frames - res.frames_in)
            try:
                block = self._file.read(want, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError, OSError) as e:
                raise _invalid(f"{self.name}: read failed at frame {res.frames_in} "
                               f"(about {res.frames_in / info.sample_rate:.3f} s): {e}") from e
            if block.shape[0] == 0:
                raise _invalid(f"{self.name}: the header declares {info.frames} frames but only {res.frames_in} "
                               f"could be read (truncated or damaged file)")
            out = res.push(block.T, last=res.frames_in + block.shape[0] >= info.frames)
            if out.shape[0]:
                return out
        if res.samples_out != info.num_samples:  # pragma: no cover - resampled_length is tested against soxr
            raise RuntimeError(f"{self.name}: soxr gave {res.samples_out} samples, expected {info.num_samples}")
        return None

    def _next_chunk(self) -> np.ndarray | None:
        if self._buffer.shape[0]:
            chunk, self._buffer = self._buffer, np.zeros(0, np.float32)
            return chunk
        return self._produce()

    def __iter__(self) -> Iterator[np.ndarray]:
        while (chunk := self._next_chunk()) is not None:
            yield chunk

    def read(self, n: int = -1) -> np.ndarray:
        """Up to ``n`` samples (all that remain when ``n < 0``) as float32 mono; empty at the end."""
        parts, need = [], (math.inf if n < 0 else int(n))
        while need > 0 and (chunk := self._next_chunk()) is not None:
            if chunk.shape[0] > need:
                chunk, self._buffer = chunk[:need], chunk[need:]
            parts.append(chunk)
            need -= chunk.shape[0]
        if not parts:
            return np.zeros(0, np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _torch_to_numpy(x) -> np.ndarray:
    import torch

    x = x.detach()
    if x.is_floating_point() and x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.cpu().numpy()


def _array_blocks(array: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """Validate an array source; return it as ``[C, L]`` and the kind of conversion its dtype needs."""
    dtype = array.dtype
    if dtype.kind == "f":
        kind = "float"
    elif dtype in _PCM_SCALE or dtype == np.uint8:
        kind = "pcm"
    else:
        raise _invalid(f"{name}: unsupported dtype {dtype} (use float, or int8/int16/int32/uint8 PCM)")
    if array.ndim in (1, 2) and array.size == 0:
        raise _invalid(f"{name}: contains no audio (0 samples, shape {tuple(array.shape)})")
    if array.ndim == 1:
        array = array[None]
    elif array.ndim == 2:
        channels, length = array.shape
        if channels == 0 or channels > MAX_CHANNELS or length < channels:
            raise _invalid(f"{name}: shape {tuple(array.shape)} is not [C, L] with 1 <= C <= {MAX_CHANNELS} "
                           f"channels first and C <= L; for channels-last [L, C] audio pass its transpose")
    else:
        raise _invalid(f"{name}: expected shape [L] or [C, L] (channels first), got {tuple(array.shape)}")
    return array, kind


def _to_float32(block: np.ndarray, kind: str) -> np.ndarray:
    if kind == "float":
        return block.astype(np.float32, copy=False)
    if block.dtype == np.uint8:
        return (block.astype(np.float32) - np.float32(128)) * np.float32(1 / 128)
    return (block.astype(np.float64) * (1 / _PCM_SCALE[block.dtype])).astype(np.float32)


def load_audio(source, target_rate: int, *, sample_rate: int | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Float32 mono 1-D audio at ``target_rate`` from a file path or an array, and what was done to it.

    Args:
        source: a path (str or PathLike) to any file libsndfile reads, or a numpy array / torch tensor of
            shape ``[L]`` or ``[C, L]`` (channels first).
        target_rate: the rate of the returned audio, in Hz.
        sample_rate: the rate of an array source (required for arrays, refused for files: a file's own
            header gives it).

    Raises:
        InvalidAudioError: the source cannot be read or holds no usable audio (see the module docstring).
    """
    target_rate = _check_rate(target_rate, "target_rate")
    if isinstance(source, (str, bytes, os.PathLike)):
        if sample_rate is not None:
            raise _invalid(f"{os.fsdecode(source)}: sample_rate= is for arrays; a file's rate comes from its header")
        with AudioReader(source, target_rate) as reader:
            out = np.empty(reader.info.num_samples, np.float32)
            pos = 0
            for chunk in reader:
                if pos + chunk.shape[0] > out.shape[0]:  # pragma: no cover - resampled_length is tested
                    raise RuntimeError(f"{reader.name}: soxr gave more than {out.shape[0]} samples")
                out[pos:pos + chunk.shape[0]] = chunk
                pos += chunk.shape[0]
            return out, reader.info

    if _is_torch(source):
        array = _torch_to_numpy(source)
    elif isinstance(source, np.ndarray):
        array = source
    else:
        raise TypeError(f"source must be a path, a numpy array or a torch tensor, got {type(source).__name__}")
    name = _ARRAY_NAME
    if sample_rate is None:
        raise _invalid(f"{name}: sample_rate= is required for an array (shape {tuple(array.shape)})")
    try:
        sample_rate = _check_rate(sample_rate, "sample_rate")
    except ValueError as e:
        raise _invalid(f"{name}: invalid sample rate {sample_rate!r} (must be a positive integer, Hz)") from e
    array, kind = _array_blocks(array, name)
    channels, frames = array.shape
    info = AudioInfo(None, sample_rate, channels, frames, target_rate,
                     resampled_length(frames, sample_rate, target_rate))
    if channels > 1:
        _warn(f"{name}: {channels} channels averaged to mono")
    resampler = _MonoResampler(name, sample_rate, target_rate)
    out = np.empty(info.num_samples, np.float32)
    pos = 0
    for start in range(0, frames, sample_rate):
        block = _to_float32(array[:, start:start + sample_rate], kind)
        chunk = resampler.push(block, last=start + sample_rate >= frames)
        out[pos:pos + chunk.shape[0]] = chunk
        pos += chunk.shape[0]
    if pos != out.shape[0]:  # pragma: no cover - resampled_length is tested against soxr
        raise RuntimeError(f"soxr gave {pos} samples, expected {out.shape[0]}")
    return out, info


def _float_mono(audio, name: str) -> np.ndarray:
    """1-D float audio (numpy or torch, any device / float dtype) -> float32 numpy on the CPU."""
    if _is_torch(audio):
        if not audio.is_floating_point():
            raise _invalid(f"{name}: audio to write must be float, got {audio.dtype}")
        audio = _torch_to_numpy(audio)
    elif not isinstance(audio, np.ndarray):
        raise TypeError(f"audio must be a numpy array or a torch tensor, got {type(audio).__name__}")
    if audio.dtype.kind != "f":
        raise _invalid(f"{name}: audio to write must be float, got {audio.dtype}")
    if audio.ndim != 1:
        raise _invalid(f"{name}: audio to write must be 1-D (mono), got shape {tuple(audio.shape)}")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise _invalid(f"{name}: NaN or infinite samples, not written")
    return audio


class AudioWriter:
    """Write a mono WAV file chunk by chunk; it appears at ``path`` only when closed without error.

    The data goes to a hidden temporary file in the destination folder (created if needed), moved over
    ``path`` by ``close()``; leaving the ``with`` block by an exception (or ``abort()``) deletes it instead.
    ``subtype`` is ``"FLOAT"`` (float32, exact) or ``"PCM_16"`` (rounded to n / 32768; samples beyond
    [-1, 1] are clipped and their count is reported by one :class:`AudioConversionWarning` at close).
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, subtype: str = "FLOAT"):
        self.path = os.fsdecode(os.fspath(path))
        self.sample_rate = _check_rate(sample_rate, "sample_rate")
        if subtype not in WRITE_SUBTYPES:
            raise ValueError(f"subtype must be one of {WRITE_SUBTYPES}, got {subtype!r}")
        if os.path.splitext(self.path)[1].lower() != ".wav":
            raise ValueError(f"{self.path}: write_audio writes WAV files; use a .wav name")
        self.subtype = subtype
        self.frames_written = 0
        self.clipped = 0
        folder, base = os.path.split(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
        # O_EXCL: never clobber anything; mode 0o666 lets the umask decide, as for an ordinary file.
        os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            self._file = sf.SoundFile(self._tmp, "w", self.sample_rate, 1, subtype, format="WAV")
        except BaseException:
            os.unlink(self._tmp)
            raise
        self._done = False

    def write(self, chunk) -> None:
        """Append 1-D float samples (numpy or torch)."""
        if self._done:
            raise ValueError(f"{self.path}: write to a closed AudioWriter")
        audio = _float_mono(chunk, self.path)
        if self.subtype == "PCM_16":
            self.clipped += int(np.count_nonzero(np.abs(audio) > 1))
            # Our own rounding to n / 32768 (libsndfile would scale by 32767), so reading back with
            # soundfile (n / 32768) is within half a step, one step at +1.0.
            audio = np.clip(np.rint(audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
        self._file.write(audio)
        self.frames_written += audio.shape[0]

    def close(self) -> None:
        """Finish the file and move it into place (no-op when already closed)."""
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self._remove_tmp()
            raise
        if self.clipped:
            _warn(f"{self.path}: {self.clipped} of {self.frames_written} samples were outside [-1, 1] "
                  f"and clipped for {self.subtype}")

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was."""
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    @property
    def closed(self) -> bool:
        return self._done

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):  # an unclosed writer leaves no temporary file behind
        try:
            if not getattr(self, "_done", True):
                self.abort()
        except Exception:
            pass


def write_audio(path: str | os.PathLike, audio, sample_rate: int, *, subtype: str = "FLOAT") -> None:
    """Write 1-D float audio (numpy or torch, any device and float dtype) as a mono WAV file, atomically.

    ``subtype="FLOAT"`` stores float32 exactly; ``"PCM_16"`` rounds to n / 32768 after clipping to
    [-1, 1], warning (:class:`AudioConversionWarning`) with the number of clipped samples if any.
    Parent folders are created. NaN / infinite samples raise InvalidAudioError and nothing is written.
    """
    with AudioWriter(path, sample_rate, subtype) as writer:
        writer.write(audio)
