"""Vocos-style decoder: ConvNeXt backbone with adaptive LayerNorm, optional attention "pos_net", iSTFT head.

This is the decoder of WavTokenizer (and, without ``pos_net``, of Vocos 0.1.0)::

    features (B, C_in, T)
      -> embed        Conv1d(C_in, dim, 7, padding=3)
      -> pos_net      [optional] ResnetBlock, ResnetBlock, AttnBlock, ResnetBlock, ResnetBlock, GroupNorm
      -> norm         AdaLayerNorm(bandwidth_id) or LayerNorm                (on (B, T, dim))
      -> convnext[i]  x + gamma * Linear(GELU(Linear(AdaLN(dwconv7(x)))))   (num_layers blocks)
      -> final_layer_norm  LayerNorm(dim, eps=1e-6)                          -> (B, T, dim)
    head: Linear(dim, n_fft + 2) -> log-magnitude / phase -> complex STFT -> ISTFT ("same") -> (B, T * hop)

Module and parameter names are those of the published WavTokenizer checkpoints (``backbone.*``,
``head.*``) and of vocos 0.1.0, so their state dicts load by name. The operations and their order
follow vocos 0.1.0 (``VocosBackbone``, ``ConvNeXtBlock``, ``AdaLayerNorm``, ``ISTFTHead``) and the
WavTokenizer repository's ``ResnetBlock``/``AttnBlock`` (1-D versions of the latent-diffusion blocks),
so outputs are bit-identical to them on the same device.

Padded batches: every ``forward`` takes an optional ``lengths [B]`` (valid frames per item of a
right-padded batch). With it, convolutions see zeros past each item's end (as its own zero padding),
GroupNorm statistics are taken over each item's valid frames only, attention masks the padded keys and
the iSTFT envelope is each item's own, so every item's output equals decoding it alone up to float
summation order. Without it (the reference behaviour) the attention block attends over the whole
sequence, padding included. Attention memory grows as ``T**2``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dsp.istft import ISTFT
from .lengths import length_mask


def _swish(x: torch.Tensor) -> torch.Tensor:
    # written as in the reference (not F.silu) to keep the same rounding
    return x * torch.sigmoid(x)


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """``GroupNorm(32, channels, eps=1e-6, affine=True)``, the normalisation of the pos_net blocks."""
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


def _frame_mask(lengths: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """``(B, 1, T)`` float mask of valid frames of ``x (B, C, T)``, or None for an unpadded batch."""
    if lengths is None:
        return None
    return length_mask(lengths.to(x.device), x.shape[-1])[:, None, :].to(x.dtype)


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def group_norm_items(norm: nn.GroupNorm, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``norm(x)`` with each item's statistics over its own valid frames (zeros past them).

    Per item, so the result is bit-identical to normalising the item alone; GroupNorm is cheap next to
    the convolutions around it."""
    if lengths is None:
        return norm(x)
    out = torch.zeros_like(x)
    for b, n in enumerate(lengths.tolist()):
        out[b : b + 1, :, :n] = norm(x[b : b + 1, :, :n])
    return out


def _cond_rows(table: nn.Embedding, cond_id: torch.Tensor | int) -> torch.Tensor:
    """Rows of ``table`` for ``cond_id`` shaped to broadcast over ``(B, T, dim)``.

    ``cond_id`` may be an int, a 0-d or 1-element tensor (one row for the whole batch, as the
    reference uses it) or a ``(B,)`` tensor (one row per item).
    """
    if not torch.is_tensor(cond_id):
        cond_id = torch.tensor([int(cond_id)])
    cond_id = cond_id.to(table.weight.device).reshape(-1)
    return table(cond_id).unsqueeze(1)  # (B or 1, 1, dim)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then ``* scale[id] + shift[id]`` (``nn.Embedding`` tables, init 1 / 0)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dim = embedding_dim
        self.scale = nn.Embedding(num_embeddings, embedding_dim)
        self.shift = nn.Embedding(num_embeddings, embedding_dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor | int) -> torch.Tensor:
        """``x``: ``(B, T, dim)``."""
        scale = _cond_rows(self.scale, cond_embedding_id)
        shift = _cond_rows(self.shift, cond_embedding_id)
        x = nn.functional.layer_norm(x, (self.dim,), eps=self.eps)
        return x * scale + shift


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv 7, (Ada)LayerNorm, MLP with GELU, layer scale ``gamma``, residual."""

    def __init__(
        self,
        dim: int,
        intermediate_dim: int,
        layer_scale_init_value: float,
        adanorm_num_embeddings: int | None = None,
    ):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.adanorm = adanorm_num_embeddings is not None
        if adanorm_num_embeddings:
            self.norm = AdaLayerNorm(adanorm_num_embeddings, dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None

    def forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor | int | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, dim, T)`` -> ``(B, dim, T)``; ``mask (B, 1, T)`` zeroes padded frames first."""
        x = _masked(x, mask)
        residual = x
        x = self.dwconv(x).transpose(1, 2)
        if self.adanorm:
            if cond_embedding_id is None:
                raise ValueError("this block is conditioned: pass bandwidth_id")
            x = self.norm(x, cond_embedding_id)
        else:
            x = self.norm(x)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        if self.gamma is not None:
            x = self.gamma * x
        return residual + x.transpose(1, 2)


class ResnetBlock(nn.Module):
    """``x + conv2(dropout(swish(GN(conv1(swish(GN(x)))))))`` with k3 convs; no time embedding, in == out."""

    def __init__(self, channels: int, dropout: float = 0.1, num_groups: int = 32):
        super().__init__()
        self.norm1 = group_norm(channels, num_groups)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = _frame_mask(lengths, x)
        h = self.conv1(_masked(_swish(group_norm_items(self.norm1, x, lengths)), mask))
        h = self.conv2(_masked(self.dropout(_swish(group_norm_items(self.norm2, h, lengths))), mask))
        return _masked(x + h, mask)


class AttnBlock(nn.Module):
    """Single-head self-attention over time, no mask, no positional encoding, residual.

    ``A[b, i, j] = softmax_j(sum_c q[b, c, i] k[b, c, j] / sqrt(C))``, ``o[b, c, i] = sum_j v[b, c, j] A[b, i, j]``,
    ``out = x + proj_out(o)``; ``q, k, v, proj_out`` are 1x1 convs and ``q, k, v`` read ``GN(x)``.
    """

    def __init__(self, channels: int, num_groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.q = nn.Conv1d(channels, channels, kernel_size=1)
        self.k = nn.Conv1d(channels, channels, kernel_size=1)
        self.v = nn.Conv1d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = group_norm_items(self.norm, x, lengths)
        q, k, v = self.q(h), self.k(h), self.v(h)
        c = q.shape[1]
        w = torch.bmm(q.permute(0, 2, 1), k)  # (B, T_i, T_j)
        w = w * (int(c) ** (-0.5))
        if lengths is not None:  # padded keys get no weight
            keys = length_mask(lengths.to(x.device), x.shape[-1])[:, None, :]
            w = w.masked_fill(~keys, float("-inf"))
        w = torch.softmax(w, dim=2)
        h = torch.bmm(v, w.permute(0, 2, 1))  # (B, C, T_i)
        return _masked(x + self.proj_out(h), _frame_mask(lengths, x))


def run_pos_net(pos_net: nn.Sequential, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``pos_net(x)``, passing ``lengths`` to the blocks and the final GroupNorm."""
    if lengths is None:
        return pos_net(x)
    for layer in pos_net:
        x = group_norm_items(layer, x, lengths) if isinstance(layer, nn.GroupNorm) else layer(x, lengths)
    return x


def build_pos_net(dim: int, dropout: float = 0.1, num_groups: int = 32) -> nn.Sequential:
    """WavTokenizer's pos_net: indices 0, 1 ResnetBlock; 2 AttnBlock; 3, 4 ResnetBlock; 5 GroupNorm."""
    return nn.Sequential(
        ResnetBlock(dim, dropout, num_groups),
        ResnetBlock(dim, dropout, num_groups),
        AttnBlock(dim, num_groups),
        ResnetBlock(dim, dropout, num_groups),
        ResnetBlock(dim, dropout, num_groups),
        group_norm(dim, num_groups),
    )


class VocosBackbone(nn.Module):
    """ConvNeXt backbone; ``pos_net=True`` adds WavTokenizer's attention block after ``embed``.

    ``forward(x (B, input_channels, T), bandwidth_id) -> (B, T, dim)``. ``bandwidth_id`` (int or
    tensor, see :class:`AdaLayerNorm`) is required when ``adanorm_num_embeddings`` is set.
    """

    def __init__(
        self,
        input_channels: int,
        dim: int,
        intermediate_dim: int,
        num_layers: int,
        layer_scale_init_value: float | None = None,
        adanorm_num_embeddings: int | None = None,
        pos_net: bool = False,
        pos_net_dropout: float = 0.1,
    ):
        super().__init__()
        self.input_channels = input_channels
        self.dim = dim
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.adanorm = adanorm_num_embeddings is not None
        if adanorm_num_embeddings:
            self.norm = AdaLayerNorm(adanorm_num_embeddings, dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        layer_scale_init_value = layer_scale_init_value or 1 / num_layers
        self.convnext = nn.ModuleList(
            [
                ConvNeXtBlock(dim, intermediate_dim, layer_scale_init_value, adanorm_num_embeddings)
                for _ in range(num_layers)
            ]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(self._init_weights)
        # created after the init, as in WavTokenizer: pos_net keeps PyTorch's default init and comes
        # last in state_dict() order
        self.pos_net = build_pos_net(dim, pos_net_dropout) if pos_net else None

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor, bandwidth_id: torch.Tensor | int | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths [B]``: valid frames per item of a right-padded batch (module docstring); outputs past
        them are unspecified."""
        mask = _frame_mask(lengths, x)
        x = self.embed(_masked(x, mask))
        if self.pos_net is not None:
            x = run_pos_net(self.pos_net, _masked(x, mask), lengths)
        if self.adanorm:
            if bandwidth_id is None:
                raise ValueError("this backbone is conditioned: pass bandwidth_id")
            x = self.norm(x.transpose(1, 2), cond_embedding_id=bandwidth_id)
        else:
            x = self.norm(x.transpose(1, 2))
        x = x.transpose(1, 2)
        for block in self.convnext:
            x = block(x, cond_embedding_id=bandwidth_id, mask=mask)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFTHead(nn.Module):
    """``Linear(dim, n_fft + 2)`` -> log-magnitude / phase -> ISTFT; ``(B, T, dim) -> (B, T * hop)`` ("same")."""

    def __init__(self, dim: int, n_fft: int, hop_length: int, padding: str = "same"):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft=n_fft, hop_length=hop_length, win_length=n_fft, padding=padding)

    def output_length(self, frames):
        return self.istft.output_length(frames)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Complex ``(B, n_fft // 2 + 1, T)`` STFT predicted from ``(B, T, dim)``."""
        x = self.out(x).transpose(1, 2)
        mag, p = x.chunk(2, dim=1)
        mag = torch.clip(torch.exp(mag), max=1e2)  # safeguard against huge magnitudes, as in vocos
        return mag * (torch.cos(p) + 1j * torch.sin(p))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, dim)`` -> ``(B, T * hop)``; with ``lengths`` each item ends after its own frames (zeros past
        ``lengths * hop``)."""
        return self.istft(self.spectrogram(x), lengths)
