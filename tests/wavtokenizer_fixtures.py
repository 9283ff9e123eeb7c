"""Test helpers for WavTokenizer: a tiny geometry, the published key lists and a writer of published-layout
Lightning checkpoints (the inverse of :mod:`tokenwave.codecs.wavtokenizer.lightning`, for tests only)."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from conftest import FIXTURES, randomize_
from tokenwave.codecs.higgs.checkpoint import unfold_weight_norm
from tokenwave.codecs.wavtokenizer.config import WavTokenizerConfig

PUBLISHED_FRAMES = {"wavtokenizer-75": "frame75", "wavtokenizer-40": "frame40"}


def tiny_config() -> WavTokenizerConfig:
    """The 75 tokens/s framing (strides 2, 4, 5, 8, n_fft 1280) with tiny widths: runs in milliseconds."""
    return WavTokenizerConfig(
        strides=(2, 4, 5, 8), encoder_filters=4, latent_dim=16, codebook_size=64, backbone_dim=64,
        backbone_intermediate_dim=128, backbone_layers=2, n_fft=1280,
    )


def tiny_model(seed: int = 0):
    """A :class:`WavTokenizer` of :func:`tiny_config` with random weights and a codebook drawn from its own
    encoder's latents of random audio (random codewords lie far from the latents: every frame would get the
    same code)."""
    from tokenwave.codecs.wavtokenizer.model import WavTokenizer

    model = randomize_(WavTokenizer(tiny_config()), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    codebook = model.quantizer.codebook
    with torch.no_grad():
        z = model.encoder(0.3 * torch.randn(4, 1, 24000, generator=gen))
        z = z.permute(0, 2, 1).reshape(-1, z.shape[1])
        codebook.embed.copy_(z[torch.randperm(len(z), generator=gen)[: codebook.embed.shape[0]]])
        codebook.embed_avg.copy_(codebook.embed)
    return model


def published_keys(preset: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every ``state_dict`` entry of a published Lightning ``.ckpt`` (1091 entries)."""
    path = FIXTURES / f"wavtokenizer_lightning_keys_{PUBLISHED_FRAMES[preset]}.txt.gz"
    out = {}
    for line in gzip.decompress(path.read_bytes()).decode().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ")
            out[key] = tuple(int(n) for n in shape.split(",") if n)
    return out


def to_published_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our generator state dict in the published names, with every encoder conv weight unfolded into a legacy
    ``weight_g``/``weight_v`` pair (``g`` of shape ``[C_out, 1, 1]``)."""
    out = {}
    for key, value in state.items():
        if key.startswith("encoder."):
            rest = key[len("encoder."):]
            if rest.endswith((".conv.weight", ".conv.bias")):
                base, leaf = rest.rsplit(".", 1)
                name = f"feature_extractor.encodec.encoder.{base}.conv.{leaf}"
                if leaf == "weight":
                    out[name + "_g"], out[name + "_v"] = unfold_weight_norm(value)
                else:
                    out[name] = value
            else:
                out["feature_extractor.encodec.encoder." + rest] = value
        elif key.startswith("quantizer.codebook."):
            out["feature_extractor.encodec.quantizer.vq.layers.0._codebook." + key[len("quantizer.codebook."):]] = value
        else:
            out[key] = value
    return {k: v.detach().clone() for k, v in out.items()}


def _unused_decoder(config: WavTokenizerConfig) -> dict[str, torch.Tensor]:
    """A few entries of the unused SEANet decoder every published checkpoint carries (spec 2.4)."""
    d, f = config.latent_dim, config.encoder_filters
    prefix = "feature_extractor.encodec.decoder.model."
    return {
        prefix + "0.conv.conv.bias": torch.zeros(d),
        prefix + "0.conv.conv.weight_g": torch.ones(d, 1, 1),
        prefix + "0.conv.conv.weight_v": torch.ones(d, d, 7),
        prefix + "1.lstm.weight_ih_l0": torch.zeros(4 * d, d),
        prefix + "3.convtr.convtr.weight_v": torch.ones(d, d // 2, 16),
        prefix + "15.conv.conv.weight_v": torch.ones(1, f, 7),
    }


_TRAINING_ENTRIES = {  # small shapes; the published names (spec 4.3)
    "multiperioddisc.discriminators.0.convs.0.weight_g": (32, 1, 1, 1),
    "multiperioddisc.discriminators.0.convs.0.weight_v": (32, 1, 5, 1),
    "multiperioddisc.discriminators.0.emb.weight": (4, 8),
    "multiresddisc.discriminators.0.convs.0.bias": (64,),
    "dac.discriminators.0.convs.0.bias": (32,),
    "dacdiscriminator.discriminator.discriminators.7.conv_post.weight_g": (1, 1, 1, 1),
    "melspec_loss.mel_spec.spectrogram.window": (1024,),
    "melspec_loss.mel_spec.mel_scale.fb": (513, 100),
}


def write_lightning_checkpoint(model: torch.nn.Module, path: str | Path, *, with_training_keys: bool = True) -> Path:
    """Save ``model`` (a :class:`WavTokenizer`) as a PyTorch-Lightning 1.8 ``.ckpt`` in the published layout.

    ``state_dict`` holds the generator in the published names (weight norm unfolded) and a few entries of the
    unused SEANet decoder; with ``with_training_keys`` also a few discriminator and mel-loss entries and the
    other top-level keys Lightning writes (``epoch`` ... ``hyper_parameters``, plain types only). Without it
    the file is ``{"state_dict": ...}`` alone.
    """
    config = model.config
    state = to_published_state(model.state_dict())
    state.update(_unused_decoder(config))
    ckpt: dict = {"state_dict": state}
    if with_training_keys:
        state.update({k: torch.zeros(shape) for k, shape in _TRAINING_ENTRIES.items()})
        ckpt = {
            "epoch": 35,
            "global_step": 187848,
            "pytorch-lightning_version": "1.8.6",
            "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 93924}}},
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
                    "monitor": "val_loss", "best_model_score": torch.tensor(4.1611),
                    "best_model_path": "vocos_checkpoint_epoch=35_step=187848_val_loss=4.1611.ckpt",
                    "best_k_models": {"vocos_checkpoint_epoch=35_step=187848_val_loss=4.1611.ckpt":
                                      torch.tensor(4.1611)},
                },
            },
            "optimizer_states": [{
                "state": {0: {"step": torch.tensor(93924.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
                "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                                  "amsgrad": False, "foreach": None, "initial_lr": 2e-4, "params": [0]}],
            }],
            "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": 93924, "_step_count": 93925, "_last_lr": [2e-4],
                               "lr_lambdas": [None]}],
            "hparams_name": "kwargs",
            "hyper_parameters": {
                "sample_rate": config.sample_rate, "initial_learning_rate": 2e-4, "num_warmup_steps": 0,
                "mel_loss_coeff": 45, "mrd_loss_coeff": 1.0, "pretrain_mel_steps": 0, "decay_mel_coeff": False,
                "evaluate_utmos": True, "evaluate_pesq": True, "evaluate_periodicty": True, "resume": False,
            },
        }
    path = Path(path)
    torch.save(ckpt, path)
    return path
