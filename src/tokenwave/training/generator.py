"""The training forward of each codec family: audio -> reconstruction, commitment and (Higgs) semantic loss.

One call per training step (the generator runs once; the discriminator step reuses its output detached).
The codebooks are updated inside the call by :mod:`tokenwave.quantization.training` (EMA, k-means on the
first batch, dead-code replacement), only in training mode with gradients enabled.

* WavTokenizer (spec_wavtokenizer 6.3)::

      z = encoder(x); q = VQ_train(z); y = head(backbone(q, bandwidth_id))[:L]

  ``bandwidth_id`` is drawn per step from the AdaLN rows, as the reference does (it also conditions the
  discriminators that take it).
* Higgs (spec_tokenizer 2.6, the original's training forward: no length-alignment re-encode)::

      target = HuBERT(x) averaged over layers, every 2nd frame     (teacher, frozen, no grad)   [B, 768, T]
      e = fc(cat[acoustic_encoder(x), encoder_semantic(target)])  -> RVQ_train (n_q sampled per step)
      y = acoustic_decoder(fc2(q))[:L];  semantic_loss = mse(target, decoder_semantic(fc1(q)))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..quantization.training import EMACodebookTrainer, RVQTrainer, sample_num_quantizers


@dataclass
class GeneratorOutput:
    audio: torch.Tensor  # [B, 1, L] reconstruction, the input's length
    commit_loss: torch.Tensor
    semantic_loss: torch.Tensor | None = None
    #: conditioning row of the step (WavTokenizer's bandwidth id; None for Higgs)
    condition: int | None = None
    stats: dict = field(default_factory=dict)


def _fit(y: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad ``y [B, 1, N]`` to ``length`` samples."""
    return y[..., :length] if y.shape[-1] >= length else F.pad(y, (0, length - y.shape[-1]))


class _SampledRVQ:
    """An :class:`RVQTrainer` whose active codebook count is drawn per step from ``choices`` (None: all);
    ``z [B, D, T]`` -> ``(quantized [B, D, T], commitment loss, stats with "num_quantizers")``."""

    def __init__(self, rvq, quantizer_options: dict, generator: torch.Generator | None, choices):
        self.trainer = RVQTrainer(rvq, generator=generator, **quantizer_options)
        self.generator = generator
        self.choices = list(choices) if choices else None

    def __call__(self, z: torch.Tensor):
        n_q = sample_num_quantizers(self.choices, generator=self.generator) if self.choices else None
        step = self.trainer.step(z, n_q)
        stats = dict(step.stats)
        stats["num_quantizers"] = torch.tensor(float(step.codes.shape[1]))
        return step.quantized, step.commit_loss, stats


class WavTokenizerForward:
    def __init__(self, model, quantizer_options: dict, generator: torch.Generator | None = None,
                 num_quantizers_choices=None):
        self.model = model
        self.generator = generator
        if model.config.residual:  # tokenwave's own RVQ variant
            self.rvq = _SampledRVQ(model.quantizer, quantizer_options, generator, num_quantizers_choices)
            self.codebook = None
        else:
            self.rvq = None
            self.codebook = EMACodebookTrainer(model.quantizer.codebook, generator=generator, **quantizer_options)

    def _quantize(self, z: torch.Tensor):
        if self.rvq is None:
            step = self.codebook.step(z.transpose(1, 2))
            return step.quantized.transpose(1, 2), step.commit_loss, dict(step.stats)
        return self.rvq(z)

    def __call__(self, audio: torch.Tensor) -> GeneratorOutput:
        model = self.model
        rows = model.config.adanorm_num_embeddings
        cond = int(torch.randint(rows, (1,), generator=self.generator)) if rows else None
        quantized, commit_loss, stats = self._quantize(model.encoder(audio))
        bw = None if cond is None else torch.tensor([cond], device=audio.device)
        y = model.head(model.backbone(quantized, bw))[:, None]
        return GeneratorOutput(_fit(y, audio.shape[-1]), commit_loss, None, cond, stats)


class HiggsForward:
    def __init__(self, model, quantizer_options: dict, generator: torch.Generator | None = None,
                 num_quantizers_choices=None):
        self.model = model
        self.rvq = _SampledRVQ(model.quantizer, quantizer_options, generator, num_quantizers_choices)

    def __call__(self, audio: torch.Tensor) -> GeneratorOutput:
        model = self.model
        cfg = model.config
        with torch.no_grad():  # the teacher
            wav, _ = model._hubert_input(audio)
            states = model.semantic_model(wav)
            target = torch.stack(states, dim=1).mean(dim=1)[:, :: cfg.semantic_downsample_factor, :]
            target = target.transpose(1, 2)  # [B, 768, Ts]
        e_sem = model.encoder_semantic(target)
        e_ac, _ = model.acoustic_encoder(audio)
        frames = min(e_ac.shape[-1], e_sem.shape[-1])
        target = target[..., :frames]
        e = torch.cat([e_ac[..., :frames], e_sem[..., :frames]], dim=1)
        e = model.fc(e.transpose(1, 2)).transpose(1, 2)
        quantized, commit_loss, stats = self.rvq(e)
        q = quantized.transpose(1, 2)
        y, _ = model.acoustic_decoder(model.fc2(q).transpose(1, 2), None)
        recon = model.decoder_semantic(model.fc1(q).transpose(1, 2))
        semantic = F.mse_loss(recon, target)
        return GeneratorOutput(_fit(y, audio.shape[-1]), commit_loss, semantic, None, stats)


def build_forward(model, family: str, quantizer, generator: torch.Generator | None = None):
    """The training forward of ``model`` for a recipe's ``family`` and ``quantizer`` section."""
    options = dict(decay=quantizer.decay, threshold_dead=quantizer.dead_threshold,
                   kmeans_clusters=quantizer.kmeans_clusters, kmeans_iters=quantizer.kmeans_iters)
    if family == "wavtokenizer":
        return WavTokenizerForward(model, options, generator, quantizer.num_quantizers_choices)
    if family == "higgs":
        return HiggsForward(model, options, generator, quantizer.num_quantizers_choices)
    raise ValueError(f"unknown codec family {family!r}: 'wavtokenizer' or 'higgs'")
