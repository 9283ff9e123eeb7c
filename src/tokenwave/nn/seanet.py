"""SEANet encoder of EnCodec (Défossez et al. 2022), as used by WavTokenizer (Ji et al. 2024).

Module and parameter names follow ``encodec.modules.SEANetEncoder`` (encodec 0.1.1) so that its state
dicts load with only the weight-norm pairs renamed: encodec stores ``model.i.conv.conv.weight_g`` /
``weight_v``; we hold the folded ``model.i.conv.weight`` (see :func:`fold_encodec_state_dict`).

Layer list for ``ratios`` given in decoder order (the encoder applies them reversed)::

    SConv1d(C_in -> n, k7)
    for each stride s (reversed ratios), channels c = n, 2n, 4n, ...:
        ResnetBlock(c): shortcut(x) + [ELU, SConv1d(c -> c/compress, k3), ELU, SConv1d(-> c, k1)](x)
        ELU, SConv1d(c -> 2c, k = 2s, stride s)
    SLSTM(2-layer, skip)      (if lstm > 0)
    ELU, SConv1d(-> dimension, k7)

``SConv1d`` pads exactly as encodec's: total padding ``P = (k - 1) * d - (s - 1)`` split right
``P // 2``, left ``P - P // 2``, plus extra right padding so that the last window is complete, all in
``pad_mode`` (reflect), with encodec's small-input workaround for reflection (:func:`pad1d`). Frames
out: ``ceil(L / hop)`` for the WavTokenizer configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# WavTokenizer's encoder arguments (spec 2.2); ``ratios`` in decoder order, as in the yaml ``dowmsamples``.
WAVTOKENIZER_RATIOS = {320: (8, 5, 4, 2), 600: (6, 5, 5, 4)}


def _ceil_div(a, b: int):
    return -(-a // b)


def extra_padding_for_conv1d(length, kernel_size: int, stride: int, padding_total: int = 0):
    """Right padding that makes the last window complete (encodec ``get_extra_padding_for_conv1d``).

    Integer form of ``(ceil((L - k + P) / s + 1) - 1) * s + (k - P) - L``; ``length`` may be an int or an
    integer tensor.
    """
    n_frames = _ceil_div(length - kernel_size + padding_total, stride) + 1
    return (n_frames - 1) * stride + (kernel_size - padding_total) - length


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "zero", value: float = 0.0) -> torch.Tensor:
    """``F.pad`` that allows reflect padding of inputs not longer than the pad (encodec's ``pad1d``).

    For short inputs, zeros are appended first so that reflection is possible and removed again after.
    """
    length = x.shape[-1]
    padding_left, padding_right = paddings
    if padding_left < 0 or padding_right < 0:
        raise ValueError(f"negative padding {paddings}")
    if mode == "reflect":
        max_pad = max(padding_left, padding_right)
        extra_pad = 0
        if length <= max_pad:
            extra_pad = max_pad - length + 1
            x = F.pad(x, (0, extra_pad))
        padded = F.pad(x, paddings, mode, value)
        return padded[..., : padded.shape[-1] - extra_pad]
    if mode == "zero":
        mode = "constant"
    return F.pad(x, paddings, mode, value)


def pad1d_items(x: torch.Tensor, lengths: torch.Tensor, left: int, rights: torch.Tensor, mode: str = "reflect"):
    """Pad every item of a right-padded batch as :func:`pad1d` pads it alone.

    Item ``b`` (valid on ``[0, lengths[b])``) gets ``left`` samples before and ``rights[b]`` after, in
    ``mode`` (``"reflect"`` or ``"zero"``), including :func:`pad1d`'s zero extension of inputs not longer
    than the pad. The result is ``[B, C, max(left + lengths + rights)]``, zero past each item's padded end::

        alone    x2 x1 | x0 x1 x2 x3 | x2 x1 x0        (left 2, right 3, reflect)
        batch    x2 x1 | x0 x1 x2 x3 | x2 x1 x0 0 0   (a longer item sets the width)

    Built as one ``gather`` with per-item source indices, so the batch costs one copy per layer.
    """
    if mode not in ("reflect", "zero"):
        raise ValueError(f"pad mode must be 'reflect' or 'zero', got {mode!r}")
    device = x.device
    lengths = lengths.to(device)
    rights = torch.as_tensor(rights, device=device).expand_as(lengths)
    widths = left + lengths + rights
    j = torch.arange(int(widths.max()), device=device)[None, :]  # [1, W]
    i = j - left
    n = lengths[:, None]
    if mode == "reflect":
        # pad1d extends inputs not longer than the larger pad with zeros, so reflection turns at n_ext - 1
        n_ext = torch.maximum(n, torch.clamp(torch.maximum(rights[:, None], torch.tensor(left, device=device)) + 1,
                                            min=1))
        i = torch.where(i < 0, -i, i)
        i = torch.where(i >= n_ext, 2 * (n_ext - 1) - i, i)
    valid = (i >= 0) & (i < n) & (j < widths[:, None])
    index = torch.where(valid, i, 0)
    out = torch.gather(x, 2, index[:, None, :].expand(x.shape[0], x.shape[1], -1))
    return out * valid[:, None, :].to(x.dtype)


def _run_padded(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``module`` (a layer or a ``Sequential`` of them) over a right-padded batch with per-item lengths."""
    if isinstance(module, nn.Sequential):
        for layer in module:
            x, lengths = _run_padded(layer, x, lengths)
        return x, lengths
    if hasattr(module, "forward_padded"):
        return module.forward_padded(x, lengths)
    # pointwise layers (ELU, Identity) and the forward-in-time LSTM see no padding effect
    return module(x), lengths


class SConv1d(nn.Module):
    """``Conv1d`` with encodec's "streamable" padding; ``conv`` holds the plain (folded) weight."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        pad_mode: str = "reflect",
    ):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.causal = causal
        self.pad_mode = pad_mode

    @property
    def padding_total(self) -> int:
        return (self.conv.kernel_size[0] - 1) * self.conv.dilation[0] - (self.conv.stride[0] - 1)

    def paddings(self, length: int) -> tuple[int, int]:
        """(left, right) padding applied to an input of ``length`` samples."""
        total = self.padding_total
        extra = extra_padding_for_conv1d(length, self.conv.kernel_size[0], self.conv.stride[0], total)
        if self.causal:
            return total, extra
        right = total // 2
        return total - right, right + extra

    def output_length(self, length):
        """Output frames for ``length`` input frames (int or integer tensor): ``ceil((L - k + P) / s) + 1``."""
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        return _ceil_div(length - k + self.padding_total, s) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad1d(x, self.paddings(x.shape[-1]), mode=self.pad_mode))

    def forward_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A right-padded batch: each item is padded as if alone (:func:`pad1d_items`); ``(y, out_lengths)``.

        Values of ``y`` past an item's ``out_lengths`` are unspecified."""
        total = self.padding_total
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        extra = extra_padding_for_conv1d(lengths, k, s, total)
        right = total // 2
        left, rights = (total, extra) if self.causal else (total - right, right + extra)
        padded = pad1d_items(x, lengths, left, rights, mode=self.pad_mode)
        return self.conv(padded), self.output_length(lengths)


class SEANetResnetBlock(nn.Module):
    """``shortcut(x) + block(x)``; ``block`` = [ELU, SConv1d(k3), ELU, SConv1d(k1)] (encodec layout)."""

    def __init__(
        self,
        dim: int,
        kernel_sizes: Sequence[int] = (3, 1),
        dilations: Sequence[int] = (1, 1),
        alpha: float = 1.0,
        causal: bool = False,
        pad_mode: str = "reflect",
        compress: int = 2,
        true_skip: bool = True,
    ):
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ValueError("kernel_sizes and dilations must have the same length")
        hidden = dim // compress
        block: list[nn.Module] = []
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            block += [
                nn.ELU(alpha),
                SConv1d(in_chs, out_chs, kernel_size, dilation=dilation, causal=causal, pad_mode=pad_mode),
            ]
        self.block = nn.Sequential(*block)
        self.shortcut: nn.Module = (
            nn.Identity() if true_skip else SConv1d(dim, dim, 1, causal=causal, pad_mode=pad_mode)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)

    def forward_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _run_padded(self.shortcut, x, lengths)[0] + _run_padded(self.block, x, lengths)[0], lengths


class SLSTM(nn.Module):
    """Unidirectional ``nn.LSTM`` on ``[B, C, T]`` (time-major inside), with the input added back (skip)."""

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


class SEANetEncoder(nn.Module):
    """EnCodec's SEANet encoder: audio ``[B, channels, L]`` -> latents ``[B, dimension, T]``.

    Defaults are WavTokenizer's (spec 2.2) except ``ratios``, which selects the hop: ``(8, 5, 4, 2)``
    (hop 320, 75 frames/s at 24 kHz) or ``(6, 5, 5, 4)`` (hop 600, 40 frames/s); see
    :meth:`wavtokenizer`. ``ratios`` are in decoder order and applied reversed, as in encodec.
    """

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 512,
        n_filters: int = 32,
        n_residual_layers: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 2),
        alpha: float = 1.0,
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        causal: bool = False,
        pad_mode: str = "reflect",
        true_skip: bool = False,
        compress: int = 2,
        lstm: int = 2,
    ):
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(reversed(ratios))
        self.hop_length = math.prod(self.ratios)
        conv = dict(causal=causal, pad_mode=pad_mode)
        mult = 1
        model: list[nn.Module] = [SConv1d(channels, n_filters, kernel_size, **conv)]
        for ratio in self.ratios:
            for j in range(n_residual_layers):
                model.append(
                    SEANetResnetBlock(
                        mult * n_filters,
                        kernel_sizes=(residual_kernel_size, 1),
                        dilations=(dilation_base**j, 1),
                        alpha=alpha,
                        compress=compress,
                        true_skip=true_skip,
                        **conv,
                    )
                )
            model += [
                nn.ELU(alpha),
                SConv1d(mult * n_filters, mult * n_filters * 2, kernel_size=ratio * 2, stride=ratio, **conv),
            ]
            mult *= 2
        if lstm:
            model.append(SLSTM(mult * n_filters, num_layers=lstm))
        model += [nn.ELU(alpha), SConv1d(mult * n_filters, dimension, last_kernel_size, **conv)]
        self.model = nn.Sequential(*model)

    @classmethod
    def wavtokenizer(cls, hop_length: int) -> SEANetEncoder:
        """WavTokenizer's encoder for ``hop_length`` 320 (75 tokens/s) or 600 (40 tokens/s)."""
        if hop_length not in WAVTOKENIZER_RATIOS:
            raise ValueError(f"WavTokenizer hop_length must be one of {sorted(WAVTOKENIZER_RATIOS)}, got {hop_length}")
        return cls(ratios=WAVTOKENIZER_RATIOS[hop_length])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, channels, L]`` -> ``[B, dimension, output_length(L)]``."""
        return self.model(x)

    def forward_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A right-padded batch ``x [B, channels, L]`` with ``lengths [B]`` valid samples per item ->
        ``(z [B, dimension, T], frames [B])``; item ``b``'s first ``frames[b]`` latents are those of encoding
        it alone (every convolution pads each item at its own end; the LSTM runs forward in time, so what
        follows an item's end never reaches it). Latents past ``frames[b]`` are unspecified."""
        return _run_padded(self.model, x, lengths)

    def output_length(self, num_samples):
        """Latent frames for ``num_samples`` input samples (int or integer tensor)."""
        length = num_samples
        for module in self.model.modules():
            if isinstance(module, SConv1d) and module.conv.stride[0] > 1:
                length = module.output_length(length)
        return length

    def load_encodec_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        """Load an ``encodec.modules.SEANetEncoder`` state dict (``weight_g``/``weight_v`` are folded)."""
        return self.load_state_dict(fold_encodec_state_dict(state_dict), strict=strict)


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v * g / ||v||`` (norm over all dims but 0), computed as ``torch.nn.utils.weight_norm`` does."""
    return torch._weight_norm(v, g, 0)


_WN_SUFFIXES = {
    ".weight_g": ("g", ".weight_g"),
    ".weight_v": ("v", ".weight_v"),
    ".parametrizations.weight.original0": ("g", ".parametrizations.weight.original0"),
    ".parametrizations.weight.original1": ("v", ".parametrizations.weight.original1"),
}


def fold_encodec_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """encodec ``SConv1d`` keys -> ours: fold weight-norm pairs into ``weight``, ``.conv.conv.`` -> ``.conv.``.

    Accepts legacy (``weight_g``/``weight_v``) and parametrization (``original0``/``original1``) naming;
    keys of other modules pass through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        for suffix, (part, _) in _WN_SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            out[key] = value
    for prefix, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise KeyError(f"incomplete weight-norm pair for {prefix!r}: has {sorted(pair)}")
        out[prefix + ".weight"] = fold_weight_norm(pair["g"], pair["v"])
    return {key.replace(".conv.conv.", ".conv."): value for key, value in out.items()}
