"""The ``tokenwave`` command line (encode, decode, convert, info), driven as a user would.

Most runs go through typer's CliRunner on ``tokenwave.cli.main.app``; a few run the installed console
script in a subprocess. The model is the tiny random Higgs tokenizer of ``tiny_checkpoint``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from tokenwave.audio import load_audio
from tokenwave.codesfile import read_codes, read_header, write_codes
from tokenwave.loading import load_tokenizer
from tokenwave.streaming import encode_chunked

EXAMPLE = Path(__file__).parents[1] / "src" / "tokenwave" / "assets" / "example_speech_en.wav"
SCRIPT = Path(sys.executable).with_name("tokenwave")
SR = 24_000

# The stereo file warns when the tests themselves load it; the CLI shows it (checked below).
pytestmark = [pytest.mark.filterwarnings("ignore::tokenwave.audio.AudioConversionWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return load_tokenizer(tiny_checkpoint)


def cli(*args, env: dict | None = None):
    from tokenwave.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    mono = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.shape)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono, 0.5 * mono[::-1]], axis=1).astype(np.float32)


def make_corpus(root: Path) -> dict[str, Path]:
    """A nested folder of small mono/stereo files at 16 k / 44.1 k / 24 k in wav/flac/ogg/mp3."""
    files = {
        "top.wav": (_tone(1.3, 16_000, seed=1), 16_000, "PCM_16"),
        "edge.wav": (_tone(24_050 / SR, SR, seed=2), SR, "FLOAT"),  # 24050 = 25 frames + 50 samples
        "a/stereo.flac": (_tone(2.1, 44_100, channels=2, seed=3), 44_100, None),
        "a/b/voice.ogg": (_tone(1.0, SR, seed=4), SR, None),
        "a/b/tone.mp3": (_tone(1.5, SR, seed=5), SR, None),
    }
    out = {}
    for rel, (audio, rate, subtype) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, rate, subtype=subtype)
        out[rel] = path
    shutil.copy(EXAMPLE, root / "a" / EXAMPLE.name)
    out[f"a/{EXAMPLE.name}"] = root / "a" / EXAMPLE.name
    (root / "a" / "b" / "notes.txt").write_text("not audio")
    (root / ".hidden.wav").write_bytes(b"not even audio")  # hidden names are skipped
    return out


def expected_codes(tok, path: Path, **options) -> torch.Tensor:
    audio, _ = load_audio(path, tok.sample_rate)
    return tok.encode(audio, **options).unbatch()[0]


def reference_audio(tok, codes: np.ndarray, num_samples: int) -> np.ndarray:
    """``tok.decode`` of the codes, cropped (or zero-padded) to ``num_samples``."""
    audio = tok.decode(torch.from_numpy(codes)[None]).audio[0, 0].numpy()
    out = np.zeros(num_samples, np.float32)
    n = min(num_samples, audio.shape[0])
    out[:n] = audio[:n]
    return out


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_checkpoint):
    """The corpus encoded once, three files per forward pass."""
    root = tmp_path_factory.mktemp("cli")
    corpus = make_corpus(root / "in")
    result = cli("encode", root / "in", "-o", root / "codes", "--model", tiny_checkpoint, "--batch-size", 3)
    return root, corpus, result


# ------------------------------------------------------------------------------------------------ basics

def test_help_on_every_command():
    r = cli("--help")
    assert r.exit_code == 0
    for command in ("demo", "encode", "decode", "convert", "info"):
        assert command in r.output
        sub = cli(command, "--help")
        assert sub.exit_code == 0, (command, sub.output)
        assert "Usage" in sub.output
    for command, options in {
        "encode": ["--output", "--model", "--device", "--bandwidth", "--dtype", "--batch-size", "--overwrite",
                   "--quiet", "--chunk-seconds", "--context-seconds"],
        "decode": ["--output", "--format", "--ignore-model-mismatch", "--overwrite", "--quiet"],
        "convert": ["--to", "--overwrite"],
        "info": ["--json"],
    }.items():
        text = cli(command, "--help").output
        for option in options:
            assert option in text, (command, option)


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, tokenwave.cli.main; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------ encode

def test_encode_mirrors_the_tree_and_matches_encode(encoded, tok):
    root, corpus, result = encoded
    assert result.exit_code == 0, result.output
    outputs = sorted(p.relative_to(root / "codes").as_posix() for p in (root / "codes").rglob("*") if p.is_file())
    assert outputs == sorted(str(Path(rel).with_suffix(".twc")) for rel in corpus)
    assert f"encoded {len(corpus)} files" in result.stdout and "skipped 0; failed 0" in result.stdout
    # the stereo file's conversion is reported once, and no other file warns
    assert result.stderr.count("2 channels averaged to mono") == 1
    assert "stereo.flac" in result.stderr and "top.wav" not in result.stderr
    for rel, src in corpus.items():
        codes, header = read_codes(root / "codes" / Path(rel).with_suffix(".twc"))
        audio, info = load_audio(src, SR)
        np.testing.assert_array_equal(codes, expected_codes(tok, src).numpy(), err_msg=rel)
        assert header.num_samples == audio.shape[0]
        assert header.source == rel
        assert header.model_id == str(tok.model_id) and header.config_hash == tok.config_hash
        assert (header.sample_rate, header.frame_rate, header.codebook_size) == (SR, 25.0, 1024)
        assert header.extra == {"bandwidth": None, "source_sample_rate": info.sample_rate,
                                "source_channels": info.channels}


def test_single_file_to_a_named_output_skip_and_overwrite(tmp_path, tiny_checkpoint, tok):
    target = tmp_path / "deep" / "speech.twc"
    r = cli("encode", EXAMPLE, "-o", target, "-m", tiny_checkpoint)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["speech.twc"]
    codes, header = read_codes(target)
    np.testing.assert_array_equal(codes, expected_codes(tok, EXAMPLE).numpy())
    assert header.num_samples == 103_200 and header.source == EXAMPLE.name

    target.write_bytes(b"sentinel")  # an existing output is left alone without --overwrite
    r = cli("encode", EXAMPLE, "-o", target, "-m", tiny_checkpoint)
    assert r.exit_code == 0, r.output
    assert "encoded 0 files" in r.stdout and "skipped 1" in r.stdout
    assert target.read_bytes() == b"sentinel"

    r = cli("encode", EXAMPLE, "-o", target, "-m", tiny_checkpoint, "--overwrite")
    assert r.exit_code == 0, r.output
    assert "encoded 1 file," in r.stdout and "skipped 0" in r.stdout
    np.testing.assert_array_equal(read_codes(target)[0], codes)

    # a folder output: <name>.twc inside it
    r = cli("encode", EXAMPLE, "-o", tmp_path / "folder", "-m", tiny_checkpoint, "--quiet")
    assert r.exit_code == 0 and r.stdout == ""
    assert (tmp_path / "folder" / "example_speech_en.twc").is_file()


def test_bad_files_fail_alone(tmp_path, tiny_checkpoint, tok):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "good.wav", _tone(1.2, SR, seed=6), SR)
    sf.write(src / "sub" / "good2.flac", _tone(0.8, 16_000, seed=7), 16_000)
    (src / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot really a wave file at all")
    (src / "empty.flac").write_bytes(b"")
    sf.write(src / "short.wav", np.zeros(50, np.float32), SR)  # fails inside its batch: batch mates must not
    nan = _tone(0.5, SR, seed=8)
    nan[1000] = np.nan
    sf.write(src / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(src / "same.wav", _tone(0.5, SR, seed=9), SR)  # same.wav and same.flac -> same.twc
    sf.write(src / "same.flac", _tone(0.5, SR, seed=10), SR)
    r = cli("encode", src, "-o", tmp_path / "out", "-m", tiny_checkpoint)
    assert r.exit_code == 1, r.output
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.twc"))
    assert written == ["good.twc", "sub/good2.twc"]
    for rel, name in (("good.twc", "good.wav"), ("sub/good2.twc", "sub/good2.flac")):
        np.testing.assert_array_equal(read_codes(tmp_path / "out" / rel)[0], expected_codes(tok, src / name).numpy())
    assert "encoded 2 files" in r.stdout and "failed 6" in r.stdout
    failures = r.stderr.split("failed:")[1]
    for name in ("corrupt.wav", "empty.flac", "short.wav", "nan.wav", "same.wav", "same.flac"):
        assert str(src / name) in failures, name
    assert "empty file" in failures and "too short" in failures and "NaN" in failures
    assert "would also be written from" in failures
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_bandwidth_gives_fewer_codebooks(tmp_path, tiny_checkpoint, tok):
    r = cli("encode", EXAMPLE, "-o", tmp_path / "low.twc", "-m", tiny_checkpoint, "--bandwidth", "0.5")
    assert r.exit_code == 0, r.output
    codes, header = read_codes(tmp_path / "low.twc")
    assert header.num_codebooks == codes.shape[0] == 2 and header.extra["bandwidth"] == 0.5
    np.testing.assert_array_equal(codes, expected_codes(tok, EXAMPLE, bandwidth=0.5).numpy())
    r = cli("info", tmp_path / "low.twc")
    assert r.exit_code == 0 and "0.5 kbps" in r.stdout
    r = cli("decode", tmp_path / "low.twc", "-o", tmp_path / "low.wav", "-m", tiny_checkpoint)
    assert r.exit_code == 0, r.output
    audio, rate = sf.read(tmp_path / "low.wav", dtype="float32")
    assert rate == SR and audio.shape == (103_200,)
    np.testing.assert_allclose(audio, reference_audio(tok, codes, 103_200), atol=1e-6)

    r = cli("encode", EXAMPLE, "-o", tmp_path / "x.twc", "-m", tiny_checkpoint, "--bandwidth", "3")
    assert r.exit_code == 2 and "--bandwidth" in r.stderr and not (tmp_path / "x.twc").exists()


def test_long_file_takes_the_chunked_path(tmp_path, tiny_checkpoint, tok):
    long = tmp_path / "in" / "long.wav"
    long.parent.mkdir()
    sf.write(long, _tone(12.0, SR, seed=11), SR)
    r = cli("encode", long.parent, "-o", tmp_path / "codes", "-m", tiny_checkpoint,
            "--chunk-seconds", 4, "--context-seconds", 1)
    assert r.exit_code == 0, r.output
    codes, header = read_codes(tmp_path / "codes" / "long.twc")
    audio, _ = load_audio(long, SR)
    assert header.num_frames == codes.shape[1] == tok.num_frames(audio.shape[0]) == 300
    assert header.extra["chunk_seconds"] == 4 and header.extra["context_seconds"] == 1
    np.testing.assert_array_equal(codes, encode_chunked(tok, audio, chunk_seconds=4, context_seconds=1).numpy())

    # chunking off: the whole file in one pass, equal to encode
    r = cli("encode", long, "-o", tmp_path / "whole.twc", "-m", tiny_checkpoint, "--chunk-seconds", 0)
    assert r.exit_code == 0, r.output
    whole, header = read_codes(tmp_path / "whole.twc")
    np.testing.assert_array_equal(whole, expected_codes(tok, long).numpy())
    assert "chunk_seconds" not in header.extra

    # decoding 300 frames streams in windows; the result still has the input's length and matches decode
    r = cli("decode", tmp_path / "whole.twc", "-o", tmp_path / "whole.wav", "-m", tiny_checkpoint)
    assert r.exit_code == 0, r.output
    out, rate = sf.read(tmp_path / "whole.wav", dtype="float32")
    ref = reference_audio(tok, whole, audio.shape[0])
    assert rate == SR and out.shape == audio.shape
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


# ------------------------------------------------------------------------------------------------ decode

def test_decode_restores_the_length_and_matches_decode(encoded, tmp_path, tiny_checkpoint, tok):
    root, corpus, _ = encoded
    r = cli("decode", root / "codes", "-o", tmp_path / "wav", "-m", tiny_checkpoint)
    assert r.exit_code == 0, r.output
    assert f"decoded {len(corpus)} files" in r.stdout
    outputs = sorted(p.relative_to(tmp_path / "wav").as_posix() for p in (tmp_path / "wav").rglob("*.wav"))
    assert outputs == sorted(str(Path(rel).with_suffix(".wav")) for rel in corpus)
    for rel, src in corpus.items():
        codes, header = read_codes(root / "codes" / Path(rel).with_suffix(".twc"))
        out, rate = sf.read(tmp_path / "wav" / Path(rel).with_suffix(".wav"), dtype="float32")
        assert rate == SR and out.shape == (header.num_samples,) == load_audio(src, SR)[0].shape, rel
        assert sf.info(tmp_path / "wav" / Path(rel).with_suffix(".wav")).subtype == "FLOAT"
        ref = reference_audio(tok, codes, header.num_samples)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), rel
    # 24050 samples: the 25 frames cover 24000, the last 50 are silence
    assert sf.info(tmp_path / "wav" / "edge.wav").frames == 24_050

    r = cli("decode", root / "codes", "-o", tmp_path / "wav", "-m", tiny_checkpoint)
    assert r.exit_code == 0 and f"skipped {len(corpus)}" in r.stdout


def test_decode_pcm16(encoded, tmp_path, tiny_checkpoint, tok):
    root, _, _ = encoded
    src = root / "codes" / "a" / "example_speech_en.twc"
    r = cli("decode", src, "-o", tmp_path / "pcm.wav", "-m", tiny_checkpoint, "--format", "pcm16")
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "pcm.wav").subtype == "PCM_16"
    out, _ = sf.read(tmp_path / "pcm.wav", dtype="float32")
    codes, header = read_codes(src)
    ref = np.clip(reference_audio(tok, codes, header.num_samples), -1, 1)
    assert out.shape == (103_200,) and np.abs(out - ref).max() <= 1 / 32768 + 1e-7


def test_damaged_codes_files_fail_alone(encoded, tmp_path, tiny_checkpoint):
    root, _, _ = encoded
    src = tmp_path / "codes"
    shutil.copytree(root / "codes" / "a" / "b", src)
    good = sorted(p.name for p in src.glob("*.twc"))
    data = (src / good[0]).read_bytes()
    (src / "truncated.twc").write_bytes(data[:-3])
    (src / "junk.twc").write_bytes(b"this is not a codes file")
    r = cli("decode", src, "-o", tmp_path / "wav", "-m", tiny_checkpoint)
    assert r.exit_code == 1, r.output
    assert sorted(p.name for p in (tmp_path / "wav").glob("*")) == [Path(n).with_suffix(".wav").name for n in good]
    assert f"decoded {len(good)} files" in r.stdout and "failed 2" in r.stdout
    failures = r.stderr.split("failed:")[1]
    assert f"{src / 'truncated.twc'}: truncated payload" in failures
    assert f"{src / 'junk.twc'}: not a tokenwave codes file" in failures


def test_decode_refuses_codes_of_another_model(tmp_path, tiny_checkpoint, tok):
    codes = np.random.default_rng(0).integers(0, 1024, (8, 30))
    common = dict(sample_rate=SR, frame_rate=25, codebook_size=1024, num_samples=30 * 960)
    write_codes(tmp_path / "other.twc", codes, model_id="someone/other-tokenizer", config_hash="0123456789abcdef",
                **common)
    write_codes(tmp_path / "geometry" / "rate.twc", codes, model_id="x", config_hash=tok.config_hash,
                **{**common, "sample_rate": 16_000})
    write_codes(tmp_path / "geometry" / "size.twc", codes, model_id="x", config_hash=tok.config_hash,
                **{**common, "codebook_size": 2048})
    write_codes(tmp_path / "geometry" / "many.twc", np.zeros((9, 30), np.int64), model_id="x",
                config_hash=tok.config_hash, **common)

    r = cli("decode", tmp_path / "other.twc", "-o", tmp_path / "out", "-m", tiny_checkpoint)
    assert r.exit_code == 1 and not (tmp_path / "out").exists()
    for text in ("someone/other-tokenizer", "0123456789abcdef", tok.config_hash, "--ignore-model-mismatch"):
        assert text in r.stderr, text

    r = cli("decode", tmp_path / "other.twc", "-o", tmp_path / "out", "-m", tiny_checkpoint,
            "--ignore-model-mismatch")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "0123456789abcdef" in r.stderr
    out, _ = sf.read(tmp_path / "out" / "other.wav", dtype="float32")
    np.testing.assert_allclose(out, reference_audio(tok, codes, 30 * 960), atol=1e-6)

    r = cli("decode", tmp_path / "geometry", "-o", tmp_path / "out2", "-m", tiny_checkpoint,
            "--ignore-model-mismatch")
    assert r.exit_code == 1 and "failed 3" in r.stdout and not (tmp_path / "out2").exists()
    assert "audio at 16000 Hz, the model's is 24000 Hz" in r.stderr
    assert "codebook size 2048, the model's is 1024" in r.stderr
    assert "9 codebooks, the model has 8" in r.stderr


# ------------------------------------------------------------------------------------------------ errors

def test_usage_errors(tmp_path, tiny_checkpoint):
    r = cli("encode", tmp_path / "missing.wav", "-o", tmp_path / "out", "-m", tiny_checkpoint)
    assert r.exit_code == 2 and "no such file or folder" in r.stderr
    (tmp_path / "in").mkdir()
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "one.twc", "-m", tiny_checkpoint)
    assert r.exit_code == 2 and "give a folder" in r.stderr
    r = cli("encode", tmp_path / "in", "-o", tmp_path / "out", "-m", tiny_checkpoint)  # nothing to do
    assert r.exit_code == 0 and "no audio files found" in r.stderr
    r = cli("decode", EXAMPLE, "-o", tmp_path / "out", "--format", "mp3")
    assert r.exit_code == 2
    r = cli("encode")
    assert r.exit_code == 2


def test_missing_model_folder_exits_2(tmp_path):
    r = cli("encode", EXAMPLE, "-o", tmp_path / "out", "-m", tmp_path / "no-model-here")
    assert r.exit_code == 2 and "no-model-here" in r.stderr
    assert not (tmp_path / "out").exists()


def _script(*args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TOKENWAVE_MODEL"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_console_script_encode_decode_and_unknown_model(tmp_path, tiny_checkpoint, tok):
    r = _script("encode", EXAMPLE, "-o", tmp_path / "ex.twc", "-m", tiny_checkpoint, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "encoded 1 file, 4.30 s of audio" in r.stdout
    np.testing.assert_array_equal(read_codes(tmp_path / "ex.twc")[0], expected_codes(tok, EXAMPLE).numpy())

    r = _script("encode", EXAMPLE, "-o", tmp_path / "out", "-m", "nobody/no-such-tokenizer", tmp_path=tmp_path)
    assert r.returncode == 2
    assert "nobody/no-such-tokenizer" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert not (tmp_path / "out").exists()


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tmp_path, tiny_checkpoint):
    r = cli("encode", EXAMPLE, "-o", tmp_path / "a.twc", "-m", tiny_checkpoint, env={"TTY_COMPATIBLE": "1"})
    assert r.exit_code == 0, r.output
    assert "files/s" in r.stderr and "s audio/s" in r.stderr
    r = cli("encode", EXAMPLE, "-o", tmp_path / "b.twc", "-m", tiny_checkpoint, "--quiet",
            env={"TTY_COMPATIBLE": "1"})
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""


# ------------------------------------------------------------------------------------------------ convert + info

def test_convert_both_ways_then_info(tmp_path, tiny_checkpoint, tok):
    r = cli("convert", tiny_checkpoint, tmp_path / "orig", "--to", "original")
    assert r.exit_code == 0, r.output
    assert "original format" in r.stdout and "model.pth" in r.stdout
    r = cli("convert", tmp_path / "orig", tmp_path / "hf", "--to", "transformers")
    assert r.exit_code == 0, r.output
    assert "model.safetensors" in r.stdout

    for folder, fmt, weights in ((tmp_path / "orig", "original", "model.pth"),
                                 (tmp_path / "hf", "transformers", "model.safetensors")):
        r = cli("info", folder)
        assert r.exit_code == 0, r.output
        assert fmt in r.stdout and weights in r.stdout and tok.config_hash in r.stdout
        r = cli("info", folder, "--json")
        assert r.exit_code == 0, r.output
        data = json.loads(r.stdout)
        assert data["kind"] == "model_folder" and data["format"] == fmt and data["weights"] == weights
        assert data["config_hash"] == tok.config_hash and data["num_codebooks"] == 8

    r = cli("convert", tiny_checkpoint, tmp_path / "hf", "--to", "transformers")
    assert r.exit_code == 1 and "not empty" in r.stderr
    r = cli("convert", tiny_checkpoint, tmp_path / "hf", "--to", "transformers", "--overwrite")
    assert r.exit_code == 0, r.output
    r = cli("convert", tiny_checkpoint, tmp_path / "x", "--to", "onnx")
    assert r.exit_code == 2


def test_info_on_a_codes_file(encoded):
    root, _, _ = encoded
    path = root / "codes" / "a" / "example_speech_en.twc"
    r = cli("info", path, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    header = read_header(path)
    assert data["kind"] == "codes_file" and data["file_bytes"] == path.stat().st_size
    assert data["num_frames"] == header.num_frames == 108 and data["num_samples"] == 103_200
    assert data["duration_seconds"] == pytest.approx(4.3)
    assert data["bitrate_bps"] == 8 * 10 * 25
    assert data["source"] == "a/example_speech_en.wav"
    r = cli("info", path)
    assert r.exit_code == 0
    assert "4.300 s" in r.stdout and "2 kbps" in r.stdout and "8 codebooks x 108 frames" in r.stdout


def test_info_on_something_else(tmp_path):
    r = cli("info", EXAMPLE)
    assert r.exit_code == 1 and "neither a model folder nor a tokenwave codes file" in r.stderr
    r = cli("info", tmp_path / "nothing")
    assert r.exit_code == 1 and "no such file or folder" in r.stderr
    (tmp_path / "broken.twc").write_bytes(b"TWCODES\0\x01")
    r = cli("info", tmp_path / "broken.twc")
    assert r.exit_code == 1 and "truncated header" in r.stderr
    r = cli("info", tmp_path)
    assert r.exit_code == 1 and "no config.json" in r.stderr
