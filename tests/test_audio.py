"""tokenwave.audio: reading any file / rate / channel count to float32 mono, streaming, writing atomically."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from tokenwave.api import InvalidAudioError
from tokenwave.audio import (
    AUDIO_EXTENSIONS,
    AudioConversionWarning,
    AudioInfo,
    AudioReader,
    AudioWriter,
    load_audio,
    resampled_length,
    write_audio,
)

TARGET = 24000
SOURCE_RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000]


def sine(rate: int, seconds: float, freq: float = 1000.0, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(n: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    shape = (n,) if channels is None else (n, channels)
    return np.clip(0.2 * np.random.default_rng(seed).standard_normal(shape), -0.99, 0.99).astype(np.float32)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- resampled_length

@pytest.mark.parametrize("sr_in", SOURCE_RATES)
def test_resampled_length_matches_soxr_for_every_short_length(sr_in):
    for n in range(1, 2001):
        got = len(soxr.resample(np.zeros(n, np.float32), sr_in, TARGET, quality="HQ"))
        assert resampled_length(n, sr_in, TARGET) == got, (n, sr_in)


@pytest.mark.parametrize(("sr_in", "sr_out"), [(24000, 44100), (16000, 44100), (48000, 44100), (44100, 16000),
                                               (32000, 24000), (16000, 24000), (12345, 24000), (24000, 16000)])
def test_resampled_length_matches_soxr_exact_halves_and_long_signals(sr_in, sr_out):
    # Lengths where frames * sr_out / sr_in ends in .5: libsoxr's double arithmetic rounds some of
    # them down (24000 -> 44100 at 120 frames gives 220, not 221), so neither ceil nor round-half-up fits.
    lengths = [n for n in range(1, 1500) if (2 * n * sr_out) % sr_in == 0]
    lengths += [4095, 4096, 10007, 44100, 48000, 441_001, 1_000_003, 5_000_011]
    for n in lengths:
        got = len(soxr.resample(np.zeros(n, np.float32), sr_in, sr_out, quality="HQ"))
        assert resampled_length(n, sr_in, sr_out) == got, (n, sr_in, sr_out)


def test_resampled_length_edges():
    assert resampled_length(0, 44100, 24000) == 0
    assert resampled_length(12345, 24000, 24000) == 12345
    assert resampled_length(120, 24000, 44100) == 220  # 220.5 rounds down in libsoxr's arithmetic
    assert resampled_length(3, 16000, 24000) == 5  # 4.5 rounds up
    with pytest.raises(ValueError):
        resampled_length(10, 0, 24000)
    with pytest.raises(ValueError):
        resampled_length(-1, 16000, 24000)


# ---------------------------------------------------------------- reading files

def test_read_wav_pcm16_and_float_exactly(tmp_path, no_warnings):
    x = sine(TARGET, 0.3)
    sf.write(tmp_path / "f.wav", x, TARGET, subtype="FLOAT")
    y, info = load_audio(tmp_path / "f.wav", TARGET)
    assert y.dtype == np.float32 and y.ndim == 1 and np.array_equal(y, x)
    assert (info.format, info.subtype, info.channels, info.frames, info.num_samples) == ("WAV", "FLOAT", 1, len(x),
                                                                                          len(x))
    assert not info.resampled and not info.downmixed and info.path == str(tmp_path / "f.wav")

    pcm = (np.random.default_rng(0).integers(-32768, 32768, 5000)).astype(np.int16)
    sf.write(tmp_path / "p.wav", pcm, TARGET, subtype="PCM_16")
    y, info = load_audio(str(tmp_path / "p.wav"), TARGET)
    assert info.subtype == "PCM_16"
    assert np.array_equal(y, pcm.astype(np.float32) / 32768)


def test_read_flac_exactly(tmp_path, no_warnings):
    pcm = (np.random.default_rng(1).integers(-20000, 20000, 7000)).astype(np.int16)
    sf.write(tmp_path / "a.flac", pcm, TARGET)
    y, info = load_audio(tmp_path / "a.flac", TARGET)
    assert (info.format, info.subtype) == ("FLAC", "PCM_16")
    assert np.array_equal(y, pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize(("name", "kwargs", "fmt", "subtype", "rms_tol"), [
    ("a.ogg", dict(format="OGG", subtype="VORBIS"), "OGG", "VORBIS", 0.02),
    ("a.mp3", dict(format="MP3", subtype="MPEG_LAYER_III"), "MP3", "MPEG_LAYER_III", 0.03),
    ("a.opus", dict(format="OGG", subtype="OPUS"), "OGG", "OPUS", None),
])
def test_read_lossy(tmp_path, no_warnings, name, kwargs, fmt, subtype, rms_tol):
    x = sine(TARGET, 0.5, freq=440)
    sf.write(tmp_path / name, x, TARGET, **kwargs)
    y, info = load_audio(tmp_path / name, TARGET)
    assert (info.format, info.subtype, info.frames, len(y)) == (fmt, subtype, len(x), len(x))
    if rms_tol is not None:  # measured: vorbis 0.004, mp3 0.009 (opus is not sample-aligned)
        assert np.sqrt(np.mean((y - x) ** 2)) < rms_tol
    assert 0.3 < np.abs(y[2000:]).max() < 0.7


@pytest.mark.parametrize("ext", sorted(AUDIO_EXTENSIONS))
def test_every_audio_extension_is_readable(tmp_path, ext, no_warnings):
    formats = {".oga": ("OGG", "VORBIS"), ".ogg": ("OGG", "VORBIS"), ".opus": ("OGG", "OPUS"), ".aif": ("AIFF", None),
               ".aiff": ("AIFF", None), ".mp3": ("MP3", None)}
    fmt, subtype = formats.get(ext, (ext[1:].upper(), None))
    x = sine(16000, 0.2)
    path = tmp_path / f"x{ext}"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    y, info = load_audio(path, TARGET)
    assert info.format == fmt and info.sample_rate == 16000 and len(y) == resampled_length(len(x), 16000, TARGET)


@pytest.mark.parametrize("sr_in", SOURCE_RATES)
def test_resampling_keeps_frequency_and_amplitude(tmp_path, sr_in, no_warnings):
    # Against the analytic 1 kHz sine at 24 kHz, 20 ms from either end: measured max error 2.5e-7..3.7e-7.
    path = tmp_path / "s.wav"
    sf.write(path, sine(sr_in, 0.5), sr_in, subtype="FLOAT")
    y, info = load_audio(path, TARGET)
    assert info.resampled and info.sample_rate == sr_in and info.target_rate == TARGET
    assert len(y) == info.num_samples == resampled_length(info.frames, sr_in, TARGET)
    ref = sine(TARGET, len(y) / TARGET).astype(np.float64)
    edge = TARGET // 50
    assert np.abs(y[edge:-edge] - ref[edge:-edge]).max() < 1e-5
    assert np.array_equal(y, soxr.resample(sine(sr_in, 0.5), sr_in, TARGET, quality="HQ"))


def test_stereo_is_averaged_with_a_warning(tmp_path):
    xy = noise(5000, channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, xy, TARGET, subtype="FLOAT")
    with pytest.warns(AudioConversionWarning, match=r"stereo\.wav.*2 channels") as record:
        y, info = load_audio(path, TARGET)
    assert record[0].filename == __file__
    assert info.channels == 2 and info.downmixed
    expected = ((xy[:, 0].astype(np.float64) + xy[:, 1]) / 2).astype(np.float32)
    assert np.array_equal(y, expected)


def test_six_channels(tmp_path):
    x = noise(3000, channels=6)
    path = tmp_path / "six.flac"
    sf.write(path, x, 48000, subtype="PCM_24")
    with pytest.warns(AudioConversionWarning, match=r"six\.flac: 6 channels"):
        y, info = load_audio(path, TARGET)
    stored = sf.read(path, dtype="float32")[0]
    assert info.channels == 6 and len(y) == info.num_samples
    assert np.array_equal(y, soxr.resample(stored.astype(np.float64).mean(axis=1).astype(np.float32), 48000, TARGET,
                                           quality="HQ"))


# ---------------------------------------------------------------- arrays

@pytest.mark.parametrize(("dtype", "scale", "offset"), [(np.int16, 2**15, 0), (np.int32, 2**31, 0), (np.int8, 2**7, 0),
                                                        (np.uint8, 2**7, 128)])
def test_integer_pcm_arrays(dtype, scale, offset, no_warnings):
    info_ = np.iinfo(dtype)
    x = np.random.default_rng(2).integers(info_.min, info_.max, 4000, endpoint=True).astype(dtype)
    x[:2] = info_.min, info_.max
    y, info = load_audio(x, TARGET, sample_rate=TARGET)
    expected = ((x.astype(np.float64) - offset) / scale).astype(np.float32)
    assert y.dtype == np.float32 and np.array_equal(y, expected)
    assert y.min() == -1 and info.path is None and info.format is None


def test_int16_array_matches_the_same_samples_from_a_file(tmp_path, no_warnings):
    pcm = np.random.default_rng(3).integers(-32768, 32768, 9000).astype(np.int16)
    sf.write(tmp_path / "p.wav", pcm, 16000, subtype="PCM_16")
    from_file, _ = load_audio(tmp_path / "p.wav", TARGET)
    from_array, info = load_audio(pcm, TARGET, sample_rate=16000)
    assert info.num_samples == len(from_array) and np.array_equal(from_array, from_file)


def test_channels_first_array_and_torch_tensors():
    x = noise(6000, seed=4, channels=2).T.copy()  # [2, L]
    with pytest.warns(AudioConversionWarning, match="array input: 2 channels"):
        y, info = load_audio(x, TARGET, sample_rate=44100)
    assert info.channels == 2 and info.frames == 6000 and len(y) == info.num_samples
    with pytest.warns(AudioConversionWarning):
        y_t, info_t = load_audio(torch.from_numpy(x), TARGET, sample_rate=44100)
    assert np.array_equal(y, y_t) and info_t == info

    mono = noise(5000, seed=5)
    y64, _ = load_audio(torch.from_numpy(mono).double(), TARGET, sample_rate=16000)
    assert np.array_equal(y64, load_audio(mono, TARGET, sample_rate=16000)[0])
    y16, _ = load_audio(torch.from_numpy(mono).to(torch.bfloat16), TARGET, sample_rate=TARGET)
    assert np.array_equal(y16, torch.from_numpy(mono).to(torch.bfloat16).float().numpy())
    pcm = torch.tensor([0, 16384, -32768, 32767], dtype=torch.int16)
    assert np.array_equal(load_audio(pcm, TARGET, sample_rate=TARGET)[0], pcm.numpy() / np.float32(32768))


def test_array_same_rate_passes_through_unchanged(no_warnings):
    x = noise(7777, seed=6) * 5  # out of [-1, 1]: not clipped, not normalised
    y, info = load_audio(x, TARGET, sample_rate=TARGET)
    assert np.array_equal(y, x) and not info.resampled and y is not x


# ---------------------------------------------------------------- errors

def assert_invalid(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(InvalidAudioError, match=match) as e:
        fn(*args, **kwargs)
    return str(e.value)


def test_file_errors_name_the_file(tmp_path):
    assert_invalid(r"missing\.wav: no such file", load_audio, tmp_path / "missing.wav", TARGET)

    (tmp_path / "x.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(InvalidAudioError, match=r"x\.wav: cannot read as audio") as e:
        load_audio(tmp_path / "x.wav", TARGET)
    assert isinstance(e.value.__cause__, RuntimeError)

    (tmp_path / "zero.wav").write_bytes(b"")
    assert_invalid(r"zero\.wav: empty file \(0 bytes\)", load_audio, tmp_path / "zero.wav", TARGET)

    sf.write(tmp_path / "noframes.wav", np.zeros(0, np.float32), TARGET)
    assert_invalid(r"noframes\.wav: contains no audio \(0 frames\)", load_audio, tmp_path / "noframes.wav", TARGET)

    assert_invalid(r"is a directory", load_audio, tmp_path, TARGET)

    sf.write(tmp_path / "rate0.wav", np.zeros(10, np.int16), 8000, subtype="PCM_16")
    data = bytearray((tmp_path / "rate0.wav").read_bytes())
    data[24:32] = struct.pack("<II", 0, 0)  # sample rate and byte rate
    (tmp_path / "rate0.wav").write_bytes(bytes(data))
    assert_invalid(r"rate0\.wav", load_audio, tmp_path / "rate0.wav", TARGET)

    sf.write(tmp_path / "ok.wav", np.zeros(10, np.float32), TARGET)
    assert_invalid(r"ok\.wav: sample_rate= is for arrays", load_audio, tmp_path / "ok.wav", TARGET, sample_rate=TARGET)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_name_the_file_and_time(tmp_path, bad):
    x = noise(3 * 16000, seed=7)
    x[40000] = bad  # in the third one-second block
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    kind = "NaN" if np.isnan(bad) else "infinite"
    assert_invalid(rf"bad\.wav: {kind} sample at frame 40000 \(about 2\.500 s\)", load_audio, path, TARGET)
    with AudioReader(path, TARGET) as reader:
        first = reader.read(TARGET)  # the first second streams fine; the error comes with its block
        assert len(first) == TARGET
        with pytest.raises(InvalidAudioError, match="2.500 s"):
            list(reader)
    assert_invalid(r"array input: .* frame 40000", load_audio, x, TARGET, sample_rate=16000)


def test_array_errors():
    x = noise(1000)
    assert_invalid(r"array input: sample_rate= is required", load_audio, x, TARGET)
    assert_invalid(r"array input: invalid sample rate 0", load_audio, x, TARGET, sample_rate=0)
    assert_invalid(r"array input: invalid sample rate -16000", load_audio, x, TARGET, sample_rate=-16000)
    assert_invalid(r"array input: invalid sample rate 16000\.5", load_audio, x, TARGET, sample_rate=16000.5)
    assert_invalid(r"shape \(1000, 2\) .* channels-last", load_audio, noise(1000, channels=2), TARGET,
                   sample_rate=TARGET)
    assert_invalid(r"shape \(17, 1000\)", load_audio, np.zeros((17, 1000), np.float32), TARGET, sample_rate=TARGET)
    assert_invalid(r"expected shape \[L\] or \[C, L\]", load_audio, np.zeros((1, 1, 100), np.float32), TARGET,
                   sample_rate=TARGET)
    assert_invalid(r"expected shape", load_audio, np.zeros((), np.float32), TARGET, sample_rate=TARGET)
    assert_invalid(r"0 samples", load_audio, np.zeros(0, np.float32), TARGET, sample_rate=TARGET)
    assert_invalid(r"0 samples", load_audio, np.zeros((2, 0), np.float32), TARGET, sample_rate=TARGET)
    assert_invalid(r"unsupported dtype int64", load_audio, torch.arange(100), TARGET, sample_rate=TARGET)
    assert_invalid(r"unsupported dtype bool", load_audio, np.ones(100, bool), TARGET, sample_rate=TARGET)
    with pytest.raises(TypeError):
        load_audio([0.0, 0.1], TARGET, sample_rate=TARGET)
    with pytest.raises(ValueError, match="target_rate"):
        load_audio(x, 0, sample_rate=TARGET)


# ---------------------------------------------------------------- streaming reader

@pytest.mark.parametrize(("sr_in", "seconds", "channels", "block_frames"), [
    (44100, 3.37, 1, None), (48000, 2.0, 2, None), (16000, 1.0, 1, None), (8000, 0.01, 1, None),
    (22050, 2.5, 1, 1000), (96000, 1.5, 2, 7919), (11025, 1.1, 1, 1), (TARGET, 2.2, 1, 5000),
])
def test_streamed_equals_load_audio(tmp_path, sr_in, seconds, channels, block_frames):
    n = round(sr_in * seconds)
    path = tmp_path / "long.wav"
    sf.write(path, noise(n, seed=8, channels=None if channels == 1 else channels), sr_in, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioConversionWarning)
        whole, info = load_audio(path, TARGET)
        with AudioReader(path, TARGET, block_frames=block_frames) as reader:
            assert reader.info == info and info.num_samples == resampled_length(n, sr_in, TARGET)
            chunks = list(reader)
        assert reader.closed
    streamed = np.concatenate(chunks)
    assert len(streamed) == info.num_samples == len(whole)
    assert np.array_equal(streamed, whole)  # bit-identical, at any block size


def test_reader_read_n(tmp_path, no_warnings):
    path = tmp_path / "r.flac"
    sf.write(path, noise(50000, seed=9), 44100)
    whole, info = load_audio(path, TARGET)
    reader = AudioReader(path, TARGET, block_frames=3000)
    assert isinstance(reader.info, AudioInfo) and reader.info.num_samples == len(whole)
    parts = [reader.read(1000), reader.read(0), reader.read(7777)]
    assert [len(p) for p in parts] == [1000, 0, 7777]
    parts += list(reader)  # iteration continues where read() stopped
    assert len(reader.read(10)) == 0 and len(reader.read()) == 0
    reader.close()
    assert reader.closed and np.array_equal(np.concatenate(parts), whole)
    with AudioReader(path, TARGET) as again:
        assert np.array_equal(again.read(), whole)


def test_reader_memory_does_not_grow_with_length(tmp_path):
    # numpy buffers (soundfile's blocks, the mono mix) are traced; 20 s of 48 kHz stereo is 7.7 MB of samples.
    peaks = []
    for seconds in (2, 20):
        path = tmp_path / f"{seconds}.wav"
        sf.write(path, noise(48000 * seconds, seed=seconds, channels=2), 48000, subtype="FLOAT")
        tracemalloc.start()
        with pytest.warns(AudioConversionWarning), AudioReader(path, TARGET) as reader:
            total = sum(len(chunk) for chunk in reader)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert total == reader.info.num_samples
    assert peaks[1] < 1.2 * peaks[0] + 100_000 and peaks[1] < 2_000_000, peaks


# ---------------------------------------------------------------- writing

def test_write_float_round_trip_is_exact(tmp_path, no_warnings):
    x = noise(12345, seed=10) * 3  # FLOAT keeps values beyond [-1, 1]
    path = tmp_path / "deep" / "er" / "out.wav"
    write_audio(path, x, TARGET)
    y, info = load_audio(path, TARGET)
    assert (info.format, info.subtype, info.channels) == ("WAV", "FLOAT", 1) and np.array_equal(y, x)
    write_audio(path, torch.from_numpy(x).double(), TARGET)  # overwrites; torch float64 -> float32
    assert np.array_equal(load_audio(path, TARGET)[0], x)


def test_write_pcm16_round_trip_within_one_step(tmp_path, no_warnings):
    x = np.concatenate([np.linspace(-1, 1, 20001, dtype=np.float32), noise(5000, seed=11)])
    write_audio(tmp_path / "p.wav", x, 16000, subtype="PCM_16")
    y, info = load_audio(tmp_path / "p.wav", 16000)
    assert info.subtype == "PCM_16"
    err = np.abs(y.astype(np.float64) - x)
    assert err.max() <= 1 / 32768  # reached only at +1.0 (stored as 32767)
    assert err[x < 1].max() <= 0.5 / 32768 + 1e-12


def test_write_pcm16_clipping_is_counted(tmp_path):
    x = np.array([0.0, 1.5, -2.0, 1.0, -1.0, 0.999, 1.0001], np.float32)
    with pytest.warns(AudioConversionWarning, match=r"c\.wav: 3 of 7 samples were outside \[-1, 1\]") as record:
        write_audio(tmp_path / "c.wav", x, TARGET, subtype="PCM_16")
    assert record[0].filename == __file__
    y = sf.read(tmp_path / "c.wav", dtype="int16")[0]
    assert y.tolist() == [0, 32767, -32768, 32767, -32768, 32735, 32767]


def test_write_leaves_no_temporary_files(tmp_path, no_warnings):
    write_audio(tmp_path / "a.wav", noise(100), TARGET)
    write_audio(tmp_path / "a.wav", noise(200), TARGET)
    with pytest.raises(InvalidAudioError, match=r"b\.wav: NaN"):
        write_audio(tmp_path / "b.wav", np.array([0.0, np.nan], np.float32), TARGET)
    with pytest.raises(InvalidAudioError, match="1-D"):
        write_audio(tmp_path / "b.wav", np.zeros((2, 10), np.float32), TARGET)
    with pytest.raises(InvalidAudioError, match="float"):
        write_audio(tmp_path / "b.wav", np.zeros(10, np.int16), TARGET)
    with pytest.raises(ValueError, match="subtype"):
        write_audio(tmp_path / "b.wav", noise(10), TARGET, subtype="PCM_24")
    with pytest.raises(ValueError, match=r"\.wav"):
        write_audio(tmp_path / "b.flac", noise(10), TARGET)
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]
    assert sf.info(tmp_path / "a.wav").frames == 200


def test_audio_writer_streams_the_same_bytes_as_write_audio(tmp_path):
    x = np.concatenate([noise(30000, seed=12), [1.5, -1.25]]).astype(np.float32)
    for subtype in ["FLOAT", "PCM_16"]:
        with warnings.catch_warnings(record=True) as whole_warnings:
            warnings.simplefilter("always")
            write_audio(tmp_path / f"whole_{subtype}.wav", x, TARGET, subtype=subtype)
            with AudioWriter(tmp_path / f"stream_{subtype}.wav", TARGET, subtype) as writer:
                for start in range(0, len(x), 4096):
                    writer.write(torch.from_numpy(x[start:start + 4096]))
                assert not (tmp_path / f"stream_{subtype}.wav").exists()  # only on close
        assert writer.closed and writer.frames_written == len(x)
        assert (tmp_path / f"whole_{subtype}.wav").read_bytes() == (tmp_path / f"stream_{subtype}.wav").read_bytes()
        messages = [str(w.message) for w in whole_warnings if issubclass(w.category, AudioConversionWarning)]
        assert messages == ([] if subtype == "FLOAT" else [f"{tmp_path / 'whole_PCM_16.wav'}: 2 of 30002 samples were "
                                                           "outside [-1, 1] and clipped for PCM_16",
                                                           f"{tmp_path / 'stream_PCM_16.wav'}: 2 of 30002 samples were "
                                                           "outside [-1, 1] and clipped for PCM_16"])


def test_audio_writer_exception_removes_the_temporary_file(tmp_path, no_warnings):
    write_audio(tmp_path / "keep.wav", noise(50), TARGET)
    before = (tmp_path / "keep.wav").read_bytes()
    with pytest.raises(KeyError):
        with AudioWriter(tmp_path / "keep.wav", TARGET) as writer:
            writer.write(noise(1000))
            raise KeyError("stop")
    assert os.listdir(tmp_path) == ["keep.wav"] and (tmp_path / "keep.wav").read_bytes() == before
    with AudioWriter(tmp_path / "gone.wav", TARGET) as writer:
        writer.write(noise(10))
        writer.abort()
    writer = AudioWriter(tmp_path / "dropped.wav", TARGET)
    del writer
    assert os.listdir(tmp_path) == ["keep.wav"]


def test_importing_audio_does_not_import_torch():
    code = "import sys, tokenwave.audio; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
