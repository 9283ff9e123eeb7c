"""Running recipes: data -> steps -> validation, logs, samples and checkpoint tags; exact resume through the
data loader; two gloo processes against one; mixed precision; the ``tokenwave train`` command; and the RVQ
variant of the WavTokenizer layout that tokenwave's own model uses."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

from tokenwave.codecs.wavtokenizer import WavTokenizer, WavTokenizerConfig
from tokenwave.training.recipe import load_recipe
from tokenwave.training.run import EpochSampler, train
from tokenwave.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_RVQ = dict(encoder_filters=4, latent_dim=16, codebook_size=32, num_quantizers=3, codebook_dim=4,
                backbone_dim=64, backbone_intermediate_dim=96, backbone_layers=1, adanorm_num_embeddings=0,
                pos_net=False)  # as tokenwave-small; the pos_net has dropout (global RNG), which would make
# the 1- and 2-process runs draw different masks


def write_clips(folder, n: int, seconds: float, seed: int, categories=("speech", "music")):
    rng = np.random.default_rng(seed)
    t = np.arange(int(24000 * seconds)) / 24000
    for i in range(n):
        cat = categories[i % len(categories)]
        (folder / cat).mkdir(parents=True, exist_ok=True)
        f0 = rng.uniform(100, 400)
        audio = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        audio = audio + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / cat / f"clip{i}.wav", audio.astype(np.float32), 24000)
    return folder


def tiny_recipe(root, **train):
    return load_recipe({
        "model": {"family": "wavtokenizer", "preset": "wavtokenizer-75", "config": TINY_RVQ},
        "data": {"root": str(root), "train": ["train"], "valid": ["valid"], "num_samples": 2400, "batch_size": 4,
                 "num_workers": 0, "valid_clips": 2, "valid_seconds": 0.5, "valid_audio": 1},
        "quantizer": {"kmeans_iters": 3},
        "losses": {"mel": 15.0, "mel_kind": "multiscale", "stft": 1.0, "commitment": 1.0, "adversarial": 0.0,
                   "feature_matching": 0.0},
        "optim": {"lr": 1e-3, "grad_clip": 100.0},
        "schedule": {"name": "cosine", "warmup_steps": 1, "total_steps": 10},  # not tied to max_steps
        "train": {"max_steps": 4, "log_every": 1, "valid_every": 2, "checkpoint_every": 2, **train},
    })


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_clips(root / "train", 6, 0.3, seed=1)
    write_clips(root / "valid", 2, 0.5, seed=2)
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- the RVQ variant -------------------------------------------------------------------------------------
def test_rvq_wavtokenizer_meets_the_contract(tmp_path):
    from tokenwave import load_tokenizer

    torch.manual_seed(0)
    model = WavTokenizer(WavTokenizerConfig(**TINY_RVQ))
    assert model.num_codebooks == 3 and model.config.residual
    assert math.isclose(model.config.bandwidth, 75 * 5 * 3 / 1000)
    assert model.codebooks_for_bandwidth(75 * 5 * 2 / 1000) == 2
    x = [0.1 * torch.randn(n) for n in (3000, 1700, 640)]
    whole = model.encode(x[0])
    assert whole.codes.shape == (1, 3, 10)
    two = model.encode(x[0], num_codebooks=2)
    assert torch.equal(two.codes, whole.codes[:, :2])  # residual stages: a prefix of the full codes
    assert model.decode(two).audio.shape == (1, 1, 3200)
    singles = [model.encode(a) for a in x]
    for batching in ("per_item", "padded"):
        model.batching = batching
        batch = model.encode(x)
        for i, single in enumerate(singles):
            t = int(batch.lengths[i])
            assert torch.equal(batch.codes[i, :, :t], single.codes[0]), (batching, i)
    with pytest.raises(ValueError, match=r"num_codebooks must lie in \[1, 3\]"):
        model.encode(x[0], num_codebooks=4)
    model.save_pretrained(tmp_path / "m")
    again = load_tokenizer(tmp_path / "m")
    assert torch.equal(again.encode(x[1]).codes, singles[1].codes)
    assert torch.equal(again.decode(singles[1]).audio, model.decode(singles[1]).audio)


def test_epoch_sampler_shards_and_resumes():
    full = EpochSampler(10, seed=3, epoch=1).indices()
    assert sorted(full) == list(range(10)) and full != EpochSampler(10, seed=3, epoch=2).indices()
    shards = [EpochSampler(10, seed=3, epoch=1, rank=r, world_size=3).indices() for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(full[:9]) and len({len(s) for s in shards}) == 1
    assert list(EpochSampler(10, seed=3, epoch=1, start=4)) == full[4:]


# ---- a run ---------------------------------------------------------------------------------------------
def test_run_writes_logs_samples_and_checkpoint_tags(tmp_path, data_root):
    from tokenwave import load_tokenizer

    run = tmp_path / "run"
    latest = train(tiny_recipe(data_root, keep_steps=1), run, progress=False)
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["g/mel"]) > 0 and float(r["time/s_per_step"]) > 0 for r in rows)
    valid = read_csv(run / "valid.csv")
    assert [int(r["step"]) for r in valid] == [2, 4]
    assert {"valid/mel_distance", "valid/stft_distance", "valid_speech/mel_distance"} <= set(valid[0])
    tags = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert tags == ["best", "latest", "step-000004"]  # step-000002 pruned (keep_steps=1)
    best = json.loads((run / "checkpoints" / "best" / "metrics.json").read_text())
    assert best["valid/mel_distance"] == min(float(r["valid/mel_distance"]) for r in valid)
    assert sf.info(str(run / "samples" / "step-000004" / "00-music.wav")).frames == 12000
    assert any((run / "tensorboard").iterdir())
    model = load_tokenizer(latest / "model")
    assert model.num_codebooks == 3 and json.loads((latest / "recipe.json").read_text())["train"]["max_steps"] == 4


def test_resumed_run_reads_the_same_batches_and_continues_exactly(tmp_path, data_root):
    train(tiny_recipe(data_root, max_steps=5, valid_every=100), tmp_path / "a", progress=False)
    train(tiny_recipe(data_root, max_steps=3, valid_every=100), tmp_path / "b", progress=False)
    # 6 files, batch 4: the first epoch has one batch, so the resumed run crosses an epoch boundary
    train(None, tmp_path / "b", resume=tmp_path / "b" / "checkpoints" / "latest", overrides=["train.max_steps=5"],
          progress=False)
    a, b = read_csv(tmp_path / "a" / "metrics.csv"), read_csv(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in b] == ["1", "2", "3", "4", "5"]
    for ra, rb in zip(a, b):
        for key in ("g/mel", "g/stft", "g/commitment", "g/total"):
            assert float(ra[key]) == float(rb[key]), (ra["step"], key)


def test_missing_training_data_is_a_clear_error(tmp_path):
    recipe = tiny_recipe(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere/train: no such folder or manifest"):
        train(recipe, tmp_path / "run", progress=False)
    bare = load_recipe({"model": {"family": "wavtokenizer", "preset": "wavtokenizer-75", "config": TINY_RVQ}})
    with pytest.raises(ValueError, match="no data.train sources"):
        train(bare, tmp_path / "run", progress=False)


# ---- mixed precision -----------------------------------------------------------------------------------
def test_bf16_step_is_close_to_float32(tmp_path, data_root):
    torch.manual_seed(0)
    audio = 0.3 * torch.randn(2, 1, 2400)
    losses = {}
    for precision in ("no", "bf16"):
        trainer = Trainer(tiny_recipe(data_root, mixed_precision=precision), tmp_path / precision)
        losses[precision] = trainer.train_step(audio)
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert math.isfinite(losses["bf16"]["g/total"])
    assert losses["bf16"]["g/mel"] == pytest.approx(losses["no"]["g/mel"], rel=0.05)
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        Trainer(tiny_recipe(data_root, mixed_precision="fp16"), tmp_path / "fp16")


# ---- two processes (gloo) against one ------------------------------------------------------------------
GLOBAL_BATCH = 4
STEPS = 3


def _steps(recipe, shard: slice, out: str) -> None:
    trainer = Trainer(recipe, out)
    gen = torch.Generator().manual_seed(11)
    losses = []
    for _ in range(STEPS):
        batch = 0.3 * torch.randn(GLOBAL_BATCH, 1, 2400, generator=gen)
        losses.append(trainer.train_step(batch[shard])["g/mel"])
    torch.save({"state": trainer.model.state_dict(), "mel": torch.tensor(losses)}, out)


def _worker(rank: int, init_file: str, recipe_json: str, out_dir: str) -> None:
    from tokenwave.training.recipe import Recipe

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        half = GLOBAL_BATCH // 2
        _steps(Recipe.from_dict(json.loads(recipe_json)), slice(rank * half, (rank + 1) * half),
               f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, data_root):
    recipe = tiny_recipe(data_root)
    mp.spawn(_worker, args=(str(tmp_path / "init"), recipe.to_json(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    _steps(recipe, slice(None), str(tmp_path / "single.pt"))
    single = torch.load(tmp_path / "single.pt")
    for k, v in single["state"].items():
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # the processes hold one model
        # the same update up to float summation order (stated tolerance: 1e-4 absolute + relative)
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-4, msg=k)
    # each process reports its half's loss: their mean is the global batch's
    torch.testing.assert_close((r0["mel"] + r1["mel"]) / 2, single["mel"], rtol=1e-4, atol=0)


# ---- the command ---------------------------------------------------------------------------------------
def test_train_command(tmp_path, data_root):
    from tokenwave.cli.main import app

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps(tiny_recipe(data_root, max_steps=2).to_dict()))  # JSON is YAML
    runner = CliRunner()
    listed = runner.invoke(app, ["train", "--list"])
    assert listed.exit_code == 0 and "tokenwave-small" in listed.output.split()
    dry = runner.invoke(app, ["train", "--config", str(recipe), "--dry-run", "train.max_steps=7"])
    assert dry.exit_code == 0 and json.loads(dry.output)["train"]["max_steps"] == 7
    bad = runner.invoke(app, ["train", "--config", str(recipe), "train.max_step=7"])
    assert bad.exit_code == 2 and "unknown key(s) in train: max_step" in bad.output
    assert runner.invoke(app, ["train"]).exit_code == 2
    run = tmp_path / "run"
    done = runner.invoke(app, ["train", "--config", str(recipe), "--run-dir", str(run), "train.valid_every=1"])
    assert done.exit_code == 0, done.output
    assert (run / "checkpoints" / "latest" / "model" / "model.safetensors").is_file()
    more = runner.invoke(app, ["train", "--resume", str(run / "checkpoints" / "latest"), "train.max_steps=3"])
    assert more.exit_code == 0, more.output
    assert [r["step"] for r in read_csv(run / "metrics.csv")] == ["1", "2", "3"]


def test_train_command_with_two_processes(tmp_path, data_root):
    """``--nproc 2`` runs torchrun with two gloo processes on CPU; rank 0 logs, validates and saves."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps(tiny_recipe(data_root, max_steps=2).to_dict()))
    exe = Path(sys.executable).with_name("tokenwave")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(exe), "train", "-c", str(recipe), "-o", str(tmp_path / "run"), "--nproc", "2"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done:") == 1
    assert [row["step"] for row in read_csv(tmp_path / "run" / "metrics.csv")] == ["1", "2"]
    assert (tmp_path / "run" / "checkpoints" / "best" / "model" / "config.json").is_file()


def test_streaming_data_run_resumes_exactly(tmp_path, data_root):
    """data.streaming: files streamed in a per-epoch order; the saved stream position resumes exactly."""
    stream = {"data": {"root": str(data_root), "train": ["train"], "valid": ["valid"], "num_samples": 2400,
                       "batch_size": 2, "num_workers": 0, "valid_clips": 1, "valid_seconds": 0.5,
                       "streaming": True}}

    def recipe(steps):
        r = tiny_recipe(data_root, max_steps=steps, valid_every=100)
        return load_recipe({**r.to_dict(), **stream})

    train(recipe(5), tmp_path / "a", progress=False)
    train(recipe(2), tmp_path / "b", progress=False)
    train(None, tmp_path / "b", resume=tmp_path / "b" / "checkpoints" / "latest", overrides=["train.max_steps=5"],
          progress=False)
    a, b = read_csv(tmp_path / "a" / "metrics.csv"), read_csv(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in b] == ["1", "2", "3", "4", "5"]  # 6 files, batch 2: crosses an epoch at step 3
    assert [r["g/mel"] for r in a] == [r["g/mel"] for r in b]
