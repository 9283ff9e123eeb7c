"""Run a recipe: data loaders, the training loop, validation, logs, checkpoint tags, data-parallel processes.

``tokenwave train --config RECIPE.yaml key=value ...`` calls :func:`train`; so can Python::

    from tokenwave.training import load_recipe, train
    train(load_recipe("tokenwave-small", ["train.max_steps=200"]), "runs/small")

What a run writes under ``run_dir``::

    metrics.csv                 every log_every steps: losses, codebook statistics, learning rate, s/step
    valid.csv                   every valid_every steps: mel and STFT distance (tokenwave.eval metrics) of the
                                validation clips through the real encode -> decode path, per category and overall
    tensorboard/                the same scalars and the validation audio samples (needs the ``tensorboard``
                                package: ``pip install tokenwave[train]``; without it, CSV only)
    samples/step-000500/*.wav   reconstructions of the first ``data.valid_audio`` validation clips
    checkpoints/latest          every checkpoint_every steps and at the end
    checkpoints/best            the checkpoint with the lowest ``train.best_metric`` so far
    checkpoints/step-000500     with ``train.keep_steps`` > 0, the last keep_steps of them

Data: ``data.train`` sources (folders, manifests, or ``{path, weight, split, categories}`` mappings, see
:func:`tokenwave.training.data.read_source`) give random crops (:class:`AudioCropDataset`, or
:class:`StreamingAudioDataset` with ``data.streaming``). The map-style order is a permutation per epoch
drawn from ``(seed, epoch)``, split between processes (every world_size-th item from the rank), so the
loader's position is two numbers; they are saved with each checkpoint and a resumed run reads the same
next batch. ``data.batch_size`` is the global batch: each of the world_size processes takes
``batch_size / world_size`` items.

Multi-process: launch with ``torchrun --nproc_per_node N -m tokenwave.cli.main train ...`` (or
``tokenwave train --nproc N`` on one machine); :func:`train` initialises ``torch.distributed`` from the
environment torchrun sets (NCCL on CUDA, gloo on CPU). Rank 0 validates, logs and saves.
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .recipe import Recipe
from .trainer import Trainer, _world

__all__ = ["train", "EpochSampler", "resolve_device", "setup_distributed"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Initialise ``torch.distributed`` when torchrun started this process (``WORLD_SIZE`` > 1); returns
    ``(rank, world_size)``."""
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _world()


class EpochSampler(torch.utils.data.Sampler):
    """Indices ``0..n-1`` in a per-epoch permutation from ``(seed, epoch)`` (or in order), the rank's share
    (every world_size-th from ``rank``, the permutation cut to a multiple of world_size), from ``start``."""

    def __init__(self, n: int, *, seed: int, epoch: int = 0, start: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.n, self.seed, self.epoch, self.start = int(n), int(seed), int(epoch), int(start)
        self.rank, self.world_size, self.shuffle = int(rank), int(world_size), bool(shuffle)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order = order[: self.n - self.n % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, self.n // self.world_size - self.start)


def _crop_config(recipe: Recipe, sample_rate: int):
    from .data import CropConfig

    d = recipe.data
    return CropConfig(sample_rate=sample_rate, num_samples=d.num_samples, short=d.short, loudness=d.loudness,
                      peak_db=tuple(d.peak_db), lufs=tuple(d.lufs),
                      val_max_samples=int(round(d.valid_seconds * sample_rate)))


def _sources(recipe: Recipe, what: str):
    from .data import sources_from

    specs = getattr(recipe.data, what)
    if not specs:
        raise ValueError(f"the recipe has no data.{what} sources: give folders or manifests "
                         f"(data.{what}=[path, ...] on the command line)")
    root = Path(recipe.data.root).expanduser() if recipe.data.root else None

    def place(path):
        return str(root / path) if root is not None and not Path(path).is_absolute() else path

    out = []
    for spec in specs:
        if isinstance(spec, dict):
            spec = dict(spec)
            if "path" not in spec:
                raise ValueError(f"data.{what} entry {spec} has no 'path'")
            spec["path"] = place(spec["path"])
            out.append(spec)
        else:
            out.append(place(spec))
    return sources_from(out)


class _TrainData:
    """The training batches of this process, resumable from ``(epoch, position)``."""

    def __init__(self, recipe: Recipe, sample_rate: int, rank: int, world: int):
        from .data import AudioCropDataset, StreamingAudioDataset

        d = recipe.data
        if d.batch_size % world:
            raise ValueError(f"data.batch_size {d.batch_size} (the global batch) must be divisible by the "
                             f"{world} processes")
        self.batch = d.batch_size // world
        self.recipe, self.rank, self.world = recipe, rank, world
        config, sources = _crop_config(recipe, sample_rate), _sources(recipe, "train")
        if d.streaming:
            self.dataset = StreamingAudioDataset(sources, config, seed=recipe.train.seed, batch_size=self.batch,
                                                 rank=rank, world_size=world, even=world > 1)
        else:
            self.dataset = AudioCropDataset(sources, config, seed=recipe.train.seed)
        if len(self.dataset) < d.batch_size:
            raise ValueError(f"the training data has {len(self.dataset)} items an epoch, fewer than one batch "
                             f"of {d.batch_size}")
        self.epoch, self.position = 0, 0
        self.skipped: set[str] = set()

    def state(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position}
        if self.recipe.data.streaming:
            state["stream"] = self.dataset.state_dict()
        return state

    def load(self, state: dict) -> None:
        self.epoch, self.position = int(state.get("epoch", 0)), int(state.get("position", 0))
        if "stream" in state:
            self.dataset.load_state_dict(state["stream"])

    def __iter__(self):
        from .data import collate

        d = self.recipe.data
        first = True
        while True:
            if not (first and d.streaming):  # a streaming dataset already stands at its (loaded) position
                self.dataset.set_epoch(self.epoch)
            first = False
            # the loader's own generator: creating an iterator draws a worker seed, which must not come from
            # (and shift) the global RNG that training uses, or a resumed run would diverge
            common = dict(batch_size=self.batch, num_workers=d.num_workers, collate_fn=collate, drop_last=True,
                          generator=torch.Generator().manual_seed(self.recipe.train.seed * 1_000_003 + self.epoch))
            if d.streaming:
                loader = torch.utils.data.DataLoader(self.dataset, **common)
            else:
                sampler = EpochSampler(len(self.dataset), seed=self.recipe.train.seed, epoch=self.epoch,
                                       start=self.position, rank=self.rank, world_size=self.world)
                loader = torch.utils.data.DataLoader(self.dataset, sampler=sampler, **common)
            for batch in loader:
                self.position += len(batch["path"])
                if d.streaming:
                    self.dataset.advance(batch)
                self.skipped.update(batch["skipped"])
                yield batch["audio"]
            self.epoch, self.position = self.epoch + 1, 0


def _valid_items(recipe: Recipe, sample_rate: int) -> list[dict]:
    """The validation clips: ``data.valid_clips`` files spread evenly over the validation sources."""
    from .data import AudioCropDataset

    if not recipe.data.valid:
        return []
    dataset = AudioCropDataset(_sources(recipe, "valid"), _crop_config(recipe, sample_rate), train=False)
    n = len(dataset)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(n, recipe.data.valid_clips)).round()})
    return [dataset[i] for i in picks]


def validate(model, items: list[dict]) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mel and STFT distance (:mod:`tokenwave.eval.metrics`) of each item through ``encode`` -> ``decode``,
    averaged per category and overall; and the decoded audio."""
    from ..eval.metrics.signal import mel_distance, stft_distance

    was_training = model.training
    model.eval()
    per: dict[str, list[tuple[float, float]]] = {}
    decoded = []
    try:
        for item in items:
            audio = item["audio"][0]
            out = model.decode(model.encode(audio[None, None]), crop=True).audio[0, 0].float().cpu().numpy()
            ref = audio.numpy()
            values = (mel_distance(ref, out, model.sample_rate), stft_distance(ref, out, model.sample_rate))
            per.setdefault("all", []).append(values)
            if item.get("category"):
                per.setdefault(item["category"], []).append(values)
            decoded.append(out)
    finally:
        model.train(was_training)
    metrics = {}
    for group, values in per.items():
        prefix = "valid/" if group == "all" else f"valid_{group}/"
        metrics[prefix + "mel_distance"] = float(np.mean([v[0] for v in values]))
        metrics[prefix + "stft_distance"] = float(np.mean([v[1] for v in values]))
    return metrics, decoded


class _Logs:
    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir, self.enabled, self.tb = run_dir, enabled, None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed (pip install 'tokenwave[train]'): logging to CSV only",
                          stacklevel=3)
        else:
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def scalars(self, name: str, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        path = self.run_dir / f"{name}.csv"
        row = {"step": step, **metrics}
        fields = list(row)
        if path.exists():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                fields = header + [k for k in row if k not in header]
                if fields != header:  # a new column (e.g. adversarial terms after warm-up): rewrite the header
                    with open(path, newline="") as f:
                        rows = list(csv.DictReader(f))
                    with open(path, "w", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=fields)
                        writer.writeheader()
                        writer.writerows(rows)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)

    def audio(self, items: list[dict], decoded: list[np.ndarray], step: int, sample_rate: int, count: int) -> None:
        if not self.enabled or count <= 0:
            return
        import soundfile as sf

        folder = self.run_dir / "samples" / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (item, out) in enumerate(list(zip(items, decoded))[:count]):
            name = f"{i:02d}-{item.get('category') or 'clip'}"
            sf.write(folder / f"{name}.wav", np.clip(out, -1, 1), sample_rate, subtype="PCM_16")
            if step == 0 or not (self.run_dir / "samples" / f"{name}-input.wav").exists():
                sf.write(self.run_dir / "samples" / f"{name}-input.wav", item["audio"][0].numpy(), sample_rate,
                         subtype="PCM_16")
            if self.tb is not None:
                self.tb.add_audio(f"valid/{name}", torch.from_numpy(out)[None], step, sample_rate)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _prune_steps(run_dir: Path, keep: int) -> None:
    tags = sorted((run_dir / "checkpoints").glob("step-*"))
    for old in tags[: max(0, len(tags) - keep)]:
        import shutil

        shutil.rmtree(old)


def train(recipe: Recipe | None, run_dir: str | Path, *, resume: str | Path | None = None, device: str | None = None,
          overrides: list[str] | tuple[str, ...] = (), progress: bool = True) -> Path:
    """Train ``recipe`` in ``run_dir``, or continue the checkpoint tag folder ``resume`` (its recipe, with
    ``overrides`` applied); returns the ``latest`` checkpoint folder. See the module docstring."""
    run_dir = Path(run_dir)
    if resume is not None:
        from .recipe import apply_overrides
        from .state import read_checkpoint

        saved = Recipe.from_dict(apply_overrides(read_checkpoint(resume)[2], overrides), str(resume))
        dev = resolve_device(device or saved.train.device)
    elif recipe is None:
        raise ValueError("give a recipe or a checkpoint to resume")
    else:
        dev = resolve_device(device or recipe.train.device)
    rank, world = setup_distributed(dev)
    if resume is not None:
        trainer = Trainer.resume(resume, run_dir, device=dev, overrides=overrides)
        recipe = trainer.recipe
    else:
        trainer = Trainer(recipe, run_dir, device=dev)
    t = recipe.train
    model = trainer.model
    data = _TrainData(recipe, model.sample_rate, rank, world)
    if trainer.data_state:
        data.load(trainer.data_state)
    main = rank == 0
    logs = _Logs(run_dir, main)
    valid = _valid_items(recipe, model.sample_rate) if main else []
    best_file = run_dir / "checkpoints" / "best" / "metrics.json"
    best = float("inf")
    if best_file.is_file():
        import json

        best = float(json.loads(best_file.read_text()).get(t.best_metric, float("inf")))
    started, last_log, last_step = time.monotonic(), time.monotonic(), trainer.step
    metrics: dict = {}

    def checkpoint(tags: list[str], extra: dict) -> None:
        trainer.data_state = data.state()
        if main:
            for tag in tags:
                trainer.save(tag, {**metrics, **extra})
            if t.keep_steps:
                _prune_steps(run_dir, t.keep_steps)
        if world > 1:
            torch.distributed.barrier()

    def run_validation() -> dict:
        nonlocal best
        if not valid:
            return {}
        values, decoded = validate(model, valid)
        logs.scalars("valid", values, trainer.step)
        logs.audio(valid, decoded, trainer.step, model.sample_rate, recipe.data.valid_audio)
        if progress:
            print(f"[valid] step {trainer.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())
                                                              if k.startswith("valid/")), flush=True)
        return values

    def out_of_time() -> bool:
        if not t.max_minutes:
            return False
        over = torch.tensor([float(time.monotonic() - started > 60 * t.max_minutes)])
        if world > 1:
            torch.distributed.broadcast(over, src=0)
        return bool(over.item())

    try:
        for audio in data:
            if trainer.step >= t.max_steps:
                break
            metrics = trainer.train_step(audio)
            step = trainer.step
            if step % t.log_every == 0 or step == t.max_steps:
                now = time.monotonic()
                metrics["time/s_per_step"] = (now - last_log) / max(1, step - last_step)
                metrics["data/skipped_files"] = float(len(data.skipped))
                last_log, last_step = now, step
                logs.scalars("metrics", metrics, step)
                if progress and main:
                    shown = {k: v for k, v in metrics.items() if k.startswith("g/") or k == "time/s_per_step"}
                    print(f"step {step}/{t.max_steps}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()),
                          flush=True)
            stop = step >= t.max_steps or out_of_time()
            values = run_validation() if main and (step % t.valid_every == 0 or stop) else {}
            tags = []
            if step % t.checkpoint_every == 0 or stop:
                tags.append("latest")
                if t.keep_steps:
                    tags.append(f"step-{step:06d}")
            score = values.get(t.best_metric)
            if score is not None and score < best:
                best = score
                tags.append("best")
            flag = torch.tensor([float(bool(tags))])
            if world > 1:  # rank 0 decides (only it validates)
                torch.distributed.broadcast(flag, src=0)
            if flag.item():
                checkpoint(tags or ["latest"], values)
            if stop:
                break
    finally:
        logs.close()
    if data.skipped and main:
        warnings.warn(f"{len(data.skipped)} training files could not be read and were skipped: "
                      + ", ".join(sorted(data.skipped)[:5]) + (" ..." if len(data.skipped) > 5 else ""),
                      stacklevel=2)
    return run_dir / "checkpoints" / "latest"
