"""The training loop: build a codec, its discriminators and optimisers from a recipe, step, checkpoint, resume.

Work in progress (issue 6): single-process training with exact resume is here and tested; data-parallel
training, validation with the evaluation metrics, TensorBoard logs and the ``tokenwave train`` command are
not yet. One step::

    out = forward(real)                                   # the generator runs once
    D: discriminator_step(discs, real, out.audio.detach()) -> AdamW step, schedule step
    G: generator_step(out, real, discs)                   -> AdamW step (grad-norm clip), schedule step
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
        codebooks = [model.quantizer.codebook]
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

    # ---- one step ---------------------------------------------------------------------------------------
    def train_step(self, audio: torch.Tensor) -> dict[str, float]:
        """One discriminator + generator update on ``audio [B, 1, L]``; returns the step's metrics."""
        real = audio.to(self.device)
        out = self.forward(real)
        metrics = {}
        if self.discriminators is not None:
            d_loss, d_metrics = discriminator_step(self.discriminators, real, out.audio, out.condition, self.losses)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            self.sched_d.step()
            metrics.update(d_metrics)
        adversarial = self.step >= self.recipe.train.disc_warmup_steps
        g_loss, g_metrics = generator_step(out, real, self.discriminators, self.losses, adversarial=adversarial)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if self.discriminators is not None:
            self.discriminators.zero_grad(set_to_none=True)  # G's backward reached D's weights: not D's update
        clip = self.recipe.optim.grad_clip
        if clip:
            metrics["g/grad_norm"] = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], clip)
        self.opt_g.step()
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
                 "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict()}
        if self.opt_d is not None:
            state.update(opt_d=self.opt_d.state_dict(), sched_d=self.sched_d.state_dict())
        return state

    def save(self, tag: str, metrics: dict | None = None) -> Path:
        return save_checkpoint(self.run_dir / "checkpoints" / tag, generator=self.model,
                               discriminators=self.discriminators, state=self.state_dict(),
                               recipe_json=self.recipe.to_json(), metrics=metrics)

    @classmethod
    def resume(cls, checkpoint: str | Path, run_dir: str | Path | None = None, *,
               device: str | torch.device = "cpu") -> Trainer:
        """A trainer that continues exactly where ``checkpoint`` (a tag folder) left off."""
        from ..codecs.higgs.checkpoint import load_state_strict
        from ..loading import load_tokenizer

        checkpoint = Path(checkpoint)
        state, discs, recipe_data = read_checkpoint(checkpoint)
        recipe = Recipe.from_dict(recipe_data, str(checkpoint / "recipe.json"))
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
