"""Generator and discriminator steps as pure functions: tensors in, a loss and a metrics dict out.

The training loop (:mod:`tokenwave.training.trainer`) runs the generator forward once per step
(:mod:`.generator`), then::

    d_loss, d_metrics = discriminator_step(discs, real, out.audio.detach(), out.condition, losses)
    g_loss, g_metrics = generator_step(out, real, discs, losses, adversarial=step >= disc_warmup_steps)

Metric names are the log keys (``g/mel``, ``d/mpd`` ...). Every term of the generator loss is weighted by the
recipe's ``losses`` section; a weight of 0 skips the term's computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..losses import (
    MultiResolutionSTFTLoss,
    adversarial_losses,
    dac_mel_loss,
    feature_matching_loss,
    wavtokenizer_mel_loss,
)
from .generator import GeneratorOutput

_DISC_OPTIONS = ("loss", "reduction")  # per-discriminator training options, not constructor arguments


@dataclass
class LossSet:
    """The recipe's loss weights with the modules they need (mel filterbanks, STFT windows)."""

    weights: object  # recipe.LossSection
    mel: torch.nn.Module | None
    stft: torch.nn.Module | None
    #: per discriminator group: (adversarial kind, reduction over its sub-discriminators)
    groups: dict = field(default_factory=dict)

    def to(self, device) -> LossSet:
        for m in (self.mel, self.stft):
            if m is not None:
                m.to(device)
        return self


def split_discriminator_entries(entries: list[dict], default_kind: str) -> tuple[list[dict], dict]:
    """Recipe discriminator entries -> (constructor entries, {group: (loss kind, reduction)}); group names
    follow :meth:`MultiDiscriminator.from_config` (a repeated name gets ``_1``, ``_2`` ...)."""
    build, groups, seen = [], {}, {}
    for entry in entries:
        entry = dict(entry)
        kind = entry.pop("loss", default_kind)
        reduction = entry.pop("reduction", "mean")
        name = entry["name"]
        n = seen[name] = seen.get(name, -1) + 1
        groups[name + (f"_{n}" if n else "")] = (kind, reduction)
        build.append(entry)
    return build, groups


def build_losses(weights, sample_rate: int, groups: dict) -> LossSet:
    mel = None
    if weights.mel:
        if weights.mel_kind == "single":
            mel = wavtokenizer_mel_loss()
        elif weights.mel_kind == "multiscale":
            mel = dac_mel_loss()
        else:
            raise ValueError(f"losses.mel_kind must be 'single' or 'multiscale', got {weights.mel_kind!r}")
        if sample_rate != 24000:
            raise ValueError(f"the mel losses are set up for 24 kHz, the model runs at {sample_rate} Hz")
    stft = MultiResolutionSTFTLoss() if weights.stft else None
    for kind, _ in groups.values():
        adversarial_losses(kind)  # fails early on an unknown kind
    return LossSet(weights, mel, stft, groups)


def discriminator_step(discs, real: torch.Tensor, fake: torch.Tensor, condition, losses: LossSet):
    """Discriminator loss on real audio and (detached) reconstructions ``[B, 1, L]``; metrics ``d/<group>``."""
    real_out = discs(real, condition)
    fake_out = discs(fake.detach(), condition)
    total = real.new_zeros(())
    metrics = {}
    for group in real_out.groups:
        kind, reduction = losses.groups[group]
        d_loss, _ = adversarial_losses(kind)
        loss = d_loss(real_out.logits(group), fake_out.logits(group), reduction=reduction).total
        metrics[f"d/{group}"] = loss.detach()
        total = total + loss
    metrics["d/total"] = total.detach()
    return total, metrics


def generator_step(out: GeneratorOutput, real: torch.Tensor, discs, losses: LossSet, *, adversarial: bool = True):
    """Generator loss of one forward's output ``out`` against ``real`` ``[B, 1, L]``; metrics ``g/<term>``."""
    w = losses.weights
    metrics = {}
    total = real.new_zeros(())

    def add(name: str, weight: float, value: torch.Tensor) -> None:
        nonlocal total
        metrics[f"g/{name}"] = value.detach()
        total = total + weight * value

    y_hat, y = out.audio.float(), real.float()
    if losses.mel is not None:
        add("mel", w.mel, losses.mel(y_hat, y))
    if losses.stft is not None:
        add("stft", w.stft, losses.stft(y_hat[:, 0], y[:, 0]).total)
    if w.waveform:
        add("waveform", w.waveform, F.l1_loss(y_hat, y))
    add("commitment", w.commitment, out.commit_loss)
    if out.semantic_loss is not None and w.semantic:
        add("semantic", w.semantic, out.semantic_loss)
    if discs is not None and adversarial and (w.adversarial or w.feature_matching):
        fake_out = discs(out.audio, out.condition)
        with torch.no_grad():
            real_out = discs(real, out.condition)
        for group in fake_out.groups:
            kind, reduction = losses.groups[group]
            _, g_loss = adversarial_losses(kind)
            if w.adversarial:
                add(f"adv_{group}", w.adversarial, g_loss(fake_out.logits(group), reduction=reduction).total)
            if w.feature_matching:
                fm = feature_matching_loss(real_out.feature_maps(group), fake_out.feature_maps(group),
                                           reduction=reduction)
                add(f"fm_{group}", w.feature_matching, fm)
    for key, value in out.stats.items():
        metrics[f"vq/{key}"] = value.detach() if torch.is_tensor(value) else torch.tensor(float(value))
    metrics["g/total"] = total.detach()
    return total, metrics
