"""Choosing Higgs Audio v2's next audio frame from the audio logits: sampling, repetition-aware sampling and
the delay-pattern start/end rules (spec ``spec_generation.md`` sections 5, 6 and 9).

References: **[O]** the original ``boson_multimodal`` 0.1.1 (``HiggsAudioModel._sample_audio_tokens``;
transformers 4.46's logits warpers); **[T]** transformers 5.23 (``HiggsAudioV2GenerationMixin._sample``
with ``HiggsAudioV2DelayPatternLogitsProcessor``). [O] is the default everywhere; ``reference=
"transformers"`` reproduces [T] exactly (same frames and, with the global generator, the same random
stream), which lets a generation loop be checked against the installed transformers.

* :class:`SamplingConfig`: greedy or sampling with temperature / top-k / top-p, each one value or one per
  codebook; repetition-aware sampling (RAS) window and repeat limit; which reference to follow.
* :func:`process_logits`: temperature, then top-k, then top-p, per codebook (transformers' warpers' math
  and order, as both references use them).
* :func:`repetition_counts`: RAS's count of the candidate id in the recent frames.
* :class:`AudioStreamState` + :func:`next_audio_frame`: one generation step for a batch, ``(state,
  logits [B, K, V]) -> (frame [B, K], new state, ended)``, pure apart from the random draws.
* :func:`make_generator`: a seeded ``torch.Generator`` (as the original's ``seed`` argument makes one).

The step, per item, following [O] (``reference="original"``):

1. An item that has not started its audio span gets the all-BOS frame, without sampling (the original's
   AUDIO_INIT step: the logits of that step are ignored and no random number is drawn).
2. Otherwise: scores = ``process_logits(logits)`` when sampling; the id is drawn from ``softmax(scores)``
   (``torch.multinomial``) or is ``argmax(logits)`` when greedy (transformers 4.46 builds no warpers when
   not sampling; they would not move the argmax anyway).
3. RAS, for all ``K`` codebooks: if the chosen id occurs at least ``ras_max_repeat`` times among the same
   codebook's ids in the last ``ras_window`` frames of the history (BOS/EOS ids and reference-audio frames
   included), it is redrawn from ``softmax(logits)`` (raw logits: no temperature, top-k, top-p), also when
   decoding greedily.
4. Delay ramp: codebook ``k`` is BOS while fewer than ``k + 1`` frames of the span (the all-BOS frame
   included) have been emitted, so the span starts with the staircase of :func:`build_delay_pattern`.
5. End countdown: when no countdown runs and the frame holds a stream EOS, with ``i`` the smallest such
   codebook, codebooks ``< i`` are set to EOS and a countdown starts; ``m`` steps later codebooks
   ``< i + m`` are set to EOS. The span ends on the frame with ``m = K - 1 - i`` (``ended``; the original
   emits ``<|audio_eos|>`` as the text token of that step). On that last frame codebook ``K - 1`` stays as
   sampled (the original does not force it; it falls in the frame that ``[:, 1:-1]`` drops). The spec's
   "high codebooks not forced" (section 9, row 9) is exactly this one codebook, whatever ``i``.

Steps 4 and 5 are applied after RAS, so RAS may redraw ids that are then overwritten (and such draws still
use random numbers, as in the original).

With ``reference="transformers"`` (spec 6.2, differences in spec 9):

* every item is sampled at every step (the all-BOS first frame comes from masking; finished items are
  sampled too and then replaced by all-EOS frames), so the random stream matches transformers';
* forced ids (BOS ramp, EOS countdown) are imposed by setting every other logit to ``-inf`` *before*
  temperature/top-k/top-p and the draw, not by overwriting after;
* RAS does not count BOS/EOS ids of the window (so forced ids are never redrawn);
* end countdown: after the first frame holding any EOS, ``m`` steps later codebooks ``< m`` are forced to
  EOS (no immediate forcing of codebooks below the first EOS codebook); the span ends on the first frame
  that is all EOS (transformers then emits ``eos_token_id``), at the latest ``K`` steps after the first EOS.
  A finished item's countdown stops advancing (transformers counts only steps whose previous text token is
  ``<|reserved_special_token_6|>``); this only shows in which ids RAS looks at, hence in the random stream.
* transformers derives its counters from the last 8 prompt ids; :meth:`AudioStreamState.start` is its state
  for a prompt ending with ``<|audio_out_bos|>`` (what its chat template produces). Other prompt endings
  (an ``<|audio_out_bos|>`` further back, delay tokens in the tail) are not modelled.

Random numbers: with one ``torch.Generator`` (or ``None``: torch's global generator), each step makes one
``multinomial`` call over the sampled rows of the whole batch in row-major (item, codebook) order, then one
over the rows RAS redraws; for a batch of 1 these are exactly the original's two calls, and for
``reference="transformers"`` with ``None`` exactly transformers' calls. With a list of ``B`` generators, item
``b`` draws only from its own, in the same order: an item's frames then do not depend on the rest of the
batch (given the same logits). A generator must live on the logits' device.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..api import InvalidCodesError
from .delay import CODEBOOK_SIZE

__all__ = [
    "Reference", "SamplingConfig", "process_logits", "repetition_counts", "AudioStreamState", "AudioStep",
    "next_audio_frame", "forced_stream_ids", "make_generator",
]

Reference = Literal["original", "transformers"]
Generators = torch.Generator | Sequence[torch.Generator] | None
_NEG_INF = float("-inf")


def _as_tuple(value, name: str) -> tuple:
    if isinstance(value, torch.Tensor):
        if value.dim() > 1:
            raise ValueError(f"{name} must be one value or one per codebook, got shape {tuple(value.shape)}")
        return tuple(value.tolist()) if value.dim() == 1 else (value.item(),)
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            raise ValueError(f"{name}: the per-codebook sequence is empty")
        return tuple(value)
    return (value,)


def _check_temperature(t) -> None:
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not t > 0 or t == float("inf"):
        raise ValueError(f"temperature must be a finite number > 0, got {t!r} (for greedy decoding use "
                         "do_sample=False)")


def _check_top_k(k) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0):
        raise ValueError(f"top_k must be None, 0 (both: off) or a positive integer, got {k!r}")


def _check_top_p(p) -> None:
    if p is not None and (isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1):
        raise ValueError(f"top_p must be None (off) or in (0, 1] (1: off), got {p!r}")


def _per_codebook(value, num_codebooks: int, name: str) -> tuple:
    values = _as_tuple(value, name)
    if len(values) == 1:
        return values * num_codebooks
    if len(values) != num_codebooks:
        raise ValueError(f"{name} has {len(values)} per-codebook values but the logits have {num_codebooks} "
                         "codebooks")
    return values


@dataclass(frozen=True)
class SamplingConfig:
    """How :func:`next_audio_frame` chooses ids.

    ``do_sample=False`` is greedy (argmax of the raw logits; temperature, top-k and top-p are then unused,
    as in both references). ``temperature`` (> 0), ``top_k`` (``None``/0: off) and ``top_p`` (in (0, 1];
    ``None``/1: off) are one value for every codebook or a sequence of one value per codebook (entries may
    be ``None``). ``ras_window`` (``None``/0: RAS off) and ``ras_max_repeat`` (>= 1) are RAS's window in
    frames and repeat limit (both references' defaults: 7 and 2). ``reference`` picks the rules of the
    original (default) or of transformers (module docstring). Unlike transformers' warper, ``top_p=0`` is
    refused (there it keeps only the most probable id; use ``do_sample=False``).
    """

    do_sample: bool = True
    temperature: float | Sequence[float] = 1.0
    top_k: int | None | Sequence[int | None] = None
    top_p: float | None | Sequence[float | None] = None
    ras_window: int | None = 7
    ras_max_repeat: int = 2
    reference: Reference = "original"

    def __post_init__(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be True or False, got {self.do_sample!r}")
        for name in ("temperature", "top_k", "top_p"):
            value = getattr(self, name)
            values = _as_tuple(value, name)
            if isinstance(value, (list, tuple, torch.Tensor)):
                object.__setattr__(self, name, values)
            for v in values:
                if name == "temperature":
                    if self.do_sample:
                        _check_temperature(v)
                elif name == "top_k":
                    _check_top_k(v)
                else:
                    _check_top_p(v)
        w = self.ras_window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 0):
            raise ValueError(f"ras_window must be None, 0 (both: RAS off) or a positive integer, got {w!r}")
        r = self.ras_max_repeat
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"ras_max_repeat must be an integer >= 1, got {r!r}")
        if self.reference not in ("original", "transformers"):
            raise ValueError(f"reference must be 'original' or 'transformers', got {self.reference!r}")

    @property
    def ras_enabled(self) -> bool:
        return bool(self.ras_window)

    @classmethod
    def serve_engine(cls, temperature: float = 0.7, top_k: int | None = None, top_p: float = 0.95,
                     ras_win_len: int | None = 7, ras_win_max_num_repeat: int = 2) -> SamplingConfig:
        """The original ``HiggsAudioServeEngine.generate`` arguments (its defaults here) as a config:
        ``temperature == 0`` means greedy, ``ras_win_len`` ``None`` or ``<= 0`` turns RAS off."""
        greedy = temperature == 0
        window = None if ras_win_len is None or ras_win_len <= 0 else ras_win_len
        return cls(do_sample=not greedy, temperature=1.0 if greedy else temperature, top_k=top_k, top_p=top_p,
                   ras_window=window, ras_max_repeat=ras_win_max_num_repeat)


def process_logits(logits: torch.Tensor, *, temperature: float | Sequence[float] = 1.0,
                   top_k: int | None | Sequence[int | None] = None,
                   top_p: float | None | Sequence[float | None] = None) -> torch.Tensor:
    """Scores for sampling from ``logits [..., K, V]`` (float): divide by the temperature, keep the top-k,
    keep the top-p nucleus; removed entries become ``-inf``. A new tensor, same shape and dtype.

    Each parameter is one value or ``K`` values (one per codebook, the second-last axis). The math and the
    order are transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper``
    (``min_tokens_to_keep=1``), the warpers both references apply per codebook: top-k keeps every entry
    ``>=`` the k-th largest (ties at the boundary stay); top-p sorts ascending, removes the entries whose
    cumulative probability is ``<= 1 - top_p``, and always keeps the most probable entry. A codebook whose
    top-k is ``None``/0 or top-p ``None``/1 is left alone by that step.
    """
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point or logits.dim() < 2:
        what = f"{logits.dtype} tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) \
            else type(logits).__name__
        raise ValueError(f"logits must be a floating tensor [..., K, V], got {what}")
    k_books, vocab = logits.shape[-2], logits.shape[-1]
    temps = _per_codebook(temperature, k_books, "temperature")
    ks = _per_codebook(top_k, k_books, "top_k")
    ps = _per_codebook(top_p, k_books, "top_p")
    for t in temps:
        _check_temperature(t)
    for k in ks:
        _check_top_k(k)
    for p in ps:
        _check_top_p(p)
    dev, dt = logits.device, logits.dtype
    scores = logits
    if any(t != 1.0 for t in temps):
        scores = scores / torch.tensor([float(t) for t in temps], dtype=dt, device=dev)[:, None]
    k_on = [k is not None and k > 0 for k in ks]
    if any(k_on):
        kk = torch.tensor([int(min(k, vocab)) if on else 1 for k, on in zip(ks, k_on)], device=dev)
        kth = scores.sort(dim=-1, descending=True).values.gather(-1, (kk - 1)[:, None].expand(*scores.shape[:-1], 1))
        remove = (scores < kth) & torch.tensor(k_on, device=dev)[:, None]
        scores = scores.masked_fill(remove, _NEG_INF)
    p_on = [p is not None and p < 1 for p in ps]
    if any(p_on):
        # 1 - p in double precision, then compared in the scores' dtype, as transformers does with a float
        cut = torch.tensor([1.0 - float(p) if on else 0.0 for p, on in zip(ps, p_on)], dtype=dt, device=dev)
        sorted_scores, order = scores.sort(dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= cut[:, None]
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted) & torch.tensor(p_on, device=dev)[:, None]
        scores = scores.masked_fill(remove, _NEG_INF)
    return scores if scores is not logits else logits.clone()


def repetition_counts(tokens: torch.Tensor, history: torch.Tensor, *, window: int,
                      history_mask: torch.Tensor | None = None, count_stream_ids: bool = True,
                      codebook_size: int = CODEBOOK_SIZE) -> torch.Tensor:
    """RAS's count, ``[B, K]``: in how many of the last ``window`` frames of ``history`` the same codebook
    holds the id ``tokens[b, k]``.

    ``tokens`` is ``[B, K]``, ``history`` ``[B, K, F]`` (the frames emitted before this step, oldest first,
    delayed form). ``history_mask`` ``[B, F]`` (True = a real frame) makes the window the last ``window``
    *real* frames of each item (for padded or ragged histories); without it the window is the last
    ``window`` columns, as in both references. ``count_stream_ids=False`` ignores window ids ``>=
    codebook_size`` (stream BOS/EOS), as transformers does; the original counts them.
    """
    if tokens.dim() != 2 or history.dim() != 3 or history.shape[:2] != tokens.shape:
        raise ValueError(f"tokens must be [B, K] and history [B, K, F] with the same B, K; got "
                         f"{tuple(tokens.shape)} and {tuple(history.shape)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if history_mask is None:
        recent = history[..., -window:]
        hits = recent == tokens[..., None]
    else:
        if history_mask.shape != (history.shape[0], history.shape[2]) or history_mask.dtype != torch.bool:
            raise ValueError(f"history_mask must be a bool tensor [B, F] = {(history.shape[0], history.shape[2])}, "
                             f"got {history_mask.dtype} {tuple(history_mask.shape)}")
        from_end = history_mask.flip(-1).cumsum(-1).flip(-1)  # real frames at or after each position
        in_window = history_mask & (from_end <= window)
        recent = history
        hits = (recent == tokens[..., None]) & in_window[:, None, :]
    if not count_stream_ids:
        hits = hits & (recent < codebook_size)
    return hits.sum(-1)


@dataclass(frozen=True)
class AudioStreamState:
    """Where each of ``B`` items stands in its audio span; every field is a ``[B]`` tensor.

    * ``frames`` (long): frames emitted in the span so far, the all-BOS frame included, saturating at
      ``K``; 0 = not started (the next frame is the all-BOS frame). Codebook ``k`` is forced to BOS while
      ``frames <= k`` (the original's ``num_delay`` is ``frames - 1``).
    * ``eos_steps`` (long): -1 before the first frame holding a stream EOS; then the number of steps since
      that frame (0 on it).
    * ``eos_codebook`` (long): [O] the smallest codebook with an EOS in that frame (0 until then, and always
      0 with the transformers rules).
    * ``finished`` (bool): the span has ended; further frames are all EOS (padding).
    """

    frames: torch.Tensor
    eos_steps: torch.Tensor
    eos_codebook: torch.Tensor
    finished: torch.Tensor

    @classmethod
    def start(cls, batch_size: int, *, device: torch.device | str | None = None) -> AudioStreamState:
        """``batch_size`` items that have not started (the next frame of each is the all-BOS frame)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        return cls(zeros, zeros - 1, zeros.clone(), torch.zeros(batch_size, dtype=torch.bool, device=device))

    @classmethod
    def from_last_frame(cls, last_frame: torch.Tensor, *, codebook_size: int = CODEBOOK_SIZE) -> AudioStreamState:
        """[O]'s state for a prompt that ends inside an audio span (text ends with ``<|AUDIO_OUT|>``), from the
        span's last delayed frame ``[B, K]``: ``frames = min(K - (number of BOS ids) + 1, K)``; if the frame
        holds an EOS, the countdown runs as if that frame had started it (``eos_steps = 0``, ``eos_codebook``
        = its first EOS codebook)."""
        if not isinstance(last_frame, torch.Tensor) or last_frame.dim() != 2:
            shape = tuple(last_frame.shape) if isinstance(last_frame, torch.Tensor) else type(last_frame).__name__
            raise InvalidCodesError(f"last_frame must be [B, K], got {shape}")
        k = last_frame.shape[1]
        bos, eos = codebook_size, codebook_size + 1
        frames = (k - (last_frame == bos).sum(-1) + 1).clamp(max=k)
        is_eos = last_frame == eos
        has_eos = is_eos.any(-1)
        first = is_eos.to(torch.uint8).argmax(-1)
        return cls(frames.long(), torch.where(has_eos, 0, -1).long(), torch.where(has_eos, first, 0).long(),
                   torch.zeros_like(has_eos))

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    def is_quiet(self, num_codebooks: int) -> bool:
        """Every item is past its delay ramp (``frames == K``), no end countdown runs and none has finished: the
        condition under which :func:`next_audio_frame_unchecked` may be called with ``quiet=True``."""
        return bool(((self.frames >= num_codebooks) & (self.eos_steps < 0) & ~self.finished).all())

    def reset(self, where: torch.Tensor) -> AudioStreamState:
        """The same state with the items where ``where`` ([B] bool) is True set back to not started."""
        fresh = AudioStreamState.start(self.batch_size, device=self.frames.device)
        pick = where.to(self.frames.device)
        return AudioStreamState(*(torch.where(pick, getattr(fresh, f), getattr(self, f))
                                  for f in ("frames", "eos_steps", "eos_codebook", "finished")))


@dataclass(frozen=True)
class AudioStep:
    """One step's result.

    ``frame`` ``[B, K]`` (long): the next delayed frame (append it to the history); ``state``: the state after
    it; ``ended`` ``[B]``: the span ended with this frame (it is then ``finished``); ``resampled`` ``[B, K]``:
    ids RAS redrew at this step (before the delay rules).

    Text token of the step, per reference: [O] ``<|AUDIO_OUT|>``, or ``<|audio_eos|>`` where ``ended``;
    [T] ``<|AUDIO_OUT|>``, ``<|reserved_special_token_6|>`` where ``state.eos_steps >= 0`` (an EOS has been
    seen), ``eos_token_id`` where the frame is all EOS (``ended`` or already finished).
    """

    frame: torch.Tensor
    state: AudioStreamState
    ended: torch.Tensor
    resampled: torch.Tensor = field(repr=False)


def _forced_masks(state: AudioStreamState, num_codebooks: int, reference: Reference
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, K] BOS-forced, [B, K] EOS-forced) for the next step, before looking at its draws (the original's
    immediate forcing of codebooks below the first EOS comes after the draw and is not included)."""
    k = _arange(num_codebooks, state.frames.device)
    bos = k >= state.frames[:, None]
    running = state.eos_steps >= 0
    if reference == "original":
        limit = torch.where(running, state.eos_codebook + state.eos_steps + 1, 0)
    else:  # a finished item's counters no longer move in transformers
        limit = torch.where(running & ~state.finished, state.eos_steps + 1, state.eos_steps)
    eos = k < limit[:, None]
    return bos & ~eos, eos


def forced_stream_ids(state: AudioStreamState, num_codebooks: int, *, reference: Reference = "original",
                      codebook_size: int = CODEBOOK_SIZE) -> torch.Tensor:
    """``[B, K]`` ids the next frame is bound to hold whatever the logits: stream BOS / EOS, or -1 (free).

    Not started or inside the delay ramp: BOS; during an end countdown: EOS (where both would apply, EOS;
    transformers would mask every id there, a case its own flow never reaches); finished: all EOS. [O]'s
    immediate forcing of codebooks below a newly seen EOS depends on the draw and is not included.
    """
    bos, eos = _forced_masks(state, num_codebooks, reference)
    out = torch.full(bos.shape, -1, dtype=torch.long, device=bos.device)
    out = torch.where(bos, codebook_size, out)
    out = torch.where(eos | state.finished[:, None], codebook_size + 1, out)
    return out


def make_generator(seed: int, *, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (the original makes one this way from its
    ``seed`` argument; ``None`` there means torch's global generator)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)


def _draw(probs: torch.Tensor, rows: torch.Tensor | None, generator: Generators) -> torch.Tensor:
    """One id per selected row (``rows`` [B, K] bool; None: every row) of ``probs`` [B, K, V], in row-major
    order."""
    if generator is None or isinstance(generator, torch.Generator):
        if rows is None:
            return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).squeeze(1)
        if not rows.any():
            return torch.empty(0, dtype=torch.long, device=probs.device)
        return torch.multinomial(probs[rows], 1, generator=generator).squeeze(1)
    if rows is None:
        return torch.cat([torch.multinomial(probs[b], 1, generator=g).squeeze(1) for b, g in enumerate(generator)])
    parts = [torch.multinomial(probs[b][rows[b]], 1, generator=g).squeeze(1)
             for b, g in enumerate(generator) if rows[b].any()]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device=probs.device)


def _check_step_inputs(logits, state, history, history_mask, generator, codebook_size) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.dtype.is_floating_point:
        what = f"{logits.dtype} tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) \
            else type(logits).__name__
        raise ValueError(f"logits must be a floating tensor [B, K, V], got {what}")
    b, k, v = logits.shape
    if v != codebook_size + 2:
        raise ValueError(f"logits have {v} entries per codebook, expected codebook_size + 2 = {codebook_size + 2} "
                         "(codes, stream BOS, stream EOS)")
    if not isinstance(state, AudioStreamState):
        raise ValueError(f"state must be an AudioStreamState, got {type(state).__name__}")
    if state.batch_size != b:
        raise ValueError(f"state is for {state.batch_size} items but the logits have batch size {b}")
    if history is not None:
        if not isinstance(history, torch.Tensor) or history.dim() != 3 or history.shape[:2] != (b, k):
            shape = tuple(history.shape) if isinstance(history, torch.Tensor) else type(history).__name__
            raise InvalidCodesError(f"history must be [B, K, F] = [{b}, {k}, F] (codebook-major delayed frames), "
                                    f"got {shape}")
        if history.dtype.is_floating_point or history.dtype == torch.bool:
            raise InvalidCodesError(f"history must be an integer tensor, got dtype {history.dtype}")
        if history.numel():
            lo, hi = int(history.min()), int(history.max())
            if lo < 0 or hi >= v:
                raise InvalidCodesError(f"history holds ids outside [0, {v - 1}]: min {lo}, max {hi}")
    elif history_mask is not None:
        raise ValueError("history_mask given without history")
    if generator is not None and not isinstance(generator, torch.Generator):
        gens = list(generator)
        if len(gens) != b or not all(isinstance(g, torch.Generator) for g in gens):
            raise ValueError(f"generator must be None, one torch.Generator or a sequence of {b} (one per item)")


def next_audio_frame(logits: torch.Tensor, state: AudioStreamState, config: SamplingConfig = SamplingConfig(), *,
                     history: torch.Tensor | None = None, history_mask: torch.Tensor | None = None,
                     generator: Generators = None, codebook_size: int = CODEBOOK_SIZE) -> AudioStep:
    """One generation step for a batch: ``logits [B, K, V]`` (``V = codebook_size + 2``, the audio head's
    output at the last position, any float dtype; computed in float32 as both references do) and
    ``state`` -> the next frame, the new state and which items ended (the module docstring gives the rules
    of each reference).

    ``history`` ``[B, K, F]``: the delayed frames before this step (for RAS; the frames the reference keeps:
    [O] every audio-out frame of the prompt and of this reply, the all-BOS frame included; [T] the prompt's
    audio frames and every generated frame, padding included). Append each returned ``frame`` to it.
    ``history_mask`` ``[B, F]``: see :func:`repetition_counts`. No history: no RAS. ``generator``: ``None``
    (global), one ``torch.Generator``, or one per item. Inputs are not modified.
    """
    if not isinstance(config, SamplingConfig):
        raise ValueError(f"config must be a SamplingConfig, got {type(config).__name__}")
    _check_step_inputs(logits, state, history, history_mask, generator, codebook_size)
    dev = logits.device
    state = AudioStreamState(*(t.to(dev) for t in (state.frames, state.eos_steps, state.eos_codebook,
                                                    state.finished)))
    return next_audio_frame_unchecked(logits, state, config, history=None if history is None else history.to(dev),
                                      history_mask=history_mask, generator=generator, codebook_size=codebook_size)


def _ras(tokens: torch.Tensor, raw: torch.Tensor, rows: torch.Tensor | None, config: SamplingConfig,
         history: torch.Tensor | None, history_mask: torch.Tensor | None, generator: Generators, original: bool,
         codebook_size: int) -> torch.Tensor | None:
    """Repetition-aware sampling in place on ``tokens`` (rows ``rows`` only; None: every row): the ids RAS
    redrew from ``softmax(raw)``, or None when RAS is off."""
    if not config.ras_enabled or history is None:
        return None
    counts = repetition_counts(tokens, history, window=config.ras_window, history_mask=history_mask,
                               count_stream_ids=original, codebook_size=codebook_size)
    resampled = counts >= config.ras_max_repeat
    if rows is not None:
        resampled &= rows
    if bool(resampled.any()):
        tokens[resampled] = _draw(raw.softmax(-1), resampled, generator)
    return resampled


_ARANGE: dict[tuple[int, torch.device], torch.Tensor] = {}


def _arange(n: int, device: torch.device) -> torch.Tensor:
    """``torch.arange(n)`` on ``device``, made once (a generation step needs a few of them)."""
    t = _ARANGE.get((n, device))
    if t is None:
        t = _ARANGE[(n, device)] = torch.arange(n, device=device)
    return t


def next_audio_frame_unchecked(logits: torch.Tensor, state: AudioStreamState, config: SamplingConfig, *,
                               history: torch.Tensor | None, history_mask: torch.Tensor | None,
                               generator: Generators, codebook_size: int, quiet: bool = False) -> AudioStep:
    """:func:`next_audio_frame` without the input checks (for a loop whose inputs are valid by construction:
    state and history on the logits' device).

    ``quiet``: the caller knows that every item is past its delay ramp (``frames == K``), that no end countdown
    runs (``eos_steps == -1``) and that none has finished, so no id is forced: every row is drawn (or argmax)
    without the forcing masks. If no drawn id is a stream EOS the state is unchanged, and the returned
    :attr:`AudioStep.state` *is* ``state`` (the caller may stay quiet); otherwise the usual rules follow. Same
    frames, state and random draws as without ``quiet``.
    """
    b, k, v = logits.shape
    dev = logits.device
    bos_id, eos_id = codebook_size, codebook_size + 1
    original = config.reference == "original"
    raw = logits.float()
    if quiet:
        if config.do_sample:
            scores = process_logits(raw, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
            tokens = _draw(scores.softmax(-1), None, generator).view(b, k)
        else:
            tokens = raw.argmax(-1)
        resampled = _ras(tokens, raw, None, config, history, history_mask, generator, original, codebook_size)
        if not bool((tokens == eos_id).any()):
            if resampled is None:
                resampled = torch.zeros((b, k), dtype=torch.bool, device=dev)
            return AudioStep(tokens, state, torch.zeros(b, dtype=torch.bool, device=dev), resampled)
        bos_forced, eos_forced = _forced_masks(state, k, config.reference)  # no id is forced (see above)
        sampled = torch.ones(b, dtype=torch.bool, device=dev)
        rows = sampled[:, None].expand(b, k)
    else:
        bos_forced, eos_forced = _forced_masks(state, k, config.reference)
        if original:
            sampled = (state.frames > 0) & ~state.finished
            any_sampled = bool(sampled.any())
            rows = sampled[:, None].expand(b, k)
        else:
            sampled, any_sampled, rows = None, True, None  # every item, every codebook

        tokens = torch.full((b, k), eos_id, dtype=torch.long, device=dev) if original else None
        resampled = None
        if any_sampled:
            if config.do_sample:
                scores = raw
                if not original:  # transformers imposes forced ids by masking before the warpers and the draw
                    forced = bos_forced | eos_forced
                    if bool(forced.any()):
                        forced_id = torch.where(eos_forced, eos_id, bos_id)
                        keep = _arange(v, dev) == forced_id[..., None]
                        scores = torch.where(forced[..., None] & ~keep, _NEG_INF, scores)
                scores = process_logits(scores, temperature=config.temperature, top_k=config.top_k,
                                        top_p=config.top_p)
                drawn = _draw(scores.softmax(-1), rows, generator)
                if original:
                    tokens[rows] = drawn
                else:
                    tokens = drawn.view(b, k)
            elif original:
                tokens = torch.where(rows, raw.argmax(-1), tokens)
            else:  # greedy under the transformers rules: the argmax of the masked logits is the forced id itself
                tokens = torch.where(eos_forced, eos_id, torch.where(bos_forced, bos_id, raw.argmax(-1)))
            resampled = _ras(tokens, raw, rows, config, history, history_mask, generator, original, codebook_size)
    if resampled is None:
        resampled = torch.zeros((b, k), dtype=torch.bool, device=dev)

    kk = _arange(k, dev)
    running = state.eos_steps >= 0
    if original:
        frame = torch.where(bos_forced & rows, bos_id, tokens)
        is_eos = frame == eos_id
        detect = sampled & ~running & is_eos.any(-1)
        first = is_eos.to(torch.uint8).argmax(-1)
        eos_codebook = torch.where(detect, first, state.eos_codebook)
        active = sampled & (running | detect)
        eos_steps = torch.where(sampled & running, state.eos_steps + 1, torch.where(detect, 0, state.eos_steps))
        frame = torch.where(active[:, None] & (kk < (eos_codebook + eos_steps)[:, None]), eos_id, frame)
        ended = active & (eos_steps >= k - 1 - eos_codebook)
        frame = torch.where((state.frames == 0)[:, None], bos_id, frame)  # not started: the all-BOS frame
    else:
        frame = tokens
        eos_codebook = state.eos_codebook
        is_eos = frame == eos_id
        live = ~state.finished
        eos_steps = torch.where(live & running, state.eos_steps + 1,
                                torch.where(live & is_eos.any(-1), 0, state.eos_steps))
        ended = live & is_eos.all(-1)
    frame = torch.where(state.finished[:, None], eos_id, frame)
    frames = torch.where(state.finished, state.frames, (state.frames + 1).clamp(max=k))
    new_state = AudioStreamState(frames, eos_steps, eos_codebook, state.finished | ended)
    return AudioStep(frame, new_state, ended, resampled)
