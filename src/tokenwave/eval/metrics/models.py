"""Metrics that run a pretrained model shipped inside a pip package (no download at run time).

* :func:`transcribe`, :func:`wer` -- word error rate of a transcript by PocketSphinx 5 (CMU Sphinx; its
  default US-English acoustic model, language model and dictionary ship in the ``pocketsphinx`` wheel).
* :func:`speaker_similarity` -- cosine similarity of Resemblyzer ``VoiceEncoder`` speaker embeddings (the
  GE2E d-vector model of Wan et al., 2018; pretrained weights ship in the ``resemblyzer`` wheel).
* :func:`dnsmos` -- Microsoft's DNSMOS P.835 and P.808 no-reference quality predictors (Reddy et al., 2022;
  the ONNX models ship in the ``speechmos`` wheel and run on onnxruntime).

Each library is imported on first use (``pip install tokenwave[eval]``) and its model is loaded once per
process, into a module-level cache. Inputs are 1-D float waveforms (numpy arrays or torch tensors, nominal
range [-1, 1]) at ``sample_rate``; they are resampled with soxr (quality ``"HQ"``) to the rate each model
was trained at (16 kHz for all three). These models are small and old: they rank codecs, they do not match
the absolute numbers of large ASR / speaker models used in papers (Whisper WER, WavLM-TDNN SIM).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import re
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "dnsmos",
    "normalize_words",
    "speaker_embedding",
    "speaker_similarity",
    "transcribe",
    "wer",
    "word_error_rate",
    "word_errors",
]

MODEL_SAMPLE_RATE = 16000  # PocketSphinx en-us, Resemblyzer and DNSMOS all work at 16 kHz

_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()
_DECODE_LOCK = threading.Lock()  # a PocketSphinx decoder holds per-utterance state: one utterance at a time


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this metric needs the optional package {package!r} ({err}); install it with: pip install tokenwave[eval]"
        ) from err


def _cached(name: str, load) -> Any:
    model = _MODELS.get(name)
    if model is None:
        with _LOAD_LOCK:
            model = _MODELS.get(name)
            if model is None:
                model = _MODELS[name] = load()
    return model


def _mono(audio: Any, name: str = "audio") -> np.ndarray:
    if hasattr(audio, "detach"):  # torch.Tensor, without importing torch
        audio = audio.detach().cpu().float().numpy()
    x = np.asarray(audio)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D waveform (mono), got shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a float waveform in [-1, 1], got dtype {x.dtype} (divide int16 PCM by 32768)")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite samples")
    return x


def _at_rate(audio: Any, sample_rate: int, target: int = MODEL_SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """1-D float32 waveform resampled from ``sample_rate`` to ``target`` with soxr ``"HQ"``."""
    x = _mono(audio, name)
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if sample_rate == target or x.size == 0:
        return x
    import soxr

    return np.ascontiguousarray(soxr.resample(x, int(sample_rate), target, quality="HQ"), dtype=np.float32)


# --- word error rate -------------------------------------------------------------------------------------------

_NOT_WORD = re.compile(r"[^\w\s']|_")


def normalize_words(text: str) -> list[str]:
    """The words WER is computed on: ``text`` lower-cased (``str.lower``), every character that is not a
    letter, digit, apostrophe or whitespace replaced by a space (so ``"well-known"`` is two words and
    ``"U.S."`` is ``["u", "s"]``), split on whitespace, apostrophes stripped from word edges (``"'quoted'"``
    -> ``"quoted"``; ``"don't"`` stays one word). Numbers are not spelled out."""
    words = (w.strip("'") for w in _NOT_WORD.sub(" ", text.lower()).split())
    return [w for w in words if w]


def word_errors(reference_text: str, hypothesis_text: str) -> dict[str, int]:
    """Minimum word-level edit (Levenshtein) alignment of the normalised words (:func:`normalize_words`).

    Returns ``substitutions``, ``deletions``, ``insertions`` (of one minimum-cost alignment; ties prefer
    substitutions, then deletions), their sum ``errors`` (unique: the edit distance) and ``reference_words``.
    Sum ``errors`` and ``reference_words`` over a set for a corpus-level WER.
    """
    ref, hyp = normalize_words(reference_text), normalize_words(hypothesis_text)
    n, m = len(ref), len(hyp)
    # dist[i, j]: edit distance between ref[:i] and hyp[:j]
    dist = np.zeros((n + 1, m + 1), dtype=np.int64)
    dist[:, 0] = np.arange(n + 1)
    dist[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            dist[i, j] = min(dist[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), dist[i - 1, j] + 1, dist[i, j - 1] + 1)
    subs = dels = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and dist[i, j] == dist[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            subs += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and dist[i, j] == dist[i - 1, j] + 1:
            dels, i = dels + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return {"substitutions": int(subs), "deletions": dels, "insertions": ins, "errors": int(dist[n, m]),
            "reference_words": n}


def word_error_rate(reference_text: str, hypothesis_text: str) -> float:
    """WER = (substitutions + deletions + insertions) / (number of reference words), on the words of
    :func:`normalize_words` (lower-cased, punctuation removed), with the minimum edit count (Levenshtein
    distance over words). It is 0 for identical word sequences and can exceed 1 (insertions). An empty
    reference (no words after normalisation) makes it undefined: nan, whatever the hypothesis.

    Implemented here (a 20-line dynamic programme, unit-tested) rather than with ``jiwer``: it adds no
    dependency, and jiwer's default transform neither lower-cases nor strips punctuation, so the
    normalisation would have to be written either way.
    """
    counts = word_errors(reference_text, hypothesis_text)
    if counts["reference_words"] == 0:
        return math.nan
    return counts["errors"] / counts["reference_words"]


def _load_pocketsphinx() -> Any:
    pocketsphinx = _import("pocketsphinx", "pocketsphinx")
    # The default configuration: the en-us model shipped in the wheel. loglevel only silences its INFO log.
    return pocketsphinx.Decoder(loglevel="ERROR")


def transcribe(audio: Any, sample_rate: int) -> str:
    """English transcript of ``audio`` by PocketSphinx 5 with its default configuration (the ``en-us``
    acoustic model, ``en-us.lm.bin`` trigram language model and CMU dictionary shipped in the wheel).

    The audio is resampled to 16 kHz, clipped to [-1, 1], scaled by 32767, rounded to int16 and decoded as
    one utterance (``process_raw(..., full_utt=True)``) by a decoder made for this call: a reused decoder
    carries state between utterances (measured: the same clip decoded twice gave different words), so each
    call loads a fresh one (0.3 s), and the result depends on this audio alone.
    Returns the best hypothesis, lower-case words separated by spaces (fillers such as ``<sil>`` are
    excluded by PocketSphinx), or ``""`` when nothing is recognised.
    """
    x = _at_rate(audio, sample_rate)
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    decoder = _load_pocketsphinx()
    with _DECODE_LOCK:
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
    return "" if hyp is None else hyp.hypstr


def wer(ref_audio: Any, est_audio: Any, sample_rate: int, reference_text: str | None = None) -> dict[str, Any]:
    """Word error rate of the PocketSphinx transcript of ``est_audio`` (:func:`transcribe`,
    :func:`word_error_rate`).

    With ``reference_text`` the WER is measured against it (intelligibility, limited by PocketSphinx's own
    accuracy). Without it the reference is PocketSphinx's transcript of ``ref_audio``: the WER then
    measures *consistency* -- whether the codec changes what the recogniser hears -- not accuracy
    (recogniser errors on the original are not counted). If the reference has no words (e.g. the
    recogniser heard nothing in ``ref_audio``) the WER is nan.

    Returns ``{"wer", "reference", "hypothesis", "errors", "reference_words"}``: ``reference`` is the text
    used (as given, or the transcript), ``hypothesis`` the transcript of ``est_audio``; ``errors`` and
    ``reference_words`` (:func:`word_errors`) let a runner compute a corpus-level WER.
    """
    reference = transcribe(ref_audio, sample_rate) if reference_text is None else reference_text
    hypothesis = transcribe(est_audio, sample_rate)
    counts = word_errors(reference, hypothesis)
    n = counts["reference_words"]
    return {"wer": counts["errors"] / n if n else math.nan, "reference": reference, "hypothesis": hypothesis,
            "errors": counts["errors"], "reference_words": n}


# --- speaker similarity ----------------------------------------------------------------------------------------


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _import_webrtcvad() -> None:
    """Import ``webrtcvad`` (resemblyzer's voice-activity detector) whatever setuptools is installed.

    webrtcvad 2.0.10 -- the last release of the distribution resemblyzer requires -- starts with
    ``import pkg_resources`` only to set its ``__version__``; setuptools 82 removed ``pkg_resources`` (81 still
    has it, with a deprecation warning). If it is missing, a stand-in with just ``get_distribution(name).version``
    (from importlib.metadata) is placed in ``sys.modules`` for the duration of that one import and removed
    afterwards, so nothing else can see it. webrtcvad-wheels >= 2.0.12 (same module) needs no help.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            importlib.import_module("webrtcvad")
            return
        except ModuleNotFoundError as err:
            if err.name != "pkg_resources":
                raise
    stub = types.ModuleType("pkg_resources")
    stub.get_distribution = lambda name: types.SimpleNamespace(version=_dist_version(name))
    sys.modules["pkg_resources"] = stub
    try:
        importlib.import_module("webrtcvad")
    finally:
        if sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]


def _load_resemblyzer() -> Any:
    try:
        _import_webrtcvad()
    except ImportError as err:
        raise ImportError(
            f"speaker_similarity needs 'webrtcvad' (a resemblyzer dependency) ({err}); "
            "install it with: pip install tokenwave[eval]"
        ) from err
    with warnings.catch_warnings():  # resemblyzer imports binary_dilation from the deprecated scipy namespace
        warnings.filterwarnings("ignore", message=".*scipy.ndimage.morphology", category=DeprecationWarning)
        resemblyzer = _import("resemblyzer", "resemblyzer")
    encoder = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
    encoder.eval()
    return resemblyzer, encoder


def speaker_embedding(audio: Any, sample_rate: int) -> np.ndarray:
    """Resemblyzer utterance embedding ``[256]`` float32, L2-normalised, or all-nan for silent audio.

    Exactly Resemblyzer's recipe: resample to 16 kHz, ``preprocess_wav`` (raise the level to -30 dBFS if
    quieter; shorten long silences found by WebRTC VAD, mode 3, 30 ms frames) and ``VoiceEncoder.embed_utterance``
    (mean of the embeddings of 1.6 s windows at 1.3 windows/s, renormalised), on CPU. Compute the reference
    embedding once and reuse it across codecs.
    """
    x = _at_rate(audio, sample_rate)
    resemblyzer, encoder = _cached("resemblyzer", _load_resemblyzer)
    if not np.any(x):  # preprocess_wav would divide by a zero level
        return np.full(256, np.nan, dtype=np.float32)
    wav = resemblyzer.preprocess_wav(x)
    if wav.size == 0:  # the VAD found no speech
        return np.full(256, np.nan, dtype=np.float32)
    return encoder.embed_utterance(wav.astype(np.float32, copy=False))


def speaker_similarity(ref: Any, est: Any, sample_rate: int) -> float:
    """Cosine similarity of the Resemblyzer speaker embeddings (:func:`speaker_embedding`) of ``ref`` and
    ``est`` (Resemblyzer, https://github.com/resemble-ai/Resemblyzer: GE2E speaker encoder, Wan et al.,
    ICASSP 2018).

    1 for identical audio. The embeddings are non-negative (ReLU before the L2 normalisation), so the score
    lies in [0, 1] and unrelated signals still score well above 0 (white noise against speech gives about
    0.5); compare codecs with one another rather than against 0. nan if either signal is silent (all zeros)
    or contains no speech the VAD accepts.
    """
    a, b = speaker_embedding(ref, sample_rate), speaker_embedding(est, sample_rate)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- DNSMOS ----------------------------------------------------------------------------------------------------


def _load_dnsmos() -> Any:
    _import("onnxruntime", "onnxruntime")
    _import("librosa", "librosa")
    module = _import("speechmos.dnsmos", "speechmos")
    models = Path(module.__file__).resolve().parent / "dnsmos_models"
    # The files speechmos.dnsmos.run(..., model_type="dnsmos") uses: the P.835 model and the P.808 model.
    return module.DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))


def dnsmos(audio: Any, sample_rate: int) -> dict[str, float]:
    """DNSMOS (Reddy et al., "DNSMOS P.835: a non-intrusive perceptual objective speech quality metric to
    evaluate noise suppressors", ICASSP 2022), no reference needed, as packaged by Microsoft in ``speechmos``
    (``speechmos.dnsmos``, non-personalised models ``sig_bak_ovr.onnx`` and ``model_v8.onnx``, on onnxruntime).

    The audio is resampled to 16 kHz and clipped to [-1, 1] (speechmos rejects samples outside it). As in
    the DNS Challenge script, a clip shorter than 9.01 s is repeated until it is at least that long, the
    models score 9.01 s windows every 1 s, and the scores are averaged over windows. Returns
    ``{"ovrl", "sig", "bak", "p808"}``: the P.835 overall, signal and background MOS after the challenge's
    polynomial calibration, and the P.808 overall MOS, each on a 1-5 scale.
    """
    x = _at_rate(audio, sample_rate)
    if x.size == 0:
        raise ValueError("dnsmos needs a non-empty signal")
    model = _cached("dnsmos", _load_dnsmos)
    scores = model(np.clip(x, -1.0, 1.0), MODEL_SAMPLE_RATE, False)
    return {key: float(scores[f"{key}_mos"]) for key in ("ovrl", "sig", "bak", "p808")}
