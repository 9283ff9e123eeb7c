"""The training step and state: build a codec, its discriminators and optimisers from a recipe, step,
checkpoint, resume. :mod:`tokenwave.training.run` drives it (data, validation, logs, tags). One step::

    out = forward(real)                                   # the generator runs once
    D: discriminator_step(discs, real, out.audio.detach()) -> all-reduce grads, AdamW step, schedule step
    G: generator_step(out, real, discs)                   -> all-reduce grads, clip, AdamW step, schedule step

Data-parallel training (``torchrun``, one process per device, ``torch.distributed`` initialised): every
process runs the step on its share of the global batch; after each backward the gradients are averaged
across processes with one all-reduce of a flat buffer (the same update as one process on the whole batch,
since every loss is a mean over equal per-process batches), and the codebook statistics are all-reduced
inside the quantizer step (:mod:`tokenwave.quantization.training`). Parameters start equal (same seed,
rank 0's weights broadcast at start) and so stay equal.

Mixed precision (``train.mixed_precision``): "bf16" runs the forward and losses under ``torch.autocast``
(CPU or CUDA); "fp16" (CUDA) adds a gradient scaler. Weights, optimiser states and the codebooks' EMA stay
float32.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np
import torch

from .generator import build_forward
from .recipe import Recipe
from .state import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .steps import build_losses, discriminator_step, generator_step, split_discriminator_entries


def build_codec(recipe: Recipe):
    """The codec a recipe trains: ``model.init_from`` weights, else a fresh model of ``preset`` + ``config``
    whose codebooks are marked uninitialised (k-means on the first batch)."""
    m = recipe.model
    if m.init_from:
        from ..loading import load_tokenizer

        return load_tokenizer(m.init_from)
    if m.family == "wavtokenizer":
        from ..codecs.wavtokenizer import WavTokenizer, WavTokenizerConfig, preset

        base = preset(m.preset).to_dict() if m.preset else WavTokenizerConfig().to_dict()
        model = WavTokenizer(WavTokenizerConfig.from_dict({**base, **m.config}, "recipe model.config"))
        quantizer = model.quantizer
        codebooks = [q.codebook for q in quantizer.quantizers] if model.config.residual else [quantizer.codebook]
    elif m.family == "higgs":
        from ..codecs.higgs import HiggsAudioTokenizer, HiggsConfig
        from ..codecs.higgs.checkpoint import config_from_dict

        config = config_from_dict(m.config, "recipe model.config") if m.config else HiggsConfig()
        model = HiggsAudioTokenizer(config)
        codebooks = [q.codebook for q in model.quantizer.quantizers]
    else:
        raise ValueError(f"unknown codec family {m.family!r}: 'wavtokenizer' or 'higgs'")
    for codebook in codebooks:
        codebook.inited.zero_()
    return model


def _schedule(optimizer, section, max_steps: int):
    total = section.total_steps or max_steps
    warm = section.warmup_steps

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if section.name == "constant":
            return 1.0
        if section.name == "cosine":
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1 + math.cos(math.pi * progress))
        if section.name == "exponential":
            return section.gamma ** (step - warm)
        raise ValueError(f"schedule.name must be constant, cosine or exponential, got {section.name!r}")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_gradients(params) -> None:
    """Average the gradients of ``params`` over the processes (no-op in a single process)."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    _, world = _world()
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers to every process."""
    if _world()[1] == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(t.data, src=0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Holds the codec, discriminators, optimisers, schedules and step of one run in ``run_dir``."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, device: str | torch.device = "cpu"):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        seed_everything(recipe.train.seed)
        self.generator_rng = torch.Generator().manual_seed(recipe.train.seed)
        self.model = build_codec(recipe).to(self.device).train()
        frozen = set(recipe.model.freeze)
        if recipe.model.family == "higgs":
            frozen.add("semantic_model")  # the teacher is never trained
        for name in frozen:
            getattr(self.model, name).requires_grad_(False).eval()
        self.forward = build_forward(self.model, recipe.model.family, recipe.quantizer, self.generator_rng)
        entries, groups = split_discriminator_entries(recipe.discriminators, recipe.losses.adversarial_kind)
        self.discriminators = None
        if entries:
            from ..discriminators import MultiDiscriminator

            self.discriminators = MultiDiscriminator.from_config(entries).to(self.device).train()
        self.losses = build_losses(recipe.losses, self.model.sample_rate, groups).to(self.device)
        o = recipe.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt_g = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.sched_g = _schedule(self.opt_g, recipe.schedule, recipe.train.max_steps)
        self.opt_d = self.sched_d = None
        if self.discriminators is not None:
            self.opt_d = torch.optim.AdamW(self.discriminators.parameters(), lr=o.disc_lr or o.lr,
                                           betas=tuple(o.betas), weight_decay=o.weight_decay)
            self.sched_d = _schedule(self.opt_d, recipe.schedule, recipe.train.max_steps)
        self.step = 0
        #: where the data loader stands (saved with the checkpoint; set by the driver)
        self.data_state: dict = {}
        broadcast_parameters(self.model)
        if self.discriminators is not None:
            broadcast_parameters(self.discriminators)
        precision = recipe.train.mixed_precision
        if precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be 'no', 'bf16' or 'fp16', got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("train.mixed_precision='fp16' needs a CUDA device; use 'bf16' on CPU")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def _autocast(self):
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _optimizer_step(self, optimizer, params, clip) -> torch.Tensor | None:
        all_reduce_gradients(params)
        norm = None
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()
        return norm

    # ---- one step ---------------------------------------------------------------------------------------
    def train_step(self, audio: torch.Tensor) -> dict[str, float]:
        """One discriminator + generator update on ``audio [B, 1, L]``; returns the step's metrics."""
        real = audio.to(self.device)
        with self._autocast():
            out = self.forward(real)
        metrics = {}
        if self.discriminators is not None:
            with self._autocast():
                d_loss, d_metrics = discriminator_step(self.discriminators, real, out.audio, out.condition,
                                                       self.losses)
            self.opt_d.zero_grad(set_to_none=True)
            self._backward(d_loss)
            self._optimizer_step(self.opt_d, list(self.discriminators.parameters()), None)
            self.sched_d.step()
            metrics.update(d_metrics)
        adversarial = self.step >= self.recipe.train.disc_warmup_steps
        with self._autocast():
            g_loss, g_metrics = generator_step(out, real, self.discriminators, self.losses, adversarial=adversarial)
        self.opt_g.zero_grad(set_to_none=True)
        self._backward(g_loss)
        if self.discriminators is not None:
            self.discriminators.zero_grad(set_to_none=True)  # G's backward reached D's weights: not D's update
        clip = self.recipe.optim.grad_clip
        norm = self._optimizer_step(self.opt_g, [p for p in self.model.parameters() if p.requires_grad], clip)
        if norm is not None:
            metrics["g/grad_norm"] = norm
        if self.scaler is not None:
            self.scaler.update()
            metrics["amp/scale"] = self.scaler.get_scale()
        self.sched_g.step()
        metrics.update(g_metrics)
        self.step += 1
        metrics["lr"] = self.sched_g.get_last_lr()[0]
        return {k: float(v) for k, v in metrics.items()}

    def fit(self, batches, *, max_steps: int | None = None, log: bool = True) -> list[dict[str, float]]:
        """Train on an iterable of ``[B, 1, L]`` batches (or dicts with ``"audio"``) until ``max_steps``."""
        end = max_steps or self.recipe.train.max_steps
        history = []
        for batch in batches:
            if self.step >= end:
                break
            audio = batch["audio"] if isinstance(batch, dict) else batch
            metrics = self.train_step(audio)
            metrics["step"] = self.step
            history.append(metrics)
            if log and (self.step % self.recipe.train.log_every == 0 or self.step == end):
                self._log_csv(metrics)
            if self.step % self.recipe.train.checkpoint_every == 0 or self.step == end:
                self.save("latest", metrics)
        return history

    # ---- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"step": self.step, "rng": rng_state(), "generator_rng": self.generator_rng.get_state(),
                 "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(), "data": self.data_state}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.opt_d is not None:
            state.update(opt_d=self.opt_d.state_dict(), sched_d=self.sched_d.state_dict())
        return state

    def save(self, tag: str, metrics: dict | None = None) -> Path:
        return save_checkpoint(self.run_dir / "checkpoints" / tag, generator=self.model,
                               discriminators=self.discriminators, state=self.state_dict(),
                               recipe_json=self.recipe.to_json(), metrics=metrics)

    @classmethod
    def resume(cls, checkpoint: str | Path, run_dir: str | Path | None = None, *,
               device: str | torch.device = "cpu", overrides: list[str] | tuple[str, ...] = ()) -> Trainer:
        """A trainer that continues exactly where ``checkpoint`` (a tag folder) left off; ``overrides``
        (``key=value``) change its recipe first (e.g. ``train.max_steps`` to train longer)."""
        from ..codecs.higgs.checkpoint import load_state_strict
        from ..loading import load_tokenizer
        from .recipe import apply_overrides

        checkpoint = Path(checkpoint)
        state, discs, recipe_data = read_checkpoint(checkpoint)
        recipe = Recipe.from_dict(apply_overrides(recipe_data, overrides), str(checkpoint / "recipe.json"))
        trainer = cls(recipe, run_dir or checkpoint.parent.parent, device=device)
        weights = load_tokenizer(checkpoint / "model")
        load_state_strict(trainer.model, weights.state_dict(), str(checkpoint / "model"))
        if discs is not None:
            load_state_strict(trainer.discriminators, discs, str(checkpoint))
        trainer.opt_g.load_state_dict(state["opt_g"])
        trainer.sched_g.load_state_dict(state["sched_g"])
        if trainer.opt_d is not None:
            trainer.opt_d.load_state_dict(state["opt_d"])
            trainer.sched_d.load_state_dict(state["sched_d"])
        if trainer.scaler is not None and "scaler" in state:
            trainer.scaler.load_state_dict(state["scaler"])
        trainer.data_state = dict(state.get("data", {}))
        trainer.step = int(state["step"])
        trainer.generator_rng.set_state(state["generator_rng"])
        set_rng_state(state["rng"])
        return trainer

    def _log_csv(self, metrics: dict) -> None:
        path = self.run_dir / "metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted(metrics), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(metrics)
