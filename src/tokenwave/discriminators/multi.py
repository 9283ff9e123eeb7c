"""Discriminators by name, and :class:`MultiDiscriminator`, which runs several as named groups.

A recipe names its discriminators and their options; each group keeps its own outputs because the
reference objectives weight them differently (WavTokenizer: hinge averaged over MPD and over MRD, least
squares summed over DAC; spec_wavtokenizer.md section 6.3)::

    disc = MultiDiscriminator.from_config([{"name": "mpd", "num_embeddings": 4}, {"name": "mrd", "num_embeddings": 4},
                                           {"name": "dac"}])
    real, fake = disc(y, condition=bandwidth_id), disc(y_hat.detach(), condition=bandwidth_id)
    loss = hinge_discriminator_loss(real.logits("mpd"), fake.logits("mpd"), reduction="mean").total + ...

Names: ``"mpd"`` :class:`MultiPeriodDiscriminator`, ``"mrd"`` :class:`MultiResolutionDiscriminator`
(UnivNet magnitude), ``"mstft"`` :class:`MultiBandSTFTDiscriminator` (DAC's complex multi-band part alone),
``"dac"`` :class:`DACDiscriminator` (DAC's MPD + multi-band STFT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .common import DiscriminatorOutput
from .complex_stft import DACDiscriminator, MultiBandSTFTDiscriminator
from .period import MultiPeriodDiscriminator
from .resolution import MultiResolutionDiscriminator

DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "mpd": MultiPeriodDiscriminator,
    "mrd": MultiResolutionDiscriminator,
    "mstft": MultiBandSTFTDiscriminator,
    "dac": DACDiscriminator,
}


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """The discriminator registered as ``name`` (see :data:`DISCRIMINATORS`), built with ``kwargs``."""
    try:
        cls = DISCRIMINATORS[name]
    except KeyError:
        raise ValueError(f"unknown discriminator {name!r}; choose from {sorted(DISCRIMINATORS)}") from None
    return cls(**kwargs)


@dataclass
class MultiDiscriminatorOutput:
    """Per group name, the outputs of its sub-discriminators in order."""

    groups: dict[str, list[DiscriminatorOutput]]

    def _select(self, group: str | None) -> list[DiscriminatorOutput]:
        if group is None:
            return [o for outs in self.groups.values() for o in outs]
        return self.groups[group]

    def logits(self, group: str | None = None) -> list[torch.Tensor]:
        """Logits of one group's sub-discriminators, or of all of them (group order) when ``group`` is None."""
        return [o.logits for o in self._select(group)]

    def feature_maps(self, group: str | None = None) -> list[list[torch.Tensor]]:
        """Feature maps (each list ending with the logits), by sub-discriminator, as :meth:`logits` selects."""
        return [o.feature_maps for o in self._select(group)]


class MultiDiscriminator(nn.Module):
    """Several discriminators run on the same audio, as named groups (``nn.ModuleDict``, so the state dict
    reads ``<group>.discriminators.<i>...``). ``condition`` goes only to conditional groups (built with
    ``num_embeddings``), as WavTokenizer conditions MPD and MRD on the bandwidth id but not DAC."""

    def __init__(self, discriminators: Mapping[str, nn.Module]):
        super().__init__()
        if not discriminators:
            raise ValueError("MultiDiscriminator needs at least one discriminator")
        self.groups = nn.ModuleDict(dict(discriminators))

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> MultiDiscriminator:
        """Build from a recipe: ``{group: options}`` (registry name ``options["name"]``, else the group name), or
        a list of options each with a ``"name"`` (the group is the name; a repeated name gets ``_1``, ``_2``...)."""
        if isinstance(config, Mapping):
            items = [(group, {"name": group, **options}) for group, options in config.items()]
        else:
            items, seen = [], {}
            for options in config:
                if "name" not in options:
                    raise ValueError(f"discriminator entry {dict(options)} has no 'name'")
                n = seen[options["name"]] = seen.get(options["name"], -1) + 1
                items.append((options["name"] + (f"_{n}" if n else ""), dict(options)))
        built = {}
        for group, options in items:
            options = dict(options)
            built[group] = build_discriminator(options.pop("name"), **options)
        return cls(built)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | int | None = None) -> MultiDiscriminatorOutput:
        """``x``: ``[B, L]`` or ``[B, 1, L]``."""
        out = {}
        for name, disc in self.groups.items():
            out[name] = disc(x, condition) if getattr(disc, "conditional", False) else disc(x)
        return MultiDiscriminatorOutput(out)
