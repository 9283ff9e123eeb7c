"""Typed Higgs Audio v2 prompts and their rendering to token ids in both reference formats.

[O] = the original ``boson_multimodal`` 0.1.1 (``prepare_chatml_sample`` + serve engine) and its
``examples/generation.py``; [T] = the chat template that transformers 5.23's converter installs, applied by
``HiggsAudioV2Processor`` (spec_generation.md §4). A prompt is a :class:`SystemMessage` (instruction, scene
description, speakers) followed by turns: :class:`UserMessage` (text to speak) and :class:`AssistantMessage`
(audio, as codes or as a placeholder to be encoded later). :func:`render_original` and
:func:`render_transformers` give the token ids, the audio spans to splice in and their positions::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{text}\\n\\n<|scene_desc_start|>\\n
    {scene}\\n\\nSPEAKER0: {description | audio}\\n...\\n<|scene_desc_end|><|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{text}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n<|audio_out_bos|>[audio]<|audio_eos|><|eot_id|> ...
    <|start_header_id|>assistant<|end_header_id|>\\n\\n[<|audio_out_bos|>]          (generation prompt)

where ``[audio]`` is, compact, one placeholder id per span (``<|AUDIO_OUT|>``; in [O], speaker audio in the
system message is ``<|audio_bos|><|AUDIO|><|audio_eos|>`` instead), or, expanded, one position per delayed
frame, ``F = T + K + 1`` for ``T`` frames of ``K`` codebooks: [T] writes ``T + 2`` x ``<|AUDIO_OUT|>`` then
``K - 1`` x ``<|reserved_special_token_6|>`` (its processor's form, the default of :func:`render_transformers`),
[O] repeats its placeholder ``F`` times (what its model builds inside the forward; :func:`render_original`
gives the compact ids the original feeds the model unless ``expand=True``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..api import TokenwaveError
from .text import SPEAKER_TAG, TextTokenizer, speaker_tags

__all__ = ["PromptError", "Audio", "Speaker", "SystemMessage", "UserMessage", "AssistantMessage", "Prompt",
           "Reference", "AudioSpan", "RenderedPrompt", "build_context", "build_prompt", "continue_prompt",
           "render_original", "render_transformers", "to_transformers_conversation", "SPECIAL_TOKENS",
           "DEFAULT_SYSTEM_TEXT", "MULTISPEAKER_SYSTEM_TEXT", "DEFAULT_SCENE"]

#: Control tokens used in prompts and their ids in the published tokenizer (spec §2).
SPECIAL_TOKENS: dict[str, int] = {
    "<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007, "<|eom_id|>": 128008, "<|eot_id|>": 128009, "<|audio_bos|>": 128011,
    "<|audio_eos|>": 128012, "<|audio_out_bos|>": 128013, "<|reserved_special_token_6|>": 128014,
    "<|AUDIO|>": 128015, "<|AUDIO_OUT|>": 128016, "<|scene_desc_start|>": 128018, "<|scene_desc_end|>": 128019,
}
#: System text of [O]'s README / serve-engine examples.
DEFAULT_SYSTEM_TEXT = "Generate audio following instruction."
#: System text of [O] ``examples/generation.py`` for several speakers without reference audio.
MULTISPEAKER_SYSTEM_TEXT = (
    "You are an AI assistant designed to convert text into speech.\n"
    "If the user's message includes a [SPEAKER*] tag, do not read out the tag and generate speech for the "
    "following text, using the specified voice.\n"
    "If no speaker tag is present, select a suitable voice on your own.")
#: [O]'s default scene file (``scene_prompts/quiet_indoor.txt``).
DEFAULT_SCENE = "Audio is recorded from a quiet room."
# Codes per codebook of the Higgs Audio v2 tokenizer (stream BOS/EOS 1024/1025 are added by the model side).
_CODEBOOK_SIZE = 1024

_AUDIO_OUT, _AUDIO_IN, _DELAY = "<|AUDIO_OUT|>", "<|AUDIO|>", "<|reserved_special_token_6|>"
_OUT_SPAN, _IN_SPAN = "<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>", "<|audio_bos|><|AUDIO|><|audio_eos|>"
_CONTROL = re.compile(r"<\|[^\s|<>]+\|>")
_MALFORMED_TAG = re.compile(r"\[SPEAKER[^\]\n]*\]")


class PromptError(TokenwaveError, ValueError):
    """A prompt that cannot be built or rendered (empty text, unknown speaker, missing codes ...)."""


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise PromptError(f"{what}: empty text" if isinstance(text, str) else f"{what}: text must be a str")
    control = _CONTROL.search(text)
    if control:
        raise PromptError(f"{what}: contains the control token {control[0]}, which would break the prompt "
                          "structure (scene and speakers have their own fields)")


@dataclass(frozen=True, eq=False)
class Audio:
    """One audio span: codec codes, or a placeholder for audio still to be encoded.

    Attributes:
        codes: ``[K, T]`` undelayed codes in ``[0, 1024)`` (converted to int64), or ``None``.
        source: where the audio comes from (a file path or a name), for a placeholder or for the record.
    At least one of the two is required. Rendering with one position per frame needs ``codes``.
    """

    codes: torch.Tensor | None = None
    source: str | None = None

    def __post_init__(self):
        if self.codes is None and self.source is None:
            raise PromptError("Audio needs codes or a source (the placeholder for audio to encode later)")
        if self.source is not None and (not isinstance(self.source, str) or not self.source):
            raise PromptError("Audio source must be a non-empty str")
        if self.codes is not None:
            codes = torch.as_tensor(self.codes)
            if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
                raise PromptError(f"Audio codes must be integers, got {codes.dtype}")
            if codes.dim() != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
                raise PromptError(f"Audio codes must be [codebooks, frames] with both > 0, got {tuple(codes.shape)}")
            if int(codes.min()) < 0 or int(codes.max()) >= _CODEBOOK_SIZE:
                raise PromptError(f"Audio codes must lie in [0, {_CODEBOOK_SIZE}), got [{int(codes.min())}, "
                                  f"{int(codes.max())}] (stream BOS/EOS and the delay pattern are added later)")
            object.__setattr__(self, "codes", codes.long())

    @property
    def num_frames(self) -> int | None:
        """``T``, the codec frames, or ``None`` for a placeholder."""
        return None if self.codes is None else int(self.codes.shape[1])


@dataclass(frozen=True)
class Speaker:
    """``SPEAKER{index}`` in the scene description: a voice description text or a reference audio."""

    index: int
    description: str | None = None
    audio: Audio | None = None

    def __post_init__(self):
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise PromptError(f"speaker index must be an int >= 0, got {self.index!r}")
        if (self.description is None) == (self.audio is None):
            raise PromptError(f"{self.tag}: give exactly one of description and audio")
        if self.description is not None:
            _check_text(self.description, f"{self.tag} description")
        elif not isinstance(self.audio, Audio):
            raise PromptError(f"{self.tag}: audio must be an Audio, got {type(self.audio).__name__}")

    @property
    def tag(self) -> str:
        return f"SPEAKER{self.index}"


@dataclass(frozen=True)
class SystemMessage:
    """The system turn: instruction ``text``, optional ``scene`` description and ``speakers``.

    Both references put the scene and the speakers into the system turn as
    ``{text}\\n\\n<|scene_desc_start|>\\n{scene}\\n\\n{speaker lines}\\n<|scene_desc_end|>`` (the ``\\n\\n``
    between scene and speakers only when both exist; speaker lines ``SPEAKER{i}: {description}`` or
    ``SPEAKER{i}: {audio}`` joined with ``\\n``, in the given order).
    """

    text: str = DEFAULT_SYSTEM_TEXT
    scene: str | None = None
    speakers: tuple[Speaker, ...] = ()

    def __post_init__(self):
        _check_text(self.text, "system message")
        if self.scene is not None:
            _check_text(self.scene, "scene description")
        object.__setattr__(self, "speakers", tuple(self.speakers))
        seen = set()
        for speaker in self.speakers:
            if not isinstance(speaker, Speaker):
                raise PromptError(f"system message: speakers must be Speaker objects, got {type(speaker).__name__}")
            if speaker.index in seen:
                raise PromptError(f"system message: {speaker.tag} is declared twice")
            seen.add(speaker.index)


@dataclass(frozen=True)
class UserMessage:
    """A user turn: the text to speak (may contain ``[SPEAKERn]`` tags and ``<SE>`` sound-event tags)."""

    text: str

    def __post_init__(self):
        _check_text(self.text, "user message")
        bad = [m for m in _MALFORMED_TAG.findall(self.text) if not SPEAKER_TAG.fullmatch(m)]
        if bad:
            raise PromptError(f"user message: malformed speaker tag {bad[0]!r} (write [SPEAKER0], [SPEAKER1] ...)")


@dataclass(frozen=True)
class AssistantMessage:
    """An assistant turn holding one audio span (a reference, or a previously generated chunk)."""

    audio: Audio

    def __post_init__(self):
        if not isinstance(self.audio, Audio):
            raise PromptError(f"assistant message: audio must be an Audio, got {type(self.audio).__name__}")


Turn = UserMessage | AssistantMessage


@dataclass(frozen=True)
class Prompt:
    """A system message (optional in [O], required by [T]) and the turns that follow.

    Speaker check: a speaker is *declared* by the system message's speakers or by a tag in a user turn that
    an assistant turn answers (an in-context reference or an earlier chunk). When any speaker is declared,
    every ``[SPEAKERn]`` tag of every user turn must be declared, else :class:`PromptError` names it.
    """

    system: SystemMessage | None
    turns: tuple[Turn, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "turns", tuple(self.turns))
        if self.system is not None and not isinstance(self.system, SystemMessage):
            raise PromptError(f"system must be a SystemMessage or None, got {type(self.system).__name__}")
        for i, turn in enumerate(self.turns):
            if not isinstance(turn, (UserMessage, AssistantMessage)):
                raise PromptError(f"turn {i}: must be a UserMessage or AssistantMessage, got {type(turn).__name__}")
        if self.system is None and not self.turns:
            raise PromptError("empty prompt: no system message and no turns")
        declared = self.declared_speakers()
        for i, turn in enumerate(self.turns):
            if isinstance(turn, UserMessage) and declared:
                unknown = sorted(set(speaker_tags(turn.text)) - declared)
                if unknown:
                    raise PromptError(f"turn {i} (user): unknown speaker [SPEAKER{unknown[0]}]; declared: "
                                      + ", ".join(f"SPEAKER{s}" for s in sorted(declared)))

    def declared_speakers(self) -> set[int]:
        """Speaker numbers declared by the system message or by answered user turns (see the class doc)."""
        declared = {s.index for s in self.system.speakers} if self.system else set()
        for turn, after in zip(self.turns, self.turns[1:]):
            if isinstance(turn, UserMessage) and isinstance(after, AssistantMessage):
                declared.update(speaker_tags(turn.text))
        return declared

    def append(self, *turns: Turn) -> Prompt:
        """A new prompt with ``turns`` added at the end."""
        return Prompt(self.system, self.turns + tuple(turns))


@dataclass(frozen=True)
class Reference:
    """A reference voice: its audio and what is said in it."""

    transcript: str
    audio: Audio

    def __post_init__(self):
        _check_text(self.transcript, "reference transcript")
        if not isinstance(self.audio, Audio):
            raise PromptError(f"reference audio must be an Audio, got {type(self.audio).__name__}")


def build_context(transcript: str, *, scene: str | None = DEFAULT_SCENE, voices: Sequence[Reference | str] = (),
                  voices_in_system: bool = False, speaker_descriptions: Mapping[int, str] | None = None) -> Prompt:
    """The context [O] ``examples/generation.py`` (``prepare_generation_context``) builds: system message and
    in-context references, without the text to speak (see :func:`build_prompt`, :func:`continue_prompt`).

    Args:
        transcript: the whole (normalised, see :func:`~tokenwave.tts.text.normalize_transcript`) transcript;
            its speaker tags decide the speakers, as in [O] (tags are read before chunking).
        scene: scene description, ``None`` for none.
        voices: voice ``i`` is ``SPEAKER{i}``: a :class:`Reference`, or a description text ([O]'s
            ``profile:`` voices). Tags in ``transcript`` must name voices (``[SPEAKER0]`` .. ``[SPEAKER{n-1}]``).
        voices_in_system: put the reference audio into the scene description (``SPEAKER{i}: <audio>``, [O]'s
            ``--ref_audio_in_system_message``; the reference transcripts are then unused, as in [O]) instead of
            in-context user/assistant turns. Forced on when any voice is a description, as in [O].
        speaker_descriptions: without voices, descriptions by speaker number, one for each tag of the
            transcript (an addition to [O]); default, with two or more tags: [O]'s alternation
            ``feminine``/``masculine`` in [O]'s tag order.

    Layout (as [O]): with voices in context, system = instruction + scene (no system message at all when
    ``scene`` is ``None``), then per voice a user turn with its transcript (``[SPEAKER{i}] `` prefixed when
    there are several) and an assistant turn with its audio. Without voices and with two or more speaker tags
    (or ``speaker_descriptions``), system = :data:`MULTISPEAKER_SYSTEM_TEXT` + scene + one line per speaker.
    Otherwise system = :data:`DEFAULT_SYSTEM_TEXT` + scene.
    """
    tags = speaker_tags(transcript)
    voices = tuple(voices)
    if voices:
        if speaker_descriptions is not None:
            raise PromptError("give speaker descriptions as voices (text entries) when voices are given")
        unknown = [t for t in tags if t >= len(voices)]
        if unknown:
            raise PromptError(f"unknown speaker [SPEAKER{unknown[0]}]: {len(voices)} voice(s) give SPEAKER0"
                              + (f"..SPEAKER{len(voices) - 1}" if len(voices) > 1 else ""))
        for i, voice in enumerate(voices):
            if not isinstance(voice, (Reference, str)):
                raise PromptError(f"voice {i}: must be a Reference or a description str, got {type(voice).__name__}")
        if voices_in_system or any(isinstance(v, str) for v in voices):
            speakers = tuple(Speaker(i, description=v) if isinstance(v, str) else Speaker(i, audio=v.audio)
                             for i, v in enumerate(voices))
            return Prompt(SystemMessage(DEFAULT_SYSTEM_TEXT, scene, speakers))
        turns: list[Turn] = []
        for i, ref in enumerate(voices):
            turns.append(UserMessage(f"[SPEAKER{i}] {ref.transcript}" if len(voices) > 1 else ref.transcript))
            turns.append(AssistantMessage(ref.audio))
        return Prompt(SystemMessage(DEFAULT_SYSTEM_TEXT, scene) if scene is not None else None, turns)
    if speaker_descriptions is not None:
        missing = [t for t in tags if t not in speaker_descriptions]
        extra = sorted(set(speaker_descriptions) - set(tags))
        if missing or extra:
            raise PromptError(f"speaker_descriptions: no description for SPEAKER{missing[0]}" if missing else
                              f"speaker_descriptions: unknown speaker SPEAKER{extra[0]} (not tagged in the text)")
    if len(tags) > 1 or (speaker_descriptions and tags):
        speakers = tuple(Speaker(t, description=speaker_descriptions[t] if speaker_descriptions is not None
                                 else ("feminine", "masculine")[k % 2]) for k, t in enumerate(tags))
        return Prompt(SystemMessage(MULTISPEAKER_SYSTEM_TEXT, scene, speakers))
    return Prompt(SystemMessage(DEFAULT_SYSTEM_TEXT, scene))


def build_prompt(text: str, *, scene: str | None = DEFAULT_SCENE, voices: Sequence[Reference | str] = (),
                 voices_in_system: bool = False, speaker_descriptions: Mapping[int, str] | None = None) -> Prompt:
    """:func:`build_context` for ``text`` followed by ``text`` as the user turn: a text spoken in one go."""
    context = build_context(text, scene=scene, voices=voices, voices_in_system=voices_in_system,
                            speaker_descriptions=speaker_descriptions)
    return context.append(UserMessage(text))


def continue_prompt(base: Prompt, done: Sequence[tuple[str, Audio]], text: str, *,
                    buffer_size: int | None = None) -> Prompt:
    """The prompt for the next chunk of a long text ([O] ``HiggsAudioModelClient.generate``).

    ``base`` (the context from :func:`build_context`: system + references) is kept whole; each finished
    chunk ``(chunk text, generated audio)`` becomes a user turn and an assistant turn, only the last
    ``buffer_size`` chunks when given ([O] ``generation_chunk_buffer_size``; 0 keeps none, where [O]'s
    ``[-0:]`` keeps all); then ``text`` as the new user turn.
    """
    if buffer_size is not None:
        if buffer_size < 0:
            raise PromptError(f"buffer_size must be >= 0, got {buffer_size}")
        done = list(done)[-buffer_size:] if buffer_size else []
    turns: list[Turn] = []
    for chunk, audio in done:
        turns += [UserMessage(chunk), AssistantMessage(audio)]
    return base.append(*turns, UserMessage(text))


# ----------------------------------------------------------------------------------------------- rendering

@dataclass(frozen=True, eq=False)
class AudioSpan:
    """Where one audio span sits in :attr:`RenderedPrompt.input_ids`.

    Attributes:
        start: index of the span's first position (the placeholder in compact form).
        length: positions it occupies: 1 in compact form, ``T + K + 1`` (delayed frames incl. stream BOS/EOS)
            when expanded.
        kind: ``"out"`` for ``<|AUDIO_OUT|>`` spans (assistant audio, [T] scene audio), ``"in"`` for
            ``<|AUDIO|>`` spans ([O] speaker audio in the system message; note the [O] serve engine drops
            their codes, [O] ``examples/generation.py`` uses them).
        audio: the :class:`Audio` (codes to splice, or a placeholder).
        turn: index into ``Prompt.turns``, or ``None`` for the system message.
    """

    start: int
    length: int
    kind: Literal["in", "out"]
    audio: Audio
    turn: int | None


@dataclass(frozen=True, eq=False)
class RenderedPrompt:
    """Token ids of a prompt and its audio spans, in order of appearance.

    Attributes:
        input_ids: ``[L]`` int64.
        spans: the audio spans, in order (the k-th span takes the k-th audio of the model's audio input).
        style: ``"original"`` ([O]) or ``"transformers"`` ([T]).
        text: the rendered prompt string with one placeholder per span (before expansion).
        ends_with_audio_start: the prompt ends with ``<|audio_out_bos|>``: the next position is the first
            generated (all-stream-BOS) audio frame.
    """

    input_ids: torch.Tensor
    spans: tuple[AudioSpan, ...]
    style: Literal["original", "transformers"]
    text: str
    ends_with_audio_start: bool

    def audio_mask(self) -> torch.Tensor:
        """``[L]`` bool, True at every audio position (the DualFFN audio path)."""
        mask = torch.zeros(self.input_ids.shape[0], dtype=torch.bool)
        for span in self.spans:
            mask[span.start:span.start + span.length] = True
        return mask


@dataclass
class _Slot:
    kind: Literal["in", "out"]
    audio: Audio
    turn: int | None


def _speaker_lines(system: SystemMessage) -> list[str | Audio]:
    """The scene block body as text and audio items, [O]'s layout (see :class:`SystemMessage`)."""
    body: list[str | Audio] = [system.scene] if system.scene is not None else []
    for k, speaker in enumerate(system.speakers):
        sep = ("\n\n" if body else "") if k == 0 else "\n"
        if speaker.description is not None:
            body.append(f"{sep}{speaker.tag}: {speaker.description}")
        else:
            body += [f"{sep}{speaker.tag}: ", speaker.audio]
    return body


def _merge_text(items: list[str | Audio]) -> list[str | Audio]:
    out: list[str | Audio] = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        else:
            out.append(item)
    return out


def _original_system_content(system: SystemMessage) -> list[str | Audio]:
    if system.scene is None and not system.speakers:
        return [system.text]
    return _merge_text([system.text + "\n\n<|scene_desc_start|>\n", *_speaker_lines(system), "\n<|scene_desc_end|>"])


def render_original(prompt: Prompt, tokenizer: TextTokenizer, *, add_generation_prompt: bool = True,
                    force_audio: bool = False, expand: bool = False) -> RenderedPrompt:
    """Token ids as [O] builds them (``prepare_chatml_sample`` + ``HiggsAudioServeEngine._prepare_inputs``).

    Each piece is tokenized on its own and the ids concatenated (no BPE merges across pieces, no trimming):
    the header ``[<|begin_of_text|>]<|start_header_id|>{role}<|end_header_id|>\\n\\n`` (BOS on the first
    message only), each text item, each audio item (``<|audio_bos|><|AUDIO|><|audio_eos|>`` in the system
    message, ``<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>`` in assistant turns), then ``<|eom_id|>`` for an
    assistant turn followed by another assistant turn, else ``<|eot_id|>``. The system message is one text
    item (scene and description speakers inside it), split around speaker audio as [O]'s
    ``_build_system_message_with_audio_prompt`` does. Generation prompt (``add_generation_prompt``):
    ``<|start_header_id|>assistant<|end_header_id|>\\n\\n``, plus ``<|audio_out_bos|>`` when ``force_audio``
    (the serve engine's ``force_audio_gen``; [O]'s defaults: appended, not forced).

    ``expand=True`` repeats each placeholder ``T + K + 1`` times, as [O]'s model does inside its forward
    (``expanded_input_ids``); it needs the codes of every span.
    """
    pieces: list[str | _Slot] = []
    messages: list[tuple[str, list[str | Audio], int | None]] = []
    if prompt.system is not None:
        messages.append(("system", _original_system_content(prompt.system), None))
    for i, turn in enumerate(prompt.turns):
        content = [turn.text] if isinstance(turn, UserMessage) else [turn.audio]
        messages.append(("user" if isinstance(turn, UserMessage) else "assistant", content, i))
    for m, (role, content, turn) in enumerate(messages):
        pieces.append(("<|begin_of_text|>" if m == 0 else "") + f"<|start_header_id|>{role}<|end_header_id|>\n\n")
        for item in content:
            pieces.append(item if isinstance(item, str) else _Slot("out" if role == "assistant" else "in", item, turn))
        next_role = messages[m + 1][0] if m + 1 < len(messages) else None
        pieces.append("<|eom_id|>" if role == "assistant" and next_role == "assistant" else "<|eot_id|>")
    if add_generation_prompt:
        header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
        pieces.append(header + ("<|audio_out_bos|>" if force_audio else ""))
    slots = [item for item in pieces if isinstance(item, _Slot)]
    lengths = iter(_expanded_lengths(slots) if expand else [1] * len(slots))
    ids: list[int] = []
    spans: list[AudioSpan] = []
    text = []
    for item in pieces:
        if isinstance(item, str):
            ids += tokenizer.encode(item)
            text.append(item)
            continue
        frame_text = _OUT_SPAN if item.kind == "out" else _IN_SPAN
        span_ids = tokenizer.encode(frame_text)
        placeholder = tokenizer.token_id(_AUDIO_OUT if item.kind == "out" else _AUDIO_IN)
        if len(span_ids) != 3 or span_ids[1] != placeholder:
            raise PromptError(f"the text tokenizer does not treat {frame_text} as three special tokens")
        length = next(lengths)
        spans.append(AudioSpan(len(ids) + 1, length, item.kind, item.audio, item.turn))
        ids += [span_ids[0]] + [placeholder] * length + [span_ids[2]]
        text.append(frame_text)
    return RenderedPrompt(torch.tensor(ids, dtype=torch.long), tuple(spans), "original", "".join(text),
                          add_generation_prompt and force_audio)


def _expanded_lengths(slots: Sequence[_Slot]) -> list[int]:
    """Positions of each expanded span: ``T`` frames + stream BOS + stream EOS + ``K - 1`` delay frames.
    Every span needs codes, all with the same ``K``."""
    lengths = []
    for k, slot in enumerate(slots):
        codes = slot.audio.codes
        where = "system message" if slot.turn is None else f"turn {slot.turn}"
        if codes is None:
            raise PromptError(f"audio span {k} ({where}, source {slot.audio.source!r}) has no codes: encode it "
                              "before rendering one position per frame")
        if codes.shape[0] != slots[0].audio.codes.shape[0]:
            raise PromptError(f"audio span {k} ({where}) has {codes.shape[0]} codebooks, span 0 has "
                              f"{slots[0].audio.codes.shape[0]}")
        lengths.append(int(codes.shape[1]) + int(codes.shape[0]) + 1)
    return lengths


def _transformers_scene(system: SystemMessage) -> list[str | Audio] | str | None:
    """The [T] ``scene`` message content: a string without speaker audio (trimmed by the template, equal to
    [O]'s body), else items ``[scene], SPEAKER{i}: {description} | SPEAKER{i}:, audio ...``."""
    if system.scene is None and not system.speakers:
        return None
    if all(s.audio is None for s in system.speakers):
        return "".join(str(item) for item in _speaker_lines(system))
    items: list[str | Audio] = [system.scene] if system.scene is not None else []
    for speaker in system.speakers:
        if speaker.description is not None:
            items.append(f"{speaker.tag}: {speaker.description}")
        else:
            items += [f"{speaker.tag}:", speaker.audio]
    return items


def _render_scene_items(items: list[str | Audio], slot: Callable[[Audio], str]) -> str:
    """The [T] template's loop over scene items (``\\n\\n`` after the first text item, ``\\n`` after a middle
    text item unless audio follows, ``" " + audio`` and ``\\n`` unless last)."""
    out = []
    for k, item in enumerate(items):
        first, last = k == 0, k == len(items) - 1
        if isinstance(item, str):
            out.append(item.strip())
            if first and not last:
                out.append("\n\n")
            if not first and not last and isinstance(items[k + 1], str):
                out.append("\n")
        else:
            out.append(" " + slot(item))
            if not last:
                out.append("\n")
    return "".join(out)


def render_transformers(prompt: Prompt, tokenizer: TextTokenizer, *, add_generation_prompt: bool = True,
                        expand: bool = True) -> RenderedPrompt:
    """Token ids as transformers 5.23 builds them (chat template, then ``HiggsAudioV2Processor``).

    The template (``chat_template.jinja`` of the converter): ``bos_token``, the system header and the
    trimmed system text; the scene block ``\\n\\n<|scene_desc_start|>\\n ... \\n<|scene_desc_end|>`` from the
    ``scene`` message (see :func:`to_transformers_conversation`); ``<|eot_id|>``; per turn the header and the
    trimmed user text or ``<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>``, then always ``<|eot_id|>``; the
    generation prompt ``<|start_header_id|>assistant<|end_header_id|>\\n\\n<|audio_out_bos|>``. The processor
    replaces each ``<|AUDIO_OUT|>`` by ``T + 2`` x ``<|AUDIO_OUT|>`` and ``K - 1`` x
    ``<|reserved_special_token_6|>`` (``expand``; needs the codes) and tokenizes the whole string at once
    without adding special tokens (the string starts with BOS).
    """
    system = prompt.system
    if system is None:
        raise PromptError("the transformers chat template requires a system message")
    slots: list[_Slot] = []

    def slot(audio: Audio, turn: int | None = None) -> str:
        slots.append(_Slot("out", audio, turn))
        return _OUT_SPAN

    text = [tokenizer.bos_token, "<|start_header_id|>system<|end_header_id|>\n\n", system.text.strip()]
    scene = _transformers_scene(system)
    if scene is not None:
        body = scene.strip() if isinstance(scene, str) else _render_scene_items(scene, slot)
        text += ["\n\n<|scene_desc_start|>\n", body, "\n<|scene_desc_end|>"]
    text.append("<|eot_id|>")
    for i, turn in enumerate(prompt.turns):
        role = "user" if isinstance(turn, UserMessage) else "assistant"
        text.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n")
        text.append(turn.text.strip() if isinstance(turn, UserMessage) else slot(turn.audio, i))
        text.append("<|eot_id|>")
    if add_generation_prompt:
        text.append("<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>")
    compact = "".join(text)
    lengths = _expanded_lengths(slots) if expand else [1] * len(slots)
    if expand:
        runs = iter(_AUDIO_OUT * (n - s.audio.codes.shape[0] + 1) + _DELAY * (s.audio.codes.shape[0] - 1)
                    for n, s in zip(lengths, slots))
        full = re.sub(re.escape(_AUDIO_OUT), lambda _: next(runs), compact)
    else:
        full = compact
    ids = tokenizer.encode(full)
    bos, out = tokenizer.token_id("<|audio_out_bos|>"), tokenizer.token_id(_AUDIO_OUT)
    starts = [p for p in range(1, len(ids)) if ids[p] == out and ids[p - 1] == bos]
    if len(starts) != len(slots):
        raise PromptError(f"found {len(starts)} audio spans in the token ids, expected {len(slots)}: the text "
                          "tokenizer does not treat the audio tokens as special tokens")
    spans = tuple(AudioSpan(p, n, "out", s.audio, s.turn) for p, n, s in zip(starts, lengths, slots))
    return RenderedPrompt(torch.tensor(ids, dtype=torch.long), spans, "transformers", compact, add_generation_prompt)


def to_transformers_conversation(prompt: Prompt, audio_item: Callable[[Audio], dict] | None = None) -> list[dict]:
    """The prompt as a transformers conversation (``processor.apply_chat_template`` input).

    ``system`` (text item), ``scene`` (a string, or text/audio items when a speaker has audio; see
    :func:`render_transformers`), then ``user`` (text item) and ``assistant`` (audio item) messages.
    ``audio_item(audio)`` gives an audio item; default ``{"type": "audio", "url": audio.source}``
    (``{"type": "audio"}`` without a source).
    """
    if prompt.system is None:
        raise PromptError("the transformers chat template requires a system message")

    def item(audio: Audio) -> dict:
        if audio_item is not None:
            return audio_item(audio)
        return {"type": "audio", "url": audio.source} if audio.source else {"type": "audio"}

    conversation: list[dict] = [{"role": "system", "content": [{"type": "text", "text": prompt.system.text}]}]
    scene = _transformers_scene(prompt.system)
    if isinstance(scene, str):
        conversation.append({"role": "scene", "content": scene})
    elif scene is not None:
        conversation.append({"role": "scene", "content": [
            {"type": "text", "text": x} if isinstance(x, str) else item(x) for x in scene]})
    for turn in prompt.turns:
        if isinstance(turn, UserMessage):
            conversation.append({"role": "user", "content": [{"type": "text", "text": turn.text}]})
        else:
            conversation.append({"role": "assistant", "content": [item(turn.audio)]})
    return conversation
