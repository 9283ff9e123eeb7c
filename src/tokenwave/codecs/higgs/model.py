"""The Higgs Audio v2 tokenizer: 24 kHz audio <-> 25 Hz frames of up to 8 codes from 1024-entry codebooks.

Data flow (spec section 2)::

    x [B, 1, L] @ 24 kHz
    |- semantic: resample 16 kHz -> pad 160|160 -> HuBERT (13 hidden states, averaged)
    |            -> keep every 2nd frame -> SemanticEncoder               e_sem [B, 768, Ts]
    |- acoustic: DAC encoder (strides 8,5,4,2,3), re-run on a padded input
    |            when its frame count differs from Ts (see ``alignment``)   e_ac  [B, 256, Ta]
    `- fc(cat[e_ac, e_sem]) [B, 1024, T] -> residual VQ -> codes [B, K, T]

    decode: codes -> sum of project_out(E_q[c_q]) -> fc2 -> DAC decoder (no tanh) -> [B, 1, 960 T]

``T = floor((L + 841) / 960)`` for the published geometry (:meth:`HiggsAudioTokenizer.num_frames`).

Alignment (spec section 6): when the unpadded acoustic encoder yields a different frame count than the
semantic branch, the references re-encode a padded input, and they pad differently:

* ``"original"`` (boson-multimodal, the pipeline the generation model was trained on): pad 320 on each
  side, then truncate both branches to the shorter one. The original only supports batch size 1 here;
  ours supports any batch.
* ``"transformers"`` (transformers 5.23): pad ``hop_length // 2`` = 480 on each side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...api import AudioTokenizer, DecodedAudio, EncodedAudio, InvalidAudioError
from ...dsp.resample import resample
from ...nn.dac import DacDecoder, DacEncoder
from ...nn.hubert import HubertModel
from ...nn.lengths import zero_pad_frames
from ...quantization.rvq import ResidualVectorQuantizer
from ..common import (
    ConfigGeometry,
    check_batching,
    decoded_audio,
    prepare_audio,
    prepare_codes,
    runs_per_item,
    stack_right_padded,
)
from .config import HiggsConfig
from .semantic import SemanticDecoder, SemanticEncoder

ALIGNMENTS = ("original", "transformers")
MIN_SAMPLES = 120
_HUBERT_PAD = 160  # both references pad the 16 kHz HuBERT input by a constant 160 on each side


class HiggsAudioTokenizer(nn.Module, ConfigGeometry, AudioTokenizer):
    """Higgs Audio v2 tokenizer.

    Args:
        config: model geometry (:class:`HiggsConfig`; defaults are the published model).
        alignment: default padding rule, ``"original"`` or ``"transformers"`` (module docstring).
        batching: how a batch of several items runs. ``"padded"``: one forward pass over the right-padded
            batch, with per-item lengths masked through every layer (padding never reaches normalisation
            statistics, attention or convolutions); equal to each item alone up to float summation order,
            which the convolution library may choose by tensor shape. ``"per_item"``: one forward pass per
            item at its own length, bit-identical to encoding/decoding it alone. ``"auto"`` (default):
            ``"per_item"`` on CPU, where it measured as fast or faster (2 cores: 8 x 4 s decode 3.3 s vs
            5.0 s batched), ``"padded"`` on accelerators.

    Build one from a checkpoint with :func:`tokenwave.load_tokenizer`; the constructor makes random
    weights and never downloads anything.
    """

    def __init__(
        self, config: HiggsConfig | None = None, *, alignment: str = "original", batching: str = "auto"
    ):
        super().__init__()
        config = config or HiggsConfig()
        self.config = config
        self.alignment = _check_alignment(alignment)
        self.batching = check_batching(batching)
        self.acoustic_encoder = DacEncoder(
            config.acoustic_encoder_hidden_size, config.downsampling_ratios, config.acoustic_hidden_size
        )
        self.acoustic_decoder = DacDecoder(
            config.acoustic_hidden_size, config.acoustic_decoder_hidden_size, config.upsampling_ratios
        )
        self.encoder_semantic = SemanticEncoder(config.semantic.hidden_size)
        self.decoder_semantic = SemanticDecoder(config.semantic.hidden_size)  # training only
        self.semantic_model = HubertModel(config.semantic)
        self.fc = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc1 = nn.Linear(config.hidden_size, config.semantic.hidden_size)  # training only
        self.fc2 = nn.Linear(config.hidden_size, config.acoustic_hidden_size)
        self.quantizer = ResidualVectorQuantizer(
            config.hidden_size, config.num_quantizers, config.codebook_size, config.codebook_dim
        )
        self.semantic_model.requires_grad_(False)
        self.eval()

    # ---- the tokenizer contract (sample_rate, frame_rate, hop_length, num_codebooks, codebook_size:
    # ConfigGeometry) --------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return self.config.identity_dict()

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    def codebooks_for_bandwidth(self, bandwidth: float | None) -> int:
        """Codebooks for ``bandwidth`` kbps: one of ``config.target_bandwidths`` (None: all)."""
        return self.config.num_codebooks_for_bandwidth(bandwidth)

    def num_frames(self, num_samples: int) -> int:
        """Code frames for ``num_samples`` input samples (the same under both alignments)."""
        if num_samples < MIN_SAMPLES:
            raise InvalidAudioError(f"audio of {num_samples} samples is too short: need at least {MIN_SAMPLES}")
        return int(self._semantic_frames(torch.tensor([num_samples]))[0])

    @torch.inference_mode()
    def encode(
        self,
        audio,
        sample_rate: int | None = None,
        *,
        bandwidth: float | None = None,
        num_codebooks: int | None = None,
        lengths=None,
        alignment: str | None = None,
    ) -> EncodedAudio:
        """Audio -> codes.

        Args:
            audio: ``[L]``, ``[B, L]`` or ``[B, 1, L]`` float tensor or numpy array at ``sample_rate``,
                or a list of 1-D arrays of different lengths (batched with padding).
            sample_rate: rate of ``audio``; must equal :attr:`sample_rate` when given.
            bandwidth: kbps, one of ``config.target_bandwidths`` (0.5, 1, 1.5, 2 -> 2, 4, 6, 8 codebooks).
            num_codebooks: codebook count instead of a bandwidth (default: all).
            lengths: ``[B]`` valid samples per item of a right-padded batch (default: all of ``L``).
            alignment: ``"original"`` or ``"transformers"`` (default: the tokenizer's setting).

        Returns:
            :class:`EncodedAudio` with codes ``[B, K, T]``; every item's codes equal those of encoding
            it alone.
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise InvalidAudioError(
                f"audio at {sample_rate} Hz, but this tokenizer takes {self.sample_rate} Hz: resample it first"
            )
        k = self._resolve_codebooks(bandwidth, num_codebooks)
        align = _check_alignment(alignment or self.alignment)
        x, lengths = self._prepare_audio(audio, lengths)
        audio_lengths = torch.full((x.shape[0],), x.shape[-1]) if lengths is None else lengths
        if self._per_item(x):
            items = [x[i : i + 1, :, :n] for i, n in enumerate(audio_lengths.tolist())]
            parts = [self._encode_padded(item, None, k, align)[0] for item in items]
            codes, frames = stack_right_padded(parts)
        else:
            codes, frames = self._encode_padded(x, lengths, k, align)
        return EncodedAudio(codes, frames, audio_lengths.long().cpu(), self.frame_rate, self.sample_rate)

    @torch.inference_mode()
    def decode(self, codes, lengths=None, *, crop: bool = False, audio_lengths=None) -> DecodedAudio:
        """Codes -> audio.

        Args:
            codes: ``[B, K, T]`` or ``[K, T]`` integer codes (K <= num_codebooks; fewer codebooks decode
                at lower bandwidth), or an :class:`EncodedAudio` (its lengths are used).
            lengths: ``[B]`` valid frames per item (default: all T).
            crop: crop each item to its input length (needs ``audio_lengths`` or an ``EncodedAudio``).
            audio_lengths: ``[B]`` input samples per item, for ``crop``.

        Returns:
            :class:`DecodedAudio`, ``[B, 1, hop_length * T]``; item ``b`` has ``hop_length * lengths[b]``
            valid samples (fewer with ``crop``) and equals decoding it alone.
        """
        if isinstance(codes, EncodedAudio):
            lengths = codes.lengths if lengths is None else lengths
            audio_lengths = codes.audio_lengths if audio_lengths is None else audio_lengths
            codes = codes.codes
        codes, lengths = self._prepare_codes(codes, lengths)
        if self._per_item(codes):
            frames = [codes.shape[-1]] * codes.shape[0] if lengths is None else lengths.tolist()
            parts = [self._decode_padded(codes[i : i + 1, :, :n], None)[0] for i, n in enumerate(frames)]
            audio, out_lengths = stack_right_padded(parts)
        else:
            audio, out_lengths = self._decode_padded(codes, lengths)
        return decoded_audio(audio, out_lengths, self.sample_rate, crop=crop, audio_lengths=audio_lengths)

    @torch.inference_mode()
    def _chunked_statistics(self, windows, num_frames: int):
        """Pass 1 of chunked encoding: the per-channel mean and variance that HuBERT's first GroupNorm takes
        over the whole signal, accumulated (in float64) from the windows' kept frames. ``windows`` yields
        ``(plan, segment)`` as :func:`tokenwave.streaming.encode_chunked` makes them."""
        cfg = self.config
        layer = self.semantic_model.feature_extractor.conv_layers[0]
        per_frame = self.hop_length * cfg.semantic_sample_rate / cfg.sample_rate / layer.conv.stride[0]
        if per_frame != int(per_frame):
            return None  # windows would not align with the first layer's frames: keep per-window statistics
        per_frame = int(per_frame)
        total = count = 0
        sq = 0
        for plan, segment in windows:
            x, _ = self._prepare_audio(segment, None)
            wav, _ = self._hubert_input(x)
            y = layer.conv(wav[:, None].to(layer.conv.weight.dtype))[0].double()
            lo = (plan.keep_start - plan.start) * per_frame
            hi = y.shape[-1] if plan.keep_end == num_frames else (plan.keep_end - plan.start) * per_frame
            y = y[:, lo:hi]
            total = total + y.sum(-1)
            sq = sq + (y * y).sum(-1)
            count += y.shape[-1]
        mean = total / count
        var = (sq / count - mean * mean).clamp_min(0)
        return mean.float(), var.float()

    @torch.inference_mode()
    def _encode_window(self, segment, start: int, total: int, *, bandwidth: float | None = None,
                       num_codebooks: int | None = None, alignment: str | None = None,
                       statistics=None) -> torch.Tensor:
        """Codes ``[K, n]`` of samples ``[start, start + len(segment))`` of a signal of ``total`` samples, on
        the whole signal's frame grid (``start`` a multiple of ``hop_length``): the acoustic branch gets the
        padding the whole signal gets, so its frames line up with whole-file encoding, and HuBERT's first
        GroupNorm uses ``statistics`` (from :meth:`_chunked_statistics`) when given. Used by
        :func:`tokenwave.streaming.encode_chunked`."""
        if start % self.hop_length:
            raise ValueError(f"window start {start} is not a multiple of hop_length {self.hop_length}")
        k = self._resolve_codebooks(bandwidth, num_codebooks)
        align = _check_alignment(alignment or self.alignment)
        x, _ = self._prepare_audio(segment, None)
        if x.shape[0] != 1:
            raise InvalidAudioError(f"a window is one mono signal, got {x.shape[0]} items")
        n = torch.tensor([total])
        pad = int(self._acoustic_padding(n, self._semantic_frames(n), align)[0])
        embeddings, _ = self._embed(x, None, align, acoustic_pad=pad, norm_stats=statistics)
        return self.quantizer.encode(embeddings, k)[0]

    # ---- batching -------------------------------------------------------------------------------
    def _per_item(self, x: torch.Tensor) -> bool:
        return runs_per_item(self.batching, x)

    def _encode_padded(self, x, lengths, k: int, align: str):
        """One forward pass over a right-padded batch: codes ``[B, k, T]`` (zero past each item) and frames."""
        embeddings, frames = self._embed(x, lengths, align)
        codes = self.quantizer.encode(embeddings, k)
        if frames is None:
            return codes, torch.full((x.shape[0],), codes.shape[-1])
        return zero_pad_frames(codes, frames.to(codes.device)), frames.cpu().long()

    def _decode_padded(self, codes, lengths):
        """One forward pass over right-padded codes: audio ``[B, 1, N]`` and valid samples per item."""
        quantized = self.quantizer.decode(codes).to(self.fc2.weight.dtype)
        latent = self.fc2(quantized.transpose(1, 2)).transpose(1, 2)
        audio, out_lengths = self.acoustic_decoder(latent, None if lengths is None else lengths.to(codes.device))
        if out_lengths is None:
            return audio, torch.full((audio.shape[0],), audio.shape[-1])
        return audio, out_lengths.cpu().long()

    def save_pretrained(self, folder) -> None:
        """Write the transformers format (``config.json`` + ``model.safetensors``); transformers loads it."""
        from .checkpoint import save_transformers

        save_transformers(self, folder)

    # ---- encoder internals -----------------------------------------------------------------------
    def _semantic_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        p, q = cfg.sample_rate, cfg.semantic_sample_rate
        n16 = (lengths * q + p - 1) // p if p != q else lengths
        hub = cfg.semantic.frames(n16 + 2 * _HUBERT_PAD)
        f = cfg.semantic_downsample_factor
        return (hub + f - 1) // f

    def _hubert_input(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """HuBERT's input ``[B, N]`` (16 kHz, padded by 160 on each side) and its per-item lengths (None
        when the batch is unpadded)."""
        cfg = self.config
        wav = resample(x[:, 0, :], cfg.sample_rate, cfg.semantic_sample_rate)
        hub_lengths = None
        if lengths is not None:
            n16 = (lengths * cfg.semantic_sample_rate + cfg.sample_rate - 1) // cfg.sample_rate
            wav = zero_pad_frames(wav[:, None], n16)[:, 0]  # drop filter tails past each item's end
            hub_lengths = n16 + 2 * _HUBERT_PAD
        return F.pad(wav, (_HUBERT_PAD, _HUBERT_PAD)), hub_lengths

    def _semantic(self, x: torch.Tensor, lengths: torch.Tensor | None, norm_stats=None) -> torch.Tensor:
        cfg = self.config
        wav, hub_lengths = self._hubert_input(x, lengths)
        states = self.semantic_model(wav, hub_lengths, norm_stats)
        features = torch.stack(states, dim=1).mean(dim=1)
        features = features[:, :: cfg.semantic_downsample_factor, :]
        frames = None if lengths is None else self._semantic_frames(lengths)
        return self.encoder_semantic(features.transpose(1, 2), frames)

    def _acoustic_padding(self, lengths: torch.Tensor, semantic_frames: torch.Tensor, align: str) -> torch.Tensor:
        pad = self.hop_length // 2 if align == "transformers" else _HUBERT_PAD * self.config.semantic_downsample_factor
        unpadded = self.acoustic_encoder.output_length(lengths)
        return torch.where(unpadded != semantic_frames, pad, 0)

    def _embed(self, x: torch.Tensor, lengths: torch.Tensor | None, align: str, acoustic_pad: int | None = None,
               norm_stats=None):
        """Fused latent ``[B, hidden, T]`` and per-item frames (None when the batch is unpadded).

        ``acoustic_pad`` and ``norm_stats`` override, for an unpadded batch, the padding rule's choice and
        HuBERT's first GroupNorm statistics (windows of a longer signal use the whole signal's)."""
        batch, _, total = x.shape
        dev_lengths = None if lengths is None else lengths.to(x.device)
        e_sem = self._semantic(x, dev_lengths, norm_stats)
        item_lengths = torch.full((batch,), total) if lengths is None else lengths
        sem_frames = self._semantic_frames(item_lengths)
        pads = self._acoustic_padding(item_lengths, sem_frames, align)
        if lengths is None:
            p = int(pads[0]) if acoustic_pad is None else acoustic_pad
            e_ac, _ = self.acoustic_encoder(F.pad(x, (p, p)) if p else x)
            frames = min(e_ac.shape[-1], e_sem.shape[-1])
            e = torch.cat([e_ac[..., :frames], e_sem[..., :frames]], dim=1)
            return self.fc(e.transpose(1, 2)).transpose(1, 2), None
        ac_lengths = item_lengths + 2 * pads
        x_ac = x.new_zeros(batch, 1, int(ac_lengths.max()))
        for i, (n, p) in enumerate(zip(item_lengths.tolist(), pads.tolist())):
            x_ac[i, :, p : p + n] = x[i, :, :n]
        e_ac, ac_frames = self.acoustic_encoder(x_ac, ac_lengths.to(x.device))
        frames = torch.minimum(ac_frames.cpu(), sem_frames)
        t = int(frames.max())
        e = torch.cat([e_ac[..., :t], e_sem[..., :t]], dim=1)
        return self.fc(e.transpose(1, 2)).transpose(1, 2), frames

    # ---- input checks --------------------------------------------------------------------------
    def _resolve_codebooks(self, bandwidth, num_codebooks) -> int:
        if bandwidth is not None and num_codebooks is not None:
            raise ValueError("pass bandwidth or num_codebooks, not both")
        if num_codebooks is not None:
            if not isinstance(num_codebooks, (int, np.integer)) or not 1 <= num_codebooks <= self.num_codebooks:
                raise ValueError(f"num_codebooks must be an integer in 1..{self.num_codebooks}, got {num_codebooks!r}")
            return int(num_codebooks)
        return self.codebooks_for_bandwidth(bandwidth)

    def _prepare_audio(self, audio, lengths):
        return prepare_audio(audio, lengths, min_samples=MIN_SAMPLES, sample_rate=self.sample_rate,
                             device=self.device, dtype=self.dtype)

    def _prepare_codes(self, codes, lengths):
        return prepare_codes(codes, lengths, num_codebooks=self.num_codebooks, codebook_size=self.codebook_size,
                             device=self.device)


def _check_alignment(alignment: str) -> str:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    return alignment


def code_length(num_samples: int) -> int:
    """Closed form of the published model's frame count (spec section 6): ``floor((L + 841) / 960)``."""
    return math.floor((num_samples + 841) / 960)
