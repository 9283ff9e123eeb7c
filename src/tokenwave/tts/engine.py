"""A text-to-speech engine over Higgs Audio v2: models loaded once, requests in, audio out (whole or streamed).

Transport-independent (a CLI, an HTTP server or a notebook wraps it). It plays the part of the original serve
engine ([O] ``HiggsAudioServeEngine``, spec 8) with the prompting of [O] ``examples/generation.py`` (voice
references in context, speaker descriptions, scene, long texts in chunks):

* :class:`TTSEngine` loads the generation model (:func:`~tokenwave.tts.checkpoint.load_pretrained`, either
  checkpoint format), the text tokenizer (``tokenizer.json`` of the model folder unless given) and the audio
  tokenizer (:func:`tokenwave.load_tokenizer`, default the published Higgs tokenizer) once.
* :class:`TTSRequest` says what to speak and how: the text, a voice (a reference audio file and its transcript,
  or a preset voice by name from the engine's voices folder), voices or descriptions of several speakers
  (``[SPEAKERn]`` tags in the text), the scene, sampling, seed, ``max_frames``, long-text chunking.
* :meth:`TTSEngine.generate` returns a :class:`TTSResult` (audio, sample rate, codes, stats);
  :meth:`TTSEngine.stream` an :class:`~tokenwave.tts.generate.AudioStream` of audio chunks.

Choices (documented differences from [O]'s serve engine): audio is forced at the start of the reply
(``force_audio``, [O]'s ``force_audio_gen``; default on here, off there, where the model itself chooses to start
audio, which the published model does right away); a reply ends when its audio span ends (see
:func:`~tokenwave.tts.generate.generate`); reference audio is resampled with soxr (``tokenwave.load_audio``)
where [O] uses librosa; prompts are built as [O] ``examples/generation.py`` builds them (references as user /
assistant turns in context), and text is normalised as that script does (``normalize``). The context is bounded by
``max_context`` positions (default 8192, [O]'s largest KV-cache bucket): a prompt that does not fit is an error,
a reply that reaches the bound stops (``"context_full"``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..api import AudioTokenizer, CheckpointError, InvalidAudioError, ModelNotFoundError
from .checkpoint import load_pretrained
from .generate import (
    AudioStream,
    GenerationResult,
    LongTextPlan,
    Style,
    generate_chunks,
    stream_chunks,
)
from .model import HiggsGenModel
from .prompt import DEFAULT_SCENE, SPECIAL_TOKENS, Audio, PromptError, Reference, build_context
from .sampling import SamplingConfig
from .text import TextTokenizer, normalize_transcript

__all__ = ["TTSEngine", "TTSRequest", "TTSResult", "TTSStats", "DEFAULT_AUDIO_TOKENIZER", "DEFAULT_MAX_CONTEXT",
           "SERVE_ENGINE_SAMPLING"]

#: The audio tokenizer of the published model.
DEFAULT_AUDIO_TOKENIZER = "bosonai/higgs-audio-v2-tokenizer"
#: Context bound of the engine (prompt + generated positions): [O]'s largest KV-cache bucket.
DEFAULT_MAX_CONTEXT = 8192
#: [O] ``HiggsAudioServeEngine.generate``'s defaults: temperature 0.7, top-p 0.95, RAS 7/2.
SERVE_ENGINE_SAMPLING = SamplingConfig.serve_engine()

_TRANSCRIPT_SUFFIX = ".txt"


@dataclass(frozen=True)
class TTSRequest:
    """What to speak and how.

    Attributes:
        text: the text (may hold ``[SPEAKERn]`` tags and ``[laugh]``-style sound events; see ``normalize``).
        reference_audio: a voice to clone: an audio file (any format and rate ``tokenwave.load_audio`` reads;
            resampled to the audio tokenizer's rate) ...
        reference_text: ... and what is said in it (required with ``reference_audio``).
        voice: or a preset voice of the engine's voices folder, by name.
        speakers: or one voice per speaker for ``[SPEAKER0]``, ``[SPEAKER1]`` ... tags: preset names or
            ``(audio path, transcript)`` pairs.
        speaker_descriptions: without voices, a description per speaker number (``{0: "feminine", 1: "deep male
            voice"}``); default with two or more tags: [O]'s ``feminine`` / ``masculine`` alternation.
        scene: the scene description (``None``: none).
        sampling: sampling parameters (default [O]'s serve engine's: temperature 0.7, top-p 0.95, RAS 7/2).
        seed: random seed (``None``: torch's global generator).
        max_frames: generation steps per chunk at most (25 frames per second of audio).
        chunk_method: ``None`` (the text in one go), ``"word"`` or ``"speaker"`` (long texts, see
            :func:`~tokenwave.tts.generate.generate_long`), with ``chunk_max_words`` / ``chunk_max_turns``.
        buffer_size: earlier chunks kept in context (``None``: all).
        normalize: normalise the text as [O] ``examples/generation.py`` does
            (:func:`~tokenwave.tts.text.normalize_transcript`).
        force_audio: start the reply with ``<|audio_out_bos|>`` (see the module docstring).
    """

    text: str
    reference_audio: str | os.PathLike | None = None
    reference_text: str | None = None
    voice: str | None = None
    speakers: Sequence[str | tuple[str | os.PathLike, str]] = ()
    speaker_descriptions: Mapping[int, str] | None = None
    scene: str | None = DEFAULT_SCENE
    sampling: SamplingConfig = SERVE_ENGINE_SAMPLING
    seed: int | None = None
    max_frames: int = 2048
    chunk_method: Literal["speaker", "word"] | None = None
    chunk_max_words: int = 200
    chunk_max_turns: int = 1
    buffer_size: int | None = None
    normalize: bool = True
    force_audio: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise PromptError("TTSRequest.text: empty text to speak")
        object.__setattr__(self, "speakers", tuple(self.speakers))
        given = [name for name, value in (("reference_audio", self.reference_audio), ("voice", self.voice),
                                          ("speakers", self.speakers)) if value]
        if len(given) > 1:
            raise PromptError(f"TTSRequest: give one of reference_audio, voice and speakers, got {' and '.join(given)}")
        if (self.reference_audio is None) != (self.reference_text is None):
            raise PromptError("TTSRequest: reference_audio and reference_text go together (the transcript of the "
                              "reference is part of the prompt)")
        if self.reference_text is not None and not self.reference_text.strip():
            raise PromptError("TTSRequest.reference_text: empty transcript")
        for i, speaker in enumerate(self.speakers):
            ok = isinstance(speaker, str) or (isinstance(speaker, tuple) and len(speaker) == 2
                                               and isinstance(speaker[1], str))
            if not ok:
                raise PromptError(f"TTSRequest.speakers[{i}]: a preset voice name or an (audio path, transcript) "
                                  f"pair, got {speaker!r}")
        if self.speaker_descriptions is not None and given:
            raise PromptError("TTSRequest: speaker_descriptions are for speakers without reference voices")
        if not isinstance(self.sampling, SamplingConfig):
            raise PromptError(f"TTSRequest.sampling must be a SamplingConfig, got {type(self.sampling).__name__}")
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise PromptError(f"TTSRequest.max_frames must be a positive integer, got {self.max_frames!r}")


@dataclass(frozen=True)
class TTSStats:
    """Measurements of one request.

    Attributes:
        prompt_tokens: positions of the (first chunk's) prompt; chunks: text chunks generated.
        steps: generation steps; frames: codec frames of the audio; audio_s: its duration.
        prefill_s: the first chunk's prefill; generation_s: all generation; decode_s: codes to audio;
        elapsed_s: the whole request (prompt building and reference encoding included).
        stop_reasons: each chunk's stop reason.
    """

    prompt_tokens: int
    chunks: int
    steps: int
    frames: int
    audio_s: float
    prefill_s: float
    generation_s: float
    decode_s: float
    elapsed_s: float
    stop_reasons: tuple[str, ...] = field(default=())

    @property
    def real_time_factor(self) -> float | None:
        """Elapsed time over audio time (below 1: faster than real time)."""
        return self.elapsed_s / self.audio_s if self.audio_s else None


@dataclass(frozen=True, eq=False)
class TTSResult:
    """The audio of a request: ``audio`` ``[N]`` float32 on the CPU at ``sample_rate``, the ``codes`` ``[K, T]``
    it was decoded from, ``stats``, and each chunk's :class:`~tokenwave.tts.generate.GenerationResult`."""

    audio: torch.Tensor
    sample_rate: int
    codes: torch.Tensor
    stats: TTSStats
    results: tuple[GenerationResult, ...]


class TTSEngine:
    """Higgs Audio v2 text-to-speech with the models loaded once (module docstring).

    Args:
        model: a generation model folder or hub id (either checkpoint format), or a loaded
            :class:`~tokenwave.tts.model.HiggsGenModel` (then ``text_tokenizer`` is required).
        audio_tokenizer: an audio tokenizer folder / hub id (:func:`tokenwave.load_tokenizer`) or a loaded one.
        text_tokenizer: a folder with ``tokenizer.json`` or a :class:`~tokenwave.tts.text.TextTokenizer`; default
            the model's folder.
        device, dtype: where and in which dtype to put the generation model (default CPU, the checkpoint's dtype);
            the audio tokenizer goes to the same device in float32.
        voices_dir: a folder of preset voices, ``NAME.wav`` (or any audio format) with its transcript ``NAME.txt``
            ([O]'s ``examples/voice_prompts`` layout).
        max_context: positions of prompt + generation at most (see the module docstring).
        style: prompt rendering, ``"original"`` ([O]) or ``"transformers"`` ([T] chat template).
        revision: hub revision for hub ids.

    Raises:
        ModelNotFoundError, CheckpointError: a missing or unreadable model, text tokenizer or audio tokenizer, or
            ones that do not belong together (special token ids, codebooks).
    """

    def __init__(self, model: str | os.PathLike | HiggsGenModel, audio_tokenizer: str | os.PathLike | AudioTokenizer
                 = DEFAULT_AUDIO_TOKENIZER, *, text_tokenizer: str | os.PathLike | TextTokenizer | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                 voices_dir: str | os.PathLike | None = None, max_context: int = DEFAULT_MAX_CONTEXT,
                 style: Style = "original", revision: str | None = None) -> None:
        if style not in ("original", "transformers"):
            raise ValueError(f"style must be 'original' or 'transformers', got {style!r}")
        if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 2:
            raise ValueError(f"max_context must be an integer >= 2, got {max_context!r}")
        self.style, self.max_context = style, max_context
        if isinstance(model, HiggsGenModel):
            if text_tokenizer is None:
                raise ValueError("with a loaded model, give text_tokenizer (a folder or a TextTokenizer)")
            self.model = model.to(device=device) if device is not None else model
        else:
            self.model = load_pretrained(model, dtype=dtype, device=device, revision=revision)
        if isinstance(text_tokenizer, TextTokenizer):
            self.text_tokenizer = text_tokenizer
        else:
            source = model if text_tokenizer is None else text_tokenizer
            self.text_tokenizer = TextTokenizer.from_folder(_tokenizer_folder(source, revision))
        if isinstance(audio_tokenizer, AudioTokenizer):
            self.audio_tokenizer = audio_tokenizer
        else:
            from ..loading import load_tokenizer

            self.audio_tokenizer = load_tokenizer(audio_tokenizer, device=self.model.device)
        self._check_compatible()
        self.voices_dir = None if voices_dir is None else Path(voices_dir)
        if self.voices_dir is not None and not self.voices_dir.is_dir():
            raise ModelNotFoundError(f"voices folder {self.voices_dir} does not exist")
        self._voices: dict[str, Reference] = {}

    def _check_compatible(self) -> None:
        cfg, tok, audio = self.model.config, self.text_tokenizer, self.audio_tokenizer
        for name, want in (("<|AUDIO_OUT|>", cfg.audio_out_token_id), ("<|audio_out_bos|>", cfg.audio_out_bos_token_id),
                           ("<|audio_eos|>", cfg.audio_eos_token_id),
                           *((name, SPECIAL_TOKENS[name]) for name in ("<|end_of_text|>", "<|eot_id|>"))):
            try:
                got = tok.token_id(name)
            except KeyError as e:
                raise CheckpointError(f"the text tokenizer has no {name} token: it is not a Higgs Audio tokenizer") \
                    from e
            if got != want:
                raise CheckpointError(f"the text tokenizer's {name} is id {got}, the generation model expects {want}")
        if tok.vocab_size > cfg.vocab_size:
            raise CheckpointError(f"the text tokenizer has {tok.vocab_size} ids, the generation model reads "
                                  f"{cfg.vocab_size}")
        if audio.num_codebooks < cfg.num_codebooks or audio.codebook_size != cfg.codebook_size:
            raise CheckpointError(f"the audio tokenizer has {audio.num_codebooks} codebooks of {audio.codebook_size} "
                                  f"codes; the generation model needs {cfg.num_codebooks} of {cfg.codebook_size}")

    # ---- voices ------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.audio_tokenizer.sample_rate)

    def voices(self) -> list[str]:
        """Names of the preset voices (audio files with a transcript next to them in the voices folder)."""
        if self.voices_dir is None:
            return []
        from ..audio import AUDIO_EXTENSIONS

        return sorted(p.stem for p in self.voices_dir.iterdir()
                      if p.suffix.lower() in AUDIO_EXTENSIONS and p.with_suffix(_TRANSCRIPT_SUFFIX).is_file())

    def preset_voice(self, name: str) -> Reference:
        """The preset voice ``name`` (encoded once, then cached)."""
        if name in self._voices:
            return self._voices[name]
        known = self.voices()
        if name not in known:
            where = f"in {self.voices_dir}" if self.voices_dir is not None else "(the engine has no voices folder)"
            listing = ", ".join(known) if known else "none"
            raise PromptError(f"unknown voice {name!r} {where}; available: {listing}")
        from ..audio import AUDIO_EXTENSIONS

        audio = next(p for p in sorted(self.voices_dir.iterdir())
                     if p.stem == name and p.suffix.lower() in AUDIO_EXTENSIONS)
        transcript = audio.with_suffix(_TRANSCRIPT_SUFFIX).read_text(encoding="utf-8").strip()
        if not transcript:
            raise PromptError(f"voice {name!r}: empty transcript {audio.with_suffix(_TRANSCRIPT_SUFFIX)}")
        self._voices[name] = Reference(transcript, self.encode_reference(audio))
        return self._voices[name]

    def encode_reference(self, path: str | os.PathLike) -> Audio:
        """A reference audio file as codes ``[K, T]`` (resampled to the audio tokenizer's rate).

        Raises:
            InvalidAudioError: a missing, empty, unreadable or damaged file, NaN / infinite samples, or audio too
                short to encode (the message names the file).
        """
        from ..audio import load_audio

        audio, _ = load_audio(path, self.sample_rate)
        k = self.model.config.num_codebooks
        try:
            codes = self.audio_tokenizer.encode(torch.from_numpy(audio)[None], num_codebooks=k).codes[0]
        except InvalidAudioError as e:
            raise InvalidAudioError(f"reference audio {os.fspath(path)}: {e}") from e
        if codes.shape[1] == 0:
            raise InvalidAudioError(f"reference audio {os.fspath(path)}: no audio frame")
        return Audio(codes=codes.cpu(), source=os.fspath(path))

    # ---- requests ----------------------------------------------------------------------------------------------
    def plan(self, request: TTSRequest) -> LongTextPlan:
        """The prompts of ``request``: voices encoded, context built ([O] ``examples/generation.py``), text
        normalised and chunked.

        Raises:
            PromptError: unknown voices or speakers (tags without a voice or description), empty text.
            InvalidAudioError: a bad reference audio file.
        """
        if not isinstance(request, TTSRequest):
            raise TypeError(f"expected a TTSRequest, got {type(request).__name__}")
        text = normalize_transcript(request.text) if request.normalize else request.text
        voices: list[Reference] = []
        if request.reference_audio is not None:
            voices = [Reference(request.reference_text.strip(), self.encode_reference(request.reference_audio))]
        elif request.voice is not None:
            voices = [self.preset_voice(request.voice)]
        else:
            for speaker in request.speakers:
                if isinstance(speaker, str):
                    voices.append(self.preset_voice(speaker))
                else:
                    voices.append(Reference(speaker[1].strip(), self.encode_reference(speaker[0])))
        context = build_context(text, scene=request.scene, voices=voices,
                                speaker_descriptions=request.speaker_descriptions)
        return LongTextPlan(self.text_tokenizer, text, context=context, chunk_method=request.chunk_method,
                            max_words=request.chunk_max_words, max_turns=request.chunk_max_turns,
                            buffer_size=request.buffer_size, style=self.style, force_audio=request.force_audio)

    def generate(self, request: TTSRequest) -> TTSResult:
        """Speak ``request``: every chunk generated, the codes decoded once.

        Raises:
            PromptError, InvalidAudioError: see :meth:`plan`.
            CacheOverflowError: a prompt of ``max_context`` positions or more.
        """
        from ..streaming import decode_chunked

        start = time.perf_counter()
        plan = self.plan(request)
        gen_start = time.perf_counter()
        long = generate_chunks(self.model, plan, sampling=request.sampling, max_frames=request.max_frames,
                               seed=request.seed, max_context=self.max_context)
        gen_end = time.perf_counter()
        if long.codes.shape[1]:
            audio = decode_chunked(self.audio_tokenizer, long.codes.to(torch.long)).float().cpu()
        else:
            audio = torch.zeros(0)
        end = time.perf_counter()
        results = long.results
        stats = TTSStats(
            prompt_tokens=results[0].prompt_length, chunks=len(results), steps=sum(r.steps for r in results),
            frames=long.num_frames, audio_s=audio.shape[0] / self.sample_rate, prefill_s=results[0].prefill_s,
            generation_s=gen_end - gen_start, decode_s=end - gen_end, elapsed_s=end - start,
            stop_reasons=tuple(r.stop_reason for r in results))
        return TTSResult(audio, self.sample_rate, long.codes, stats, results)

    def stream(self, request: TTSRequest, *, chunk_frames: int = 10,
               lookahead_frames: int | None = None) -> AudioStream:
        """Speak ``request`` as a stream of audio chunks (:class:`~tokenwave.tts.generate.AudioStream`: its
        ``stats`` hold the time to first audio; its ``codes`` and ``results`` are complete once it is exhausted).
        The voices are encoded and the first prompt checked here; generation starts at the first ``next()``."""
        plan = self.plan(request)
        return stream_chunks(self.model, plan, self.audio_tokenizer, sampling=request.sampling,
                             max_frames=request.max_frames, seed=request.seed, max_context=self.max_context,
                             chunk_frames=chunk_frames, lookahead_frames=lookahead_frames)


def _tokenizer_folder(source: str | os.PathLike, revision: str | None) -> Path:
    """A local folder with the text tokenizer of ``source`` (a folder, or a hub id whose tokenizer files are taken
    from the Hugging Face cache or downloaded)."""
    from .. import loading

    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; the text tokenizer is read from a folder with tokenizer.json")
        return path
    name = str(source)
    if not loading._HUB_ID.match(name):
        raise ModelNotFoundError(f"{name!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download

    offline = loading._hub_unreachable()
    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=offline is not None,
                                      allow_patterns=["tokenizer.json", "tokenizer_config.json"]))
    except Exception as e:  # offline, cache miss, unknown or gated repository
        why = offline or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise ModelNotFoundError(f"the text tokenizer of {name!r} is not in the local Hugging Face cache and could "
                                 f"not be downloaded ({why}). " + loading.how_to_get(name)) from e
