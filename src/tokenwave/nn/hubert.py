"""HuBERT (Hsu et al. 2021) as the frozen semantic teacher of the Higgs tokenizer.

Our own module with transformers' ``HubertModel`` parameter names, so the ``semantic_model.*`` tensors
of both published checkpoint formats load as they are. Only the variant the tokenizer uses is
implemented: group-normed feature encoder (``feat_extract_norm="group"``), post-LayerNorm transformer
(``do_stable_layer_norm=False``), GELU, inference only (no dropout, no SpecAugment masking).

Padded batches: :meth:`HubertModel.forward` takes per-item input ``lengths`` and makes every item's
hidden states equal to those it gets alone: the layer-0 GroupNorm takes its statistics over the item's
own frames, frames past an item's end are zeroed before the positional convolution, and attention never
looks at them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .lengths import conv_out_length, length_mask


@dataclass(frozen=True)
class HubertConfig:
    """Geometry of the HuBERT teacher; field names and defaults as transformers' ``HubertConfig`` (base)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    # Only these values are implemented; they are kept so a config of another variant is rejected.
    feat_extract_norm: str = "group"
    do_stable_layer_norm: bool = False
    hidden_act: str = "gelu"
    feat_extract_activation: str = "gelu"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("HubertConfig: conv_dim, conv_kernel and conv_stride must have the same length")
        unsupported = {
            "feat_extract_norm": (self.feat_extract_norm, "group"),
            "do_stable_layer_norm": (self.do_stable_layer_norm, False),
            "hidden_act": (self.hidden_act, "gelu"),
            "feat_extract_activation": (self.feat_extract_activation, "gelu"),
        }
        bad = {k: v for k, (v, want) in unsupported.items() if v != want}
        if bad:
            raise ValueError(
                f"HubertConfig: unsupported HuBERT variant {bad} (only the HuBERT-base layout is implemented)"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("HubertConfig: hidden_size must be divisible by num_attention_heads")

    @classmethod
    def from_dict(cls, data: dict) -> HubertConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "extra"}
        return {**self.extra, **out}

    def frames(self, num_samples):
        """Frames produced for ``num_samples`` input samples (int or integer tensor)."""
        for k, s in zip(self.conv_kernel, self.conv_stride):
            num_samples = conv_out_length(num_samples, k, s)
        return num_samples


class _GroupNormConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, bias=bias)
        self.layer_norm = nn.GroupNorm(num_groups=cout, num_channels=cout, affine=True)

    def forward(self, x: torch.Tensor, lengths=None, stats=None) -> torch.Tensor:
        """``stats``: optional per-channel ``(mean, var)`` ``[C]`` to normalise with instead of this input's own
        (a window of a longer signal uses the whole signal's statistics)."""
        x = self.conv(x)
        if stats is not None:
            mean, var = (s.to(x.dtype)[:, None] for s in stats)
            scale = self.layer_norm.weight[:, None] * torch.rsqrt(var + self.layer_norm.eps)
            x = (x - mean) * scale + self.layer_norm.bias[:, None]
        elif lengths is None or bool((lengths == x.shape[-1]).all()):
            x = self.layer_norm(x)
        else:
            # Per-item statistics over the item's own frames, the same op as for the item alone.
            x = torch.cat([self._norm_item(x[i : i + 1], int(n)) for i, n in enumerate(lengths)])
        return F.gelu(x)

    def _norm_item(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([self.layer_norm(x[..., :n]), x[..., n:]], dim=-1)


class _ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        return F.gelu(self.conv(x))


class HubertFeatureEncoder(nn.Module):
    def __init__(self, config: HubertConfig):
        super().__init__()
        dims = (1, *config.conv_dim)
        layers = [
            (_GroupNormConvLayer if i == 0 else _ConvLayer)(dims[i], dims[i + 1], k, s, config.conv_bias)
            for i, (k, s) in enumerate(zip(config.conv_kernel, config.conv_stride))
        ]
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, lengths=None, norm_stats=None) -> torch.Tensor:
        x = x[:, None]
        for i, layer in enumerate(self.conv_layers):
            if lengths is not None:
                lengths = conv_out_length(lengths, layer.conv.kernel_size[0], layer.conv.stride[0])
            x = layer(x, lengths, norm_stats) if i == 0 else layer(x, lengths)
        return x


class HubertFeatureProjection(nn.Module):
    def __init__(self, config: HubertConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x))


class HubertPositionalConvEmbedding(nn.Module):
    """Grouped conv over time with weight norm over ``dim=2`` (g: ``[1, 1, K]``); drops the last frame for even K."""

    def __init__(self, config: HubertConfig):
        super().__init__()
        k = config.num_conv_pos_embeddings
        conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, k, padding=k // 2, groups=config.num_conv_pos_embedding_groups
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_pad_remove = 1 if k % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.transpose(1, 2))
        if self.num_pad_remove:
            x = x[:, :, : -self.num_pad_remove]
        return F.gelu(x).transpose(1, 2)


class HubertAttention(nn.Module):
    def __init__(self, config: HubertConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        shape = (b, t, -1, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scaling)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


class HubertFeedForward(nn.Module):
    def __init__(self, config: HubertConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class HubertEncoderLayer(nn.Module):
    """Post-LN transformer layer: ``LN(x + attn(x))``, then ``LN(h + ffn(h))``."""

    def __init__(self, config: HubertConfig):
        super().__init__()
        self.attention = HubertAttention(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = HubertFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.layer_norm(x + self.attention(x, attn_mask))
        return self.final_layer_norm(x + self.feed_forward(x))


class HubertEncoder(nn.Module):
    def __init__(self, config: HubertConfig):
        super().__init__()
        self.pos_conv_embed = HubertPositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(HubertEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, lengths=None) -> list[torch.Tensor]:
        attn_mask = None
        if lengths is not None:
            valid = length_mask(lengths, x.shape[1])
            x = x.masked_fill(~valid[:, :, None], 0.0)
            attn_mask = valid[:, None, None, :]
        x = self.layer_norm(x + self.pos_conv_embed(x))
        states = [x]
        for layer in self.layers:
            x = layer(x, attn_mask)
            states.append(x)
        return states


class HubertModel(nn.Module):
    """Waveform ``[B, N]`` at 16 kHz -> the ``num_hidden_layers + 1`` hidden states ``[B, H, hidden_size]``."""

    def __init__(self, config: HubertConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = HubertFeatureEncoder(config)
        self.feature_projection = HubertFeatureProjection(config)
        self.encoder = HubertEncoder(config)

    def forward(self, input_values: torch.Tensor, lengths: torch.Tensor | None = None,
                norm_stats=None) -> list[torch.Tensor]:
        """Args:
            input_values: ``[B, N]`` float audio.
            lengths: optional ``[B]`` valid samples per item (right padding); None when unpadded.
            norm_stats: optional ``(mean, var)`` for the first layer's GroupNorm (see ``_GroupNormConvLayer``).

        Returns:
            The encoder input (after positional conv and LayerNorm) followed by every layer's output,
            each ``[B, H, hidden_size]``. With ``lengths``, frames past ``frames(lengths)`` are undefined.
        """
        feats = self.feature_extractor(input_values, lengths, norm_stats).transpose(1, 2)
        hidden = self.feature_projection(feats)
        frame_lengths = None if lengths is None else self.config.frames(lengths)
        return self.encoder(hidden, frame_lengths)
