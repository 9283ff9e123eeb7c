"""Semantic distillation loss of the Higgs Audio v2 tokenizer (spec_tokenizer.md section 2.6).

The original training forward (boson_multimodal ``audio_processing/higgs_audio_tokenizer.py``,
``HiggsAudioTokenizer.forward``) reconstructs the frozen teacher's features from the quantized latent::

    target     = get_regress_target(x).detach()          HuBERT: mean of 13 hidden states, every 2nd frame
                                                          [B, T, 768]
    o_semantic = decoder_semantic(fc_post1(quantized))    [B, 768, T]
    semantic_recon_loss = F.mse_loss(target.transpose(1, 2).detach(), o_semantic)

i.e. ``mean((target - prediction)^2)`` over batch, channels and frames, with the target detached. The same
file defines a cosine-distance helper, ``calculate_rec_loss`` (``1 - cos`` along the last dim, averaged), that
is never called; :func:`cosine_distance_loss` offers it as an option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(predicted: torch.Tensor, target: torch.Tensor) -> None:
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} features differ in "
                         "shape; both are [B, D, T] (transpose the teacher's [B, T, D] output first)")


def semantic_distillation_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((target.detach() - predicted)^2)`` in float32: Higgs ``semantic_recon_loss``.

    Args:
        predicted: ``[B, D, T]`` semantic decoder output.
        target: ``[B, D, T]`` teacher features (detached here).
    """
    _check(predicted, target)
    return F.mse_loss(predicted.float(), target.detach().float())


def cosine_distance_loss(predicted: torch.Tensor, target: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """``mean(1 - cos(predicted, target.detach()))`` along ``dim`` (the feature axis: 1 for ``[B, D, T]``).

    Higgs' unused ``calculate_rec_loss``, which normalises along ``dim=-1`` (the feature axis only for
    ``[B, T, D]`` inputs); unlike it, a zero vector gives cosine 0 here instead of NaN.
    """
    _check(predicted, target)
    cos = F.cosine_similarity(predicted.float(), target.detach().float(), dim=dim, eps=1e-12)
    return (1 - cos).mean()
