"""Residual vector quantization with low-dimensional codebooks (SoundStream, Zeghidour et al. 2021, Alg. 1).

Each stage projects the residual into a small code space, picks the nearest codeword (Euclidean),
projects it back and subtracts it::

    r_0 = x                                    x: [B, D, T]
    z_q = project_in_q(r_q)                    [B, T, d]      (d = codebook_dim, e.g. 64)
    c_q = argmin_j ||z_q - E_q[j]||^2          [B, T]
    r_{q+1} = r_q - project_out_q(E_q[c_q])    [B, D, T]

Decoding sums ``project_out_q(E_q[c_q])`` over the given stages; any prefix of the stages is a valid
lower-bandwidth code. The codebooks are the EMA buffers ``embed`` of the training recipe
(``cluster_size``/``embed_avg``/``inited`` are kept so checkpoints load strictly; training updates
live in the training package). Distances are computed in float32 whatever the model dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EuclideanCodebook(nn.Module):
    """``codebook_size`` vectors of ``codebook_dim``, stored as (EMA) buffers."""

    def __init__(self, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.inited = nn.Buffer(torch.ones(1))
        self.cluster_size = nn.Buffer(torch.zeros(codebook_size))
        self.embed = nn.Buffer(torch.zeros(codebook_size, codebook_dim))
        self.embed_avg = nn.Buffer(torch.zeros(codebook_size, codebook_dim))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [..., d]`` -> nearest code index ``[...]``."""
        shape = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1]).float()
        embed = self.embed.float().t()
        dist = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(shape)

    def encode_with_margin(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes as :meth:`encode` and how safely each was chosen: the gap between the second-nearest and the
        nearest squared distance relative to ``|z|^2 + |e|^2``, the size of the terms the float32 distance
        expression cancels. Below ~1e-6 another summation order (another batch shape) may pick the other
        code; :class:`~tokenwave.codecs.wavtokenizer.WavTokenizer` re-encodes such items alone."""
        shape = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1]).float()
        embed = self.embed.float().t()
        x2, e2 = flat.pow(2).sum(1, keepdim=True), embed.pow(2).sum(0, keepdim=True)
        dist = -(x2 - 2 * flat @ embed + e2)
        top = dist.topk(min(2, dist.shape[-1]), dim=-1)
        codes = dist.max(dim=-1).indices  # the same call as encode: ties resolve identically
        if top.values.shape[-1] < 2:
            return codes.view(shape), torch.full(shape, float("inf"), device=z.device)
        scale = x2[:, 0] + e2[0, codes]
        margin = (top.values[:, 0] - top.values[:, 1]) / scale.clamp_min(torch.finfo(torch.float32).tiny)
        return codes.view(shape), margin.view(shape)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)


class VectorQuantizer(nn.Module):
    """One RVQ stage: ``project_in`` (D -> d), codebook, ``project_out`` (d -> D)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.codebook = EuclideanCodebook(codebook_size, codebook_dim)
        self.project_in = nn.Linear(dim, codebook_dim)
        self.project_out = nn.Linear(codebook_dim, dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, D, T]`` -> codes ``[B, T]``."""
        return self.codebook.encode(self.project_in(x.permute(0, 2, 1)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T]`` -> ``[B, D, T]``."""
        quantized = self.codebook.decode(codes).to(self.project_out.weight.dtype)
        return self.project_out(quantized).permute(0, 2, 1)


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` stages of :class:`VectorQuantizer` applied to successive residuals."""

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.quantizers = nn.ModuleList(
            VectorQuantizer(dim, codebook_size, codebook_dim) for _ in range(num_quantizers)
        )

    @property
    def num_quantizers(self) -> int:
        return len(self.quantizers)

    def encode(self, x: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """``x [B, D, T]`` -> codes ``[B, K, T]`` for the first ``K = num_quantizers`` stages (all by default)."""
        n = self.num_quantizers if num_quantizers is None else num_quantizers
        residual = x.to(self.quantizers[0].project_in.weight.dtype)
        codes = []
        for quantizer in self.quantizers[:n]:
            c = quantizer.encode(residual)
            residual = residual - quantizer.decode(c)
            codes.append(c)
        return torch.stack(codes, dim=1)

    def encode_with_margin(self, x: torch.Tensor, num_quantizers: int | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` and each stage's margin ``[B, K, T]`` (float32): how safely the stage's code was
        chosen (:meth:`EuclideanCodebook.encode_with_margin`). A small margin at a stage means another summation
        order could pick another code there, and so change the residual of every later stage."""
        n = self.num_quantizers if num_quantizers is None else num_quantizers
        residual = x.to(self.quantizers[0].project_in.weight.dtype)
        codes, margins = [], []
        for quantizer in self.quantizers[:n]:
            c, m = quantizer.codebook.encode_with_margin(quantizer.project_in(residual.permute(0, 2, 1)))
            residual = residual - quantizer.decode(c)
            codes.append(c)
            margins.append(m)
        return torch.stack(codes, dim=1), torch.stack(margins, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K, T]`` (K <= num_quantizers) -> ``[B, D, T]``, the sum of the first K stages."""
        out = torch.full((), 0.0, device=codes.device)
        for i in range(codes.shape[1]):
            out = out + self.quantizers[i].decode(codes[:, i])
        return out


class CodebookQuantizer(nn.Module):
    """A single codebook on full-dimension vectors, without projections (WavTokenizer's 4096 x 512 VQ).

    The inference path of encodec's ``ResidualVectorQuantizer`` with ``n_q=1`` and ``codebook_dim=None``
    (``project_in``/``project_out`` are identities); its ``vq.layers.0._codebook.*`` buffers are this
    module's ``codebook.*`` (see :meth:`load_encodec_state_dict`).
    """

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook = EuclideanCodebook(codebook_size, dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, D, T]`` -> codes ``[B, T]`` (nearest codeword)."""
        return self.codebook.encode(x.permute(0, 2, 1))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T]`` -> codewords ``[B, D, T]``."""
        return self.codebook.decode(codes).permute(0, 2, 1)

    def load_encodec_state_dict(self, state_dict, strict: bool = True):
        """Load the state dict of an encodec ``ResidualVectorQuantizer`` with one layer."""
        prefix = "vq.layers.0._codebook."
        mapped = {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                if strict:
                    raise KeyError(f"unexpected key {key!r} (only {prefix}* for a single-codebook quantizer)")
                continue
            mapped["codebook." + key[len(prefix) :]] = value
        return self.load_state_dict(mapped, strict=strict)
