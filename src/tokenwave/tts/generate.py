"""Higgs Audio v2 generation: the decoding loop over :class:`~tokenwave.tts.model.HiggsGenModel`, long texts in
chunks, and streaming audio while frames are generated (``spec_generation.md`` sections 6, 7 and 9).

References: **[O]** the original ``boson_multimodal`` 0.1.1 (``HiggsAudioModel._sample`` and the serve engine,
``examples/generation.py`` for long texts); **[T]** transformers 5.23 (``HiggsAudioV2ForConditionalGeneration
.generate``). The loop follows [O]; with ``SamplingConfig(reference="transformers")`` it reproduces [T] (same
frames; with torch's global generator the same random stream), which the tests check against the installed
transformers.

The loop, per item of a batch (:func:`generate`):

1. **Prefill**: the rendered prompt (:func:`prompt_inputs`: text ids, and at every audio position one delayed
   frame of its span, spec 5) goes through the model once; prompts of different lengths are right-padded, as
   the :class:`~tokenwave.tts.model.KVCache` expects (each item keeps the positions it would have alone).
2. **Mode** of each step, from the item's last token, as [O] chooses it:

   * the last token is ``<|audio_out_bos|>`` (the prompt ends with it, or the model produced it) or a frame of
     an unfinished audio span -> **audio**: the audio logits of the last position go to
     :func:`~tokenwave.tts.sampling.next_audio_frame` (first frame of a span: the all-BOS frame, [O] AUDIO_INIT;
     then sampling, RAS, delay ramp, end countdown). The frame is fed back at the next step as one audio-out
     position (text id ``<|AUDIO_OUT|>``, the frame's 8 ids, DualFFN audio path), as [O] feeds
     ``audio_out_ids[:, -1:]`` and [T] its newest frame.
   * otherwise -> **text**: the next text token from the text logits (the same temperature / top-k / top-p as
     audio, codebook 0's values where they are per codebook; greedy without ``do_sample``), fed back as a text
     position ([O] TEXT mode; needs the text head). ``<|audio_out_bos|>`` starts an audio span at the next step.

3. **Stop**, per item: the audio span ended (the end countdown, ``AudioStep.ended``; stop reason
   ``"audio_end"``); a stop token in text mode (``<|end_of_text|>``, ``<|eot_id|>``: the serve engine's stop
   strings; ``"end_of_turn"``); ``max_frames`` steps (``"max_frames"``); with ``max_context``, the context is
   full (``"context_full"``: prompt + steps = ``max_context`` + 1, the last step's output is not fed). With
   ``continue_after_audio`` an ended span does not stop the item: as in [O] the step's text token is
   ``<|audio_eos|>``, which is fed next (the span's last frame is never fed, as in [O]) and decoding goes on in
   text mode until a stop token, possibly starting further spans. Finished items are not fed again ([O] has
   batch size 1); with the transformers rules they are fed their all-EOS frames until the whole batch ends, as
   [T] does, so its random stream is kept.

``max_frames`` counts steps, one frame or one text token each (the all-BOS frame included): [O]'s
``max_new_tokens`` and, as [T] makes one frame per step, [T]'s too.

RAS history: the last ``ras_window`` delayed frames of the item's audio-out spans, prompt spans (references,
earlier chunks) first, then every generated frame ([O] ``audio_out_ids``; with [T]-rendered prompts every span
is an audio-out span, which is [T]'s ``audio_input_ids``). ``<|AUDIO|>`` spans ([O] speaker audio in the system
message) are input only.

Randomness: ``seed`` gives every item its own ``torch.Generator`` seeded with it (for one item exactly [O]'s
``seed`` argument), so an item's frames do not depend on the rest of the batch; ``generator`` passes one shared
generator (drawn in row-major item order) or one per item; neither: torch's global generator.

Codes: each span's delayed block is reverted and trimmed by the rule of the sampling reference
(:func:`~tokenwave.tts.delay.generated_codes`: [O] ``revert(...)[:, 1:-1]``, [T] the frames between the all-BOS
and the all-EOS frame), clipped to ``[0, codebook_size - 1]``; the spans of one reply are concatenated (the [O]
serve engine concatenates their waveforms).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..api import AudioTokenizer
from ..streaming import DEFAULT_DECODE_CONTEXT_FRAMES, StreamingDecoder
from .delay import DelayReverter, build_delay_pattern, generated_codes
from .model import CacheOverflowError, HiggsGenModel, HiggsGenOutput
from .prompt import (
    DEFAULT_SCENE,
    SPECIAL_TOKENS,
    Audio,
    Prompt,
    PromptError,
    Reference,
    RenderedPrompt,
    build_context,
    continue_prompt,
    render_original,
    render_transformers,
)
from .sampling import (
    AudioStreamState,
    SamplingConfig,
    make_generator,
    next_audio_frame_unchecked,
    process_logits,
)
from .text import TextTokenizer, chunk_transcript

__all__ = [
    "DEFAULT_STOP_TOKEN_IDS", "DEFAULT_SAMPLING", "StopReason", "PromptInputs", "prompt_inputs", "span_codes",
    "GenerationResult", "generate", "render", "LongTextPlan", "LongGenerationResult", "generate_long",
    "generate_chunks", "StreamStats", "AudioStream", "stream", "stream_long", "stream_chunks",
]

#: Text tokens that end an item in text mode: ``<|end_of_text|>`` and ``<|eot_id|>`` ([O] serve engine's
#: ``stop_strings``; 128001 is also [O]'s ``eos_token_id``).
DEFAULT_STOP_TOKEN_IDS: tuple[int, ...] = (SPECIAL_TOKENS["<|end_of_text|>"], SPECIAL_TOKENS["<|eot_id|>"])

#: The sampling of :func:`generate` when none is given: [O]'s rules, temperature 1, no top-k / top-p, RAS 7/2.
DEFAULT_SAMPLING = SamplingConfig()

StopReason = Literal["audio_end", "end_of_turn", "max_frames", "context_full"]
Style = Literal["original", "transformers"]
Generators = torch.Generator | Sequence[torch.Generator] | None


# ------------------------------------------------------------------------------------------------ prompt inputs
@dataclass(frozen=True, eq=False)
class PromptInputs:
    """What the model reads for one rendered prompt.

    Attributes:
        input_ids: ``[L]`` text ids (placeholders at audio positions).
        audio_codes: ``[L, K]`` the delayed frame of each audio position (0 at text positions).
        audio_mask: ``[L]`` bool, the audio positions.
        history: ``[K, F]`` the delayed frames of the audio-out spans, in order (the RAS history).
        audio_start: the prompt ends with ``<|audio_out_bos|>``: generation starts in audio mode.
    """

    input_ids: torch.Tensor
    audio_codes: torch.Tensor
    audio_mask: torch.Tensor
    history: torch.Tensor
    audio_start: bool

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def prompt_inputs(rendered: RenderedPrompt, model: HiggsGenModel) -> PromptInputs:
    """Model inputs of ``rendered`` (either style, rendered with one position per frame: ``expand=True``).

    Every span's codes ``[K, T]`` are delayed with stream markers (:func:`~tokenwave.tts.delay.build_delay_pattern`,
    ``T + K + 1`` frames, what both references feed for every audio span) and placed at its positions.

    Raises:
        PromptError: a span without codes or not expanded, codes of another codebook count than the model's, a
            prompt ending inside an audio span, or text ids outside the model's vocabulary.
    """
    cfg = model.config
    if not isinstance(rendered, RenderedPrompt):
        raise PromptError(f"expected a RenderedPrompt (render_original / render_transformers), got "
                          f"{type(rendered).__name__}")
    ids = rendered.input_ids.long()
    n, k = int(ids.shape[0]), cfg.num_codebooks
    if n == 0:
        raise PromptError("empty prompt (no token ids)")
    codes = torch.zeros(n, k, dtype=torch.long)
    mask = rendered.audio_mask()
    history = []
    for i, span in enumerate(rendered.spans):
        where = "system message" if span.turn is None else f"turn {span.turn}"
        if span.audio.codes is None:
            raise PromptError(f"audio span {i} ({where}, source {span.audio.source!r}) has no codes: encode the "
                              "audio first")
        if span.audio.codes.shape[0] != k:
            raise PromptError(f"audio span {i} ({where}) has {span.audio.codes.shape[0]} codebooks, the model "
                              f"reads {k}")
        if int(span.audio.codes.max()) >= cfg.codebook_size:
            raise PromptError(f"audio span {i} ({where}) holds codes >= the model's codebook size {cfg.codebook_size}")
        delayed = build_delay_pattern(span.audio.codes, codebook_size=cfg.codebook_size)
        if span.length != delayed.shape[1]:
            raise PromptError(f"audio span {i} ({where}) occupies {span.length} position(s) but its codes make "
                              f"{delayed.shape[1]} delayed frames: render the prompt with expand=True")
        codes[span.start:span.start + span.length] = delayed.T
        if span.kind == "out":
            history.append(delayed)
    text = ids[~mask]
    if text.numel() and (int(text.min()) < 0 or int(text.max()) >= cfg.vocab_size):
        raise PromptError(f"prompt text ids outside the model's vocabulary 0..{cfg.vocab_size - 1}: the text "
                          "tokenizer does not belong to this model")
    if bool(mask[-1]):
        raise PromptError("the prompt ends inside an audio span; end it with a text token (the generation prompt)")
    hist = torch.cat(history, dim=1) if history else torch.zeros(k, 0, dtype=torch.long)
    return PromptInputs(ids, codes, mask, hist, int(ids[-1]) == cfg.audio_out_bos_token_id)


def render(prompt: Prompt, tokenizer: TextTokenizer, *, style: Style = "original",
           force_audio: bool = True) -> RenderedPrompt:
    """``prompt`` rendered for generation, one position per audio frame: [O]
    (:func:`~tokenwave.tts.prompt.render_original`, generation prompt plus ``<|audio_out_bos|>`` when
    ``force_audio``, the serve engine's ``force_audio_gen``) or [T]
    (:func:`~tokenwave.tts.prompt.render_transformers`, which always ends with ``<|audio_out_bos|>``)."""
    if style == "original":
        return render_original(prompt, tokenizer, force_audio=force_audio, expand=True)
    if style == "transformers":
        if not force_audio:
            raise ValueError("the transformers prompt always starts the audio (force_audio=False needs "
                             "style='original')")
        return render_transformers(prompt, tokenizer, expand=True)
    raise ValueError(f"style must be 'original' or 'transformers', got {style!r}")


# ------------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True, eq=False)
class GenerationResult:
    """One item's generation.

    Attributes:
        delayed: ``[K, N]`` the first audio span's delayed frames, from its all-BOS frame to the last frame made
            (the ending frame included; ``[K, 0]`` when no span was started).
        codes: ``[K, T]`` the codes of every span (reverted and trimmed by the reference's rule, clipped to
            ``[0, codebook_size - 1]``, concatenated), ready for the audio tokenizer.
        spans: every span's delayed block (more than one only with ``continue_after_audio``).
        text_ids: the reply's text stream as [O] keeps it: sampled text tokens, one ``<|AUDIO_OUT|>`` per span
            (at its all-BOS frame), ``<|audio_eos|>`` where a span ended ([O] rules) and the stop token if any.
        stop_reason: ``"audio_end"``, ``"end_of_turn"``, ``"max_frames"`` or ``"context_full"``.
        steps: generation steps of the item (frames and text tokens).
        resampled: ids that repetition-aware sampling redrew.
        prompt_length: positions of the prompt.
        prefill_s, elapsed_s: seconds for the (batch) prefill and for the whole generation.
    """

    delayed: torch.Tensor
    codes: torch.Tensor
    spans: tuple[torch.Tensor, ...]
    text_ids: tuple[int, ...]
    stop_reason: StopReason
    steps: int
    prompt_length: int
    resampled: int = 0
    prefill_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def num_frames(self) -> int:
        """Codec frames of :attr:`codes`."""
        return int(self.codes.shape[1])


@dataclass(frozen=True)
class _Emit:
    """What one item produced at one step: a frame (``span_start``: the span's all-BOS frame, ``span_end``: its
    last frame, by the end countdown or because the item ran out of steps) or a text token."""

    item: int
    frame: torch.Tensor | None = None
    token: int | None = None
    span_start: bool = False
    span_end: bool = False


def span_codes(block: torch.Tensor, reference: str, codebook_size: int) -> torch.Tensor:
    """Codes ``[K, T]`` of one generated span's delayed block ``[K, N]`` by the reference's rule (see the module
    docstring); a span too short to hold a frame gives ``[K, 0]``."""
    k, n = block.shape
    rule = "original" if reference == "original" else "transformers"
    if n == 0 or (rule == "original" and n < k - 1):  # too short for the original's revert: no complete frame
        return block.new_zeros(k, 0)
    return generated_codes(block, rule=rule, codebook_size=codebook_size)


# --------------------------------------------------------------------------------------------------------- loop
def _text_value(value):
    """The scalar a text step uses for a sampling parameter given per codebook: codebook 0's."""
    return value[0] if isinstance(value, tuple) else value


def _generators(batch: int, seed: int | Sequence[int] | None, generator: Generators,
                device: torch.device) -> Generators:
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if seed is None:
        if generator is None or isinstance(generator, torch.Generator):
            return generator
        gens = list(generator)
        if len(gens) != batch or not all(isinstance(g, torch.Generator) for g in gens):
            raise ValueError(f"generator must be one torch.Generator or a sequence of {batch} (one per prompt)")
        return gens
    seeds = [seed] * batch if isinstance(seed, int) and not isinstance(seed, bool) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"seed must be an int or one per prompt ({batch}), got {len(seeds)}")
    return [make_generator(s, device=device) for s in seeds]


def _take_state(state: AudioStreamState, idx: torch.Tensor) -> AudioStreamState:
    return AudioStreamState(state.frames[idx], state.eos_steps[idx], state.eos_codebook[idx], state.finished[idx])


def _put_state(state: AudioStreamState, idx: torch.Tensor, sub: AudioStreamState) -> AudioStreamState:
    parts = []
    for name in ("frames", "eos_steps", "eos_codebook", "finished"):
        t = getattr(state, name).clone()
        t[idx] = getattr(sub, name)
        parts.append(t)
    return AudioStreamState(*parts)


class _Loop:
    """The decoding loop of a batch (module docstring). :meth:`run` yields each step's emits; :meth:`results`
    gives the items' results afterwards."""

    def __init__(self, model: HiggsGenModel, prompts: Sequence[RenderedPrompt], *, sampling: SamplingConfig,
                 max_frames: int, seed: int | Sequence[int] | None, generator: Generators,
                 continue_after_audio: bool, stop_token_ids: Iterable[int], max_context: int | None) -> None:
        if not isinstance(model, HiggsGenModel):
            raise TypeError(f"model must be a HiggsGenModel, got {type(model).__name__}")
        if not isinstance(sampling, SamplingConfig):
            raise ValueError(f"sampling must be a SamplingConfig, got {type(sampling).__name__}")
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
        if not prompts:
            raise ValueError("no prompt to generate from")
        self.model, self.cfg, self.sampling = model, model.config, sampling
        self.original = sampling.reference == "original"
        if continue_after_audio and not self.original:
            raise ValueError("continue_after_audio follows the original's text/audio modes; the transformers rules "
                             "end every item with its audio span")
        self.max_frames, self.continue_after_audio = max_frames, continue_after_audio
        self.stop_ids = frozenset(int(t) for t in stop_token_ids)
        self.device = model.device
        self.inputs = [prompt_inputs(p, model) for p in prompts]
        b = len(self.inputs)
        for i, inp in enumerate(self.inputs):
            if not inp.audio_start:
                if not self.original:
                    raise PromptError(f"prompt {i} does not end with <|audio_out_bos|>: the transformers rules only "
                                      "generate audio (render with force_audio=True)")
                if model.text_lm_head is None:
                    raise PromptError(f"prompt {i} does not end with <|audio_out_bos|>, so the model must choose "
                                      "when to start the audio, which needs its text head; this model has none "
                                      "(render with force_audio=True)")
        lengths = [inp.length for inp in self.inputs]
        # steps per item: max_frames, or fewer where prompt + fed steps would exceed max_context
        self.limits = [max_frames] * b
        if max_context is not None:
            if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
                raise ValueError(f"max_context must be a positive integer, got {max_context!r}")
            for i, n in enumerate(lengths):
                if n >= max_context:
                    raise CacheOverflowError(
                        f"prompt {i} has {n} positions, which leaves no room for generation in a context of "
                        f"{max_context} positions: shorten the text, the reference audio or the chunks kept in "
                        "context, or raise max_context")
                self.limits[i] = min(max_frames, max_context - n + 1)
        self.cache_len = max(n + limit - 1 for n, limit in zip(lengths, self.limits))
        self.generators = _generators(b, seed, generator, self.device)
        self.batch = b
        self.mode = ["audio" if inp.audio_start else "text" for inp in self.inputs]
        self.done = [False] * b
        self.stop_reason: list[StopReason | None] = [None] * b
        self.steps = [0] * b
        self.resampled = [0] * b
        self.spans: list[list[list[torch.Tensor]]] = [[[]] if inp.audio_start else [] for inp in self.inputs]
        self.text_ids: list[list[int]] = [[] for _ in range(b)]
        self.state = AudioStreamState.start(b, device=self.device)
        self._quiet = False  # see _choose
        self.prefill_s = self.elapsed_s = 0.0
        w = sampling.ras_window if sampling.ras_enabled else 0
        k = self.cfg.num_codebooks
        self.window = torch.zeros(b, k, w, dtype=torch.long)
        self.window_mask = torch.zeros(b, w, dtype=torch.bool)
        for i, inp in enumerate(self.inputs):
            recent = inp.history[:, -w:] if w else inp.history[:, :0]
            if recent.shape[1]:
                self.window[i, :, w - recent.shape[1]:] = recent
                self.window_mask[i, w - recent.shape[1]:] = True
        self.window, self.window_mask = self.window.to(self.device), self.window_mask.to(self.device)

    # ---- one step ----------------------------------------------------------------------------------------------
    def run(self) -> Iterator[list[_Emit]]:
        """Prefill, then one step after another until every item is done; yields each step's emits."""
        start = time.perf_counter()
        out = self._prefill()
        self.prefill_s = time.perf_counter() - start
        while True:
            emits, feed = self._choose(out)
            self.elapsed_s = time.perf_counter() - start
            yield emits
            if all(self.done):
                break
            out = self._forward(feed)
        self.elapsed_s = time.perf_counter() - start

    @torch.no_grad()
    def _prefill(self):
        cfg, b = self.cfg, self.batch
        n = max(inp.length for inp in self.inputs)
        ids = torch.zeros(b, n, dtype=torch.long)
        codes = torch.zeros(b, n, cfg.num_codebooks, dtype=torch.long)
        mask = torch.zeros(b, n, dtype=torch.bool)
        for i, inp in enumerate(self.inputs):
            ids[i, :inp.length], codes[i, :inp.length], mask[i, :inp.length] = (inp.input_ids, inp.audio_codes,
                                                                             inp.audio_mask)
        self.cache = self.model.new_cache(b, self.cache_len)
        dev = self.device
        lengths = torch.tensor([inp.length for inp in self.inputs])
        return self.model(ids.to(dev), codes.to(dev), mask.to(dev), cache=self.cache, lengths=lengths.to(dev),
                          last_only=True, text_logits="text" in self.mode, audio_logits="audio" in self.mode)

    @torch.no_grad()
    def _forward(self, feed: list[tuple[int, int | torch.Tensor]]):
        cfg, b = self.cfg, self.batch
        dev = self.device
        if all(isinstance(value, torch.Tensor) for _, value in feed):  # only frames: the model's lean audio step
            if len(feed) == b and self._step_frames is not None:  # every item, in order: this step's frames as is
                frames, active = self._step_frames, None
            else:
                frames = torch.zeros(b, cfg.num_codebooks, dtype=torch.long)
                active = [False] * b
                for i, value in feed:
                    frames[i], active[i] = value, True
                frames = frames.to(dev)
            return HiggsGenOutput(None, self.model.decode_audio(frames, self.cache, active=active)[:, None])
        ids = torch.zeros(b, 1, dtype=torch.long)
        codes = torch.zeros(b, 1, cfg.num_codebooks, dtype=torch.long)
        mask = torch.zeros(b, 1, dtype=torch.bool)
        lengths = torch.zeros(b, dtype=torch.long)
        for i, value in feed:
            lengths[i] = 1
            if isinstance(value, torch.Tensor):
                ids[i, 0], codes[i, 0], mask[i, 0] = cfg.audio_out_token_id, value, True
            else:
                ids[i, 0] = value
        modes = {self.mode[i] for i, _ in feed}
        return self.model(ids.to(dev), codes.to(dev), mask.to(dev), cache=self.cache, lengths=lengths,
                          last_only=True, text_logits="text" in modes, audio_logits="audio" in modes)

    @torch.no_grad()
    def _choose(self, out) -> tuple[list[_Emit], list[tuple[int, int | torch.Tensor]]]:
        """Pick every item's next frame or token from ``out``; update the items; return the emits and what to feed
        at the next step (``(item, frame or token)``)."""
        cfg = self.cfg
        emits: list[_Emit] = []
        self._step_frames = None
        feed: list[tuple[int, int | torch.Tensor]] = []
        if self.original:
            audio_items = [i for i in range(self.batch) if self.mode[i] == "audio" and not self.done[i]]
        else:  # [T] samples every item at every step, finished ones included (their frames are all EOS)
            audio_items = list(range(self.batch))
        text_items = [i for i in range(self.batch) if self.mode[i] == "text" and not self.done[i]]
        if audio_items:
            # every item in audio mode (the usual case): whole tensors instead of gathered / scattered copies
            whole = len(audio_items) == self.batch
            idx = slice(None) if whole else torch.tensor(audio_items, device=self.device)
            state = self.state if whole else _take_state(self.state, idx)
            # the next frame starts a span where the item's current span is still empty (state.frames == 0)
            started = [not self.spans[i] or not self.spans[i][-1] for i in audio_items]
            history = self.window[idx] if self.sampling.ras_enabled else None
            history_mask = self.window_mask[idx] if self.sampling.ras_enabled else None
            gens = self.generators
            if gens is not None and not isinstance(gens, torch.Generator):
                gens = [gens[i] for i in audio_items]
            # quiet: every item past its delay ramp, no end countdown, none finished (known from the last step)
            quiet = whole and self._quiet
            step = next_audio_frame_unchecked(out.audio_logits[idx, 0], state, self.sampling, history=history,
                                              history_mask=history_mask, generator=gens,
                                              codebook_size=cfg.codebook_size, quiet=quiet)
            unchanged = quiet and step.state is state  # no stream EOS was drawn: still quiet, nothing ended
            self.state = step.state if whole else _put_state(self.state, idx, step.state)
            if not unchanged:
                self._quiet = self.state.is_quiet(cfg.num_codebooks)
            if self.sampling.ras_enabled:
                window = torch.cat([self.window[idx, :, 1:], step.frame[..., None]], dim=-1)
                window_mask = torch.cat([self.window_mask[idx, 1:], torch.ones(len(audio_items), 1, dtype=torch.bool,
                                                                                device=self.device)], dim=-1)
                if whole:
                    self.window, self.window_mask = window, window_mask
                else:
                    self.window[idx], self.window_mask[idx] = window, window_mask
            self._step_frames = step.frame if whole else None
            frames = step.frame.cpu().unbind(0)
            ended = [False] * len(audio_items) if unchanged else step.ended.tolist()
            redrawn = step.resampled.sum(-1).tolist() if self.sampling.ras_enabled else [0] * len(audio_items)
            for j, i in enumerate(audio_items):
                frame = frames[j]
                if self.done[i]:  # [T]: a finished item keeps being fed its all-EOS frames
                    feed.append((i, frame))
                    continue
                self.steps[i] += 1
                self.resampled[i] += redrawn[j]
                self.spans[i][-1].append(frame)
                if started[j]:
                    self.text_ids[i].append(cfg.audio_out_token_id)
                out_of_steps = self.steps[i] >= self.limits[i]
                emits.append(_Emit(i, frame=frame, span_start=started[j], span_end=ended[j] or out_of_steps))
                if ended[j]:
                    if self.original:
                        self.text_ids[i].append(cfg.audio_eos_token_id)
                    if self.continue_after_audio and not out_of_steps:
                        self.mode[i] = "text"
                        feed.append((i, cfg.audio_eos_token_id))
                        continue
                    self._finish(i, "audio_end")
                    if not self.original:
                        feed.append((i, frame))
                    continue
                if out_of_steps:
                    self._finish(i, self._limit_reason(i))
                    if not self.original:
                        feed.append((i, frame))
                    continue
                feed.append((i, frame))
        if text_items:
            for i, token in zip(text_items, self._text_tokens(out.text_logits, text_items)):
                self.steps[i] += 1
                self.text_ids[i].append(token)
                emits.append(_Emit(i, token=token))
                if token in self.stop_ids:
                    self._finish(i, "end_of_turn")
                    continue
                if self.steps[i] >= self.limits[i]:
                    self._finish(i, self._limit_reason(i))
                    continue
                if token == cfg.audio_out_bos_token_id:  # [O]: audio starts at the next step (AUDIO_INIT)
                    self.mode[i] = "audio"
                    self.spans[i].append([])
                    self.state = self.state.reset(torch.arange(self.batch, device=self.device) == i)
                    self._quiet = False
                feed.append((i, token))
        if not self.original and all(self.done):
            feed = []
        return emits, feed

    def _limit_reason(self, i: int) -> StopReason:
        return "max_frames" if self.limits[i] == self.max_frames else "context_full"

    def _finish(self, i: int, reason: StopReason) -> None:
        self.done[i] = True
        self.stop_reason[i] = reason

    def _text_tokens(self, logits: torch.Tensor | None, items: list[int]) -> list[int]:
        """[O] TEXT mode: argmax, or a draw from the processed text logits (per item generator if any)."""
        if logits is None:
            raise PromptError("text mode needs the model's text head")
        idx = torch.tensor(items, device=self.device)
        scores = logits[idx, 0].float()  # [n, V]
        conf = self.sampling
        if not conf.do_sample:
            return scores.argmax(-1).tolist()
        scores = process_logits(scores[:, None], temperature=_text_value(conf.temperature),
                                top_k=_text_value(conf.top_k), top_p=_text_value(conf.top_p))[:, 0]
        probs = scores.softmax(-1)
        gens = self.generators
        if gens is None or isinstance(gens, torch.Generator):
            return torch.multinomial(probs, 1, generator=gens).squeeze(1).tolist()
        return [int(torch.multinomial(probs[j], 1, generator=gens[i])) for j, i in enumerate(items)]

    # ---- results -----------------------------------------------------------------------------------------------
    def results(self) -> list[GenerationResult]:
        k, cb = self.cfg.num_codebooks, self.cfg.codebook_size
        out = []
        for i in range(self.batch):
            blocks = tuple(torch.stack(span, dim=1) if span else torch.zeros(k, 0, dtype=torch.long)
                           for span in self.spans[i])
            codes = [span_codes(block, self.sampling.reference, cb) for block in blocks]
            out.append(GenerationResult(
                delayed=blocks[0] if blocks else torch.zeros(k, 0, dtype=torch.long),
                codes=torch.cat(codes, dim=1) if codes else torch.zeros(k, 0, dtype=torch.long),
                spans=blocks, text_ids=tuple(self.text_ids[i]), stop_reason=self.stop_reason[i] or "max_frames",
                steps=self.steps[i], prompt_length=self.inputs[i].length, resampled=self.resampled[i],
                prefill_s=self.prefill_s, elapsed_s=self.elapsed_s))
        return out


def _as_list(prompts: RenderedPrompt | Sequence[RenderedPrompt]) -> tuple[list[RenderedPrompt], bool]:
    if isinstance(prompts, RenderedPrompt):
        return [prompts], True
    return list(prompts), False


def generate(model: HiggsGenModel, prompts: RenderedPrompt | Sequence[RenderedPrompt], *,
             sampling: SamplingConfig = DEFAULT_SAMPLING, max_frames: int = 2048,
             seed: int | Sequence[int] | None = None, generator: Generators = None,
             continue_after_audio: bool = False, stop_token_ids: Iterable[int] = DEFAULT_STOP_TOKEN_IDS,
             max_context: int | None = None) -> GenerationResult | list[GenerationResult]:
    """Generate audio for one prompt or a batch (the loop of the module docstring).

    Args:
        model: the generation model (any device / dtype; logits are sampled in float32).
        prompts: one :class:`~tokenwave.tts.prompt.RenderedPrompt` or several (any lengths), rendered with one
            position per frame (:func:`render`); each normally ends with ``<|audio_out_bos|>``.
        sampling: sampling parameters and reference rules (default: [O]'s rules, temperature 1, RAS 7/2).
        max_frames: steps per item at most (frames, the all-BOS one included, and text tokens).
        seed: an int (every item gets a generator seeded with it) or one per prompt.
        generator: instead of ``seed``, one ``torch.Generator`` or one per prompt (on the model's device).
        continue_after_audio: go on in text mode after an audio span ends, as [O] does (default: stop).
        stop_token_ids: text tokens that end an item in text mode.
        max_context: positions of prompt + generation at most (the KV cache holds the longest prompt +
            ``max_frames`` - 1 positions, fewer under this bound); an item whose context is full stops with
            ``"context_full"``. Default: no bound.

    Returns:
        A :class:`GenerationResult` for a single prompt, else a list in the prompts' order.

    Raises:
        PromptError: a prompt that cannot be generated from (see :func:`prompt_inputs`).
        CacheOverflowError: a prompt of ``max_context`` positions or more.
    """
    items, single = _as_list(prompts)
    loop = _Loop(model, items, sampling=sampling, max_frames=max_frames, seed=seed, generator=generator,
                 continue_after_audio=continue_after_audio, stop_token_ids=stop_token_ids, max_context=max_context)
    for _ in loop.run():
        pass
    results = loop.results()
    return results[0] if single else results


# ------------------------------------------------------------------------------------------------- long texts
@dataclass(frozen=True, eq=False)
class LongGenerationResult:
    """A long text generated chunk by chunk.

    Attributes:
        codes: ``[K, T]`` every chunk's codes, concatenated in order (decode once, as [O] does).
        chunks: the text chunks.
        results: each chunk's :class:`GenerationResult`.
    """

    codes: torch.Tensor
    chunks: tuple[str, ...]
    results: tuple[GenerationResult, ...]

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])


class LongTextPlan:
    """The prompts of a long text, one per chunk, each built when the previous chunk's codes are known ([O]
    ``examples/generation.py``: all previous chunks, or the last ``buffer_size``, stay in context as user turn +
    assistant audio turn). Arguments as :func:`generate_long`; :attr:`chunks` the text chunks, :meth:`prompt`
    the rendered prompt of chunk ``index`` (after :meth:`add` of every earlier chunk's codes)."""

    def __init__(self, tokenizer: TextTokenizer, transcript: str, *, context: Prompt | None = None,
                 scene: str | None = DEFAULT_SCENE, voices: Sequence[Reference | str] = (),
                 speaker_descriptions: Mapping[int, str] | None = None,
                 chunk_method: Literal["speaker", "word"] | None = None, max_words: int = 200, max_turns: int = 1,
                 buffer_size: int | None = None, style: Style = "original", force_audio: bool = True) -> None:
        if not isinstance(transcript, str) or not transcript.strip():
            raise PromptError("empty text to speak")
        self.tokenizer, self.style, self.force_audio, self.buffer_size = tokenizer, style, force_audio, buffer_size
        self.context = context if context is not None else build_context(
            transcript, scene=scene, voices=voices, speaker_descriptions=speaker_descriptions)
        self.chunks = [c for c in chunk_transcript(transcript, chunk_method, max_words=max_words,
                                                   max_turns=max_turns) if c.strip()]
        if not self.chunks:
            raise PromptError("the text to speak gives no chunk")
        self.done: list[tuple[str, Audio]] = []
        self.added: list[int] = []

    def prompt(self, index: int) -> RenderedPrompt:
        if index != len(self.added):
            raise ValueError(f"chunk {index} needs the codes of chunks 0..{index - 1} first (add)")
        prompt = continue_prompt(self.context, self.done, self.chunks[index], buffer_size=self.buffer_size)
        return render(prompt, self.tokenizer, style=self.style, force_audio=self.force_audio)

    def add(self, index: int, codes: torch.Tensor) -> None:
        """Record chunk ``index``'s generated codes ``[K, T]`` for the next prompts."""
        self.added.append(index)
        # a chunk that produced no frame cannot be an audio turn; it is left out of the context
        if codes.shape[1]:
            self.done.append((self.chunks[index], Audio(codes=codes.cpu())))


def generate_long(model: HiggsGenModel, tokenizer: TextTokenizer, transcript: str, *, context: Prompt | None = None,
                  scene: str | None = DEFAULT_SCENE, voices: Sequence[Reference | str] = (),
                  speaker_descriptions: Mapping[int, str] | None = None,
                  chunk_method: Literal["speaker", "word"] | None = "word", max_words: int = 200,
                  max_turns: int = 1, buffer_size: int | None = None, style: Style = "original",
                  force_audio: bool = True, sampling: SamplingConfig = DEFAULT_SAMPLING, max_frames: int = 2048,
                  seed: int | None = None, max_context: int | None = None) -> LongGenerationResult:
    """Speak a long ``transcript`` chunk by chunk ([O] ``examples/generation.py``, spec 7).

    The transcript is cut with :func:`~tokenwave.tts.text.chunk_transcript` (``chunk_method``, ``max_words``,
    ``max_turns``); each chunk is generated with the context (``context``, default :func:`build_context` of the
    whole transcript with ``scene``, ``voices``, ``speaker_descriptions``), then every earlier chunk (or the last
    ``buffer_size``) as a user turn with its generated codes as an assistant audio turn, then the chunk as the new
    user turn (:func:`~tokenwave.tts.prompt.continue_prompt`). Every chunk uses the same ``seed``, as [O] passes
    its seed to every chunk's ``generate``. ``max_frames`` and ``max_context`` apply per chunk. The codes are
    concatenated. Differences from [O]: audio is forced at the start of every chunk by default
    (``force_audio``; [O]'s script lets the model start it), a chunk stops when its audio span ends (see
    :func:`generate`), and a chunk that made no frame is left out of the context.
    """
    plan = LongTextPlan(tokenizer, transcript, context=context, scene=scene, voices=voices,
                        speaker_descriptions=speaker_descriptions, chunk_method=chunk_method, max_words=max_words,
                        max_turns=max_turns, buffer_size=buffer_size, style=style, force_audio=force_audio)
    return generate_chunks(model, plan, sampling=sampling, max_frames=max_frames, seed=seed, max_context=max_context)


def generate_chunks(model: HiggsGenModel, plan: LongTextPlan, *, sampling: SamplingConfig = DEFAULT_SAMPLING,
                    max_frames: int = 2048, seed: int | None = None,
                    max_context: int | None = None) -> LongGenerationResult:
    """Generate the chunks of ``plan`` in order (:func:`generate_long` for a prepared :class:`LongTextPlan`)."""
    results = []
    for i in range(len(plan.chunks)):
        result = generate(model, plan.prompt(i), sampling=sampling, max_frames=max_frames, seed=seed,
                          max_context=max_context)
        plan.add(i, result.codes)
        results.append(result)
    return LongGenerationResult(torch.cat([r.codes for r in results], dim=1), tuple(plan.chunks), tuple(results))


# -------------------------------------------------------------------------------------------------- streaming
@dataclass
class StreamStats:
    """Measurements of one stream (updated while it runs).

    Attributes:
        time_to_first_audio_s: seconds from the start of the stream (before the prefill) to the first non-empty
            audio chunk; None until then.
        prefill_s: seconds of the (first) prefill.
        elapsed_s: seconds from the start to the last chunk so far.
        steps: generation steps; frames: codec frames decoded so far; samples: audio samples yielded so far.
        chunks: audio chunks yielded.
    """

    time_to_first_audio_s: float | None = None
    prefill_s: float | None = None
    elapsed_s: float = 0.0
    steps: int = 0
    frames: int = 0
    samples: int = 0
    chunks: int = 0
    sample_rate: int = 0

    @property
    def audio_s(self) -> float:
        """Seconds of audio yielded so far."""
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def real_time_factor(self) -> float | None:
        """Elapsed time over audio time (below 1: faster than real time)."""
        return self.elapsed_s / self.audio_s if self.samples else None


class AudioStream(Iterator[torch.Tensor]):
    """Audio chunks (1-D float32 tensors at :attr:`sample_rate`, on the CPU) while frames are generated.

    Each generated frame goes through an incremental de-delay (:class:`~tokenwave.tts.delay.DelayReverter`,
    per span, by the reference's trimming rule: [O] drops the all-BOS frame and the one the span's last frame
    completes; [T] feeds the frames strictly between its all-BOS and all-EOS frames), completed codes are clipped
    to ``[0, codebook_size - 1]`` and pushed to the audio tokenizer's
    :class:`~tokenwave.streaming.StreamingDecoder` every ``chunk_frames`` frames; whatever it returns is yielded.
    The concatenated chunks equal decoding :attr:`codes` at once up to the streaming decoder's tolerance. After
    the last chunk :attr:`results` holds each generation's result and :attr:`codes` all codes; :attr:`stats` is
    updated as the stream runs.
    """

    def __init__(self, audio_tokenizer: AudioTokenizer, loops: Callable[[], Iterator[_Loop]], *,
                 chunk_frames: int = 10, lookahead_frames: int | None = None, num_codebooks: int = 8,
                 codebook_size: int = 1024) -> None:
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
        if audio_tokenizer.num_codebooks < num_codebooks or audio_tokenizer.codebook_size != codebook_size:
            raise ValueError(f"the audio tokenizer has {audio_tokenizer.num_codebooks} codebooks of "
                             f"{audio_tokenizer.codebook_size} codes; the generation model makes {num_codebooks} of "
                             f"{codebook_size}")
        self.sample_rate = int(audio_tokenizer.sample_rate)
        self.stats = StreamStats(sample_rate=self.sample_rate)
        self.results: list[GenerationResult] = []
        self._codes: list[torch.Tensor] = []
        self._chunk_frames, self._codebook_size, self._k = chunk_frames, codebook_size, num_codebooks
        look = DEFAULT_DECODE_CONTEXT_FRAMES if lookahead_frames is None else lookahead_frames
        self._decoder = StreamingDecoder(audio_tokenizer, lookahead_frames=look)
        self._loops = loops
        self._it: Iterator[torch.Tensor] | None = None
        self._start: float | None = None

    @property
    def codes(self) -> torch.Tensor:
        """``[K, T]`` the codes decoded so far (all of them once the stream is exhausted)."""
        return torch.cat(self._codes, dim=1) if self._codes else torch.zeros(self._k, 0, dtype=torch.long)

    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> torch.Tensor:
        if self._it is None:
            self._start = time.perf_counter()
            self._it = self._chunks()
        chunk = next(self._it)
        now = time.perf_counter() - self._start
        if self.stats.time_to_first_audio_s is None:
            self.stats.time_to_first_audio_s = now
        self.stats.elapsed_s = now
        self.stats.samples += int(chunk.shape[0])
        self.stats.chunks += 1
        return chunk

    def _chunks(self) -> Iterator[torch.Tensor]:
        pending: list[torch.Tensor] = []
        for loop in self._loops():
            reverter: DelayReverter | None = None
            marked = loop.original
            for emits in loop.run():
                if self.stats.prefill_s is None:
                    self.stats.prefill_s = loop.prefill_s
                self.stats.steps += 1
                for emit in emits:  # one item per stream
                    if emit.frame is None:
                        continue
                    if emit.span_start:
                        reverter = DelayReverter(self._k, codebook_size=self._codebook_size, stream_markers=marked)
                        if not marked:  # [T]: the all-BOS frame is outside the span's frames
                            continue
                    ended_all_eos = not marked and bool((emit.frame == self._codebook_size + 1).all())
                    if ended_all_eos:  # [T]: the all-EOS frame closes the span, it is not a frame of it
                        continue
                    done = reverter.push(emit.frame, final=marked and emit.span_end)
                    if done.shape[-1]:
                        pending.append(done.clamp(0, self._codebook_size - 1))
                if sum(p.shape[1] for p in pending) >= self._chunk_frames:
                    audio = self._push(pending)
                    pending = []
                    if audio.numel():
                        yield audio
            self.results.extend(loop.results())
        if pending:
            audio = self._push(pending)
            if audio.numel():
                yield audio
        tail = self._decoder.flush()
        if tail.numel():
            yield tail

    def _push(self, pending: list[torch.Tensor]) -> torch.Tensor:
        codes = torch.cat(pending, dim=1)
        self._codes.append(codes)
        self.stats.frames += int(codes.shape[1])
        return self._decoder.push(codes).float().cpu()


def stream(model: HiggsGenModel, prompt: RenderedPrompt, audio_tokenizer: AudioTokenizer, *,
           sampling: SamplingConfig = DEFAULT_SAMPLING, max_frames: int = 2048, seed: int | None = None,
           generator: torch.Generator | None = None, continue_after_audio: bool = False,
           stop_token_ids: Iterable[int] = DEFAULT_STOP_TOKEN_IDS, max_context: int | None = None,
           chunk_frames: int = 10, lookahead_frames: int | None = None) -> AudioStream:
    """Stream the audio of one prompt while it is generated (:class:`AudioStream`; generation as in
    :func:`generate`, same arguments, one prompt). The loop starts at the first ``next()``; argument errors are
    raised here. ``chunk_frames``: codec frames per decoder push; ``lookahead_frames``: the streaming decoder's
    look-ahead (default :data:`~tokenwave.streaming.DEFAULT_DECODE_CONTEXT_FRAMES`)."""
    loop = _Loop(model, [prompt], sampling=sampling, max_frames=max_frames, seed=seed, generator=generator,
                 continue_after_audio=continue_after_audio, stop_token_ids=stop_token_ids, max_context=max_context)
    return AudioStream(audio_tokenizer, lambda: iter([loop]), chunk_frames=chunk_frames,
                       lookahead_frames=lookahead_frames, num_codebooks=model.config.num_codebooks,
                       codebook_size=model.config.codebook_size)


def stream_long(model: HiggsGenModel, tokenizer: TextTokenizer, transcript: str, audio_tokenizer: AudioTokenizer, *,
                context: Prompt | None = None, scene: str | None = DEFAULT_SCENE,
                voices: Sequence[Reference | str] = (), speaker_descriptions: Mapping[int, str] | None = None,
                chunk_method: Literal["speaker", "word"] | None = "word", max_words: int = 200, max_turns: int = 1,
                buffer_size: int | None = None, style: Style = "original", force_audio: bool = True,
                sampling: SamplingConfig = DEFAULT_SAMPLING, max_frames: int = 2048, seed: int | None = None,
                max_context: int | None = None, chunk_frames: int = 10,
                lookahead_frames: int | None = None) -> AudioStream:
    """:func:`generate_long` as a stream: the chunks are generated in turn and their audio is streamed as one
    signal (one streaming decoder across chunks, so the stream equals decoding the concatenated codes, as
    :func:`generate_long` + one decode does, up to the decoder's tolerance)."""
    plan = LongTextPlan(tokenizer, transcript, context=context, scene=scene, voices=voices,
                        speaker_descriptions=speaker_descriptions, chunk_method=chunk_method, max_words=max_words,
                        max_turns=max_turns, buffer_size=buffer_size, style=style, force_audio=force_audio)
    return stream_chunks(model, plan, audio_tokenizer, sampling=sampling, max_frames=max_frames, seed=seed,
                         max_context=max_context, chunk_frames=chunk_frames, lookahead_frames=lookahead_frames)


def stream_chunks(model: HiggsGenModel, plan: LongTextPlan, audio_tokenizer: AudioTokenizer, *,
                  sampling: SamplingConfig = DEFAULT_SAMPLING, max_frames: int = 2048, seed: int | None = None,
                  max_context: int | None = None, chunk_frames: int = 10,
                  lookahead_frames: int | None = None) -> AudioStream:
    """Stream the chunks of ``plan`` (:func:`stream_long` for a prepared :class:`LongTextPlan`). The first chunk's
    prompt is checked here (errors are raised before the first ``next()``), the others when their turn comes."""

    def make(i: int) -> _Loop:
        return _Loop(model, [plan.prompt(i)], sampling=sampling, max_frames=max_frames, seed=seed, generator=None,
                     continue_after_audio=False, stop_token_ids=DEFAULT_STOP_TOKEN_IDS, max_context=max_context)

    first = make(0)

    def loops() -> Iterator[_Loop]:
        for i in range(len(plan.chunks)):
            loop = first if i == 0 else make(i)
            yield loop
            plan.add(i, loop.results()[0].codes)

    return AudioStream(audio_tokenizer, loops, chunk_frames=chunk_frames, lookahead_frames=lookahead_frames,
                       num_codebooks=model.config.num_codebooks, codebook_size=model.config.codebook_size)
