"""Pieces shared by the discriminators: the result type, weight-normed convs, the conditional projection,
and the map from the reference checkpoints' key names to ours."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1


@dataclass
class DiscriminatorOutput:
    """What one sub-discriminator says about a batch.

    ``logits`` ``[B, 1, H, W]`` is the final map, conditional projection included; ``feature_maps`` are the
    intermediate activations the reference returns, ending with ``logits`` itself (so feature matching over
    them includes the logits unless told otherwise, as in Vocos/HiFi-GAN).
    """

    logits: torch.Tensor
    feature_maps: list[torch.Tensor]


def wn_conv2d(in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> nn.Conv2d:
    """``Conv2d`` under ``torch.nn.utils.parametrizations.weight_norm`` (``w = g v / ||v||``, norm over all dims
    but the output channel; ``g`` is ``parametrizations.weight.original0``, ``v`` ``original1``)."""
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding))


def as_waveform(x: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` or ``[B, 1, L]`` -> ``[B, L]``."""
    if x.dim() == 3 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 2:
        raise ValueError(f"expected audio [B, L] or [B, 1, L], got shape {tuple(x.shape)}")
    return x


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def condition_rows(table: nn.Embedding | None, condition: torch.Tensor | int | None) -> torch.Tensor | None:
    """Embedding rows ``[1 or B, C]`` for ``condition`` (an int, a 0-d or 1-element tensor for the whole batch
    as the reference passes ``bandwidth_id``, or ``[B]`` per item); None when unconditional."""
    if condition is None:
        return None
    if table is None:
        raise ValueError("this discriminator was built without num_embeddings; it takes no condition")
    if not torch.is_tensor(condition):
        condition = torch.tensor([int(condition)])
    return table(condition.to(table.weight.device).reshape(-1))


def projection(rows: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """Projection discriminator term ``sum_c e_c h_c`` ``[B, 1, H, W]`` (Miyato & Koyama 2018; Vocos
    ``DiscriminatorP``), added to the logits; 0 when unconditional."""
    if rows is None:
        return hidden.new_zeros(())
    return (rows[:, :, None, None] * hidden).sum(dim=1, keepdim=True)


def conditional_table(num_embeddings: int | None, channels: int) -> nn.Embedding | None:
    """Zero-initialised ``Embedding(num_embeddings, channels)`` (so a fresh conditional discriminator starts
    unconditional), or None."""
    if num_embeddings is None:
        return None
    table = nn.Embedding(num_embeddings, channels)
    nn.init.zeros_(table.weight)
    return table


_DAC_CONV = re.compile(r"\.(convs\.\d+|band_convs\.\d+\.\d+)\.0\.")


def from_reference_key(key: str) -> str:
    """A discriminator key of a reference checkpoint (Vocos/WavTokenizer ``multiperioddisc.*``,
    ``multiresddisc.*``, DAC/WavTokenizer ``dac.*``, relative to the group) -> ours.

    Legacy weight norm ``X.weight_g``/``X.weight_v`` -> ``X.parametrizations.weight.original0``/``original1``;
    DAC's ``convs.i.0.`` (a conv inside ``Sequential(conv, LeakyReLU)``) -> ``convs.i.``.
    """
    key = _DAC_CONV.sub(r".\1.", "." + key)[1:]
    if key.endswith(".weight_g"):
        return key[: -len("weight_g")] + "parametrizations.weight.original0"
    if key.endswith(".weight_v"):
        return key[: -len("weight_v")] + "parametrizations.weight.original1"
    return key


def load_reference_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Strictly load the entries of ``state_dict`` under ``prefix`` (e.g. ``"multiperioddisc."``) into
    ``module``, renaming keys with :func:`from_reference_key`."""
    mapped = {from_reference_key(k[len(prefix):]): v for k, v in state_dict.items() if k.startswith(prefix)}
    module.load_state_dict(mapped, strict=True)
