"""Classical-codec baselines for the evaluation tables: reconstruction-only codecs next to our tokenizers.

Every baseline is a :class:`Baseline`: ``name``, nominal ``bitrate`` (bits/s; None for identity),
``sample_rate`` (the rate it works at, None for identity: any rate; the eval runner feeds clips at this rate,
and at their own rate where it is None), ``categories`` (None = all) and ``reconstruct(audio, sample_rate)``,
which takes float32 mono audio at any rate and returns float32
audio at that rate, of exactly the input length and time-aligned with it (each codec's delay is measured
and compensated, see below). :meth:`Baseline.code` returns the same audio plus the measured payload size.

The standard set (:func:`available_baselines`, :func:`get_baseline`):

==============  =========  ===========  ===========  ==========================================================
name            bitrate    sample_rate  categories   implementation
==============  =========  ===========  ===========  ==========================================================
identity        None       None (any)   all          the input itself (a float32 copy)
opus-6k         6000       48000        all          libopus 1.3 via ffmpeg (or opusenc/opusdec), SILK NB
codec2-1.3k     1300       8000         speech       Codec2 1.0 ``c2enc``/``c2dec`` mode 1300 (52 bits / 40 ms)
codec2-2.4k     2400       8000         speech       mode 2400 (48 bits / 20 ms)
codec2-3.2k     3200       8000         speech       mode 3200 (64 bits / 20 ms)
==============  =========  ===========  ===========  ==========================================================

Pipeline of a codec baseline: the input is resampled with soxr ``HQ`` to the codec's rate (python-soxr's
whole-signal :func:`soxr.resample` is delay-free: measured cross-correlation peak at lag 0 for 24 kHz ->
48 kHz / 8 kHz -> 24 kHz), zero-padded at the end to flush the codec, written to a temporary file, run through
the codec's command-line tools (``subprocess.run([...], check=True, capture_output=True)``, never a shell),
read back, shifted by the codec's delay, cut to the resampled length and resampled back to the input rate,
then trimmed or zero-padded to exactly the input length. The encoders get int16 PCM,
``clip(rint(x * 32768), -32768, 32767)``; Codec2's int16 output is read back as ``/ 32768``, Opus decodes to
float32.

Opus (``Opus(bitrate=6000, application="audio")``), with ffmpeg when it has libopus::

    ffmpeg -nostdin -hide_banner -loglevel error -y -f s16le -ar 48000 -ac 1 -i in.s16 \\
        -c:a libopus -b:a 6000 -vbr on -application audio -frame_duration 20 -compression_level 10 \\
        -fflags +bitexact -f ogg out.opus
    ffmpeg -nostdin -hide_banner -loglevel error -y -c:a libopus -i out.opus -f f32le -ac 1 -ar 48000 out.f32

otherwise with opus-tools (same libopus, same settings: bit-identical packets and output on our speech clip;
only the Ogg headers differ)::

    opusenc --quiet --raw --raw-rate 48000 --raw-chan 1 --raw-bits 16 --bitrate 6 --vbr --framesize 20 \\
        --comp 10 in.s16 out.opus
    opusdec --quiet --rate 48000 --float out.opus out.f32

``application="audio"`` is libopus's (and ffmpeg's, and opusenc's) default; it is kept for every category
(music too) and on our speech clip it matches the input better than ``voip``, which high-passes and
pre-filters (waveform correlation 0.945 vs 0.891). At 6 kbps libopus codes narrowband SILK. The decoder
applies the Ogg pre-skip (312 samples at 48 kHz, the encoder's look-ahead) and the end trim from the last
granule position, so the decoded stream already has the input's length; a residual delay of
**2 samples at 48 kHz** remains (the SILK resamplers), measured as the waveform cross-correlation peak
(parabolic interpolation) on the shipped speech clip at 13 offsets: 2.03 +- 0.34 samples; it is removed here.
After it the peak is at -0.06 samples (24 kHz input) and -0.03 (16 kHz); without it +0.94 and +0.64.
The decoder is forced to libopus: ffmpeg's native Opus decoder has another SILK resampler (residual ~6
samples). ``payload_bits`` counts the Opus packets (Ogg pages and the OpusHead / OpusTags headers left out).

Codec2 (``Codec2(mode)``, mode 1300, 2400 or 3200; Debian's codec2 1.0.5 tools, headerless ``.bin``)::

    c2enc MODE in.s16 out.bin        # 8 kHz int16 mono raw in
    c2dec MODE out.bin out.s16

Codec2 is parametric (sinusoidal, phases synthesised, not transmitted), so its waveform does not follow the
input's (waveform correlation about 0.2) and its delay is defined on the envelope. From the code's structure
it is **160 samples at 8 kHz (20 ms)** in every mode: the analysis window is centred 160 samples behind the
newest input sample, and the decoder's overlap-add puts a frame's centre at the first sample it emits after
that frame. Measured: cross-correlation of 5 ms RMS envelopes, mean over 14 frame-grid offsets of the shipped
speech clip: 159.9 (3200), 161.6 (2400), 165.6 (1300) samples, frame-to-frame spread +-13 to +-25. After the
compensation, the lag of 10 ms envelopes at 24 kHz over 8 grid offsets is +0.7 / +0.5 / +1.0 ms (3200 / 2400 /
1300; each offset within -0.7 .. +3.2 ms); uncompensated it is +20.5 / +20.3 / +20.7 ms. ``c2enc``
codes whole frames only (160 or 320 samples), so the input is padded with zeros by the delay and up to a
whole frame. ``payload_bits`` counts the codec's bits (frames x bits per frame); ``c2enc`` stores each frame in
whole bytes, so the 1300 mode's file holds 7 bytes (56 bits) per 52-bit frame (``stream_bytes``).

Missing tools raise :class:`BaselineUnavailable` (a :class:`RuntimeError`) naming the tool and
``scripts/setup-eval``, which installs them (Debian packages ffmpeg, codec2, opus-tools).
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

__all__ = ["Baseline", "BaselineUnavailable", "Codec2", "Coded", "Identity", "Opus", "available_baselines",
           "from_int16", "get_baseline", "to_int16"]

SOXR_QUALITY = "HQ"
SETUP_HINT = "install the evaluation tools with scripts/setup-eval (Debian/Ubuntu: apt-get install ffmpeg codec2 " \
             "opus-tools)"


class BaselineUnavailable(RuntimeError):
    """A baseline's external tool is missing (the message names it and ``scripts/setup-eval``)."""


@dataclass(frozen=True)
class Coded:
    """One pass through a baseline: the reconstruction and what the codec spent on it."""

    audio: np.ndarray
    """float32 mono at the input rate, exactly the input length, time-aligned with the input."""
    payload_bits: int | None
    """Coded bits (container and stream headers excluded; the flush frames included); None for identity."""
    stream_bytes: int | None
    """Size of the file the encoder wrote (Ogg container for Opus, byte-padded frames for Codec2)."""
    duration_s: float
    """Duration of the input."""

    @property
    def bitrate(self) -> float | None:
        """Measured bits per second of input: ``payload_bits / duration_s``."""
        if self.payload_bits is None or self.duration_s <= 0:
            return None
        return self.payload_bits / self.duration_s


# ---- helpers -------------------------------------------------------------------------------------------------

def to_int16(x: np.ndarray) -> np.ndarray:
    """float -> int16 PCM: ``clip(rint(x * 32768), -32768, 32767)`` (round half to even; +1.0 -> 32767)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")


def from_int16(x: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 ``x / 32768`` (exact)."""
    return (np.asarray(x, dtype=np.float32) / np.float32(32768.0)).astype(np.float32)


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"baseline input must be mono 1-D audio, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"baseline input must be float audio in [-1, 1], got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"baseline input has NaN or infinite samples (first at sample {bad})")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return a.astype(np.float32, copy=False)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad at the end to exactly ``n`` samples."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] >= n:
        return np.ascontiguousarray(x[:n])
    return np.concatenate([x, np.zeros(n - x.shape[0], np.float32)])


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x, rate_in, rate_out, quality=SOXR_QUALITY).astype(np.float32, copy=False)


def _which(tool: str, needed_by: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BaselineUnavailable(f"{needed_by}: the program {tool!r} was not found on PATH; {SETUP_HINT}")
    return path


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"").decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {e.returncode}): {' '.join(cmd)}\n{err}") from None


@functools.cache
def _ffmpeg_has(ffmpeg: str, encoder: str) -> bool:
    """Whether this ffmpeg lists ``encoder`` among both its encoders and its decoders."""
    found = []
    for what in ("-encoders", "-decoders"):
        r = subprocess.run([ffmpeg, "-hide_banner", what], capture_output=True, text=True)
        found.append(r.returncode == 0 and any(line.split()[1:2] == [encoder] for line in r.stdout.splitlines()))
    return all(found)


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the packets of a single-stream Ogg file, in order (headers included)."""
    sizes, pos, cur = [], 0, 0
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS" or pos + 27 > len(data):
            raise ValueError(f"not an Ogg page at byte {pos}")
        nseg = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + nseg]
        for v in lacing:
            cur += v
            if v < 255:
                sizes.append(cur)
                cur = 0
        pos += 27 + nseg + sum(lacing)
    return sizes


# ---- the protocol --------------------------------------------------------------------------------------------

class Baseline:
    """A reconstruction-only codec. Subclasses set the attributes and implement :meth:`_code_native`."""

    name: str
    bitrate: float | None
    """Nominal bits per second (None: not a bit-rate-limited codec)."""
    sample_rate: int | None
    """The rate the codec works at (inputs at other rates are resampled to it and back); None: any rate."""
    categories: frozenset[str] | None = None
    """Clip categories the baseline applies to; None = all."""
    delay: int = 0
    """Codec delay compensated, in samples at :attr:`sample_rate` (beyond what the decoder removes itself)."""
    flush: int = 0
    """Zeros appended to the codec's input (at :attr:`sample_rate`) so that the delayed tail comes out."""
    tools: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, bitrate={self.bitrate}, sample_rate={self.sample_rate})"

    def applies_to(self, category: str) -> bool:
        return self.categories is None or category in self.categories

    def check_available(self) -> None:
        """Raise :class:`BaselineUnavailable` if an external tool is missing."""

    def is_available(self) -> bool:
        try:
            self.check_available()
        except BaselineUnavailable:
            return False
        return True

    def reconstruct(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """float32 mono ``audio`` at ``sample_rate`` -> float32 reconstruction at ``sample_rate``, same length,
        time-aligned. NaN or infinite input raises ValueError."""
        return self.code(audio, sample_rate).audio

    def code(self, audio: np.ndarray, sample_rate: int) -> Coded:
        """:meth:`reconstruct` plus the payload size (:class:`Coded`)."""
        x = _check_audio(audio, sample_rate)
        n = x.shape[0]
        duration = n / sample_rate
        if n == 0:
            return Coded(np.zeros(0, np.float32), 0, 0, 0.0)
        self.check_available()
        xc = _resample(x, sample_rate, self.sample_rate)
        m = xc.shape[0]
        padded = np.concatenate([xc, np.zeros(self.flush, np.float32)])
        with tempfile.TemporaryDirectory(prefix="tokenwave-baseline-") as tmp:
            y, bits, nbytes = self._code_native(padded, Path(tmp))
        y = _fit(np.asarray(y, np.float32)[self.delay:], m)
        return Coded(_fit(_resample(y, self.sample_rate, sample_rate), n), bits, nbytes, duration)

    def _code_native(self, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, int, int]:
        """Encode and decode ``x`` (float32 at :attr:`sample_rate`) in folder ``tmp``: (decoded, payload bits,
        encoded file bytes)."""
        raise NotImplementedError


class Identity(Baseline):
    """The input itself, exactly (a float32 copy), at any rate: the ceiling row of every table.
    ``sample_rate`` is None (works at the input's rate) unless given, e.g. ``Identity(24000)`` for a row that
    goes through the runner's resampling to 24 kHz and back like a 24 kHz tokenizer."""

    def __init__(self, sample_rate: int | None = None):
        self.name = "identity" if sample_rate is None else f"identity-{sample_rate / 1000:g}k"
        self.bitrate = None
        self.sample_rate = None if sample_rate is None else int(sample_rate)
        self.categories = None

    def code(self, audio: np.ndarray, sample_rate: int) -> Coded:
        x = _check_audio(audio, sample_rate)
        return Coded(x.copy(), None, None, x.shape[0] / sample_rate)


class Opus(Baseline):
    """Opus (libopus) at ``bitrate`` bits/s, VBR, 20 ms frames, 48 kHz mono, through ffmpeg (libopus) or, when
    ffmpeg lacks libopus, opusenc/opusdec. ``backend``: "ffmpeg", "opus-tools" or None (first available)."""

    sample_rate = 48000
    delay = 2       # residual after the decoder's pre-skip, measured (module docstring)
    flush = 2       # the decoder trims the output to the input's length; shifting by `delay` needs 2 more

    def __init__(self, bitrate: int = 6000, application: str = "audio", backend: str | None = None):
        if application not in ("audio", "voip", "lowdelay"):
            raise ValueError(f"application must be audio, voip or lowdelay, got {application!r}")
        if backend not in (None, "ffmpeg", "opus-tools"):
            raise ValueError(f"backend must be ffmpeg, opus-tools or None, got {backend!r}")
        if not 500 <= bitrate <= 512000:
            raise ValueError(f"Opus bitrate must be within 500..512000 bits/s, got {bitrate}")
        if application != "audio" and backend == "opus-tools":
            raise ValueError("opusenc has no application setting; use backend='ffmpeg' for voip / lowdelay")
        self.bitrate = int(bitrate)
        self.application = application
        self.backend = backend
        kbps = f"{self.bitrate / 1000:g}k"
        self.name = f"opus-{kbps}" if application == "audio" else f"opus-{kbps}-{application}"
        self.categories = None

    def _backend(self) -> str:
        ffmpeg = shutil.which("ffmpeg")
        ff_ok = ffmpeg is not None and _ffmpeg_has(ffmpeg, "libopus")
        if self.backend in (None, "ffmpeg") and ff_ok:
            return "ffmpeg"
        if self.backend == "ffmpeg" or self.application != "audio":
            if ffmpeg is None:
                _which("ffmpeg", f"baseline {self.name}")
            raise BaselineUnavailable(f"baseline {self.name}: {ffmpeg} has no libopus encoder and decoder; "
                                      f"{SETUP_HINT}")
        for tool in ("opusenc", "opusdec"):
            if shutil.which(tool) is None:
                raise BaselineUnavailable(
                    f"baseline {self.name}: needs ffmpeg with libopus, or the programs 'opusenc' and 'opusdec' "
                    f"(opus-tools); {tool!r} was not found on PATH and "
                    f"{'ffmpeg was not found' if ffmpeg is None else 'ffmpeg has no libopus'}; {SETUP_HINT}")
        return "opus-tools"

    def check_available(self) -> None:
        self._backend()

    def commands(self, src: str, coded: str, out: str, backend: str | None = None) -> list[list[str]]:
        """The encoder and decoder command lines (``src``: 48 kHz int16 raw; ``out``: 48 kHz float32 raw)."""
        if (backend or self._backend()) == "ffmpeg":
            q = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
            return [
                q + ["-f", "s16le", "-ar", "48000", "-ac", "1", "-i", src, "-c:a", "libopus", "-b:a", str(self.bitrate),
                     "-vbr", "on", "-application", self.application, "-frame_duration", "20",
                     "-compression_level", "10", "-fflags", "+bitexact", "-f", "ogg", coded],
                q + ["-c:a", "libopus", "-i", coded, "-f", "f32le", "-ac", "1", "-ar", "48000", out],
            ]
        return [
            ["opusenc", "--quiet", "--raw", "--raw-rate", "48000", "--raw-chan", "1", "--raw-bits", "16",
             "--bitrate", f"{self.bitrate / 1000:g}", "--vbr", "--framesize", "20", "--comp", "10", src, coded],
            ["opusdec", "--quiet", "--rate", "48000", "--float", coded, out],
        ]

    def _code_native(self, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, int, int]:
        backend = self._backend()
        src, coded, out = tmp / "in.raw", tmp / "coded.opus", tmp / "out.f32"
        to_int16(x).tofile(src)
        for cmd in self.commands(str(src), str(coded), str(out), backend):
            _run(cmd)
        data = coded.read_bytes()
        sizes = ogg_packet_sizes(data)
        return np.fromfile(out, "<f4"), 8 * sum(sizes[2:]), len(data)


class Codec2(Baseline):
    """Codec2 at ``mode`` bits/s (1300, 2400 or 3200; speech only) with Debian's ``c2enc``/``c2dec``, 8 kHz."""

    MODES = {1300: (52, 320), 2400: (48, 160), 3200: (64, 160)}   # mode -> (bits per frame, samples per frame)
    sample_rate = 8000
    delay = 160     # 20 ms: analysis-window centre to synthesis-frame centre (module docstring)
    tools = ("c2enc", "c2dec")

    def __init__(self, mode: int = 3200):
        if mode not in self.MODES:
            raise ValueError(f"Codec2 mode must be one of {sorted(self.MODES)}, got {mode!r}")
        self.mode = int(mode)
        self.bitrate = self.mode
        self.name = f"codec2-{self.mode / 1000:g}k"
        self.categories = frozenset({"speech"})
        self.bits_per_frame, self.frame = self.MODES[self.mode]
        self.bytes_per_frame = math.ceil(self.bits_per_frame / 8)

    def check_available(self) -> None:
        for tool in self.tools:
            _which(tool, f"baseline {self.name}")

    def commands(self, src: str, coded: str, out: str) -> list[list[str]]:
        """The encoder and decoder command lines (8 kHz int16 raw in and out; ``coded`` must not end in .c2,
        which would make c2enc write a header)."""
        return [["c2enc", str(self.mode), src, coded], ["c2dec", str(self.mode), coded, out]]

    def _code_native(self, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, int, int]:
        # c2enc drops a trailing partial frame: pad by the delay and up to a whole frame
        total = math.ceil((x.shape[0] + self.delay) / self.frame) * self.frame
        x = np.concatenate([x, np.zeros(total - x.shape[0], np.float32)])
        src, coded, out = tmp / "in.s16", tmp / "coded.bin", tmp / "out.s16"
        to_int16(x).tofile(src)
        for cmd in self.commands(str(src), str(coded), str(out)):
            _run(cmd)
        nbytes = coded.stat().st_size
        frames = nbytes // self.bytes_per_frame
        if frames * self.bytes_per_frame != nbytes or frames != total // self.frame:
            raise RuntimeError(f"c2enc {self.mode}: wrote {nbytes} bytes for {total // self.frame} frames of "
                               f"{self.bytes_per_frame} bytes")
        return from_int16(np.fromfile(out, "<i2")), frames * self.bits_per_frame, nbytes


# ---- the standard set ----------------------------------------------------------------------------------------

_STANDARD = {
    "identity": Identity,
    "opus-6k": lambda: Opus(6000),
    "codec2-1.3k": lambda: Codec2(1300),
    "codec2-2.4k": lambda: Codec2(2400),
    "codec2-3.2k": lambda: Codec2(3200),
}


def available_baselines(*, installed_only: bool = False) -> dict[str, Baseline]:
    """The standard set, name -> new instance: identity, opus-6k, codec2-1.3k, codec2-2.4k, codec2-3.2k.
    ``installed_only``: leave out those whose tools are missing (see :meth:`Baseline.is_available`)."""
    out = {name: make() for name, make in _STANDARD.items()}
    return {k: b for k, b in out.items() if b.is_available()} if installed_only else out


def get_baseline(name: str) -> Baseline:
    """A new instance of the standard baseline ``name``; an unknown name raises ValueError listing the known
    ones. (Tools are checked when the baseline is first used.)"""
    try:
        return _STANDARD[name]()
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(_STANDARD)}") from None
