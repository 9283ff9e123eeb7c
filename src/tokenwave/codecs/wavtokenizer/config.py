"""Typed configuration of WavTokenizer (Ji et al. 2024) and its two published geometries.

The published models are described by LightningCLI yaml files (``class_path`` + ``init_args`` of the
feature extractor, backbone and head, see :mod:`.lightning`); tokenwave's own checkpoints carry this
dataclass as ``config.json`` (``model_type: "wavtokenizer"``). Presets:

=================  ==========================  ======  =====  ==========
preset             encoder strides (applied)   hop     n_fft  tokens/s
=================  ==========================  ======  =====  ==========
``wavtokenizer-75``  2, 4, 5, 8                320     1280   75
``wavtokenizer-40``  4, 5, 5, 6                600     2400   40
=================  ==========================  ======  =====  ==========

Both: SEANet encoder (32 filters, 2-layer LSTM, latent 512), one 4096 x 512 codebook, Vocos backbone
(768 / 2304, 12 ConvNeXt blocks, adaptive LayerNorm with 4 rows, attention pos_net), iSTFT head with
"same" padding; 12 bits per token (0.9 and 0.48 kbps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

MODEL_TYPE = "wavtokenizer"
CONFIG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class WavTokenizerConfig:
    """Geometry of a WavTokenizer model. Defaults are the 75 tokens/s model."""

    sample_rate: int = 24000
    #: encoder down-sampling strides in the order they are applied (the yaml's ``dowmsamples`` reversed)
    strides: tuple[int, ...] = (2, 4, 5, 8)
    #: SEANet width of the first layer (doubles at every stride)
    encoder_filters: int = 32
    #: latent and codeword dimension
    latent_dim: int = 512
    #: LSTM layers at the end of the encoder (0 = none)
    encoder_lstm_layers: int = 2
    codebook_size: int = 4096
    #: residual codebooks per frame: 1 = the published single VQ on full-dimension vectors (no projections);
    #: more gives an RVQ whose stages project ``latent_dim -> codebook_dim`` (tokenwave's own models)
    num_quantizers: int = 1
    #: RVQ codeword dimension (None: ``latent_dim``); only with ``num_quantizers > 1`` or a factorised codebook
    codebook_dim: int | None = None
    #: backbone width, ConvNeXt hidden width and block count
    backbone_dim: int = 768
    backbone_intermediate_dim: int = 2304
    backbone_layers: int = 12
    #: rows of the adaptive LayerNorm tables (the yaml's 4 identical ``bandwidths``); 0 = plain LayerNorm
    adanorm_num_embeddings: int = 4
    #: the attention "pos_net" after the input conv (WavTokenizer); False gives the plain Vocos backbone
    pos_net: bool = True
    #: iSTFT size of the head (its hop is :attr:`hop_length`)
    n_fft: int = 1280
    #: adaptive-LayerNorm row used to decode (the reference always uses 0)
    bandwidth_id: int = 0

    def __post_init__(self):
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        problems = []
        if not self.strides or any(s < 1 for s in self.strides):
            problems.append(f"strides must be positive integers, got {self.strides}")
        for name in ("sample_rate", "encoder_filters", "latent_dim", "codebook_size", "num_quantizers",
                     "backbone_dim", "backbone_intermediate_dim", "backbone_layers"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_dim is not None and int(self.codebook_dim) < 1:
            problems.append(f"codebook_dim must be >= 1 or None, got {self.codebook_dim}")
        if self.pos_net and (self.backbone_dim % 32 or self.backbone_dim < 64):
            problems.append(f"backbone_dim {self.backbone_dim} must be a multiple of 32 and >= 64 (pos_net "
                            "GroupNorm: 32 groups of >= 2 channels, so that a 1-frame input normalises)")
        if self.n_fft < 2 * self.hop_length or (self.n_fft - self.hop_length) % 2:
            problems.append(f"n_fft {self.n_fft} must be >= 2 * hop_length ({self.hop_length}) and differ from it "
                            "by an even number ('same' padding)")
        if self.adanorm_num_embeddings and not 0 <= self.bandwidth_id < self.adanorm_num_embeddings:
            problems.append(f"bandwidth_id {self.bandwidth_id} must lie in [0, {self.adanorm_num_embeddings})")
        if problems:
            raise ValueError("WavTokenizerConfig: " + "; ".join(problems))

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def codebook_nbits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def residual(self) -> bool:
        """True when the quantizer is an RVQ with projections, False for the published single VQ."""
        return self.num_quantizers > 1 or self.codebook_dim not in (None, self.latent_dim)

    @property
    def bandwidth(self) -> float:
        """kbps of all codebooks (0.9 for the published 75 tokens/s model, 0.48 for 40)."""
        return self.frame_rate * self.codebook_nbits * self.num_quantizers / 1000

    def num_frames(self, num_samples):
        """Code frames for ``num_samples`` samples: ``ceil(L / hop)`` (spec 2.7); int or integer tensor."""
        return -(-num_samples // self.hop_length)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["strides"] = list(self.strides)
        return {"model_type": MODEL_TYPE, "format_version": CONFIG_FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config.json") -> WavTokenizerConfig:
        """Read :meth:`to_dict` output strictly: unknown fields and a wrong ``model_type`` are errors."""
        data = dict(data)
        model_type = data.pop("model_type", None)
        if model_type != MODEL_TYPE:
            raise ValueError(f"{source}: model_type {model_type!r} is not {MODEL_TYPE!r}")
        version = data.pop("format_version", CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(f"{source}: config format_version {version!r} is not supported "
                             f"(this tokenwave reads {CONFIG_FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown WavTokenizer config fields {unknown}")
        return cls(**data)

    def replace(self, **changes) -> WavTokenizerConfig:
        return replace(self, **changes)


PRESETS: dict[str, WavTokenizerConfig] = {
    "wavtokenizer-75": WavTokenizerConfig(strides=(2, 4, 5, 8), n_fft=1280),
    "wavtokenizer-40": WavTokenizerConfig(strides=(4, 5, 5, 6), n_fft=2400),
}


def preset(name: str) -> WavTokenizerConfig:
    """The configuration of a published geometry: ``"wavtokenizer-75"`` or ``"wavtokenizer-40"``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown WavTokenizer preset {name!r}: choose one of {sorted(PRESETS)}") from None
