"""`tokenwave eval` and `tokenwave compare` end to end, on generated clips and the shipped speech example."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import tokenwave
from tokenwave.cli.main import app

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLE = Path(tokenwave.__file__).parent / "assets" / "example_speech_en.wav"
FAST = ["--metric", "stft_distance", "--metric", "mel_distance", "--metric", "si_sdr", "--metric", "stoi"]


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "speech").mkdir(parents=True)
    (root / "music").mkdir()
    shutil.copy(EXAMPLE, root / "speech" / "example.wav")
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * 44100)) / 44100
    sf.write(root / "music" / "chord.flac", 0.2 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 330 * t)), 44100)
    sf.write(root / "music" / "noise.wav", 0.05 * rng.standard_normal(24000 * 2), 24000)
    (root / "music" / "broken.wav").write_bytes(b"not audio at all" * 20)
    return root


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_eval_writes_every_report_and_resumes(data, tmp_path, tiny_checkpoint):
    out = tmp_path / "eval"
    args = ["eval", "--codec", tiny_checkpoint, "--codec", "baseline:identity", "--data", data, "--out", out,
            "--workers", 2, "--plots", 1, *FAST]
    r = run(*args)
    assert r.exit_code == 1, r.output  # the broken clip fails, the others are evaluated
    assert "failed" in r.output
    rows = list(csv.DictReader(open(out / "clips.csv")))
    assert len(rows) == 2 * 4
    broken = [row for row in rows if row["clip"].endswith("broken.wav")]
    assert len(broken) == 2 and all("broken.wav" in row["error"] for row in broken)
    identity = [row for row in rows if row["codec"] == "identity" and not row["error"]]
    assert len(identity) == 3
    for row in identity:
        assert float(row["stft_distance"]) == pytest.approx(0, abs=1e-6)
        assert float(row["mel_distance"]) == pytest.approx(0, abs=1e-6)
    speech = [row for row in rows if row["category"] == "speech"]
    assert all(row["stoi"] for row in speech)
    assert not any(row["stoi"] for row in rows if row["category"] == "music")  # speech-only metric

    summary = json.loads((out / "summary.json").read_text())
    tiny = summary["codecs"][tiny_checkpoint.name]
    assert tiny["facts"]["bitrate_bps"] == 2000 and tiny["facts"]["frame_rate"] == 25
    usage = tiny["facts"]["codebook_usage"]
    assert len(usage["utilization"]) == 8 and all(0 < u <= 1 for u in usage["utilization"])
    assert len(list((out / "codes").rglob("*.twc"))) == 3
    table = (out / "tables" / "speech.md").read_text()
    assert "| identity | – | – |" in table and "STOI" in table
    assert (out / "tables" / "music.md").is_file() and (out / "tables" / "codebook_usage.md").is_file()
    assert {p.name for p in (out / "plots").iterdir()} >= {
        "spectrogram_speech_example.wav.png", "distributions_speech.png", "distributions_music.png"}

    lines = (out / "results.jsonl").read_text().splitlines()
    r2 = run(*args)
    assert r2.exit_code == 1  # the broken clip is still reported
    assert (out / "results.jsonl").read_text().splitlines() == lines  # nothing recomputed

    # an interrupted run: drop the last finished line (and leave half a line); the rerun redoes only that clip
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    assert run(*args).exit_code == 1
    redone = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()[len(lines) - 1 :]]
    last = json.loads(lines[-1])
    assert [(x["codec"], x["clip"]) for x in redone] == [(last["codec"], last["clip"])]


def test_manifest_split_and_text(data, tmp_path):
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "category", "clip_path", "text"])
        w.writerow(["dev", "speech", str(data / "speech" / "example.wav"), "hello"])
        w.writerow(["test", "music", str(data / "music" / "noise.wav"), ""])
    from tokenwave.eval.runner import read_clips

    clips = read_clips(manifest, split="dev")
    assert [(c.category, c.text) for c in clips] == [("speech", "hello")]
    out = tmp_path / "eval"
    r = run("eval", "--codec", "baseline:identity", "--data", manifest, "--split", "dev", "--out", out,
            "--plots", 0, "--workers", 1, "--metric", "si_sdr")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["codecs"]["identity"]["categories"]["speech"]["clips"] == 1


def test_compare_puts_runs_side_by_side(data, tmp_path, tiny_checkpoint):
    outs = []
    for codec in ("baseline:identity", str(tiny_checkpoint)):
        outs.append(tmp_path / codec.replace(":", "_").replace("/", "_"))
        r = run("eval", "--codec", codec, "--data", data / "speech", "--out", outs[-1], "--plots", 0,
                "--workers", 1, "--metric", "si_sdr")
        assert r.exit_code == 0, r.output
    r = run("compare", *outs, "--out", tmp_path / "both")
    assert r.exit_code == 0, r.output
    table = (tmp_path / "both" / "tables" / "all.md").read_text()
    assert "| identity |" in table and f"| {tiny_checkpoint.name} |" in table


def test_bad_arguments_exit_2(data, tmp_path):
    assert run("eval", "--codec", "baseline:nope", "--data", data, "--out", tmp_path / "o").exit_code == 2
    assert run("eval", "--codec", "baseline:identity", "--data", tmp_path / "missing", "--out", tmp_path).exit_code == 2
    r = run("eval", "--codec", "baseline:identity", "--data", data, "--out", tmp_path / "o", "--metric", "bogus")
    assert r.exit_code == 2 and "bogus" in r.output


def test_core_and_runner_import_no_metric_library():
    """The eval extra's libraries load only when a metric runs."""
    import subprocess
    import sys

    code = ("import sys, tokenwave, tokenwave.cli.main, tokenwave.eval.runner, tokenwave.eval.report, "
            "tokenwave.eval.metrics.signal, tokenwave.eval.metrics.perceptual, tokenwave.eval.metrics.models, "
            "tokenwave.eval.baselines\n"
            "heavy = {'pesq', 'pystoi', 'pocketsphinx', 'resemblyzer', 'speechmos', 'onnxruntime', 'pyworld', "
            "'matplotlib', 'librosa', 'scipy'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_eval_runs_a_wavtokenizer_unchanged(data, tmp_path):
    """Another family behind the contract: a tiny WavTokenizer folder goes through the same harness."""
    from wavtokenizer_fixtures import tiny_model

    model = tmp_path / "wt"
    tiny_model(0).save_pretrained(model)
    out = tmp_path / "eval"
    r = run("eval", "--codec", model, "--data", data, "--out", out, "--workers", 1, "--plots", 0, *FAST)
    assert r.exit_code == 1, r.output  # only the broken clip fails
    rows = [row for row in csv.DictReader(open(out / "clips.csv")) if not row["error"]]
    assert len(rows) == 3 and all(float(row["mel_distance"]) > 0 for row in rows)
    facts = json.loads((out / "summary.json").read_text())["codecs"]["wt"]["facts"]
    assert facts["bitrate_bps"] == 75 * 6 and facts["frame_rate"] == 75
    assert len(facts["codebook_usage"]["utilization"]) == 1
    assert len(list((out / "codes").rglob("*.twc"))) == 3
