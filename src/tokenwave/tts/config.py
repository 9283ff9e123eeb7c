"""Typed configuration of the Higgs Audio v2 generation model and its two published ``config.json`` layouts.

References (``spec_generation.md``): [O] = the original ``boson_multimodal`` 0.1.1 code, [T] = transformers 5.23
``models/higgs_audio_v2``. Section numbers below are the spec's.

* [O] layout (``model_type "higgs_audio"``, ``architectures ["HiggsAudioModel"]``): a nested Llama ``text_config``
  plus ``audio_*`` fields at top level (3.4). Read by :meth:`HiggsGenConfig.from_original_dict`, written by
  :meth:`HiggsGenConfig.to_original_dict`.
* [T] layout (``model_type "higgs_audio_v2"``, flat): read by :meth:`HiggsGenConfig.from_transformers_dict`,
  written by :meth:`HiggsGenConfig.to_transformers_dict`. Its ``codebook_size`` counts the two stream ids (1026);
  ours does not (1024, as [O]'s ``audio_codebook_size``). Whether the text head exists is not in this file: it
  is decided by the weights (``text_lm_head.weight`` present or not).

Fields are read strictly: a field neither used nor known to be irrelevant (Hugging Face ``PretrainedConfig``
boilerplate, [O]'s unused Whisper tower / RQ-transformer fields) is an error, and so is a value of a used field
that selects an architecture we do not implement (e.g. fast-forward layers, an audio self-attention, biases).

RoPE: both layouts use "llama3" scaling with different but numerically identical parameters ([O] factor 32,
low 1, high 4, original context 8192; [T] factor 32, low 0.125, high 0.5, original context 1024: the same
wavelength thresholds 8192 / 2048 and the same smoothing line, spec 1 and 9 #16). We keep whatever the file says;
:meth:`HiggsGenConfig.rope_inv_freq` gives the frequencies. ``max_position_embeddings`` (131072 / 2048) is kept
as written and limits nothing: the context is bounded by the KV cache the caller allocates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

ORIGINAL_MODEL_TYPE = "higgs_audio"
TRANSFORMERS_MODEL_TYPE = "higgs_audio_v2"
FORMATS = ("original", "transformers")

#: hub repository of the published model; its ``main`` holds the [T] format since ~2026-04 (spec 3.4)
PUBLISHED_REPO = "bosonai/higgs-audio-v2-generation-3B-base"
#: the revision of :data:`PUBLISHED_REPO` in the [O] format (the one transformers' converter reads)
ORIGINAL_REVISION = "10840182ca4ad5d9d9113b60b9bb3c1ef1ba3f84"

# Generic Hugging Face PretrainedConfig keys (generation defaults, bookkeeping): present in published files,
# irrelevant to the network. Accepted and ignored in both layouts and in [O]'s text_config.
_HF_GENERIC = frozenset({
    "_attn_implementation_autoset", "_name_or_path", "_commit_hash", "add_cross_attention", "architectures",
    "bad_words_ids", "begin_suppress_tokens", "chunk_size_feed_forward", "cross_attention_hidden_size",
    "decoder_start_token_id", "diversity_penalty", "do_sample", "early_stopping", "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id", "forced_eos_token_id", "id2label",
    "is_decoder", "is_encoder_decoder", "label2id", "length_penalty", "max_length", "min_length",
    "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_scores", "prefix", "problem_type", "pruned_heads", "remove_invalid_values",
    "repetition_penalty", "return_dict", "return_dict_in_generate", "sep_token_id", "suppress_tokens",
    "task_specific_params", "temperature", "tf_legacy_loss", "tie_encoder_decoder", "tokenizer_class", "top_k",
    "top_p", "torch_dtype", "dtype", "torchscript", "typical_p", "use_bfloat16", "transformers_version",
    "model_type", "use_cache", "initializer_range", "attention_dropout", "pretraining_tp", "tie_word_embeddings",
})
# [O] top-level fields that exist but are unused by the published model (spec 3.4) or are token strings.
_ORIGINAL_IGNORED = frozenset({
    "audio_encoder_config", "audio_ffn_hidden_size", "audio_ffn_intermediate_size", "audio_tokenizer_config",
    "rq_transformer_hidden_size", "rq_transformer_intermediate_size", "rq_transformer_num_attention_heads",
    "rq_transformer_num_hidden_layers", "rq_transformer_num_key_value_heads", "audio_bos_token", "audio_eos_token",
    "audio_in_token", "audio_out_token", "audio_out_bos_token", "hidden_size",
})
# [O] fields that must hold exactly these values (anything else selects an unimplemented part of [O]).
_ORIGINAL_REQUIRED = {
    "audio_decoder_proj_num_layers": 0,
    "audio_embed_avg": False,
    "use_audio_out_embed_projector": False,
    "use_audio_out_self_attention": False,
    "use_rq_transformer": False,
    "skip_audio_tower": True,
    "encode_whisper_embed": False,
}
_ORIGINAL_ADAPTERS = ("dual_ffn_fast_forward", "dual_ffn")  # identical when every layer is a DualFFN layer


@dataclass(frozen=True)
class HiggsGenConfig:
    """Geometry and token ids of the Higgs Audio v2 generation model. Defaults are the published checkpoint
    (spec 1, 2): Llama-3.2-3B with a DualFFN audio adapter on all 28 layers, 8 codebooks x (1024 + 2) ids.

    Attributes:
        vocab_size: text vocabulary (128 256).
        hidden_size, intermediate_size: width and SwiGLU width (3072, 8192); the audio MLP has the same shape.
        num_hidden_layers: decoder layers (28), every one a DualFFN layer.
        num_attention_heads, num_key_value_heads, head_dim: GQA geometry (24 q heads, 8 kv heads, 128).
        rms_norm_eps: RMSNorm epsilon (1e-5).
        rope_theta: RoPE base (500 000).
        rope_type: ``"llama3"`` (frequency-dependent scaling below) or ``"default"`` (plain RoPE).
        rope_factor, rope_low_freq_factor, rope_high_freq_factor, rope_original_max_position_embeddings:
            llama3 scaling parameters, as written in the source file (see the module docstring).
        max_position_embeddings: as written in the source file; informational only.
        num_codebooks: audio codebooks per frame (8).
        codebook_size: codes per codebook (1024), not counting the stream ids.
        audio_stream_bos_id, audio_stream_eos_id: stream BOS / EOS ids inside each codebook (1024, 1025).
        use_text_head: whether the model has the untied text head (``text_lm_head``, V x hidden).
        bos_token_id, eos_token_id, pad_token_id: as written in the source file ([O] 128000 / 128001 / 128001,
            [T] 1 / 128009 / 128001).
        audio_in_bos_token_id: ``<|audio_bos|>`` (128011, in neither file).
        audio_eos_token_id: ``<|audio_eos|>`` (128012; [O] only).
        audio_out_bos_token_id: ``<|audio_out_bos|>`` (128013; [T] ``audio_bos_token_id``).
        audio_delay_token_id: ``<|reserved_special_token_6|>`` (128014; [T] only).
        audio_in_token_id: ``<|AUDIO|>`` (128015; [O] ``audio_in_token_idx``).
        audio_out_token_id: ``<|AUDIO_OUT|>`` (128016; [O] ``audio_out_token_idx``, [T] ``audio_token_id``).
        use_delay_pattern, encode_audio_in_tokens: [O] flags kept for the generation code (both true).
    """

    vocab_size: int = 128256
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_hidden_layers: int = 28
    num_attention_heads: int = 24
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_type: str = "llama3"
    rope_factor: float = 32.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    max_position_embeddings: int = 131072
    num_codebooks: int = 8
    codebook_size: int = 1024
    audio_stream_bos_id: int = 1024
    audio_stream_eos_id: int = 1025
    use_text_head: bool = True
    bos_token_id: int | None = 128000
    eos_token_id: int | None = 128001
    pad_token_id: int | None = 128001
    audio_in_bos_token_id: int = 128011
    audio_eos_token_id: int = 128012
    audio_out_bos_token_id: int = 128013
    audio_delay_token_id: int = 128014
    audio_in_token_id: int = 128015
    audio_out_token_id: int = 128016
    use_delay_pattern: bool = True
    encode_audio_in_tokens: bool = True

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.rope_type not in ("llama3", "default"):
            raise ValueError(f"unsupported rope type {self.rope_type!r} (implemented: 'llama3', 'default')")
        if (self.audio_stream_bos_id, self.audio_stream_eos_id) != (self.codebook_size, self.codebook_size + 1):
            raise ValueError(
                f"stream ids must follow the codes (bos = codebook_size, eos = codebook_size + 1): got bos "
                f"{self.audio_stream_bos_id}, eos {self.audio_stream_eos_id}, codebook_size {self.codebook_size}")

    # ---- derived quantities ----------------------------------------------------------------------------------
    @property
    def audio_vocab_size(self) -> int:
        """Ids per codebook: codes + stream BOS + stream EOS (1026)."""
        return self.codebook_size + 2

    @property
    def num_key_value_groups(self) -> int:
        """Query heads per KV head (3)."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def audio_token_ids(self) -> tuple[int, ...]:
        """Text ids whose positions hold an audio frame (the default audio mask, spec 3.1): ``<|AUDIO|>``
        ([O] audio-in), ``<|AUDIO_OUT|>`` and ``<|reserved_special_token_6|>`` ([T] delay tail)."""
        return (self.audio_in_token_id, self.audio_out_token_id, self.audio_delay_token_id)

    def rope_inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        """RoPE inverse frequencies ``[head_dim // 2]`` float32 (spec 1, "llama3" scaling).

        ``f_i = theta^(-2i/d)``, wavelength ``w_i = 2 pi / f_i``; with ``L = original_max_position_embeddings``,
        ``w_lo = L / low_freq_factor``, ``w_hi = L / high_freq_factor``: ``w_i > w_lo`` -> ``f_i / factor``;
        ``w_i < w_hi`` -> ``f_i``; in between ``(1 - s) f_i / factor + s f_i`` with
        ``s = (L / w_i - low_freq_factor) / (high_freq_factor - low_freq_factor)``. The operations are in the
        order transformers evaluates them, so both published parameter sets give bitwise the same values.
        """
        d = self.head_dim
        inv_freq = 1.0 / (self.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).to(torch.float) / d))
        if self.rope_type == "llama3":
            factor, low, high = self.rope_factor, self.rope_low_freq_factor, self.rope_high_freq_factor
            old = self.rope_original_max_position_embeddings
            low_wavelen, high_wavelen = old / low, old / high
            wavelen = 2 * math.pi / inv_freq
            scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
            inv_freq = torch.where(medium, smoothed, scaled)
        return inv_freq.to(device) if device is not None else inv_freq

    def num_parameters(self, text_head: bool | None = None) -> int:
        """Parameter count of the model (5 771 283 456 for the published one, spec 1)."""
        h, i, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 2 * 3 * h * i + 4 * h
        audio = self.num_codebooks * self.audio_vocab_size * h
        head = self.use_text_head if text_head is None else text_head
        return self.vocab_size * h + n * per_layer + h + 2 * audio + (self.vocab_size * h if head else 0)

    def replace(self, **changes) -> HiggsGenConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Our own flat dict of every field (for logs and hashes); not a checkpoint layout."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ---- [T] layout ------------------------------------------------------------------------------------------
    def _rope_dict(self) -> dict:
        if self.rope_type == "default":
            return {"rope_type": "default", "rope_theta": self.rope_theta}
        return {"rope_type": "llama3", "rope_theta": self.rope_theta, "factor": self.rope_factor,
                "low_freq_factor": self.rope_low_freq_factor, "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_original_max_position_embeddings}

    def to_transformers_dict(self, dtype: str = "bfloat16") -> dict:
        """The [T] ``config.json`` (what transformers' ``HiggsAudioV2Config.save_pretrained`` writes).

        Raises:
            ValueError: token ids the layout cannot carry (``audio_in_token_id``, ``audio_in_bos_token_id``,
                ``audio_eos_token_id`` other than the published ones, or the [O] flags turned off).
        """
        out = {
            "architectures": ["HiggsAudioV2ForConditionalGeneration"],
            "model_type": TRANSFORMERS_MODEL_TYPE,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": self._rope_dict(),
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.audio_vocab_size,  # [T] counts the stream ids
            "audio_token_id": self.audio_out_token_id,
            "audio_bos_token_id": self.audio_out_bos_token_id,
            "audio_delay_token_id": self.audio_delay_token_id,
            "audio_stream_bos_id": self.audio_stream_bos_id,
            "audio_stream_eos_id": self.audio_stream_eos_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "dtype": dtype,
        }
        back = HiggsGenConfig.from_transformers_dict(out, use_text_head=self.use_text_head)
        if back != self:
            raise ValueError(f"the transformers config layout cannot carry {_lost(self, back)}")
        return out

    @classmethod
    def from_transformers_dict(cls, data: dict, *, use_text_head: bool = False) -> HiggsGenConfig:
        """A config from a [T] ``config.json`` dict. ``use_text_head`` comes from the weights, not the file.

        Raises:
            ValueError: another model type, unknown fields, or values we do not implement.
        """
        _check(data.get("model_type") == TRANSFORMERS_MODEL_TYPE,
               f"model_type {data.get('model_type')!r}, expected {TRANSFORMERS_MODEL_TYPE!r}")
        used = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
                "rope_parameters", "rope_scaling", "rope_theta", "attention_bias", "mlp_bias", "num_codebooks",
                "codebook_size", "audio_token_id", "audio_bos_token_id", "audio_delay_token_id",
                "audio_stream_bos_id", "audio_stream_eos_id", "bos_token_id", "eos_token_id", "pad_token_id"}
        _no_unknown(data, used | _HF_GENERIC, "config")
        _check_llama_common(data, "config")
        _check(data.get("tie_word_embeddings", False) is False,
               "tie_word_embeddings true (a tied text head) is not implemented")
        d = cls()
        rope = _rope_fields(data, "config")
        heads = data.get("num_attention_heads", d.num_attention_heads)
        hidden = data.get("hidden_size", d.hidden_size)
        codebook = data.get("codebook_size", 1024)  # [T] class default, wrong for the checkpoint (spec 3.4)
        return cls(
            vocab_size=data.get("vocab_size", d.vocab_size),
            hidden_size=hidden,
            intermediate_size=data.get("intermediate_size", d.intermediate_size),
            num_hidden_layers=data.get("num_hidden_layers", d.num_hidden_layers),
            num_attention_heads=heads,
            num_key_value_heads=data.get("num_key_value_heads") or heads,
            head_dim=data.get("head_dim") or hidden // heads,
            rms_norm_eps=data.get("rms_norm_eps", d.rms_norm_eps),
            max_position_embeddings=data.get("max_position_embeddings", 2048),
            num_codebooks=data.get("num_codebooks", d.num_codebooks),
            codebook_size=codebook - 2,
            audio_stream_bos_id=data.get("audio_stream_bos_id", d.audio_stream_bos_id),
            audio_stream_eos_id=data.get("audio_stream_eos_id", d.audio_stream_eos_id),
            use_text_head=use_text_head,
            bos_token_id=data.get("bos_token_id", 1),
            eos_token_id=data.get("eos_token_id", 128009),
            pad_token_id=data.get("pad_token_id", d.pad_token_id),
            audio_out_token_id=data.get("audio_token_id", d.audio_out_token_id),
            audio_out_bos_token_id=data.get("audio_bos_token_id", d.audio_out_bos_token_id),
            audio_delay_token_id=data.get("audio_delay_token_id", d.audio_delay_token_id),
            **rope,
        )

    # ---- [O] layout ------------------------------------------------------------------------------------------
    def to_original_dict(self, dtype: str = "bfloat16") -> dict:
        """The [O] ``config.json``: the fields of the published file that matter (spec 3.4), same names and
        nesting; the Whisper-tower / RQ-transformer fields the published model does not use are left out.

        Raises:
            ValueError: a config the layout cannot express (no text head: [O] always has one; a non-default
                ``audio_in_bos_token_id``). [O] has no ``audio_delay_token_id``: a non-default one is written as
                an extra top-level field that only tokenwave reads (the published id is never written).
        """
        if not self.use_text_head:
            raise ValueError("the original layout always has the text head (audio_decoder_proj.text_lm_head)")
        rope_scaling = None if self.rope_type == "default" else {
            "factor": self.rope_factor, "high_freq_factor": self.rope_high_freq_factor,
            "low_freq_factor": self.rope_low_freq_factor,
            "original_max_position_embeddings": self.rope_original_max_position_embeddings, "rope_type": "llama3"}
        text_config = {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": False,
            "model_type": "llama",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": rope_scaling,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": True,  # as published; irrelevant, the text head is a separate tensor in [O]
            "torch_dtype": dtype,
            "vocab_size": self.vocab_size,
        }
        out = {
            "architectures": ["HiggsAudioModel"],
            "audio_adapter_type": "dual_ffn_fast_forward",
            "audio_bos_token": "<|audio_bos|>",
            "audio_codebook_size": self.codebook_size,
            "audio_decoder_proj_num_layers": 0,
            "audio_dual_ffn_layers": list(range(self.num_hidden_layers)),
            "audio_embed_avg": False,
            "audio_eos_token": "<|audio_eos|>",
            "audio_eos_token_id": self.audio_eos_token_id,
            "audio_ffn_hidden_size": self.hidden_size,
            "audio_ffn_intermediate_size": self.intermediate_size,
            "audio_in_token": "<|AUDIO|>",
            "audio_in_token_idx": self.audio_in_token_id,
            "audio_num_codebooks": self.num_codebooks,
            "audio_out_bos_token": "<|audio_out_bos|>",
            "audio_out_bos_token_id": self.audio_out_bos_token_id,
            "audio_out_token": "<|AUDIO_OUT|>",
            "audio_out_token_idx": self.audio_out_token_id,
            "audio_stream_bos_id": self.audio_stream_bos_id,
            "audio_stream_eos_id": self.audio_stream_eos_id,
            "audio_tokenizer_config": None,
            "encode_audio_in_tokens": self.encode_audio_in_tokens,
            "encode_whisper_embed": False,
            "hidden_size": self.hidden_size,
            "model_type": ORIGINAL_MODEL_TYPE,
            "pad_token_id": self.pad_token_id,
            "skip_audio_tower": True,
            "text_config": text_config,
            "torch_dtype": dtype,
            "use_audio_out_embed_projector": False,
            "use_audio_out_self_attention": 0,
            "use_delay_pattern": self.use_delay_pattern,
            "use_rq_transformer": False,
        }
        if self.audio_delay_token_id != HiggsGenConfig.audio_delay_token_id:
            out["audio_delay_token_id"] = self.audio_delay_token_id  # tokenwave's extension; [O] has no such id
        back = HiggsGenConfig.from_original_dict(out)
        if back != self:
            raise ValueError(f"the original config layout cannot carry {_lost(self, back)}")
        return out

    @classmethod
    def from_original_dict(cls, data: dict) -> HiggsGenConfig:
        """A config from an [O] ``config.json`` dict (the text head always exists in [O]).

        Raises:
            ValueError: another model type, unknown fields, or values selecting parts of [O] we do not
                implement (fast-forward layers, audio self-attention, RQ transformer, Whisper tower, ...).
        """
        _check(data.get("model_type") == ORIGINAL_MODEL_TYPE,
               f"model_type {data.get('model_type')!r}, expected {ORIGINAL_MODEL_TYPE!r}")
        used = {"text_config", "audio_adapter_type", "audio_dual_ffn_layers", "audio_num_codebooks",
                "audio_codebook_size", "audio_stream_bos_id", "audio_stream_eos_id", "audio_in_token_idx",
                "audio_out_token_idx", "audio_out_bos_token_id", "audio_eos_token_id", "pad_token_id",
                "use_delay_pattern", "encode_audio_in_tokens", "audio_delay_token_id", *_ORIGINAL_REQUIRED}
        _no_unknown(data, used | _ORIGINAL_IGNORED | _HF_GENERIC, "config")
        for key, value in _ORIGINAL_REQUIRED.items():
            _check(key not in data or data[key] == value,
                   f"{key} = {data[key]!r} is not implemented (the published model has {value!r})")
        text = data.get("text_config")
        _check(isinstance(text, dict) and text,
               "text_config is missing or empty (a transformers-format config.json read as the original one?)")
        _check(text.get("model_type", "llama") == "llama",
               f"text_config.model_type {text.get('model_type')!r}, expected 'llama'")
        text_used = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps",
                     "rope_scaling", "rope_theta", "rope_parameters", "attention_bias", "mlp_bias", "bos_token_id",
                     "eos_token_id", "pad_token_id"}
        _no_unknown(text, text_used | _HF_GENERIC, "text_config")
        _check_llama_common(text, "text_config")
        d = cls()
        layers = text.get("num_hidden_layers", 32)  # LlamaConfig defaults where a field is absent
        adapter = data.get("audio_adapter_type", "stack")
        _check(adapter in _ORIGINAL_ADAPTERS,
               f"audio_adapter_type {adapter!r} is not implemented (implemented: {list(_ORIGINAL_ADAPTERS)})")
        dual = data.get("audio_dual_ffn_layers")
        _check(dual is not None and sorted(dual) == list(range(layers)),
               f"audio_dual_ffn_layers {dual} must list every layer 0..{layers - 1} (layers without the audio "
               "FFN are not implemented)")
        heads = text.get("num_attention_heads", 32)
        hidden = text.get("hidden_size", 4096)
        codebook = data.get("audio_codebook_size", d.codebook_size)
        rope = _rope_fields(text, "text_config")
        return cls(
            vocab_size=text.get("vocab_size", 32000),
            hidden_size=hidden,
            intermediate_size=text.get("intermediate_size", 11008),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=text.get("num_key_value_heads") or heads,
            head_dim=text.get("head_dim") or hidden // heads,
            rms_norm_eps=text.get("rms_norm_eps", 1e-6),
            max_position_embeddings=text.get("max_position_embeddings", 2048),
            num_codebooks=data.get("audio_num_codebooks", d.num_codebooks),
            codebook_size=codebook,
            audio_stream_bos_id=data.get("audio_stream_bos_id", codebook),
            audio_stream_eos_id=data.get("audio_stream_eos_id", codebook + 1),
            use_text_head=True,
            bos_token_id=text.get("bos_token_id", d.bos_token_id),
            eos_token_id=text.get("eos_token_id", d.eos_token_id),
            pad_token_id=data.get("pad_token_id", d.pad_token_id),
            audio_in_token_id=data.get("audio_in_token_idx", d.audio_in_token_id),
            audio_out_token_id=data.get("audio_out_token_idx", d.audio_out_token_id),
            audio_out_bos_token_id=data.get("audio_out_bos_token_id", d.audio_out_bos_token_id),
            audio_eos_token_id=data.get("audio_eos_token_id", d.audio_eos_token_id),
            audio_delay_token_id=data.get("audio_delay_token_id", d.audio_delay_token_id),
            use_delay_pattern=data.get("use_delay_pattern", d.use_delay_pattern),
            encode_audio_in_tokens=data.get("encode_audio_in_tokens", d.encode_audio_in_tokens),
            **rope,
        )


def config_format(data: dict) -> str:
    """``"original"`` or ``"transformers"`` from a ``config.json`` dict's ``model_type``.

    Raises:
        ValueError: any other model type.
    """
    model_type = data.get("model_type")
    if model_type == ORIGINAL_MODEL_TYPE:
        return "original"
    if model_type == TRANSFORMERS_MODEL_TYPE:
        return "transformers"
    raise ValueError(f"model_type {model_type!r} is not a Higgs Audio v2 generation model "
                     f"(expected {ORIGINAL_MODEL_TYPE!r} or {TRANSFORMERS_MODEL_TYPE!r})")


def _lost(wanted: HiggsGenConfig, got: HiggsGenConfig) -> dict:
    """Fields of ``wanted`` that a layout did not carry (read back as ``got``)."""
    return {f.name: getattr(wanted, f.name) for f in fields(wanted) if getattr(wanted, f.name) != getattr(got, f.name)}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _no_unknown(data: dict, known: set | frozenset, where: str) -> None:
    unknown = sorted(set(data) - set(known))
    _check(not unknown, f"{where} has unknown field(s) {unknown}")


def _check_llama_common(data: dict, where: str) -> None:
    """Llama options whose other values change the network and are not implemented."""
    _check(data.get("hidden_act", "silu") == "silu", f"{where}.hidden_act {data.get('hidden_act')!r} (only 'silu')")
    for key in ("attention_bias", "mlp_bias"):
        _check(not data.get(key, False), f"{where}.{key} true is not implemented (the published model has none)")


def _rope_fields(data: dict, where: str) -> dict:
    """Our rope fields from ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling`` (4.x)."""
    params = data.get("rope_parameters")
    if params is None:
        scaling = data.get("rope_scaling") or {}
        params = {**scaling, "rope_theta": data.get("rope_theta", 10000.0)}
        params.setdefault("rope_type", scaling.get("type", "default"))
    kind = params.get("rope_type", params.get("type", "default"))
    out = {"rope_type": kind, "rope_theta": float(params.get("rope_theta", 10000.0))}
    if kind == "default":
        return out
    _check(kind == "llama3", f"{where}: rope type {kind!r} is not implemented (implemented: 'llama3', 'default')")
    missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
               if k not in params]
    _check(not missing, f"{where}: llama3 rope parameters lack {missing}")
    return {**out, "rope_factor": float(params["factor"]), "rope_low_freq_factor": float(params["low_freq_factor"]),
            "rope_high_freq_factor": float(params["high_freq_factor"]),
            "rope_original_max_position_embeddings": int(params["original_max_position_embeddings"])}
