"""Typed configuration of the Higgs Audio v2 tokenizer and its two published ``config.json`` layouts.

* transformers layout (``model_type: "higgs_audio_v2_tokenizer"``): nested ``acoustic_model_config``
  (DAC) and ``semantic_model_config`` (HuBERT); what :meth:`HiggsConfig.to_transformers_dict` writes.
* original layout (boson-multimodal): constructor kwargs (``D``, ``ratios``, ``bins``, ``n_q``,
  ``codebook_dim``, ``semantic_techer`` ...). That code hard-codes the DAC widths (64 / 1024) and
  HuBERT-base; small test checkpoints of ours add a ``tokenwave_geometry`` entry that overrides them.

Config pitfall of transformers 5.23 (spec 4.2): its class defaults are not the published model
(16 quantizers, 4 DAC ratios, reversed upsampling ratios), so every field is written explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ...nn.hubert import HubertConfig

MODEL_TYPE = "higgs_audio_v2_tokenizer"
CONFIG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HiggsConfig:
    """Geometry of the Higgs Audio v2 tokenizer. Defaults are the published checkpoint."""

    sample_rate: int = 24000
    semantic_sample_rate: int = 16000
    downsample_factor: int = 320  # HuBERT hop at 16 kHz
    acoustic_encoder_hidden_size: int = 64
    acoustic_decoder_hidden_size: int = 1024
    acoustic_hidden_size: int = 256  # DAC latent width
    downsampling_ratios: tuple[int, ...] = (8, 5, 4, 2, 3)
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2, 3)
    codebook_size: int = 1024
    codebook_dim: int = 64
    target_bandwidths: tuple[float, ...] = (0.5, 1, 1.5, 2)
    semantic: HubertConfig = field(default_factory=HubertConfig)

    def __post_init__(self):
        for name in ("downsampling_ratios", "upsampling_ratios", "target_bandwidths"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if math.prod(self.downsampling_ratios) != math.prod(self.upsampling_ratios):
            raise ValueError("HiggsConfig: encoder and decoder ratios must have the same product")
        if self.semantic_downsample_factor < 1:
            raise ValueError("HiggsConfig: hop_length must be a multiple of the semantic hop at 24 kHz")
        if self.num_quantizers < 1:
            raise ValueError(f"HiggsConfig: target_bandwidths {self.target_bandwidths} give no codebook")

    # Derived quantities, named as in transformers.
    @property
    def hop_length(self) -> int:
        return math.prod(self.downsampling_ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def hidden_size(self) -> int:
        """Width of the fused (acoustic + semantic) space the quantizer works in."""
        return self.acoustic_hidden_size + self.semantic.hidden_size

    @property
    def codebook_nbits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def bandwidth_per_codebook(self) -> float:
        """kbps carried by one codebook (0.25 for the published model)."""
        return self.codebook_nbits * self.frame_rate / 1000

    @property
    def num_quantizers(self) -> int:
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * self.codebook_nbits))

    @property
    def semantic_downsample_factor(self) -> int:
        return int(self.hop_length / (self.sample_rate / self.semantic_sample_rate) / self.downsample_factor)

    def num_codebooks_for_bandwidth(self, bandwidth: float | None) -> int:
        """Codebooks for ``bandwidth`` kbps (one of ``target_bandwidths``; None = all)."""
        if bandwidth is None:
            return self.num_quantizers
        if bandwidth not in self.target_bandwidths:
            raise ValueError(
                f"unknown bandwidth {bandwidth!r} kbps: choose one of {list(self.target_bandwidths)} "
                f"or pass num_codebooks (1..{self.num_quantizers})"
            )
        return max(1, math.floor(bandwidth / self.bandwidth_per_codebook))

    def identity_dict(self) -> dict:
        """What defines the model's outputs: :meth:`to_transformers_dict` without the HuBERT fields tokenwave
        does not use (transformers' config carries 25 of them; the original layout none). Its hash is the
        same whichever format the checkpoint came in."""
        d = self.to_transformers_dict()
        used = {k: v for k, v in self.semantic.to_dict().items() if k not in self.semantic.extra}
        d["semantic_model_config"] = {"model_type": "hubert", **used}
        return d

    # ---- transformers layout -------------------------------------------------------------------
    def to_transformers_dict(self) -> dict:
        return {
            "architectures": ["HiggsAudioV2TokenizerModel"],
            "model_type": MODEL_TYPE,
            "sample_rate": self.sample_rate,
            "semantic_sample_rate": self.semantic_sample_rate,
            "downsample_factor": self.downsample_factor,
            "codebook_size": self.codebook_size,
            "codebook_dim": self.codebook_dim,
            "target_bandwidths": list(self.target_bandwidths),
            "kernel_size": 3,
            "unit_kernel_size": 3,
            "strides": [1, 1],
            "channel_ratios": [1, 1],
            "block_dilations": [1, 1],
            "initializer_range": 0.02,
            "acoustic_model_config": {
                "model_type": "dac",
                "encoder_hidden_size": self.acoustic_encoder_hidden_size,
                "decoder_hidden_size": self.acoustic_decoder_hidden_size,
                "hidden_size": self.acoustic_hidden_size,
                "downsampling_ratios": list(self.downsampling_ratios),
                "upsampling_ratios": list(self.upsampling_ratios),
                "hop_length": self.hop_length,
                "sampling_rate": self.sample_rate,
            },
            "semantic_model_config": {"model_type": "hubert", "mask_time_prob": 0.0, **self.semantic.to_dict()},
            "tokenwave_config_version": CONFIG_FORMAT_VERSION,
        }

    @classmethod
    def from_transformers_dict(cls, data: dict) -> HiggsConfig:
        _check_model_type(data.get("model_type"), MODEL_TYPE)
        fixed = {"kernel_size": 3, "unit_kernel_size": 3, "strides": [1, 1], "channel_ratios": [1, 1],
                 "block_dilations": [1, 1]}
        other = {k: data[k] for k in fixed if k in data and list(_aslist(data[k])) != _aslist(fixed[k])}
        if other:
            raise ValueError(f"unsupported semantic encoder geometry {other} (implemented: {fixed})")
        ac = data.get("acoustic_model_config") or {}
        sem = data.get("semantic_model_config") or {}
        _check_model_type(ac.get("model_type", "dac"), "dac", "acoustic_model_config")
        _check_model_type(sem.get("model_type", "hubert"), "hubert", "semantic_model_config")
        missing = [k for k in ("downsampling_ratios", "upsampling_ratios", "hidden_size") if k not in ac]
        if missing:
            # transformers would silently substitute class defaults here (spec 4.2): refuse instead.
            raise ValueError(f"acoustic_model_config lacks {missing}; refusing to guess them")
        default = cls()
        return cls(
            sample_rate=data.get("sample_rate", default.sample_rate),
            semantic_sample_rate=data.get("semantic_sample_rate", default.semantic_sample_rate),
            downsample_factor=data.get("downsample_factor", default.downsample_factor),
            acoustic_encoder_hidden_size=ac.get("encoder_hidden_size", default.acoustic_encoder_hidden_size),
            acoustic_decoder_hidden_size=ac.get("decoder_hidden_size", default.acoustic_decoder_hidden_size),
            acoustic_hidden_size=ac["hidden_size"],
            downsampling_ratios=ac["downsampling_ratios"],
            upsampling_ratios=ac["upsampling_ratios"],
            codebook_size=data.get("codebook_size", default.codebook_size),
            codebook_dim=data.get("codebook_dim", default.codebook_dim),
            target_bandwidths=data.get("target_bandwidths", default.target_bandwidths),
            semantic=HubertConfig.from_dict({k: v for k, v in sem.items() if k != "model_type"}),
        )

    # ---- original (boson-multimodal) layout -----------------------------------------------------
    @classmethod
    def from_original_dict(cls, data: dict) -> HiggsConfig:
        teacher = data.get("semantic_techer", "hubert_base_general")  # (sic) the published key
        if teacher not in ("hubert_base_general", "hubert_base"):
            raise ValueError(f"unsupported semantic teacher {teacher!r} (implemented: HuBERT-base)")
        if not isinstance(data.get("bins", 1024), int):
            raise ValueError("original config with a list of 'bins' selects residual FSQ, which is not implemented")
        if data.get("vq_scale", 1) != 1 or data.get("merge_mode", "concat") != "concat":
            raise ValueError("only vq_scale=1 and merge_mode='concat' are implemented")
        geometry = data.get("tokenwave_geometry", {})
        ratios = tuple(data.get("ratios", (8, 5, 4, 2, 3)))
        sample_rate = data.get("sample_rate", 24000)
        hop = math.prod(ratios)
        # The original accepts any bandwidth and caps at n_q codebooks; it lists 4 kbps for 8 codebooks
        # of 0.25 kbps. We expose the bandwidths that select distinct codebook counts.
        n_q = data.get("n_q", 8)
        per_q = math.ceil(math.log2(data.get("bins", 1024))) * math.ceil(sample_rate / hop) / 1000
        bandwidths = tuple(b for b in data.get("target_bandwidths", (0.5, 1, 1.5, 2)) if b / per_q <= n_q)
        if not bandwidths or math.floor(bandwidths[-1] / per_q) != n_q:
            bandwidths = (*bandwidths, n_q * per_q)
        sem = HubertConfig.from_dict(geometry.get("semantic_model_config", {}))
        return cls(
            sample_rate=sample_rate,
            semantic_sample_rate=data.get("semantic_sample_rate") or 16000,
            acoustic_encoder_hidden_size=geometry.get("acoustic_encoder_hidden_size", 64),
            acoustic_decoder_hidden_size=geometry.get("acoustic_decoder_hidden_size", 1024),
            acoustic_hidden_size=data.get("D", 256),
            downsampling_ratios=ratios,
            upsampling_ratios=ratios,
            codebook_size=data.get("bins", 1024),
            codebook_dim=data.get("codebook_dim") or data.get("D", 256) + sem.hidden_size,
            target_bandwidths=bandwidths,
            semantic=sem,
        )

    def to_original_dict(self) -> dict:
        """The original (boson-multimodal) ``config.json`` layout; inverse of :meth:`from_original_dict`.

        The published geometry gives the published file's content, key order included. The original lists
        4 kbps after the 2 kbps its 8 codebooks carry (it caps any bandwidth at ``n_q`` codebooks); we write
        the same shape, our bandwidths plus twice the largest, which :meth:`from_original_dict` drops again.
        ``n_filters`` (unused by the original) is written as published. Widths the original code hard-codes
        (DAC encoder 64 / decoder 1024, HuBERT-base) go, when they differ, into ``tokenwave_geometry``, which
        only tokenwave reads (the original constructor would refuse the key).

        Raises:
            ValueError: a geometry the original layout cannot express (different encoder and decoder
                ratios, another HuBERT hop), i.e. one that would not read back as ``self``.
        """
        if self.upsampling_ratios != self.downsampling_ratios:
            raise ValueError(
                f"the original config layout has one 'ratios' list for encoder and decoder; this config has "
                f"downsampling {list(self.downsampling_ratios)} and upsampling {list(self.upsampling_ratios)}"
            )
        if self.downsample_factor != HiggsConfig.downsample_factor:
            raise ValueError(
                f"the original code hard-codes the HuBERT hop 320; this config has {self.downsample_factor}"
            )
        last = self.target_bandwidths[-1]
        out = {
            "n_filters": 32,
            "D": self.acoustic_hidden_size,
            "codebook_dim": self.codebook_dim,
            "target_bandwidths": [*self.target_bandwidths, 2 * last],
            "ratios": list(self.downsampling_ratios),
            "sample_rate": self.sample_rate,
            "bins": self.codebook_size,
            "n_q": self.num_quantizers,
            "semantic_techer": "hubert_base_general",  # (sic)
        }
        if self.semantic_sample_rate != HiggsConfig.semantic_sample_rate:
            out["semantic_sample_rate"] = self.semantic_sample_rate
        published = HiggsConfig()
        geometry = (self.acoustic_encoder_hidden_size, self.acoustic_decoder_hidden_size, self.semantic)
        if geometry != (published.acoustic_encoder_hidden_size, published.acoustic_decoder_hidden_size,
                        published.semantic):
            out["tokenwave_geometry"] = {
                "acoustic_encoder_hidden_size": self.acoustic_encoder_hidden_size,
                "acoustic_decoder_hidden_size": self.acoustic_decoder_hidden_size,
                "semantic_model_config": self.semantic.to_dict(),
            }
        if HiggsConfig.from_original_dict(out) != self:
            raise ValueError(
                f"this config cannot be expressed in the original layout: {out} reads back as "
                f"{HiggsConfig.from_original_dict(out)}"
            )
        return out

    def replace(self, **changes) -> HiggsConfig:
        return replace(self, **changes)


def is_original_dict(data: dict) -> bool:
    """True for the boson-multimodal constructor-kwargs layout."""
    return "model_type" not in data and ("semantic_techer" in data or "n_q" in data or "bins" in data)


def _aslist(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _check_model_type(found, expected: str, where: str = "config.json"):
    if found != expected:
        raise ValueError(f"{where} has model_type {found!r}, expected {expected!r}")
