"""The Higgs Audio v2 generation network: Llama-3.2-3B decoder layers with a DualFFN audio adapter on every layer.

Our own implementation of ``spec_generation.md`` section 3 (facts checked against transformers 5.23 [T] and the
original ``boson_multimodal`` [O]; the math of both is identical, spec 3.2). Module and parameter names are
[T]'s, so a [T] checkpoint loads without renaming (:mod:`tokenwave.tts.checkpoint` renames [O]'s).

Shapes: ``B`` batch, ``S`` new positions in this call, ``H`` hidden (3072), ``K`` codebooks (8), ``V_a`` ids per
codebook (1026), ``V`` text vocabulary (128 256), ``L`` layers (28), ``Hkv`` KV heads (8), ``D`` head dim (128).

Forward, per call (:meth:`HiggsGenModel.forward`)::

    x[b, s]  = E_text[input_ids[b, s]]                      where not audio_mask[b, s]     (spec 3.1)
             = sum_k A[k * V_a + audio_codes[b, s, k]]        where audio_mask[b, s]
    for each layer:                                                                        (spec 3.2)
        a = audio_mask ? RMSNorm_audio_in(x) : RMSNorm_in(x)
        x = x + Attn(a)                 shared causal GQA attention over all positions, RoPE, KV cache
        x = x + (audio_mask ? MLP_audio(RMSNorm_audio_post(x)) : MLP_text(RMSNorm_post(x)))
    h = RMSNorm_final(x)
    audio_logits = (W_audio h).view(K, V_a);  text_logits = W_text h                      (spec 3.3)

Hooks: forward hooks on the decoder layers, the final norm and the heads fire; the modules inside a layer
(projections, norms, MLPs) are applied through their weights, not called (a module call costs more than the
matmul of a small decode step).

Batching: **right padding**. Every sequence ``b`` of a call brings ``lengths[b] <= S`` new positions at the front
of its row (the rest is padding and ignored). Its position ``j`` gets RoPE position and cache slot
``cache.lengths[b] + j``, exactly what it would get if run alone, so a padded batch reproduces each sequence's
solo logits (up to float rounding of batched matmuls). Only valid positions are written to the cache; a query
attends to cache slots ``<= its own position``, all of which belong to its own sequence.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import HiggsGenConfig


class CacheOverflowError(ValueError):
    """A prompt or decoding step that does not fit in the preallocated KV cache."""


_SCALARS: dict[float, torch.Tensor] = {}


def _scalar(value: float) -> torch.Tensor:
    """A 0-dim float32 CPU tensor of ``value``, made once: an operand that costs less per call than a Python
    number (which is wrapped into a tensor at every call) and gives the same float32 result."""
    t = _SCALARS.get(value)
    if t is None:
        t = _SCALARS[value] = torch.tensor(value, dtype=torch.float32)
    return t


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:class:`RMSNorm`'s computation as a function (the decoder calls it with the module's weight, which saves
    the module-call overhead that dominates a small decode step). On the CPU ``mean`` is written as its kernel
    computes it there (sum, then divide by the count): the same bits with fewer dispatches."""
    x32 = x if x.dtype == torch.float32 else x.float()
    sq = x32.pow(2)
    if x.device.type == "cpu":
        ms = sq.sum(-1, keepdim=True).div_(_scalar(float(x.shape[-1])))
    else:
        ms = sq.mean(-1, keepdim=True)
    y = x32 * ms.add_(_scalar(eps)).rsqrt_()
    return weight * (y if y.dtype == x.dtype else y.to(x.dtype))


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)``: the normalisation in float32, cast back to the input dtype before the
    weight multiply ([T] ``HiggsAudioV2RMSNorm`` and [O]'s Llama RMSNorm do the same)."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def _weights(module: nn.Module, *names: str) -> list[torch.Tensor]:
    """The ``weight`` parameters of ``module``'s children ``names``, read from the module's dicts: what attribute
    access returns, without ``nn.Module.__getattr__``'s fallback, whose cost adds up over the ~50 reads of a small
    decode step."""
    children = module._modules
    return [children[name]._parameters["weight"] for name in names]


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``, no biases (Llama)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up, down = _weights(self, "gate_proj", "up_proj", "down_proj")
        return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def rope_tables(inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype):
    """``cos`` and the *signed* sine ``[-sin, sin]`` ``[B, 1, S, D]`` in ``dtype`` for :func:`apply_rope`, for
    integer ``positions`` ``[B, S]``: angle ``pos * inv_freq`` (float32), duplicated over both halves of the head
    dim, cast like [T]; the sine's first half negated (exact)."""
    freqs = positions[..., None].float() * inv_freq
    sin = freqs.sin()
    return torch.cat((freqs, freqs), dim=-1).cos().to(dtype)[:, None], torch.cat((-sin, sin), -1).to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` (the rotate-half convention of Llama / [T] / [O], ``rotate_half([x1,
    x2]) = [-x2, x1]``), bit for bit, with fewer operations: ``rotate_half(x) * sin`` equals ``roll(x, D/2) *
    [-sin, sin]`` because negation is exact."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


class KVCache:
    """Preallocated keys and values of every layer for a batch of sequences.

    Attributes:
        k, v: ``[B, L, Hkv, max_len, D]`` buffers (zeros at creation).
        lengths: ``[B]`` int64 tensor on the cache's device, positions already stored per sequence (cache slots
            ``0 .. lengths[b] - 1``); :attr:`host_lengths` is the same as a Python list (kept by the cache, so a
            decode step needs no device round trip to know where to write).

    Sequence ``b``'s position ``p`` lives in slot ``p`` (right padding; see the module docstring). The model
    writes the new positions of every layer during a forward and then calls :meth:`advance` once.
    """

    def __init__(self, config: HiggsGenConfig, batch_size: int, max_len: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"KVCache needs batch_size >= 1 and max_len >= 1, got {batch_size}, {max_len}")
        shape = (batch_size, config.num_hidden_layers, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        # per-layer views [B, Hkv, max_len, D], made once (select, not unbind: writable under autograd too)
        self._k_layers = [self.k.select(1, i) for i in range(config.num_hidden_layers)]
        self._v_layers = [self.v.select(1, i) for i in range(config.num_hidden_layers)]
        self.host_lengths: list[int] = [0] * batch_size
        self.rope: tuple | None = None  # the model's RoPE tables of every slot (HiggsGenModel._rope_tables)

    @classmethod
    def for_model(cls, model: HiggsGenModel, batch_size: int, max_len: int) -> KVCache:
        """A cache on the model's device and in its dtype."""
        p = model.audio_lm_head.weight
        return cls(model.config, batch_size, max_len, device=p.device, dtype=p.dtype)

    @property
    def batch_size(self) -> int:
        return self.k.shape[0]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor(self.host_lengths, dtype=torch.long, device=self.k.device)

    def reset(self) -> None:
        """Forget every sequence (the buffers are reused as they are)."""
        self.host_lengths = [0] * self.batch_size

    def advance(self, num_new: list[int]) -> None:
        """Count ``num_new[b]`` more stored positions for each sequence (after they were written)."""
        self.host_lengths = [n + m for n, m in zip(self.host_lengths, num_new)]

    def check_room(self, num_new: list[int]) -> None:
        """Raise :class:`CacheOverflowError` unless ``lengths + num_new <= max_len`` for every sequence."""
        for b, (n, m) in enumerate(zip(self.host_lengths, num_new)):
            if n + m > self.max_len:
                raise CacheOverflowError(
                    f"sequence {b} needs {n + m} positions ({n} cached + {m} new) but the KV cache holds "
                    f"{self.max_len}; allocate a larger KVCache")

    def plan(self, num_new: list[int], seq: int) -> _WritePlan:
        """Where the ``seq`` new positions of a call go (once per forward; used by :meth:`write` for every layer):
        new position ``s < num_new[b]`` of sequence ``b`` -> slot ``lengths[b] + s``; padding is not stored."""
        return _WritePlan(self.host_lengths, num_new, seq, self.k.device)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, plan: _WritePlan) -> None:
        """Store new keys / values ``[B, Hkv, S, D]`` of ``layer`` where ``plan`` says."""
        k_layer, v_layer = self._k_layers[layer], self._v_layers[layer]
        if plan.start is not None:  # every sequence writes all S positions from the same slot: one slice
            k_layer[:, :, plan.start:plan.start + k.shape[2]] = k
            v_layer[:, :, plan.start:plan.start + v.shape[2]] = v
            return
        b_idx, s_idx, slots = plan.index
        # [B, T, Hkv, D] views of the layer, indexed by (sequence, slot) <- the new rows [n, Hkv, D]
        k_layer.transpose(1, 2).index_put_((b_idx, slots), k.transpose(1, 2)[b_idx, s_idx].to(self.k.dtype))
        v_layer.transpose(1, 2).index_put_((b_idx, slots), v.transpose(1, 2)[b_idx, s_idx].to(self.v.dtype))

    def read(self, layer: int, upto: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, Hkv, upto, D]`` of slots ``0 .. upto - 1`` of ``layer`` (views)."""
        return self._k_layers[layer][:, :, :upto], self._v_layers[layer][:, :, :upto]


class _WritePlan:
    """Cache slots of one call's new positions, from the host-side lengths (no device round trip): ``start``
    (all sequences aligned and unpadded: slots ``start .. start + S - 1``) or ``index`` = ``(b, s, slot)`` 1-D
    tensors of the valid positions."""

    def __init__(self, cache_lengths: list[int], num_new: list[int], seq: int, device: torch.device) -> None:
        self.start: int | None = None
        self.index: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if all(m == seq for m in num_new) and all(n == cache_lengths[0] for n in cache_lengths):
            self.start = cache_lengths[0]
        else:
            rows = [(b, s, n + s) for b, (n, m) in enumerate(zip(cache_lengths, num_new)) for s in range(m)]
            index = torch.tensor(rows, dtype=torch.long).reshape(-1, 3).T.to(device)
            self.index = (index[0], index[1], index[2])


class _Step(NamedTuple):
    """What every layer of one forward shares: the cache, where to write in it, RoPE tables ``[B, 1, S, D]``
    (cosine and signed sine, :func:`rope_tables`), the attention mask ``[B, 1, S, upto]`` (True = may attend;
    None: every query may read every slot ``0 .. upto - 1``) over cache slots ``0 .. upto - 1``."""

    cache: KVCache
    plan: _WritePlan
    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor | None
    upto: int


class Attention(nn.Module):
    """Causal GQA self-attention with RoPE through ``scaled_dot_product_attention`` (scale ``1/sqrt(D)``).

    ``q = W_q a`` (``n_q`` heads), ``k = W_k a``, ``v = W_v a`` (``n_kv`` heads, each shared by ``n_q / n_kv``
    query heads: SDPA's ``enable_gqa``), RoPE on ``q`` and ``k``, keys/values from the cache, output ``W_o``.
    Softmax precision: SDPA's (float32 accumulation in its CPU and CUDA kernels).
    """

    def __init__(self, config: HiggsGenConfig) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.gqa = self.num_heads != self.num_kv_heads
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)

    def forward(self, a: torch.Tensor, step: _Step, layer: int) -> torch.Tensor:
        """``a`` ``[B, S, H]`` -> ``[B, S, H]``; keys/values of ``layer`` are appended to ``step.cache``."""
        b, s, _ = a.shape
        # F.linear with the modules' weights: a module call costs more than the matmul of a small decode step
        w_q, w_k, w_v, w_o = _weights(self, "q_proj", "k_proj", "v_proj", "o_proj")
        q = F.linear(a, w_q).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = F.linear(a, w_k).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = F.linear(a, w_v).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, step.cos, step.sin), apply_rope(k, step.cos, step.sin)
        step.cache.write(layer, k, v, step.plan)
        keys, values = step.cache.read(layer, step.upto)
        if keys.dtype != q.dtype:  # a cache in another dtype than the model's
            keys, values = keys.to(q.dtype), values.to(q.dtype)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=step.mask, enable_gqa=self.gqa)
        return F.linear(out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim), w_o)


class DualFFNDecoderLayer(nn.Module):
    """One Llama layer with the DualFFN audio adapter (spec 3.2; [T] ``HiggsAudioV2DecoderLayer``, [O]
    ``HiggsAudioDualFFNDecoderLayer``)::

        a = m ? RMSNorm_audio_in(x) : RMSNorm_in(x)
        x = x + Attn(a)                                  (one attention, shared by text and audio positions)
        x = x + (m ? MLP_audio(RMSNorm_audio_post(x)) : MLP_text(RMSNorm_post(x)))
    """

    def __init__(self, config: HiggsGenConfig) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = Attention(config)
        self.mlp = MLP(h, config.intermediate_size)
        self.input_layernorm = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.audio_mlp = MLP(h, config.intermediate_size)
        self.audio_input_layernorm = RMSNorm(h, eps)
        self.audio_post_attention_layernorm = RMSNorm(h, eps)
        self.eps = eps

    def forward(self, x: torch.Tensor, route: _Route, step: _Step, layer: int) -> torch.Tensor:
        if route.kind == "mixed":
            x = x + self.self_attn.forward(route.apply(x, self.input_layernorm, self.audio_input_layernorm), step,
                                           layer)
            return x + route.apply(x, lambda t: self.mlp(self.post_attention_layernorm(t)),
                                   lambda t: self.audio_mlp(self.audio_post_attention_layernorm(t)))
        # one branch for every position (a decode step, a text-only prompt): plain calls, no routing
        children = self._modules
        if route.kind == "audio":
            w_in, w_post = _weights(self, "audio_input_layernorm", "audio_post_attention_layernorm")
            mlp = children["audio_mlp"]
        else:
            w_in, w_post = _weights(self, "input_layernorm", "post_attention_layernorm")
            mlp = children["mlp"]
        x = x + children["self_attn"].forward(rms_norm(x, w_in, self.eps), step, layer)
        return x + mlp.forward(rms_norm(x, w_post, self.eps))


class _Route:
    """Which positions take the text branch and which the audio branch, computed once per forward.

    ``apply(x, f_text, f_audio)`` returns ``f_audio(x)`` at audio positions and ``f_text(x)`` elsewhere, running
    each function only on its own rows (no wasted MLP work; one branch only when the call is all text / all
    audio, e.g. an audio decode step)."""

    def __init__(self, audio_mask: torch.Tensor | None) -> None:
        if audio_mask is None:  # every position is audio (an audio decode step)
            self.kind = "audio"
            return
        flat = audio_mask.reshape(-1)
        n_audio = int(flat.sum())
        self.kind = "text" if n_audio == 0 else "audio" if n_audio == flat.numel() else "mixed"
        if self.kind == "mixed":
            self.audio_rows = flat.nonzero().squeeze(1)
            self.text_rows = (~flat).nonzero().squeeze(1)

    def apply(self, x: torch.Tensor, f_text, f_audio) -> torch.Tensor:
        if self.kind == "text":
            return f_text(x)
        if self.kind == "audio":
            return f_audio(x)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(flat)
        out[self.text_rows] = f_text(flat[self.text_rows]).to(out.dtype)
        out[self.audio_rows] = f_audio(flat[self.audio_rows]).to(out.dtype)
        return out.view_as(x)


_ALL_AUDIO = _Route(None)


class AudioEmbedding(nn.Module):
    """Summed codebook embedding (spec 3.1): frame ``c [..., K]`` -> ``sum_k A[k * V_a + c_k]`` ``[..., H]``.

    One table ``A`` ``[K * V_a, H]``, row ``k * V_a + j`` = codebook ``k``, id ``j`` ([T]
    ``HiggsAudioV2Embeddings``; [O] ``audio_codebook_embeddings``). No scaling, no projection. The offsets
    ``k * V_a`` are computed, not stored (neither format stores them)."""

    def __init__(self, num_codebooks: int, audio_vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.num_codebooks, self.audio_vocab_size = num_codebooks, audio_vocab_size
        self.embed_audio_tokens = nn.Embedding(num_codebooks * audio_vocab_size, hidden_size)
        self._offsets: dict[torch.device, torch.Tensor] = {}

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        offsets = self._offsets.get(codes.device)
        if offsets is None:
            offsets = self._offsets[codes.device] = (torch.arange(self.num_codebooks, device=codes.device)
                                                     * self.audio_vocab_size)
        return F.embedding(codes + offsets, self.embed_audio_tokens.weight).sum(dim=-2)


class HiggsGenBackbone(nn.Module):
    """Embeddings, the DualFFN decoder stack and the final norm ([T] ``HiggsAudioV2Model``)."""

    def __init__(self, config: HiggsGenConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_audio_tokens = AudioEmbedding(config.num_codebooks, config.audio_vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DualFFNDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class HiggsGenOutput(NamedTuple):
    """Logits of one forward, float32 (both references sample from float32 logits, spec 9 #18).

    text_logits: ``[B, S, V]`` (``[B, 1, V]`` with ``last_only``), None without a text head or when not asked.
    audio_logits: ``[B, S, K, V_a]`` (``[B, 1, K, V_a]`` with ``last_only``), None when not asked.
    """

    text_logits: torch.Tensor | None
    audio_logits: torch.Tensor | None


class HiggsGenModel(nn.Module):
    """Higgs Audio v2 generation model: backbone, audio head (``H -> K * V_a``, read as ``[K, V_a]``
    codebook-major) and the optional untied text head (``H -> V``).

    Build on the meta device and load with :func:`tokenwave.tts.checkpoint.load_pretrained`; the model holds
    no buffers (RoPE frequencies and embedding offsets are computed from :attr:`config`).
    """

    def __init__(self, config: HiggsGenConfig) -> None:
        super().__init__()
        self.config = config
        self.model = HiggsGenBackbone(config)
        h = config.hidden_size
        self.audio_lm_head = nn.Linear(h, config.num_codebooks * config.audio_vocab_size, bias=False)
        self.text_lm_head = nn.Linear(h, config.vocab_size, bias=False) if config.use_text_head else None
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs) -> HiggsGenModel:
        """:func:`tokenwave.tts.checkpoint.load_pretrained` (either format, folder or hub id)."""
        from .checkpoint import load_pretrained

        return load_pretrained(name_or_path, **kwargs)

    def save_pretrained(self, folder, *, format: str = "transformers", **kwargs):
        """:func:`tokenwave.tts.checkpoint.save_pretrained`: ``format`` ``"transformers"`` or ``"original"``."""
        from .checkpoint import save_pretrained

        return save_pretrained(self, folder, format=format, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.audio_lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.audio_lm_head.weight.dtype

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """A :class:`KVCache` for ``batch_size`` sequences of up to ``max_len`` positions, on the model's device
        and in its dtype (published model, bf16: ``B * max_len * 114 688`` bytes)."""
        return KVCache.for_model(self, batch_size, max_len)

    def audio_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Default audio mask ``[B, S]`` bool: ``input_ids`` in :attr:`HiggsGenConfig.audio_token_ids`
        (``<|AUDIO|>``, ``<|AUDIO_OUT|>``, ``<|reserved_special_token_6|>``; spec 3.1)."""
        ids = torch.tensor(self.config.audio_token_ids, device=input_ids.device)
        return torch.isin(input_ids, ids)

    def embed(self, input_ids: torch.Tensor | None = None, audio_codes: torch.Tensor | None = None,
              audio_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings ``[B, S, H]`` and the audio mask ``[B, S]`` (spec 3.1).

        Args:
            input_ids: ``[B, S]`` text ids, or None for an all-audio call (e.g. an audio decode step).
            audio_codes: ``[B, S, K]`` ids in ``0 .. V_a - 1`` aligned with the positions; read only where
                ``audio_mask`` is set (any value elsewhere). See :func:`scatter_frames` for the [T] layout of
                compact frames.
            audio_mask: ``[B, S]`` bool, True where the position is an audio frame; default
                :meth:`audio_mask` of ``input_ids`` (all True without ``input_ids``).
        """
        cfg = self.config
        if input_ids is None:
            if audio_codes is None:
                raise ValueError("give input_ids, audio_codes or both")
            if audio_mask is not None and not bool(audio_mask.all()):
                raise ValueError("without input_ids every position must be audio")
            self._check_codes(audio_codes, audio_codes.shape[:2])
            x = self.model.embed_audio_tokens(audio_codes)
            return x, torch.ones(audio_codes.shape[:2], dtype=torch.bool, device=audio_codes.device)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, S], got shape {tuple(input_ids.shape)}")
        if audio_mask is None:
            audio_mask = self.audio_mask(input_ids)
        elif audio_mask.shape != input_ids.shape:
            raise ValueError(f"audio_mask {tuple(audio_mask.shape)} must have the shape of input_ids "
                             f"{tuple(input_ids.shape)}")
        audio_mask = audio_mask.to(device=input_ids.device, dtype=torch.bool)
        if audio_codes is not None and bool(audio_mask.all()):  # all audio (an audio decode step): no text lookup
            self._check_codes(audio_codes, input_ids.shape)
            if bool(((audio_codes < 0) | (audio_codes >= cfg.audio_vocab_size)).any()):
                raise ValueError(f"audio_codes out of range 0..{cfg.audio_vocab_size - 1} at audio positions")
            return self.model.embed_audio_tokens(audio_codes).to(self.model.embed_tokens.weight.dtype), audio_mask
        if bool(((input_ids < 0) | (input_ids >= cfg.vocab_size))[~audio_mask].any()):
            raise ValueError(f"input_ids out of range 0..{cfg.vocab_size - 1}")
        x = self.model.embed_tokens(input_ids.clamp(0, cfg.vocab_size - 1))
        if bool(audio_mask.any()):
            if audio_codes is None:
                raise ValueError("audio positions (audio_mask) need audio_codes")
            self._check_codes(audio_codes, input_ids.shape)
            frames = audio_codes[audio_mask]
            if bool(((frames < 0) | (frames >= cfg.audio_vocab_size)).any()):
                raise ValueError(f"audio_codes out of range 0..{cfg.audio_vocab_size - 1} at audio positions")
            x = x.clone()
            x[audio_mask] = self.model.embed_audio_tokens(frames).to(x.dtype)
        return x, audio_mask

    def _check_codes(self, audio_codes: torch.Tensor, shape) -> None:
        want = (*tuple(shape), self.config.num_codebooks)
        if tuple(audio_codes.shape) != want:
            raise ValueError(f"audio_codes must be [B, S, K] = {want}, got {tuple(audio_codes.shape)}")

    def forward(self, input_ids: torch.Tensor | None = None, audio_codes: torch.Tensor | None = None,
                audio_mask: torch.Tensor | None = None, *, inputs_embeds: torch.Tensor | None = None,
                cache: KVCache | None = None, lengths: torch.Tensor | None = None, last_only: bool = False,
                text_logits: bool = True, audio_logits: bool = True) -> HiggsGenOutput:
        """Logits for ``S`` new positions of ``B`` sequences: a prefill (``S`` = prompt length) or a decode step
        (``S = 1``), with per-sequence ``lengths`` (right padding) and an optional :class:`KVCache`.

        Args:
            input_ids: ``[B, S]`` text ids (placeholders at audio positions), or None for all-audio input.
            audio_codes: ``[B, S, K]`` audio ids at the audio positions (see :meth:`embed`).
            audio_mask: ``[B, S]`` bool, the positions that take the audio branch of every layer (default from
                ``input_ids``, see :meth:`audio_mask`; all True without ``input_ids``).
            inputs_embeds: ``[B, S, H]`` embeddings instead of ids/codes (then ``audio_mask`` defaults to all
                False, i.e. text branch).
            cache: keys/values of earlier positions; the new ones are appended and ``cache.lengths`` advanced.
                None: a throwaway cache for this call alone (plain causal forward from position 0).
            lengths: ``[B]`` new positions per sequence (``0 .. S``; default ``S``); row ``b``'s positions
                ``lengths[b] ..`` are padding: their logits are meaningless.
            last_only: return the logits of each sequence's last new position only (``[B, 1, ...]``).
            text_logits, audio_logits: which heads to evaluate.

        Positions: new position ``j`` of sequence ``b`` has RoPE position ``cache.lengths[b] + j``.

        Raises:
            CacheOverflowError: the new positions do not fit in ``cache``.
            ValueError: inconsistent shapes or ids out of range.
        """
        if inputs_embeds is not None:
            if input_ids is not None or audio_codes is not None:
                raise ValueError("give inputs_embeds or input_ids / audio_codes, not both")
            x = inputs_embeds
            mask = (torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device) if audio_mask is None
                    else audio_mask.to(device=x.device, dtype=torch.bool))
        else:
            x, mask = self.embed(input_ids, audio_codes, audio_mask)
        batch, seq = x.shape[:2]
        device = x.device
        if cache is None:
            cache = KVCache(self.config, batch, max(seq, 1), device=device, dtype=x.dtype)
        if cache.batch_size != batch:
            raise ValueError(f"the KV cache holds {cache.batch_size} sequences, the input {batch}")
        if lengths is None:
            num_new = [seq] * batch
        else:
            given = torch.as_tensor(lengths, dtype=torch.long)
            num_new = given.reshape(-1).tolist()
            if given.dim() != 1 or len(num_new) != batch or any(m < 0 or m > seq for m in num_new):
                raise ValueError(f"lengths must be [B] = [{batch}] with values in 0..{seq}, got {num_new}")
        cache.check_room(num_new)
        return self._run(x, _Route(mask), cache, num_new, last_only=last_only, text_logits=text_logits,
                         audio_logits=audio_logits)

    def decode_audio(self, frames: torch.Tensor, cache: KVCache, *, active: list[bool] | None = None) -> torch.Tensor:
        """One audio decode step: each sequence ``b`` is fed the delayed frame ``frames[b]`` (``[B, K]``, ids in
        ``0 .. V_a - 1``) as one audio position; returns the audio logits ``[B, K, V_a]`` (float32) of that
        position. ``active[b]`` False: sequence ``b`` is not fed (its row of the result is meaningless and its
        cache does not advance).

        The same computation as :meth:`forward` with ``input_ids`` of ``<|AUDIO_OUT|>`` and ``last_only``, minus
        the input checks a generation loop does not need (its frames come from :func:`next_audio_frame`); the
        ids are not range-checked here.

        Raises:
            CacheOverflowError: a fed sequence whose cache is full.
            ValueError: ``frames`` or ``active`` of the wrong shape.
        """
        if frames.dim() != 2 or frames.shape[1] != self.config.num_codebooks:
            raise ValueError(f"frames must be [B, K] with K = {self.config.num_codebooks}, got {tuple(frames.shape)}")
        b = frames.shape[0]
        if cache.batch_size != b:
            raise ValueError(f"the KV cache holds {cache.batch_size} sequences, the input {b}")
        if active is None:
            num_new = [1] * b
        elif len(active) != b:
            raise ValueError(f"active must have one flag per sequence ({b}), got {len(active)}")
        else:
            num_new = [1 if a else 0 for a in active]
        cache.check_room(num_new)
        x = self.model.embed_audio_tokens.forward(frames[:, None]).to(self.model.embed_tokens.weight.dtype)
        return self._run(x, _ALL_AUDIO, cache, num_new, last_only=True, text_logits=False,
                         audio_logits=True).audio_logits[:, 0]

    def _run(self, x: torch.Tensor, route: _Route, cache: KVCache, num_new: list[int], *, last_only: bool,
             text_logits: bool, audio_logits: bool) -> HiggsGenOutput:
        """The decoder stack and heads over embeddings ``x`` ``[B, S, H]`` whose row ``b`` brings ``num_new[b]``
        new positions (checked to fit in ``cache``)."""
        batch, seq = x.shape[:2]
        device = x.device
        starts = cache.host_lengths
        upto = max(max(n + m for n, m in zip(starts, num_new)), 1)
        cos_all, sin_all = self._rope_tables(cache, x.dtype)  # [max_len, D]
        if seq == 1 and all(n == starts[0] for n in starts):
            # one new position at the same slot p for every sequence: it may read every slot 0..p, no mask
            p = min(starts[0], cache.max_len - 1)  # (beyond the cache only when no row is fed: meaningless)
            cos, sin = cos_all[p:p + 1][None, None], sin_all[p:p + 1][None, None]
            attn_mask = None
        else:
            positions = torch.tensor(starts, device=device)[:, None] + torch.arange(seq, device=device)  # [B, S]
            table_rows = positions.clamp(max=cache.max_len - 1)  # padding may lie beyond the cache: meaningless
            cos, sin = cos_all[table_rows][:, None], sin_all[table_rows][:, None]
            # query at position p may read slots 0..p (its own sequence's, since slot = position)
            attn_mask = (torch.arange(upto, device=device)[None, None, :] <= positions[:, :, None])[:, None]
        step = _Step(cache, cache.plan(num_new, seq), cos, sin, attn_mask, upto)
        for i, layer in enumerate(self.model.layers):  # module calls: forward hooks on layers fire
            x = layer(x, route, step, i)
        cache.advance(num_new)

        if last_only and seq > 1:  # with one new position, x is already each sequence's last one
            last = torch.tensor([max(m - 1, 0) for m in num_new], device=device)
            x = x[torch.arange(batch, device=device), last][:, None]
        h = self.model.norm(x)
        # module calls for the norm and the heads (once per forward): their forward hooks see the hidden states
        text = self.text_lm_head(h).float() if text_logits and self.text_lm_head is not None else None
        audio = None
        if audio_logits:
            audio = self.audio_lm_head(h).float().view(*h.shape[:2], self.config.num_codebooks,
                                                       self.config.audio_vocab_size)
        return HiggsGenOutput(text, audio)

    def _rope_tables(self, cache: KVCache, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cosine and signed sine ``[max_len, D]`` of every cache slot (:func:`rope_tables`), made once per
        cache, config and dtype and kept on the cache."""
        key = (self.config, dtype)
        if cache.rope is None or cache.rope[0] != key:
            device = cache.device
            positions = torch.arange(cache.max_len, device=device)[None]
            cos, sin = rope_tables(self._rope(device), positions, dtype)
            cache.rope = (key, cos[0, 0], sin[0, 0])
        return cache.rope[1], cache.rope[2]

    def _rope(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:
            self._inv_freq[device] = self.config.rope_inv_freq().to(device)
        return self._inv_freq[device]


def scatter_frames(audio_mask: torch.Tensor, frames: torch.Tensor,
                   frames_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position ``audio_codes`` ``[B, S, K]`` from compact frames ``[B, F, K]`` ([T]'s ``audio_input_ids``):
    the valid frames of row ``b`` (``frames_mask[b]``, default all) fill the audio positions of row ``b`` in
    order ([T] ``masked_scatter``); text positions get 0.

    Raises:
        ValueError: a row whose number of valid frames differs from its number of audio positions.
    """
    if frames_mask is None:
        frames_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    frames_mask = frames_mask.to(torch.bool)
    need, have = audio_mask.sum(1), frames_mask.sum(1)
    if not torch.equal(need.cpu(), have.cpu()):
        raise ValueError(f"audio positions per row {need.tolist()} != valid frames per row {have.tolist()}")
    out = frames.new_zeros((*audio_mask.shape, frames.shape[-1]))
    out[audio_mask] = frames[frames_mask]
    return out
