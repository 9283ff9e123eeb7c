"""The README's API example and the `tokenwave demo` entry point, run as a user would."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TESTS

README = TESTS.parent / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_api_example_runs(monkeypatch):
    """As written: no model named, so the shipped tokenwave-small, offline."""
    monkeypatch.delenv("TOKENWAVE_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = _python_blocks(README.read_text())
    assert blocks, "README has no python example"
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(README), "exec"), scope)
    assert tuple(scope["enc"].codes.shape) == (1, 3, 225)
    assert scope["dec"].lengths.tolist() == [72_000, 30_000]
    assert "torch.Size([1, 3, 225]) [225]" in out.getvalue()


def test_readme_api_example_with_a_higgs_model(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("TOKENWAVE_MODEL", str(tiny_checkpoint))
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(_python_blocks(README.read_text())[0], str(README), "exec"), scope)
    assert tuple(scope["enc"].codes.shape) == (1, 8, 75) and scope["dec"].lengths.tolist() == [72_000, 30_000]


def test_readme_long_audio_example_runs(tiny_checkpoint, monkeypatch, tmp_path):
    """The long-audio block, with the user's files and player supplied."""
    import numpy as np
    import soundfile as sf
    import torch

    import tokenwave

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    sf.write("talk.mp3", 0.1 * rng.standard_normal((44100 * 2, 2)), 44100)
    sf.write("lecture.flac", 0.1 * rng.standard_normal(16000 * 50), 16000)
    tok = tokenwave.load_tokenizer(str(tiny_checkpoint))
    played: list = []
    scope = dict(tok=tok, tokenwave=tokenwave, play=played.append,
                 frame_chunks=[torch.zeros(8, 10, dtype=torch.long), torch.ones(8, 7, dtype=torch.long)])
    blocks = _python_blocks(README.read_text())
    with pytest.warns(UserWarning, match="2 channels averaged to mono"):
        exec(compile(blocks[1], str(README), "exec"), scope)
    assert tuple(scope["codes"].shape) == (8, tok.num_frames(50 * 24000))
    assert scope["audio"].shape[0] == 50 * 24000
    assert sum(a.shape[0] for a in played) == 17 * tok.hop_length


def _cli(args, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TOKENWAVE_MODEL"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), **env_extra)
    exe = Path(sys.executable).with_name("tokenwave")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)


def test_demo_with_a_model_folder(tiny_checkpoint, tmp_path):
    r = _cli(["demo", "--model", str(tiny_checkpoint), "-o", str(tmp_path / "out")], {}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "8 codebooks x 108 frames = 2.00 kbps" in r.stdout
    assert (tmp_path / "out" / "example_speech_en.decoded.wav").is_file()
    import numpy as np
    import soundfile as sf

    codes = np.load(tmp_path / "out" / "example_speech_en.codes.npy", allow_pickle=False)
    assert codes.shape == (8, 108)
    audio, rate = sf.read(tmp_path / "out" / "example_speech_en.decoded.wav")
    assert rate == 24_000 and audio.shape == (103_200,)  # cropped to the input length


def test_demo_uses_env_model(tiny_checkpoint, tmp_path):
    r = _cli(["demo", "-o", str(tmp_path / "out")], {"TOKENWAVE_MODEL": str(tiny_checkpoint)}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(tiny_checkpoint) in r.stdout


def test_main_job_runs_offline_with_the_shipped_model(tmp_path):
    """The README's main job with no model named: the shipped tokenwave-small, no network, no cache."""
    r = _cli(["demo", "-o", str(tmp_path / "out")], {}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tokenwave-small" in r.stdout and "3 codebooks x 323 frames = 2.25 kbps" in r.stdout
    import soundfile as sf

    audio, rate = sf.read(tmp_path / "out" / "example_speech_en.decoded.wav")
    assert rate == 24_000 and audio.shape == (103_200,)


def test_named_model_offline_without_weights_says_how_to_get_them(tmp_path):
    r = _cli(["demo", "-m", "bosonai/higgs-audio-v2-tokenizer", "-o", str(tmp_path / "out")], {}, tmp_path)
    assert r.returncode == 2  # a named model is never replaced by the shipped one
    assert "bosonai/higgs-audio-v2-tokenizer" in r.stderr
    assert "hf download" in r.stderr and "TOKENWAVE_MODEL" in r.stderr
    assert not (tmp_path / "out").exists()  # no output from random weights


def test_help(tmp_path):
    r = _cli(["--help"], {}, tmp_path)
    assert r.returncode == 0 and "demo" in r.stdout
    r = _cli(["demo", "--help"], {}, tmp_path)
    assert r.returncode == 0 and "--model" in r.stdout
