"""Training data: random fixed-length crops of audio files, map-style or streamed, deterministic and resumable.

Sources are folders (every audio file below them, category = first sub-folder) or manifests (CSV with a
``path`` column, relative to the manifest's folder, optional ``category``, ``split`` and ``weight``); several
sources mix by their ``weight`` (a source's share of the draws, whatever its size).

Each item is ``{"audio": [1, num_samples] float32, "path": str, "category": str | None, ...}``:

* read at ``sample_rate`` (soxr through :mod:`tokenwave.audio`; channels averaged to mono). A crop seeks
  into the file and resamples only a window around it, aligned to the rational resampling grid, so it
  equals the same samples of the whole file resampled (to ~1e-6, the filter's edge effects fall in the
  margin) without reading the whole file;
* training: a uniformly random crop of ``num_samples``; a shorter file is tiled (repeated from its start,
  as WavTokenizer does, spec §6.1) or zero-padded. Validation: the first ``num_samples`` (or, with
  ``val_max_samples``, the whole file up to that many samples, padded by :func:`collate`), no randomness;
* loudness: ``"peak"`` scales the crop's peak to a random level in ``peak_db`` (WavTokenizer: -6..-1 dBFS;
  it normalises the whole file, we the crop, hence ``max_gain_db`` so that a near-silent crop stays
  quiet), ``"lufs"`` to a random integrated loudness in ``lufs`` (ITU-R BS.1770 with pyloudnorm, the
  peak kept under -1 dBFS), ``"none"``. Validation uses one fixed level;
* randomness comes from ``numpy.random.default_rng([seed, epoch, index])`` only: the same (seed, epoch,
  index) gives the same item in any process, worker or run.

A file that cannot be read (missing, empty, damaged, NaN samples, a crop past a header's frame count) is
skipped with a :class:`SkippedAudioWarning` naming it, once per process; the item is taken from the next
file instead (deterministically), ``dataset.skipped`` counts the files and each item lists what it skipped
under ``"skipped"`` (so the main process can count across DataLoader workers). When every file fails, a
``RuntimeError`` says so.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import AUDIO_EXTENSIONS, load_audio, resampled_length

__all__ = ["AudioFile", "AudioSource", "CropConfig", "AudioCropDataset", "StreamingAudioDataset",
           "SkippedAudioWarning", "read_source", "sources_from", "collate"]


class SkippedAudioWarning(UserWarning):
    """A training file could not be read and was skipped."""


# ---- sources -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioFile:
    path: str
    category: str | None = None
    #: relative weight within its source (a manifest's ``weight`` column)
    weight: float = 1.0


@dataclass(frozen=True)
class AudioSource:
    """The files of one folder or manifest and the source's share of the draws."""

    name: str
    files: tuple[AudioFile, ...]
    weight: float = 1.0


def read_source(path: str | os.PathLike, *, weight: float = 1.0, split: str | None = None,
                category: str | None = None, categories: Sequence[str] | None = None) -> AudioSource:
    """A folder (recursive; hidden files and folders ignored) or a manifest CSV as an :class:`AudioSource`.

    Args:
        weight: the source's share of the draws when several are mixed.
        split: keep only manifest rows whose ``split`` column equals it.
        category: the category of every file (default: the manifest's ``category`` column, or a folder's
            first sub-folder; None for files directly in the folder).
        categories: keep only files of these categories (to weight the categories of one manifest).
    """
    path = Path(path)
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"{path}: source weight must be positive, got {weight!r}")
    if path.is_dir():
        if split is not None:
            raise ValueError(f"{path}: split={split!r} needs a manifest, not a folder")
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        files = [AudioFile(str(p), category or (p.relative_to(path).parts[0] if p.parent != path else None))
                 for p in found]
    elif path.is_file():
        files = _read_manifest(path, split, category)
    else:
        raise FileNotFoundError(f"{path}: no such folder or manifest")
    if categories is not None:
        files = [f for f in files if f.category in set(categories)]
    if not files:
        raise ValueError(f"{path}: no audio files" + (f" in split {split!r}" if split else "")
                         + (f" of categories {list(categories)}" if categories is not None else ""))
    return AudioSource(str(path), tuple(files), float(weight))


def _read_manifest(path: Path, split: str | None, category: str | None) -> list[AudioFile]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        key = "path" if "path" in columns else "clip_path" if "clip_path" in columns else None
        if key is None:
            raise ValueError(f"{path}: a manifest needs a 'path' column, has {sorted(columns)}")
        if split is not None and "split" not in columns:
            raise ValueError(f"{path}: split={split!r} asked for but the manifest has no 'split' column")
        files = []
        for line, row in enumerate(reader, 2):
            if split is not None and row["split"] != split:
                continue
            weight = float(row["weight"]) if row.get("weight") not in (None, "") else 1.0
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{path}:{line}: weight must be >= 0, got {row['weight']!r}")
            if weight > 0:
                files.append(AudioFile(str((path.parent / row[key]).resolve()),
                                       category or row.get("category") or None, weight))
    return files


def sources_from(specs) -> list[AudioSource]:
    """Sources from a path, an :class:`AudioSource`, a dict of :func:`read_source` arguments
    (``{"path": ..., "weight": 2, "split": "train"}``) or a list of these."""
    if isinstance(specs, (str, os.PathLike, AudioSource, dict)):
        specs = [specs]
    out = []
    for spec in specs:
        if isinstance(spec, AudioSource):
            out.append(spec)
        elif isinstance(spec, dict):
            out.append(read_source(**spec))
        else:
            out.append(read_source(spec))
    if not out:
        raise ValueError("no training sources given")
    return out


def _flatten(sources: list[AudioSource]) -> tuple[list[AudioFile], np.ndarray | None]:
    """All files, and their draw probabilities (None when uniform: every file once per epoch)."""
    files = [f for s in sources for f in s.files]
    probs = np.concatenate([np.array([f.weight for f in s.files]) / sum(f.weight for f in s.files) * s.weight
                            for s in sources])
    probs /= probs.sum()
    return files, (None if np.allclose(probs, 1 / len(files), rtol=1e-9, atol=0) else probs)


# ---- one crop ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CropConfig:
    """How a file becomes an item (shared by both datasets)."""

    #: rate of the returned audio (Hz)
    sample_rate: int = 24000
    #: crop length in samples (WavTokenizer: 72000, 3 s at 24 kHz)
    num_samples: int = 72000
    #: files shorter than a crop: "tile" (repeat from the start, WavTokenizer) or "pad" (zeros at the end)
    short: str = "tile"
    #: "peak", "lufs" (needs pyloudnorm) or "none"
    loudness: str = "peak"
    #: training peak level range (dBFS) for loudness="peak"
    peak_db: tuple[float, float] = (-6.0, -1.0)
    #: training loudness range (LUFS) for loudness="lufs"
    lufs: tuple[float, float] = (-23.0, -23.0)
    #: never raise a crop by more than this (dB)
    max_gain_db: float = 30.0
    #: validation level (dBFS peak or LUFS); None: the middle of the training range
    val_level: float | None = None
    #: validation: None = the first num_samples (tiled/padded); else the whole file up to this many samples
    val_max_samples: int | None = None

    def __post_init__(self):
        if self.short not in ("tile", "pad"):
            raise ValueError(f"short must be 'tile' or 'pad', got {self.short!r}")
        if self.loudness not in ("peak", "lufs", "none"):
            raise ValueError(f"loudness must be 'peak', 'lufs' or 'none', got {self.loudness!r}")
        if self.num_samples < 1 or self.sample_rate < 1:
            raise ValueError(f"need num_samples >= 1 and sample_rate >= 1, got {self.num_samples}, {self.sample_rate}")
        if self.loudness == "lufs":
            _meter(self.sample_rate)  # fail at construction, not in a worker


def _meter(sample_rate: int):
    try:
        import pyloudnorm
    except ImportError as e:
        raise ImportError("loudness='lufs' needs pyloudnorm (pip install pyloudnorm); or use loudness='peak'") from e
    return pyloudnorm.Meter(sample_rate)


def _mono(block: np.ndarray) -> np.ndarray:
    """``[n, C]`` float32 -> ``[n]``: the channel mean, summed in float64."""
    return block[:, 0].copy() if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float64).astype(np.float32)


#: output samples resampled before and after a crop (and dropped): more than the soxr HQ filter's reach
MARGIN = 256


def _segment(f: sf.SoundFile, start: int, length: int, rate: int, total: int) -> np.ndarray:
    """Samples ``[start, start + length)`` of the file resampled to ``rate`` (``total`` samples in all).

    Reads from a source frame on the resampling grid (a multiple of ``sr / gcd(sr, rate)``, whose output
    index is an integer) ``MARGIN`` output samples before the crop, to as far after it::

        source   |....s0=k*step_in.......................................s1....|
        output          k*step_out   [start ........ start+length)   margin
                        '-- margin --'
    """
    sr, frames = f.samplerate, f.frames
    if sr == rate:
        f.seek(start)
        block = f.read(length, dtype="float32", always_2d=True)
        if block.shape[0] < length:
            raise _invalid(f"{f.name}: only {block.shape[0]} of {length} frames readable from frame {start}")
        return load_audio(_mono(block), rate, sample_rate=rate)[0]  # NaN/inf check
    g = math.gcd(sr, rate)
    step_in, step_out = sr // g, rate // g
    k = max(0, start - MARGIN) // step_out
    s0 = k * step_in
    s1 = min(frames, -(-(start + length + MARGIN) * sr // rate) + step_in)
    f.seek(s0)
    block = f.read(s1 - s0, dtype="float32", always_2d=True)
    if block.shape[0] < s1 - s0:
        raise _invalid(f"{f.name}: only {block.shape[0]} of {s1 - s0} frames readable from frame {s0}")
    out = load_audio(_mono(block), rate, sample_rate=sr)[0][start - k * step_out:][:length]
    if out.shape[0] < length and s1 == frames and start + length <= total:  # rounding at the file's end
        out = np.pad(out, (0, length - out.shape[0]))
    if out.shape[0] < length:
        raise _invalid(f"{f.name}: crop at {start} came out {out.shape[0]} samples long, expected {length}")
    return out


def _invalid(message: str) -> Exception:
    from ..api import InvalidAudioError

    return InvalidAudioError(message)


def _fit(audio: np.ndarray, length: int, short: str) -> np.ndarray:
    if audio.shape[0] >= length:
        return audio[:length]
    if short == "pad":
        return np.pad(audio, (0, length - audio.shape[0]))
    return np.tile(audio, -(-length // audio.shape[0]))[:length]


def read_crop(path: str, config: CropConfig, rng: np.random.Generator | None) -> np.ndarray:
    """One crop of ``path`` as float32 ``[T]``: random when ``rng`` is given, else the validation crop."""
    n, rate = config.num_samples, config.sample_rate
    try:
        f = sf.SoundFile(path)
    except Exception as e:  # noqa: BLE001 - every way of failing to open is a bad file
        if not os.path.exists(path):
            raise _invalid(f"{path}: no such file") from e
        raise _invalid(f"{path}: cannot read as audio ({getattr(e, 'error_string', None) or e})") from e
    with f:
        total = resampled_length(f.frames, f.samplerate, rate) if f.frames > 0 else 0
        if total == 0:
            raise _invalid(f"{path}: contains no audio")
        if rng is None and config.val_max_samples is not None:
            want = min(total, config.val_max_samples)
            return _segment(f, 0, want, rate, total) if want < total else load_audio(path, rate)[0]
        if total <= n:
            return _fit(load_audio(path, rate)[0], n, config.short)
        start = int(rng.integers(0, total - n + 1)) if rng is not None else 0
        return _segment(f, start, n, rate, total)


def normalize(audio: np.ndarray, config: CropConfig, rng: np.random.Generator | None) -> np.ndarray:
    """Scale to the configured level: drawn from the training range with ``rng``, fixed without."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if config.loudness == "none" or peak == 0.0:
        return audio
    low, high = config.peak_db if config.loudness == "peak" else config.lufs
    level = float(rng.uniform(low, high)) if rng is not None else (
        config.val_level if config.val_level is not None else (low + high) / 2)
    peak_db = 20 * math.log10(peak)
    if config.loudness == "peak":
        gain_db = level - peak_db
    else:
        block = int(0.4 * config.sample_rate)  # BS.1770's gating block: a shorter crop is measured tiled
        measured = audio if audio.shape[0] >= block else np.tile(audio, -(-block // audio.shape[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyloudnorm warns on clipping and on -inf loudness
            loudness = _meter(config.sample_rate).integrated_loudness(measured.astype(np.float64))
        if not math.isfinite(loudness):
            return audio  # silent by BS.1770's gates
        gain_db = min(level - loudness, -1.0 - peak_db)
    gain_db = min(gain_db, config.max_gain_db)
    return (audio * np.float32(10 ** (gain_db / 20))).astype(np.float32)


# ---- datasets ------------------------------------------------------------------------------------------

class _Items:
    """Files, configuration, epoch, and the reading of one item with bad-file substitution."""

    def __init__(self, sources, config: CropConfig | None, *, train: bool, seed: int):
        self.sources = sources_from(sources)
        self.files, self.probs = _flatten(self.sources)
        self._cdf = None if self.probs is None else np.cumsum(self.probs)
        self.config = config or CropConfig()
        self.train, self.seed, self.epoch = bool(train), int(seed), 0
        #: path -> why it was skipped, in this process
        self.skipped_files: dict[str, str] = {}

    @property
    def skipped(self) -> int:
        """Files skipped so far in this process (each DataLoader worker counts its own; see ``"skipped"``)."""
        return len(self.skipped_files)

    def _rng(self, index: int) -> np.random.Generator | None:
        return np.random.default_rng([self.seed, self.epoch, int(index)]) if self.train else None

    def _draw(self, rng: np.random.Generator, size=None):
        return np.searchsorted(self._cdf, rng.random(size), side="right").clip(max=len(self.files) - 1)

    def _item(self, file_index: int, rng: np.random.Generator | None, **extra) -> dict:
        """The item of ``files[file_index]``, or of the next readable file after it."""
        n, skipped = len(self.files), []
        for k in range(n):
            f = self.files[(file_index + k) % n]
            try:
                audio = normalize(read_crop(f.path, self.config, rng), self.config, rng)
            except Exception as e:  # noqa: BLE001 - a bad file never stops training
                self._skip(f.path, e)
                skipped.append(f.path)
                continue
            return {"audio": torch.from_numpy(audio)[None], "path": f.path, "category": f.category,
                    "skipped": skipped, **extra}
        raise RuntimeError(f"none of the {n} training files could be read; first: {skipped[0]}: "
                           f"{self.skipped_files.get(skipped[0])}")

    def _skip(self, path: str, error: Exception) -> None:
        if path not in self.skipped_files:
            self.skipped_files[path] = f"{type(error).__name__}: {error}"
            warnings.warn(f"skipping training file {path}: {error}", SkippedAudioWarning, stacklevel=4)

    def set_epoch(self, epoch: int) -> None:
        """Items of another epoch: call before creating the DataLoader iterator (workers copy the dataset
        when the iterator starts, so with ``persistent_workers=True`` they keep their first epoch)."""
        self.epoch = int(epoch)


class AudioCropDataset(_Items, torch.utils.data.Dataset):
    """Map-style crops: item ``i`` of an epoch is a crop of file ``i`` (of ``files``, every source in
    order), or, when sources or files have unequal weights, of a file drawn by weight, ``epoch_size``
    items an epoch (default: the number of files). Shuffle with the DataLoader or a (distributed) sampler.

    Validation (``train=False``): one item per file, in order, with the validation crop and level.
    """

    def __init__(self, sources, config: CropConfig | None = None, *, train: bool = True, seed: int = 0,
                 epoch_size: int | None = None):
        super().__init__(sources, config, train=train, seed=seed)
        self.epoch_size = epoch_size

    def __len__(self) -> int:
        return (self.epoch_size or len(self.files)) if self.train else len(self.files)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = self._rng(index)
        if rng is None or self.probs is None:
            file_index = index % len(self.files)
        else:
            file_index = int(self._draw(rng))
        return self._item(file_index, rng, index=index)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        _check_seed(self.seed, state)
        self.epoch = int(state["epoch"])


def _check_seed(seed: int, state: dict) -> None:
    if int(state["seed"]) != seed:
        raise ValueError(f"the state was saved with seed {state['seed']}, this dataset has seed {seed}")


class StreamingAudioDataset(_Items, torch.utils.data.IterableDataset):
    """Crops streamed file by file, for corpora larger than memory (only the list of paths is held).

    An epoch is a list of *slots* ``(file, crop)``, computed without reading any audio::

        files in a random order (a permutation per epoch; draws by weight when weights differ)
          -> this rank's share: every world_size-th, from its rank (torch.distributed, or rank=/world_size=)
          -> crops_per_file slots per file, interleaved by a shuffle buffer of shuffle_buffer slots
          -> chunks of batch_size consecutive slots; chunk c goes to DataLoader worker c % num_workers

    Files are opened only when their slot comes. Chunks follow the DataLoader's round robin over workers,
    so with the DataLoader's ``batch_size`` equal to ours the batches arrive in slot order whatever the
    number of workers, and every slot of a rank is read exactly once an epoch. Each item carries its
    ``position`` in the rank's list: call :meth:`advance` with each batch consumed, save
    :meth:`state_dict` with the model, and after :meth:`load_state_dict` a new DataLoader continues with
    the next batch exactly. ``even=True`` gives every rank the same number of files (dropping at most
    ``world_size - 1``), which data-parallel training needs.
    """

    def __init__(self, sources, config: CropConfig | None = None, *, train: bool = True, seed: int = 0,
                 batch_size: int = 1, crops_per_file: int = 1, shuffle_buffer: int = 64,
                 epoch_size: int | None = None, rank: int | None = None, world_size: int | None = None,
                 even: bool = False):
        super().__init__(sources, config, train=train, seed=seed)
        if batch_size < 1 or crops_per_file < 1:
            raise ValueError(f"need batch_size >= 1 and crops_per_file >= 1, got {batch_size}, {crops_per_file}")
        if (rank is None) != (world_size is None) or (world_size is not None and not 0 <= rank < world_size):
            raise ValueError(f"give both rank and world_size with 0 <= rank < world_size, got {rank}, {world_size}")
        self.batch_size, self.crops_per_file, self.shuffle_buffer = batch_size, crops_per_file, shuffle_buffer
        self.epoch_size, self.rank, self.world_size, self.even = epoch_size, rank, world_size, even
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.position = 0

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None:
            return self.rank, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def slots(self) -> list[tuple[int, int]]:
        """This rank's ``(file index, slot id)`` list for the current epoch; the slot id seeds the item."""
        rank, world = self._rank_world()
        n = len(self.files)
        rng = np.random.default_rng([self.seed, self.epoch, 0x0D0E])  # the same on every rank
        if not self.train:
            order = np.arange(n)
        elif self.probs is None:
            count = self.epoch_size or n
            order = np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]
        else:
            order = self._draw(rng, self.epoch_size or n)
        positions = np.arange(rank, len(order), world)
        if self.even:
            positions = positions[: len(order) // world]
        k = self.crops_per_file
        slots = [(int(order[p]), int(p) * k + c) for p in positions for c in range(k)]
        if self.train and self.shuffle_buffer > 1 and k > 1:
            slots = _buffer_shuffle(slots, self.shuffle_buffer, np.random.default_rng([self.seed, self.epoch, rank]))
        return slots

    def __len__(self) -> int:
        """Items this rank still yields this epoch (all workers together)."""
        return max(0, len(self.slots()) - self.position)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slots = self.slots()
        for chunk, begin in enumerate(range(self.position, len(slots), self.batch_size)):
            if chunk % workers != worker:
                continue
            for position in range(begin, min(begin + self.batch_size, len(slots))):
                file_index, slot = slots[position]
                yield self._item(file_index, self._rng(slot), index=slot, position=position)

    def advance(self, batch: dict) -> None:
        """Record that ``batch`` (from :func:`collate`) was consumed."""
        self.position = max(self.position, int(torch.as_tensor(batch["position"]).max()) + 1)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        _check_seed(self.seed, state)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _buffer_shuffle(items: list, size: int, rng: np.random.Generator) -> list:
    """Stream ``items`` through a buffer of ``size``, emitting a random element of it each step."""
    out, buffer = [], []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            j = int(rng.integers(len(buffer)))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            out.append(buffer.pop())
    out.extend(buffer[i] for i in rng.permutation(len(buffer)))
    return out


def collate(items: Sequence[dict]) -> dict:
    """A batch: ``audio [B, 1, T]`` (zero-padded to the longest), ``lengths [B]``, ``path`` and
    ``category`` lists, ``index``/``position`` tensors when the items have them, and ``skipped``: every
    file skipped to make these items."""
    lengths = [int(item["audio"].shape[-1]) for item in items]
    audio = torch.zeros(len(items), 1, max(lengths))
    for i, item in enumerate(items):
        audio[i, :, : lengths[i]] = item["audio"]
    batch = {"audio": audio, "lengths": torch.tensor(lengths), "path": [item["path"] for item in items],
             "category": [item["category"] for item in items],
             "skipped": [p for item in items for p in item.get("skipped", ())]}
    for key in ("index", "position"):
        if key in items[0]:
            batch[key] = torch.tensor([int(item[key]) for item in items])
    return batch
