"""Chunked encoding and streaming decoding against whole-file processing (tiny random Higgs models)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import randomize_, tiny_config
from tokenwave.api import InvalidAudioError, InvalidCodesError
from tokenwave.audio import AudioReader
from tokenwave.codecs.higgs.model import HiggsAudioTokenizer
from tokenwave.dsp.resample import resample
from tokenwave.streaming import (
    StreamingDecoder,
    decode_chunked,
    encode_chunked,
    iter_decode,
    plan_windows,
)

SR = 24000
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return randomize_(HiggsAudioTokenizer(tiny_config()), seed=3)


@pytest.fixture(scope="module")
def acoustic_only(model):
    """The same model with the semantic half of the fusion layer zeroed: its codes depend only on the
    acoustic branch, whose receptive field is finite, so chunked encoding must be exact."""
    m = randomize_(HiggsAudioTokenizer(tiny_config()), seed=3)
    with torch.no_grad():
        m.fc.weight[:, m.config.acoustic_hidden_size :] = 0
    return m


def noise(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    return 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.rand(1, generator=g) + 0.05 * torch.randn(n, generator=g)


@pytest.mark.parametrize("frames,chunk,context", [(1, 5, 2), (9, 5, 2), (10, 5, 2), (101, 10, 3), (57, 7, 0)])
def test_plan_windows_partition_the_frames(frames, chunk, context):
    plans = plan_windows(frames, chunk, context)
    kept = [t for p in plans for t in range(p.keep_start, p.keep_end)]
    assert kept == list(range(frames))
    for p in plans:
        assert p.start == max(0, p.keep_start - context) and p.end == min(frames, p.keep_end + context)
    if frames <= chunk + 2 * context:
        assert len(plans) == 1


def test_short_signal_is_one_window_identical_to_encode(model):
    x = noise(3 * SR + 123, 0)
    assert torch.equal(encode_chunked(model, x, chunk_seconds=2, context_seconds=1), model.encode(x).codes[0])


# lengths mod 960 on both sides of the padding rule: 500 re-pads the acoustic branch, 0 and 900 do not
@pytest.mark.parametrize("extra", [0, 500, 900])
def test_acoustic_branch_is_exact_in_windows(acoustic_only, extra):
    """Windows land on the whole file's frame grid, including the 320-sample shift of the padding rule."""
    x = noise(12 * SR + extra, 1)
    whole = acoustic_only.encode(x).codes[0]
    chunked = encode_chunked(acoustic_only, x, chunk_seconds=2, context_seconds=1)
    assert chunked.shape == whole.shape
    assert torch.equal(chunked, whole)


def test_window_statistics_equal_the_whole_signal_groupnorm(model):
    """Pass 1 reproduces the mean and variance that HuBERT's first GroupNorm takes over the whole signal."""
    from tokenwave.streaming import _windows

    x = noise(9 * SR + 300, 2)
    plans = plan_windows(model.num_frames(x.shape[0]), 50, 25)
    assert len(plans) > 2
    mean, var = model._chunked_statistics(_windows(_Source(x), plans, model.hop_length, x.shape[0]), plans[-1].end)
    wav = torch.nn.functional.pad(resample(x[None], SR, 16000), (160, 160))
    y = model.semantic_model.feature_extractor.conv_layers[0].conv(wav[:, None])[0].double()
    torch.testing.assert_close(mean.double(), y.mean(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(var.double(), y.var(-1, unbiased=False), rtol=1e-4, atol=1e-6)


class _Source:
    def __init__(self, x):
        self.x, self.pos, self.num_samples = x.numpy(), 0, x.shape[0]

    def read(self, n):
        out = self.x[self.pos : self.pos + n]
        self.pos += out.shape[0]
        return out

    def reopen(self):
        return _Source(torch.from_numpy(self.x))


def test_custom_reader_is_read_twice_through_reopen(model):
    x = noise(7 * SR + 11, 12)
    assert torch.equal(encode_chunked(model, _Source(x), chunk_seconds=2, context_seconds=1),
                       encode_chunked(model, x, chunk_seconds=2, context_seconds=1))

    class OneShot:
        def __init__(self, x):
            self.inner, self.num_samples = _Source(x), x.shape[0]

        def read(self, n):
            return self.inner.read(n)

    with pytest.raises(TypeError, match="reopen"):
        encode_chunked(model, OneShot(x), chunk_seconds=2, context_seconds=1)


def test_chunked_encode_agreement_tiny_model(model):
    """Full model (HuBERT attends to the whole window): most frames equal whole-file encoding. The bound is
    what this tiny random model gives on a 20 s signal (measured 0.98 to 0.99); see docs/long_audio.md
    for the published geometry."""
    x = noise(20 * SR + 500, 4)
    whole = model.encode(x).codes[0]
    chunked = encode_chunked(model, x, chunk_seconds=4, context_seconds=2)
    assert chunked.shape == whole.shape
    assert (chunked == whole).all(0).float().mean() >= 0.95


def test_reader_source_equals_array_source(model, tmp_path):
    x = noise(10 * SR + 77, 5).numpy()
    path = tmp_path / "x.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    with AudioReader(path, SR) as reader:
        from_file = encode_chunked(model, reader, chunk_seconds=2, context_seconds=1)
    assert torch.equal(from_file, encode_chunked(model, x, chunk_seconds=2, context_seconds=1))


def test_source_shorter_than_announced_is_an_error(model):
    class Liar(_Source):
        def __init__(self, x):
            super().__init__(x)
            self.num_samples = x.shape[0] + 5 * SR

    with pytest.raises(InvalidAudioError, match="ended at sample"):
        encode_chunked(model, Liar(noise(6 * SR, 6)), chunk_seconds=1, context_seconds=1)


@pytest.mark.parametrize("lookahead", [12, 16])
def test_streaming_decode_equals_whole_decode(model, lookahead):
    codes = model.encode(noise(8 * SR + 400, 7)).codes[0]
    whole = model.decode(codes).audio[0, 0]
    stream = StreamingDecoder(model, lookahead_frames=lookahead)
    rng = np.random.default_rng(0)
    out, t = [], 0
    while t < codes.shape[-1]:
        n = int(rng.integers(1, 9))
        piece = stream.push(codes[:, t : t + n])
        t = min(t + n, codes.shape[-1])
        out.append(piece)
        assert stream.frames_emitted == max(0, t - lookahead)
        assert piece.shape[0] % model.hop_length == 0
    out.append(stream.flush())
    audio = torch.cat(out)
    assert audio.shape == whole.shape
    assert ((audio - whole).abs().max() / whole.abs().max()) < 1e-4


def test_streaming_latency_is_the_lookahead(model):
    codes = model.encode(noise(4 * SR, 8)).codes[0]
    stream = StreamingDecoder(model, lookahead_frames=5)
    assert stream.push(codes[:, :5]).numel() == 0
    assert stream.push(codes[:, 5:6]).shape[0] == model.hop_length  # frame 0 once frame 5 is in
    assert stream.push(codes[:, 6:16]).shape[0] == 10 * model.hop_length
    assert stream.flush().shape[0] == 5 * model.hop_length  # the 5 frames held back


def test_decode_chunked_crops_to_num_samples_and_matches(model):
    x = noise(11 * SR + 321, 9)
    enc = model.encode(x)
    whole = model.decode(enc, crop=True).audio[0, 0]
    out = decode_chunked(model, enc.codes[0], chunk_frames=30, context_frames=16, num_samples=x.shape[0])
    assert out.shape[0] == x.shape[0]
    assert ((out - whole).abs().max() / whole.abs().max()) < 1e-4
    assert sum(c.shape[0] for c in iter_decode(model, enc.codes[0], chunk_frames=7)) == enc.codes.shape[-1] * 960


def test_codes_within_one_window_decode_in_one_call(model):
    codes = model.encode(noise(2 * SR + 5, 13)).codes[0]  # 50 frames: one window of 50 + 2 x 12
    whole = model.decode(codes).audio[0, 0]
    assert torch.equal(decode_chunked(model, codes, chunk_frames=50, context_frames=12), whole)


def test_streaming_errors(model):
    codes = model.encode(noise(2 * SR, 10)).codes[0]
    stream = StreamingDecoder(model)
    stream.push(codes)
    with pytest.raises(InvalidCodesError, match="codebooks"):
        stream.push(codes[:4])
    with pytest.raises(InvalidCodesError, match=r"\[K, n\]"):
        stream.push(codes[None])
    stream.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(codes)
    with pytest.raises(ValueError):
        StreamingDecoder(model, lookahead_frames=-1)


@pytest.mark.slow
def test_thirty_minutes_in_windows(model, tmp_path):
    """30 min of audio from a file: chunked encode gives the whole file's frame count, chunked decode its
    length (peak memory against length is measured by benchmarks/bench_long_audio.py)."""
    path = tmp_path / "long.wav"
    minutes = 30
    block = noise(60 * SR, 11).numpy()
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write(block)
    with AudioReader(path, SR) as reader:
        codes = encode_chunked(model, reader)
    total = minutes * 60 * SR
    assert codes.shape == (model.num_codebooks, model.num_frames(total))
    minute = model.encode(torch.from_numpy(sf.read(path, frames=60 * SR, dtype="float32")[0])).codes[0]
    # away from the window edges the first minute's codes mostly agree with encoding that minute alone
    assert (codes[:, :1000] == minute[:, :1000]).all(0).float().mean() > 0.9
    n = 0
    for chunk in iter_decode(model, codes, num_samples=total):
        assert torch.isfinite(chunk).all()
        n += chunk.shape[0]
    assert n == total


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.mark.skipif(not (CORPUS / "manifest.csv").is_file(), reason="needs the team's ../shared/corpus")
def test_three_minutes_of_real_speech(model, acoustic_only):
    """3 min of recorded speech (the corpus's dev speech clips joined in manifest order): windowed decode
    within 1e-4 of peak of whole-file decode; windowed encode exact for the acoustic branch, and for the
    full tiny random model most frames equal (docs/long_audio.md has the published geometry's numbers)."""
    rows = [r for r in csv.DictReader(open(CORPUS / "manifest.csv")) if r["category"] == "speech"]
    x = np.concatenate([sf.read(CORPUS / r["clip_path"], dtype="float32")[0] for r in rows])[: 180 * SR]
    assert x.shape[0] == 180 * SR
    x = torch.from_numpy(x)
    whole_ac = acoustic_only.encode(x).codes[0]
    assert torch.equal(encode_chunked(acoustic_only, x), whole_ac)
    whole = model.encode(x).codes[0]
    chunked = encode_chunked(model, x)
    agree = (chunked == whole).all(0).float().mean().item()
    assert agree >= 0.95, agree
    audio = model.decode(whole).audio[0, 0]
    out = decode_chunked(model, whole)
    assert ((out - audio).abs().max() / audio.abs().max()) < 1e-4
