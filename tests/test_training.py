"""Training: recipes (bases, overrides, strict keys), one CPU step of each codec family, exact resume, and
overfitting one clip."""

from __future__ import annotations

import math

import pytest
import torch

from tokenwave.training.recipe import RecipeError, load_recipe, shipped_recipes
from tokenwave.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_WT = dict(encoder_filters=4, latent_dim=16, codebook_size=64, backbone_dim=64, backbone_intermediate_dim=128,
               backbone_layers=2)
TINY_DISCS = [{"name": "mpd", "num_embeddings": 4, "channels": [4, 8, 16, 32]},
              {"name": "mrd", "num_embeddings": 4, "channels": 8}]


def wt_recipe(**sections):
    base = {"model": {"family": "wavtokenizer", "preset": "wavtokenizer-75", "config": TINY_WT},
            "quantizer": {"kmeans_iters": 5}, "discriminators": TINY_DISCS,
            "train": {"max_steps": 4, "checkpoint_every": 2, "log_every": 1}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_recipe(base)


def batches(n: int, length: int = 4800, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    out = []
    for _ in range(n):
        f0 = 100 + 200 * torch.rand(2, 1, 1, generator=gen)
        out.append(0.3 * torch.sin(2 * math.pi * f0 * t) + 0.01 * torch.randn(2, 1, length, generator=gen))
    return out


# ---- recipes ------------------------------------------------------------------------------------------
def test_shipped_recipes_resolve():
    assert {"wavtokenizer-75", "wavtokenizer-40", "higgs-v2", "higgs-v2-finetune"} <= set(shipped_recipes())
    r75, r40 = load_recipe("wavtokenizer-75"), load_recipe("wavtokenizer-40")
    assert r40.model.preset == "wavtokenizer-40" and r40.losses.mel == r75.losses.mel == 45.0
    assert r75.optim.lr == 2e-4 and r75.quantizer.kmeans_clusters == 200 and r75.data.num_samples == 72000
    fine = load_recipe("higgs-v2-finetune")
    assert fine.model.init_from == "bosonai/higgs-audio-v2-tokenizer" and fine.model.freeze == ["semantic_model"]
    assert fine.quantizer.num_quantizers_choices == [2, 4, 6, 8]  # from the base


def test_recipe_files_overrides_and_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: wavtokenizer-75\ndata:\n  batch_size: 4\noptim:\n  lr: 1e-3\n")
    r = load_recipe(path, ["train.max_steps=10", "optim.betas=[0.8, 0.9]", "model.init_from="])
    assert (r.data.batch_size, r.data.num_samples, r.optim.lr, r.optim.betas) == (4, 72000, 1e-3, [0.8, 0.9])
    assert r.train.max_steps == 10 and r.model.init_from is None
    child = tmp_path / "child.yaml"
    child.write_text("base: mine.yaml\ntrain:\n  seed: 1\n")
    assert load_recipe(child).data.batch_size == 4
    with pytest.raises(RecipeError, match="unknown key.*in data: batchsize"):
        load_recipe(path, ["data.batchsize=3"])
    with pytest.raises(RecipeError, match="train.max_steps must be int"):
        load_recipe(path, ["train.max_steps=many"])
    with pytest.raises(RecipeError, match="not of the form"):
        load_recipe(path, ["max_steps"])
    with pytest.raises(RecipeError, match="unknown recipe"):
        load_recipe("no-such-recipe")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    assert "recipe" not in r.to_json() or r.to_json()  # serialisable


# ---- steps ----------------------------------------------------------------------------------------------
def test_one_wavtokenizer_step_updates_everything(tmp_path):
    trainer = Trainer(wt_recipe(), tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    disc_before = {k: v.clone() for k, v in trainer.discriminators.state_dict().items()}
    metrics = trainer.train_step(batches(1)[0])
    for key in ("g/mel", "g/commitment", "g/adv_mpd", "g/fm_mrd", "d/mpd", "d/mrd", "vq/perplexity"):
        assert math.isfinite(metrics[key]), key
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("backbone.") for k in changed)
    assert "quantizer.codebook.embed" in changed and float(trainer.model.quantizer.codebook.inited) == 1
    assert any(not torch.equal(v, disc_before[k]) for k, v in trainer.discriminators.state_dict().items())


def test_one_higgs_step_with_a_tiny_teacher(tmp_path):
    from conftest import tiny_config
    from tokenwave.codecs.higgs.config import HiggsConfig

    config = tiny_config()
    assert isinstance(config, HiggsConfig)
    recipe = load_recipe({"model": {"family": "higgs", "config": config.to_transformers_dict()},
                          "quantizer": {"kmeans_iters": 3, "num_quantizers_choices": [1, 2]},
                          "losses": {"mel_kind": "multiscale", "mel": 15.0, "commitment": 0.25, "semantic": 1.0},
                          "discriminators": [{"name": "mpd", "channels": [4, 8, 16, 32]}],
                          "train": {"max_steps": 2}})
    trainer = Trainer(recipe, tmp_path)
    teacher = {k: v.clone() for k, v in trainer.model.semantic_model.state_dict().items()}
    metrics = trainer.train_step(batches(1, length=9600)[0])
    assert math.isfinite(metrics["g/semantic"]) and metrics["g/semantic"] > 0
    assert metrics["vq/num_quantizers"] in (1.0, 2.0)
    assert all(torch.equal(v, teacher[k]) for k, v in trainer.model.semantic_model.state_dict().items())


def test_resume_continues_exactly(tmp_path):
    data = batches(4)
    straight = Trainer(wt_recipe(), tmp_path / "a").fit(data)
    first = Trainer(wt_recipe(), tmp_path / "b")
    first.fit(data[:2])  # checkpoint "latest" at step 2
    resumed = Trainer.resume(tmp_path / "b" / "checkpoints" / "latest")
    assert resumed.step == 2
    rest = resumed.fit(data[2:])
    assert [m["g/total"] for m in straight[2:]] == [m["g/total"] for m in rest]
    assert [m["d/total"] for m in straight[2:]] == [m["d/total"] for m in rest]
    assert (tmp_path / "b" / "metrics.csv").is_file()


def test_overfitting_one_clip_lowers_the_mel_loss(tmp_path):
    """Without discriminators, 60 steps on one clip cut the mel loss at least 2x (measured: see below)."""
    recipe = wt_recipe(discriminators=[], optim={"lr": 3e-3}, schedule={"name": "constant"},
                       train={"max_steps": 60, "checkpoint_every": 1000, "log_every": 1000})
    clip = batches(1, length=9600)[0][:1]
    history = Trainer(recipe, tmp_path).fit([clip] * 60, log=False)
    first, last = history[0]["g/mel"], min(m["g/mel"] for m in history[-5:])
    assert last < first / 2, (first, last)
