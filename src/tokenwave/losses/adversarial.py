"""Adversarial and feature-matching losses over a list of sub-discriminators.

With ``D_k(.)`` the logits of sub-discriminator ``k`` (any shape; ``mean`` is over all its elements)::

    hinge          L_D = sum_k mean(relu(1 - D_k(y))) + mean(relu(1 + D_k(y_hat)))     (MelGAN/HiFi-GAN/Vocos)
                   L_G = sum_k mean(relu(1 - D_k(y_hat)))
    least squares  L_D = sum_k mean((1 - D_k(y))^2) + mean(D_k(y_hat)^2)               (LSGAN, Mao et al. 2017;
                   L_G = sum_k mean((1 - D_k(y_hat))^2)                                 DAC ``GANLoss``)
    feature match  L_FM = sum_k sum_l mean |f_kl(y) - f_kl(y_hat)|,  f(y) detached      (Larsen et al. 2016)

``reduction="mean"`` divides the sums by the number of sub-discriminators. WavTokenizer (spec_wavtokenizer.md
section 6.3) uses hinge with ``mean`` for MPD and MRD (its ``1/5`` and ``1/3`` factors) and least squares with
``sum`` for the DAC discriminator, whose feature matching skips the logits (``exclude_logits=True``; the MPD/MRD
feature lists of Vocos end with the logits and keep them). The discriminator step passes ``y_hat.detach()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch

Reduction = Literal["sum", "mean"]


class DiscriminatorLoss(NamedTuple):
    total: torch.Tensor  # scalar: sum (or mean) over sub-discriminators of real + fake
    real: list[torch.Tensor]  # per sub-discriminator term on real audio
    fake: list[torch.Tensor]  # per sub-discriminator term on generated audio


class GeneratorLoss(NamedTuple):
    total: torch.Tensor  # scalar: sum (or mean) over sub-discriminators
    per_discriminator: list[torch.Tensor]


def _reduce(terms: list[torch.Tensor], reduction: Reduction) -> torch.Tensor:
    if not terms:
        raise ValueError("no sub-discriminator outputs")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "mean" else total


def _check_pairs(real: Sequence, fake: Sequence) -> None:
    if len(real) != len(fake):
        raise ValueError(f"{len(real)} real outputs but {len(fake)} fake ones")


def hinge_discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor], *,
                             reduction: Reduction = "sum") -> DiscriminatorLoss:
    """``sum_k mean(relu(1 - D_k(y))) + mean(relu(1 + D_k(y_hat)))``."""
    _check_pairs(real_logits, fake_logits)
    real = [torch.relu(1 - d.float()).mean() for d in real_logits]
    fake = [torch.relu(1 + d.float()).mean() for d in fake_logits]
    return DiscriminatorLoss(_reduce([r + f for r, f in zip(real, fake)], reduction), real, fake)


def hinge_generator_loss(fake_logits: Sequence[torch.Tensor], *, reduction: Reduction = "sum") -> GeneratorLoss:
    """``sum_k mean(relu(1 - D_k(y_hat)))``."""
    terms = [torch.relu(1 - d.float()).mean() for d in fake_logits]
    return GeneratorLoss(_reduce(terms, reduction), terms)


def least_squares_discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor], *,
                                     reduction: Reduction = "sum") -> DiscriminatorLoss:
    """``sum_k mean((1 - D_k(y))^2) + mean(D_k(y_hat)^2)``."""
    _check_pairs(real_logits, fake_logits)
    real = [(1 - d.float()).pow(2).mean() for d in real_logits]
    fake = [d.float().pow(2).mean() for d in fake_logits]
    return DiscriminatorLoss(_reduce([r + f for r, f in zip(real, fake)], reduction), real, fake)


def least_squares_generator_loss(fake_logits: Sequence[torch.Tensor], *,
                                 reduction: Reduction = "sum") -> GeneratorLoss:
    """``sum_k mean((1 - D_k(y_hat))^2)``."""
    terms = [(1 - d.float()).pow(2).mean() for d in fake_logits]
    return GeneratorLoss(_reduce(terms, reduction), terms)


def feature_matching_loss(real_features: Sequence[Sequence[torch.Tensor]],
                          fake_features: Sequence[Sequence[torch.Tensor]], *, exclude_logits: bool = False,
                          reduction: Reduction = "sum") -> torch.Tensor:
    """``sum_k sum_l mean |f_kl(y).detach() - f_kl(y_hat)|``; ``exclude_logits`` drops each list's last map.

    ``reduction`` applies over sub-discriminators (layers are always summed, as in every reference).
    """
    _check_pairs(real_features, fake_features)
    per_disc = []
    for real, fake in zip(real_features, fake_features):
        if len(real) != len(fake):
            raise ValueError(f"{len(real)} real feature maps but {len(fake)} fake ones")
        n = len(real) - 1 if exclude_logits else len(real)
        layers = [(r.detach().float() - f.float()).abs().mean() for r, f in zip(real[:n], fake[:n])]
        per_disc.append(torch.stack(layers).sum() if layers else fake[0].new_zeros((), dtype=torch.float32))
    return _reduce(per_disc, reduction)


AdversarialPair = tuple[Callable[..., DiscriminatorLoss], Callable[..., GeneratorLoss]]

#: Name -> (discriminator loss, generator loss), for recipes that select the GAN objective by name.
ADVERSARIAL_LOSSES: dict[str, AdversarialPair] = {
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "least_squares": (least_squares_discriminator_loss, least_squares_generator_loss),
}


def adversarial_losses(name: str) -> AdversarialPair:
    """``(discriminator_loss, generator_loss)`` for ``"hinge"`` or ``"least_squares"``."""
    try:
        return ADVERSARIAL_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown adversarial loss {name!r}; choose from {sorted(ADVERSARIAL_LOSSES)}") from None
