"""WavTokenizer: 24 kHz audio <-> one code per frame from a 4096-entry codebook (40 or 75 frames/s).

Data flow (spec sections 2-3)::

    x [B, 1, L] -> SEANet encoder (strides 2,4,5,8 or 4,5,5,6; 2-layer LSTM)      z [B, 512, T]
                -> nearest codeword of one 4096 x 512 codebook                 codes [B, 1, T]
    decode: codewords [B, 512, T] -> Vocos backbone (conv, attention pos_net, 12 ConvNeXt with AdaLN)
            -> iSTFT head ("same" padding)                                      audio [B, 1, T * hop]

``T = ceil(L / hop)``; decoded audio has ``T * hop`` samples (``crop`` trims it to the input length).

Unlike the reference, a batch of items of different lengths is exact: the encoder pads every item at
its own end (reflect, per item) and the decoder masks padded frames in its convolutions, GroupNorms,
attention and iSTFT envelope (:mod:`tokenwave.nn.vocos`), so each item gets the codes and the audio of
processing it alone (up to float summation order, which the convolution library may choose by shape).
"""

from __future__ import annotations

import torch
from torch import nn

from ...api import AudioTokenizer, DecodedAudio, EncodedAudio, InvalidAudioError
from ...nn.lengths import zero_pad_frames
from ...nn.seanet import SEANetEncoder
from ...nn.vocos import ISTFTHead, VocosBackbone
from ...quantization.rvq import CodebookQuantizer, ResidualVectorQuantizer
from ..common import (
    ConfigGeometry,
    check_batching,
    decoded_audio,
    prepare_audio,
    prepare_codes,
    runs_per_item,
    stack_right_padded,
)
from .config import WavTokenizerConfig

MIN_SAMPLES = 1
# relative distance gap below which a padded-batch code may differ from the item's own (float32 error of
# the distance expression is ~1e-7 of |z|^2 + |e|^2; latents of padded and single runs differ by ~4e-7)
TIE_MARGIN = 1e-4


class WavTokenizer(nn.Module, ConfigGeometry, AudioTokenizer):
    """WavTokenizer codec.

    Args:
        config: geometry (:class:`WavTokenizerConfig`, presets ``"wavtokenizer-75"`` and
            ``"wavtokenizer-40"`` in :data:`~tokenwave.codecs.wavtokenizer.config.PRESETS`).
        batching: how a batch of several items of different lengths runs. ``"padded"``: one forward
            pass, with per-item lengths through every layer; ``"per_item"``: one pass per item at its own
            length, bit-identical to processing it alone; ``"auto"`` (default): ``"per_item"`` on CPU,
            ``"padded"`` on accelerators. Items of equal length always run as one batch.

    Build one from a checkpoint with :func:`tokenwave.load_tokenizer` (a tokenwave folder, a Lightning
    ``.ckpt`` of the reference code, or a published model name); the constructor makes random weights.
    """

    # decode windows for tokenwave.streaming: the pos_net attends over the whole window, so windows are
    # long and overlap by 2 s (chunked decode is close to, not equal to, whole-file decode)
    decode_chunk_seconds = 20.0
    decode_context_seconds = 2.0

    def __init__(self, config: WavTokenizerConfig | None = None, *, batching: str = "auto"):
        super().__init__()
        config = config or WavTokenizerConfig()
        self.config = config
        self.batching = check_batching(batching)
        self.encoder = SEANetEncoder(
            channels=1, dimension=config.latent_dim, n_filters=config.encoder_filters,
            ratios=tuple(reversed(config.strides)), lstm=config.encoder_lstm_layers,
        )
        if config.residual:  # tokenwave's own models: RVQ stages with projections
            self.quantizer = ResidualVectorQuantizer(config.latent_dim, config.num_quantizers, config.codebook_size,
                                                     config.codebook_dim or config.latent_dim)
        else:  # the published models: one codebook on the full latent
            self.quantizer = CodebookQuantizer(config.latent_dim, config.codebook_size)
        self.backbone = VocosBackbone(
            input_channels=config.latent_dim, dim=config.backbone_dim,
            intermediate_dim=config.backbone_intermediate_dim, num_layers=config.backbone_layers,
            adanorm_num_embeddings=config.adanorm_num_embeddings or None, pos_net=config.pos_net,
        )
        self.head = ISTFTHead(config.backbone_dim, config.n_fft, config.hop_length, padding="same")
        self.eval()

    # ---- the tokenizer contract (sample_rate, frame_rate, hop_length, num_codebooks, codebook_size:
    # ConfigGeometry) --------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return self.config.to_dict()

    @property
    def device(self) -> torch.device:
        return self.head.out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.out.weight.dtype

    def num_frames(self, num_samples: int) -> int:
        """Code frames for ``num_samples`` samples: ``ceil(num_samples / hop_length)``."""
        if num_samples < MIN_SAMPLES:
            raise InvalidAudioError(f"audio of {num_samples} samples is too short: need at least {MIN_SAMPLES}")
        return int(self.config.num_frames(num_samples))

    @torch.inference_mode()
    def encode(self, audio, sample_rate: int | None = None, *, bandwidth: float | None = None,
               num_codebooks: int | None = None, lengths=None) -> EncodedAudio:
        """Audio -> codes ``[B, K, T]``, ``T = ceil(L / hop_length)`` (K = 1 for the published models).

        Args:
            audio: ``[L]``, ``[B, L]`` or ``[B, 1, L]`` float tensor or numpy array, or a list of 1-D arrays
                of different lengths (batched with padding; every item gets the codes of encoding it alone).
            sample_rate: rate of ``audio``; must equal :attr:`sample_rate` when given.
            bandwidth: kbps: the model's own (:attr:`WavTokenizerConfig.bandwidth`), a multiple of one
                codebook's for RVQ models, or None (all codebooks).
            num_codebooks: the first K codebooks (RVQ models) or None (all).
            lengths: ``[B]`` valid samples per item of a right-padded batch.
        """
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise InvalidAudioError(
                f"audio at {sample_rate} Hz, but this tokenizer takes {self.sample_rate} Hz: resample it first"
            )
        k = self._resolve_codebooks(bandwidth, num_codebooks)
        x, lengths = self._prepare_audio(audio, lengths)
        audio_lengths = torch.full((x.shape[0],), x.shape[-1]) if lengths is None else lengths
        if lengths is None:
            codes = self._quantize(self.encoder(x), k)[0]
            frames = torch.full((x.shape[0],), codes.shape[-1])
        elif self._per_item(x):
            parts = [self._quantize(self.encoder(x[i : i + 1, :, :n]), k)[0] for i, n in enumerate(lengths.tolist())]
            codes, frames = stack_right_padded(parts)
        else:
            z, frames = self.encoder.forward_padded(x, lengths.to(x.device))
            codes, margin = self._quantize(z, k)
            codes = zero_pad_frames(codes, frames)
            # latents agree with the items' own up to float summation order (~1e-7): an item with a
            # near-tie frame could get another code there than alone, so it is encoded alone
            near_tie = (margin < TIE_MARGIN) & (torch.arange(codes.shape[-1], device=codes.device) < frames[:, None])
            for i in near_tie.any(dim=1).nonzero().flatten().tolist():
                n, t = int(lengths[i]), int(frames[i])
                codes[i, :, :t] = self._quantize(self.encoder(x[i : i + 1, :, :n]), k)[0][0]
            frames = frames.cpu()
        return EncodedAudio(codes.cpu(), frames.long(), audio_lengths.long().cpu(),
                            self.frame_rate, self.sample_rate)

    def _quantize(self, z: torch.Tensor, num_codebooks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``[B, D, T]`` -> codes ``[B, K, T]`` and each frame's smallest relative distance gap over
        the K stages (see :meth:`~tokenwave.quantization.rvq.EuclideanCodebook.encode_with_margin`)."""
        if not self.config.residual:
            codes, margin = self.quantizer.codebook.encode_with_margin(z.permute(0, 2, 1))
            return codes[:, None], margin
        codes, margins = self.quantizer.encode_with_margin(z, num_codebooks)
        return codes, margins.amin(dim=1)

    @torch.inference_mode()
    def decode(self, codes, lengths=None, *, crop: bool = False, audio_lengths=None,
               bandwidth_id: int | None = None) -> DecodedAudio:
        """Codes ``[B, K, T]`` or ``[K, T]`` (or an :class:`EncodedAudio`) -> audio ``[B, 1, hop_length * T]``.

        RVQ models decode the first K <= :attr:`num_codebooks` codebooks (a lower bitrate).

        Args:
            lengths: ``[B]`` valid frames per item (default: all T); each item equals decoding it alone.
            crop: crop each item to its input length (needs ``audio_lengths`` or an ``EncodedAudio``).
            audio_lengths: ``[B]`` input samples per item, for ``crop``.
            bandwidth_id: adaptive-LayerNorm row (default ``config.bandwidth_id``, 0 as in the reference;
                the published models trained rows 0-3 and they give slightly different audio).
        """
        if isinstance(codes, EncodedAudio):
            lengths = codes.lengths if lengths is None else lengths
            audio_lengths = codes.audio_lengths if audio_lengths is None else audio_lengths
            codes = codes.codes
        codes, lengths = prepare_codes(codes, lengths, num_codebooks=self.num_codebooks,
                                       codebook_size=self.codebook_size, device=self.device)
        bw = self.config.bandwidth_id if bandwidth_id is None else int(bandwidth_id)
        if self.config.adanorm_num_embeddings and not 0 <= bw < self.config.adanorm_num_embeddings:
            raise ValueError(f"bandwidth_id must lie in [0, {self.config.adanorm_num_embeddings}), got {bw}")
        if lengths is None:
            audio = self._decode(codes, None, bw)
            out_lengths = torch.full((audio.shape[0],), audio.shape[-1])
        elif self._per_item(codes):
            parts = [self._decode(codes[i : i + 1, :, :n], None, bw) for i, n in enumerate(lengths.tolist())]
            audio, out_lengths = stack_right_padded(parts)
        else:
            audio = self._decode(codes, lengths, bw)
            out_lengths = lengths * self.hop_length
        return decoded_audio(audio, out_lengths, self.sample_rate, crop=crop, audio_lengths=audio_lengths)

    def _decode(self, codes: torch.Tensor, lengths: torch.Tensor | None, bandwidth_id: int) -> torch.Tensor:
        """``[B, K, T]`` codes -> ``[B, 1, T * hop]`` audio (one forward pass)."""
        features = (self.quantizer.decode(codes) if self.config.residual else self.quantizer.decode(codes[:, 0]))
        features = features.to(self.dtype)
        dev_lengths = None if lengths is None else lengths.to(codes.device)
        bw = torch.tensor([bandwidth_id], device=codes.device) if self.config.adanorm_num_embeddings else None
        x = self.backbone(features, bw, lengths=dev_lengths)
        return self.head(x, dev_lengths)[:, None]

    def save_pretrained(self, folder) -> None:
        """Write ``config.json`` + ``model.safetensors`` (tokenwave format); :func:`tokenwave.load_tokenizer`
        loads it back strictly."""
        from .checkpoint import save_pretrained

        save_pretrained(self, folder)

    # ---- input checks --------------------------------------------------------------------------
    def _per_item(self, x: torch.Tensor) -> bool:
        return runs_per_item(self.batching, x)

    def _resolve_codebooks(self, bandwidth, num_codebooks) -> int:
        if bandwidth is not None and num_codebooks is not None:
            raise ValueError("pass bandwidth or num_codebooks, not both")
        if num_codebooks is not None:
            if not 1 <= int(num_codebooks) <= self.num_codebooks:
                raise ValueError(f"num_codebooks must lie in [1, {self.num_codebooks}], got {num_codebooks!r}")
            return int(num_codebooks)
        return self.codebooks_for_bandwidth(bandwidth)

    def _prepare_audio(self, audio, lengths):
        return prepare_audio(audio, lengths, min_samples=MIN_SAMPLES, sample_rate=self.sample_rate,
                             device=self.device, dtype=self.dtype)
