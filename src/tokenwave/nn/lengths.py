"""Per-item lengths through conv stacks, so that a padded batch computes what each item alone would.

A right-padded batch ``[B, C, T]`` carries ``lengths [B]``: item ``b`` is valid on ``[0, lengths[b])``.
Every layer that looks across time must see zeros past an item's end, exactly as the zero padding
of a convolution does when the item is processed alone::

    alone   | x0 x1 x2 x3 |0 0 0|            (conv padding)
    batch   | x0 x1 x2 x3 | g g g g g |      g = whatever the previous layer left there
    masked  | x0 x1 x2 x3 | 0 0 0 0 0 |      -> identical outputs on [0, lengths[b])

``lengths=None`` means "no padding": nothing is masked and no work is added.
"""

from __future__ import annotations

import torch


def conv_out_length(length, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1):
    """Output length of ``Conv1d`` for ``length`` inputs (int or integer tensor)."""
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv_transpose_out_length(
    length, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
):
    """Output length of ``ConvTranspose1d`` for ``length`` inputs (int or integer tensor)."""
    return (length - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean ``[B, max_len]`` mask, True on each item's valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def zero_pad_frames(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero ``x [B, C, T]`` past each item's length (no-op when ``lengths`` is None)."""
    if lengths is None:
        return x
    return x.masked_fill(~length_mask(lengths, x.shape[-1])[:, None, :], 0.0)


def module_out_length(module: torch.nn.Module, lengths):
    """Apply the length arithmetic of a ``Conv1d`` or ``ConvTranspose1d``."""
    if isinstance(module, torch.nn.ConvTranspose1d):
        return conv_transpose_out_length(
            lengths,
            module.kernel_size[0],
            module.stride[0],
            module.padding[0],
            module.output_padding[0],
            module.dilation[0],
        )
    return conv_out_length(lengths, module.kernel_size[0], module.stride[0], module.padding[0], module.dilation[0])
