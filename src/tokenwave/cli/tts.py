"""``tokenwave tts``: speak a text or a multi-speaker script with Higgs Audio v2 (:mod:`tokenwave.tts.engine`).

``main.py`` registers :func:`tts` as ``app.command("tts", short_help=...)(tts)``. Importing this module loads no
model code (no torch): everything is imported when the command runs. Exit codes as the other commands: 0
success; 1 a checkpoint that is broken, an output that cannot be written, or no audio generated; 2 usage errors
(conflicting options, unknown speakers, bad reference audio, a prompt longer than the context) and models that
cannot be found (the message says how to get them).

The defaults below are those of the library (:data:`tokenwave.tts.config.PUBLISHED_REPO`,
:data:`tokenwave.tts.engine.DEFAULT_AUDIO_TOKENIZER`, :data:`tokenwave.tts.engine.SERVE_ENGINE_SAMPLING`,
:data:`tokenwave.tts.prompt.DEFAULT_SCENE`), written out here so that importing the CLI stays free of torch;
``tests/test_tts_cli.py`` checks that they agree.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import DType as _DType
from .common import WavFormat as _WavFormat
from .common import error as _error

__all__ = ["tts", "DEFAULT_MODEL", "DEFAULT_AUDIO_TOKENIZER", "DEFAULT_SCENE", "SHORT_HELP"]

#: The published generation model (hub id; :data:`tokenwave.tts.config.PUBLISHED_REPO`).
DEFAULT_MODEL = "bosonai/higgs-audio-v2-generation-3B-base"
#: Its audio tokenizer (:data:`tokenwave.tts.engine.DEFAULT_AUDIO_TOKENIZER`).
DEFAULT_AUDIO_TOKENIZER = "bosonai/higgs-audio-v2-tokenizer"
#: [O]'s default scene (:data:`tokenwave.tts.prompt.DEFAULT_SCENE`).
DEFAULT_SCENE = "Audio is recorded from a quiet room."
#: What main.py shows in the command list.
SHORT_HELP = "Speak a text or a multi-speaker script with Higgs Audio v2 (text to speech)."

_DEFAULT_MAX_CONTEXT = 8192  # tokenwave.tts.engine.DEFAULT_MAX_CONTEXT


class _Chunking(str, Enum):
    none = "none"
    word = "word"
    speaker = "speaker"


class _PromptFormat(str, Enum):
    original = "original"
    transformers = "transformers"


def _speaker_map(values: list[str] | None, option: str) -> dict[int, str]:
    """``["0=a.wav", "1=b.wav"]`` -> ``{0: "a.wav", 1: "b.wav"}`` (the value may hold ``=``); exit 2 on bad input."""
    out: dict[int, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isdigit():
            raise _error(f"{option} {item!r}: expected N=VALUE with N a speaker number, e.g. {option} 0=...", 2)
        n = int(key)
        if n in out:
            raise _error(f"{option}: speaker {n} given twice", 2)
        if not value.strip():
            raise _error(f"{option} {item!r}: empty value for speaker {n}", 2)
        out[n] = value
    return out


def _speakers(audio: dict[int, str], texts: dict[int, str], voices: dict[int, str]) -> list:
    """The engine's ``speakers`` list (index = speaker number): ``(audio path, transcript)`` or a preset name."""
    for n in sorted(texts.keys() - audio.keys()):
        raise _error(f"--speaker-text {n}=... has no --speaker-audio {n}=FILE (the text is what is said in it)", 2)
    for n in sorted(audio.keys() - texts.keys()):
        raise _error(f"--speaker-audio {n}={audio[n]} needs --speaker-text {n}=\"...\" (what is said in it)", 2)
    for n in sorted(audio.keys() & voices.keys()):
        raise _error(f"speaker {n} has both --speaker-audio and --speaker-voice; give one", 2)
    numbers = sorted(audio.keys() | voices.keys())
    if numbers != list(range(len(numbers))):
        missing = min(set(range(len(numbers) + 1)) - set(numbers))
        raise _error(f"speakers are numbered from 0 without gaps: speaker {missing} has no --speaker-audio or "
                     f"--speaker-voice (given: {', '.join(map(str, numbers))})", 2)
    return [(audio[n], texts[n]) if n in audio else voices[n] for n in numbers]


def _check_tags(text: str, voices: int, descriptions: dict[int, str] | None) -> None:
    """Speaker tags of the text that no voice or description covers: exit 2 before any model is loaded (the engine
    checks the same when it builds the prompt)."""
    from ..tts.text import speaker_tags

    tags = speaker_tags(text)
    if voices:
        unknown = [t for t in tags if t >= voices]
        if unknown:
            raise _error(f"unknown speaker [SPEAKER{unknown[0]}] in the text: {voices} voice(s) given (SPEAKER0"
                         + (f"..SPEAKER{voices - 1}" if voices > 1 else "") + ")", 2)
    elif descriptions is not None:
        missing = [t for t in tags if t not in descriptions]
        if missing:
            raise _error(f"unknown speaker [SPEAKER{missing[0]}] in the text: no --speaker-description "
                         f"{missing[0]}=...", 2)
        extra = sorted(set(descriptions) - set(tags))
        if extra:
            raise _error(f"--speaker-description {extra[0]}=...: the text has no [SPEAKER{extra[0]}] tag", 2)


def _not_found(e: Exception, name: str, option: str) -> typer.Exit:
    """A model that cannot be found: the loader's message with the command's own way to pass a local copy."""
    from .. import loading

    hint = (f"Get it on a machine with network access, e.g. `hf download {name} --local-dir DIR` (huggingface_hub's "
            f"CLI), copy DIR here, and pass it with {option} DIR.")
    message = str(e)
    generic = loading.how_to_get(name)
    message = message.replace(generic, hint) if generic in message else f"{message} {hint}"
    return _error(f"{option}: {message}", 2)


def _load_engine(model: str, audio_tokenizer: str, text_tokenizer: Path | None, revision: str | None, device: str,
                 dtype: _DType | None, voices_dir: Path | None, max_context: int, prompt_format: _PromptFormat):
    """The engine, each part loaded on its own so that an error names the option it comes from."""
    from ..api import CheckpointError, ModelNotFoundError
    from ..loading import load_tokenizer
    from ..tts.checkpoint import load_pretrained
    from ..tts.engine import TTSEngine, _tokenizer_folder
    from ..tts.text import TextTokenizer

    def broken(option: str, e: Exception) -> typer.Exit:
        return _error(f"{option}: {e}", 1)

    try:
        gen = load_pretrained(model, dtype=None if dtype is None else dtype.value, device=device, revision=revision)
    except ModelNotFoundError as e:
        raise _not_found(e, model, "--model") from None
    except CheckpointError as e:
        raise broken("--model", e) from None
    except (RuntimeError, AssertionError, ValueError, TypeError) as e:  # unknown or unavailable device / dtype
        raise _error(f"cannot put the model on device {device!r}: {e}", 2) from None
    source = model if text_tokenizer is None else text_tokenizer
    option = "--model" if text_tokenizer is None else "--text-tokenizer"
    try:
        tok = TextTokenizer.from_folder(_tokenizer_folder(source, revision if text_tokenizer is None else None))
    except ModelNotFoundError as e:
        raise _not_found(e, str(source), option) from None
    except CheckpointError as e:
        raise broken(option, e) from None
    try:
        audio_tok = load_tokenizer(audio_tokenizer, device=gen.device)
    except ModelNotFoundError as e:
        raise _not_found(e, audio_tokenizer, "--audio-tokenizer") from None
    except CheckpointError as e:
        raise broken("--audio-tokenizer", e) from None
    try:
        return TTSEngine(gen, audio_tok, text_tokenizer=tok, voices_dir=voices_dir, max_context=max_context,
                         style=prompt_format.value)
    except ModelNotFoundError as e:  # the voices folder
        raise _error(f"--voices-dir: {e}", 2) from None
    except CheckpointError as e:  # parts that do not belong together
        raise _error(f"the model, its text tokenizer and the audio tokenizer do not fit together: {e}", 1) from None


def tts(
    output: Annotated[Path, typer.Option(
        "--output", "-o", show_default=False, help="The WAV file to write (mono, at the audio tokenizer's rate; "
        "an existing file is replaced).")],
    text: Annotated[str | None, typer.Argument(
        metavar="TEXT", show_default=False,
        help="The text to speak (may hold [SPEAKERn] tags and sound events such as [laugh]); or use --script.")
    ] = None,
    script: Annotated[Path | None, typer.Option(
        "--script", "-s", show_default=False,
        help="Read the text from this UTF-8 file instead: a multi-speaker script has one turn per line, each "
             "starting with its tag ([SPEAKER0] ..., [SPEAKER1] ...).")] = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Generation model: a folder (original or transformers format, with tokenizer.json) "
        "or a hub id.")] = DEFAULT_MODEL,
    revision: Annotated[str | None, typer.Option(
        "--revision", help="Hub revision of --model (e.g. the original-format commit).")] = None,
    audio_tokenizer: Annotated[str, typer.Option(
        "--audio-tokenizer", help="Audio tokenizer: a folder or hub id (codes <-> audio).")] = DEFAULT_AUDIO_TOKENIZER,
    text_tokenizer: Annotated[Path | None, typer.Option(
        "--text-tokenizer", show_default=False,
        help="Folder with the text tokenizer's tokenizer.json (default: the --model folder).")] = None,
    ref_audio: Annotated[Path | None, typer.Option(
        "--ref-audio", show_default=False,
        help="A voice to clone: an audio file (any rate; resampled), with --ref-text.")] = None,
    ref_text: Annotated[str | None, typer.Option(
        "--ref-text", show_default=False, help="What is said in --ref-audio.")] = None,
    voice: Annotated[str | None, typer.Option(
        "--voice", show_default=False, help="A preset voice by name: NAME.wav + NAME.txt in --voices-dir.")] = None,
    voices_dir: Annotated[Path | None, typer.Option(
        "--voices-dir", show_default=False,
        help="Folder of preset voices: audio files NAME.wav (or another audio format) with their transcripts "
             "NAME.txt.")] = None,
    speaker_audio: Annotated[list[str] | None, typer.Option(
        "--speaker-audio", metavar="N=FILE", show_default=False,
        help="Voice of [SPEAKERn] from an audio file (repeat per speaker), with --speaker-text N=TEXT.")] = None,
    speaker_text: Annotated[list[str] | None, typer.Option(
        "--speaker-text", metavar="N=TEXT", show_default=False,
        help="What is said in --speaker-audio N (repeat per speaker).")] = None,
    speaker_voice: Annotated[list[str] | None, typer.Option(
        "--speaker-voice", metavar="N=NAME", show_default=False,
        help="Voice of [SPEAKERn] from --voices-dir (repeat; may be mixed with --speaker-audio).")] = None,
    speaker_description: Annotated[list[str] | None, typer.Option(
        "--speaker-description", metavar="N=TEXT", show_default=False,
        help="Without voices: a description of [SPEAKERn]'s voice, e.g. 0=\"calm female voice\" (repeat; one per "
             "tagged speaker). Default with two or more tags: feminine / masculine alternately.")] = None,
    scene: Annotated[str, typer.Option(
        "--scene", help="Scene description in the system prompt; \"\" for none.")] = DEFAULT_SCENE,
    temperature: Annotated[float, typer.Option(
        "--temperature", min=0.0, help="Sampling temperature; 0 decodes greedily.")] = 0.7,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Keep the k most likely codes; 0: off.")] = 0,
    top_p: Annotated[float, typer.Option(
        "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold in (0, 1]; 1: off.")] = 0.95,
    ras_window: Annotated[int, typer.Option(
        "--ras-window", min=0, help="Repetition-aware sampling: window of recent frames; 0 turns it off.")] = 7,
    ras_max_repeat: Annotated[int, typer.Option(
        "--ras-max-repeat", min=1, help="Repetition-aware sampling: a code seen this many times in the window is "
        "redrawn.")] = 2,
    seed: Annotated[int | None, typer.Option(
        "--seed", show_default=False, help="Random seed (same seed, same options: same audio).")] = None,
    max_frames: Annotated[int, typer.Option(
        "--max-frames", min=1, help="Generation steps per chunk at most (25 frames = 1 s of audio).")] = 2048,
    chunk: Annotated[_Chunking, typer.Option(
        "--chunk", case_sensitive=False,
        help="Long texts: none (in one go), word (--chunk-max-words per chunk) or speaker (--chunk-max-turns "
             "per chunk); earlier chunks stay in context.")] = _Chunking.none,
    chunk_max_words: Annotated[int, typer.Option("--chunk-max-words", min=1, help="Words per chunk.")] = 200,
    chunk_max_turns: Annotated[int, typer.Option("--chunk-max-turns", min=1, help="Speaker turns per chunk.")] = 1,
    buffer_size: Annotated[int | None, typer.Option(
        "--buffer-size", min=0, show_default=False,
        help="Earlier chunks kept in context (default: all).")] = None,
    max_context: Annotated[int, typer.Option(
        "--max-context", min=2, help="Positions of prompt + generation at most; a longer prompt is an error.")
    ] = _DEFAULT_MAX_CONTEXT,
    prompt_format: Annotated[_PromptFormat, typer.Option(
        "--prompt-format", case_sensitive=False,
        help="Prompt rendering: original (the boson_multimodal serve engine) or transformers (its chat "
             "template).")] = _PromptFormat.original,
    normalize: Annotated[bool, typer.Option(
        "--normalize/--no-normalize", help="Normalise the text as the original generation script does "
        "(punctuation, sound events, whitespace, final period).")] = True,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Decode and write audio while it is generated; prints the time to first audio.")] = False,
    stream_frames: Annotated[int, typer.Option(
        "--stream-frames", min=1, help="With --stream: frames per audio chunk.")] = 10,
    device: Annotated[str, typer.Option("--device", help="torch device, e.g. cpu, cuda or cuda:1.")] = "cpu",
    dtype: Annotated[_DType | None, typer.Option(
        "--dtype", show_default=False,
        help="Generation model dtype (default: the checkpoint's, bfloat16 for the published one).")] = None,
    save_codes: Annotated[Path | None, typer.Option(
        "--save-codes", show_default=False,
        help="Also write the generated codes as a tokenwave codes file (.twc; `tokenwave decode` reads it).")
    ] = None,
    format: Annotated[_WavFormat, typer.Option(
        "--format", help="WAV sample format: float (32-bit float) or pcm16.")] = _WavFormat.float,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary lines; errors are still printed.")
                     ] = False,
) -> None:
    """Speak TEXT (or the script of --script) with Higgs Audio v2 and write a WAV file.

    Voices: --ref-audio + --ref-text (clone one voice), --voice NAME (a preset of --voices-dir), or per speaker
    of a multi-speaker text --speaker-audio N=FILE + --speaker-text N=TEXT / --speaker-voice N=NAME, or
    --speaker-description N=TEXT. Without any, the model picks a voice. Sampling defaults are the original
    serve engine's (temperature 0.7, top-p 0.95, RAS window 7 / 2 repeats).
    """
    # ---- usage, before anything is loaded
    if output.suffix.lower() != ".wav":
        raise _error(f"--output {output}: the output is a WAV file; use a name ending in .wav", 2)
    if save_codes is not None and save_codes.suffix.lower() != ".twc":
        raise _error(f"--save-codes {save_codes}: codes files end in .twc", 2)
    if (text is None) == (script is None):
        raise _error("give the text to speak as an argument or with --script FILE (one of the two)", 2)
    if script is not None:
        try:
            text = script.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise _error(f"--script {script}: cannot read it ({e})", 2) from None
    if not text.strip():
        raise _error("the text to speak is empty" + (f" (--script {script})" if script is not None else ""), 2)
    if (ref_audio is None) != (ref_text is None):
        raise _error("--ref-audio and --ref-text go together (the transcript of the reference is part of the "
                     "prompt)", 2)
    if ref_text is not None and not ref_text.strip():
        raise _error("--ref-text is empty", 2)
    audio_map = _speaker_map(speaker_audio, "--speaker-audio")
    text_map = _speaker_map(speaker_text, "--speaker-text")
    voice_map = _speaker_map(speaker_voice, "--speaker-voice")
    desc_map = _speaker_map(speaker_description, "--speaker-description")
    speakers = _speakers(audio_map, text_map, voice_map)
    given = [name for name, value in (("--ref-audio", ref_audio), ("--voice", voice),
                                      ("--speaker-audio/--speaker-voice", speakers)) if value]
    if len(given) > 1:
        raise _error(f"give one kind of voice: {' and '.join(given)} were both given", 2)
    if desc_map and given:
        raise _error(f"--speaker-description is for speakers without a voice; {given[0]} was given too", 2)
    if (voice is not None or voice_map) and voices_dir is None:
        raise _error("preset voices (--voice, --speaker-voice) need --voices-dir DIR (NAME.wav + NAME.txt)", 2)
    for path, option in [(ref_audio, "--ref-audio"), *((speaker[0], "--speaker-audio") for speaker in speakers
                                                       if isinstance(speaker, tuple))]:
        if path is not None and not Path(path).is_file():
            raise _error(f"{option} {path}: reference audio file not found", 2)
    if voices_dir is not None and not voices_dir.is_dir():
        raise _error(f"--voices-dir {voices_dir}: no such folder", 2)

    from ..api import InvalidAudioError, InvalidCodesError, TokenwaveError
    from ..tts.engine import TTSRequest
    from ..tts.model import CacheOverflowError
    from ..tts.prompt import PromptError
    from ..tts.sampling import SamplingConfig
    from ..tts.text import normalize_transcript

    try:
        sampling = SamplingConfig.serve_engine(temperature=temperature, top_k=top_k or None, top_p=top_p,
                                               ras_win_len=ras_window, ras_win_max_num_repeat=ras_max_repeat)
    except ValueError as e:
        raise _error(str(e), 2) from None
    _check_tags(normalize_transcript(text) if normalize else text, 1 if (ref_audio or voice) else len(speakers),
                desc_map or None)
    try:
        request = TTSRequest(
            text, reference_audio=ref_audio, reference_text=ref_text, voice=voice, speakers=speakers,
            speaker_descriptions=desc_map or None, scene=scene or None, sampling=sampling, seed=seed,
            max_frames=max_frames, chunk_method=None if chunk is _Chunking.none else chunk.value,
            chunk_max_words=chunk_max_words, chunk_max_turns=chunk_max_turns, buffer_size=buffer_size,
            normalize=normalize)
    except PromptError as e:
        raise _error(str(e), 2) from None

    # ---- models
    start = time.perf_counter()
    engine = _load_engine(model, audio_tokenizer, text_tokenizer, revision, device, dtype, voices_dir, max_context,
                          prompt_format)
    loaded = time.perf_counter() - start
    if not quiet:
        typer.echo(f"loaded {model} and {audio_tokenizer} on {engine.model.device} ({engine.model.dtype}) in "
                   f"{loaded:.1f} s")

    # ---- generation
    subtype = "FLOAT" if format is _WavFormat.float else "PCM_16"
    sr = engine.sample_rate
    bad_request = (PromptError, InvalidAudioError, CacheOverflowError)
    if stream:
        from ..audio import AudioWriter

        try:
            s = engine.stream(request, chunk_frames=stream_frames)
        except bad_request as e:
            raise _request_error(e) from None
        try:
            with AudioWriter(output, sr, subtype) as writer:
                for chunk_audio in s:
                    if s.stats.chunks == 1 and not quiet:
                        typer.echo(f"first audio after {s.stats.time_to_first_audio_s:.3f} s")
                    writer.write(chunk_audio)
                if writer.frames_written == 0:
                    raise _NoAudio([r.stop_reason for r in s.results])
        except bad_request as e:
            raise _request_error(e) from None
        except _NoAudio as e:
            raise _error(str(e), 1) from None
        except (OSError, InvalidAudioError) as e:
            raise _error(f"cannot write {output}: {e}", 1) from None
        codes, samples, st = s.codes, s.stats.samples, s.stats
        steps, frames = st.steps, st.frames
        summary = (f"{samples / sr:.2f} s of audio ({frames} frames at {sr} Hz) in {st.elapsed_s:.2f} s; "
                   f"time to first audio {st.time_to_first_audio_s:.3f} s (prefill {st.prefill_s:.3f} s); "
                   f"{steps} steps; stop: {', '.join(r.stop_reason for r in s.results)}")
    else:
        from ..audio import write_audio

        try:
            result = engine.generate(request)
        except bad_request as e:
            raise _request_error(e) from None
        if result.codes.shape[1] == 0:
            raise _error(str(_NoAudio(list(result.stats.stop_reasons))), 1)
        try:
            write_audio(output, result.audio, sr, subtype=subtype)
        except (OSError, InvalidAudioError) as e:
            raise _error(f"cannot write {output}: {e}", 1) from None
        codes, samples, st = result.codes, int(result.audio.shape[0]), result.stats
        rtf = st.real_time_factor
        summary = (f"{st.audio_s:.2f} s of audio ({st.frames} frames at {sr} Hz) in {st.elapsed_s:.2f} s"
                   + (f" (real-time factor {rtf:.2f})" if rtf is not None else "")
                   + f"; {st.steps} steps in {st.chunks} chunk(s); stop: {', '.join(st.stop_reasons)}")
    if not quiet:
        typer.echo(f"wrote {output}: {summary}")

    if save_codes is not None:
        from ..codesfile import write_codes

        tok = engine.audio_tokenizer
        extra = {"tts_model": model, "seed": seed, "prompt_format": prompt_format.value}
        try:
            write_codes(save_codes, codes.to("cpu"), sample_rate=sr, frame_rate=tok.frame_rate,
                        codebook_size=tok.codebook_size, num_samples=samples, model_id=tok.model_id,
                        config_hash=tok.config_hash, source=None if script is None else str(script), extra=extra)
        except (OSError, InvalidCodesError, TokenwaveError) as e:
            raise _error(f"cannot write {save_codes}: {e}", 1) from None
        if not quiet:
            typer.echo(f"wrote {save_codes}: {codes.shape[0]} codebooks x {codes.shape[1]} frames")


def _request_error(e: Exception) -> typer.Exit:
    """Exit 2 for a request the engine refuses: bad reference audio, unknown voices or speakers, a prompt that does
    not fit in the context."""
    from ..api import InvalidAudioError
    from ..tts.model import CacheOverflowError

    if isinstance(e, InvalidAudioError):
        return _error(f"bad reference audio: {e}", 2)
    if isinstance(e, CacheOverflowError):
        return _error(f"{e} (--max-context; long texts: --chunk word or speaker, --buffer-size)", 2)
    return _error(str(e), 2)


class _NoAudio(Exception):
    """Generation ended before a complete audio frame (a span needs more steps than the delay pattern's)."""

    def __init__(self, stop_reasons: list[str]) -> None:
        super().__init__(f"no audio was generated (stop: {', '.join(stop_reasons) or 'none'}); the delay pattern "
                         "needs more steps than there are codebooks: raise --max-frames")
