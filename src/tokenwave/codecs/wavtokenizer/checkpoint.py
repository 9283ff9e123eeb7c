"""tokenwave's WavTokenizer checkpoint: a folder with ``config.json`` (:class:`WavTokenizerConfig`, with
``model_type: "wavtokenizer"``) and ``model.safetensors`` (our state dict, float32, weight norm folded).

Loading is strict (every tensor present, none extra, shapes equal) and builds the model on the meta device
first, so the weights are held once. The reference code's Lightning ``.ckpt`` files are read by
:mod:`.lightning`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...api import CheckpointError
from ..higgs.checkpoint import load_state_strict
from .config import WavTokenizerConfig

WEIGHTS = "model.safetensors"


def save_pretrained(model, folder: str | Path) -> Path:
    """Write ``model`` (a :class:`~tokenwave.codecs.wavtokenizer.WavTokenizer`) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "model_type": "wavtokenizer"})
    (folder / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return folder


def load_pretrained(folder: str | Path, config_data: dict | None = None, *, batching: str = "auto"):
    """The model saved in ``folder`` by :func:`save_pretrained` (on CPU, float32, eval mode)."""
    from safetensors.torch import load_file

    from .model import WavTokenizer

    folder = Path(folder)
    if config_data is None:
        try:
            config_data = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{folder / 'config.json'} cannot be read: {e}") from e
    try:
        config = WavTokenizerConfig.from_dict(config_data, str(folder / "config.json"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(str(e)) from e
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{weights} is not a readable safetensors file: {e}") from e
    with torch.device("meta"):
        model = WavTokenizer(config, batching=batching)
    load_state_strict(model, state, str(weights), assign=True)
    return model.eval()


def describe_folder(folder: str | Path) -> dict:
    """What a tokenwave WavTokenizer folder holds, read without building the model (the keys of
    :func:`tokenwave.codecs.higgs.convert.describe_model_folder` that apply, plus ``decoder``)."""
    from ...api import config_hash
    from ..higgs.convert import describe_files

    folder = Path(folder)
    try:
        data = json.loads((folder / "config.json").read_text())
        config = WavTokenizerConfig.from_dict(data, str(folder / "config.json"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from e
    return {
        "path": str(folder),
        "format": "tokenwave",
        "model_type": data["model_type"],
        **describe_files(folder),
        "sample_rate": config.sample_rate,
        "frame_rate": config.frame_rate,
        "hop_length": config.hop_length,
        "num_codebooks": config.num_quantizers,
        "codebook_size": config.codebook_size,
        "codebook_dim": config.codebook_dim or config.latent_dim,
        "target_bandwidths": [config.bandwidth * k / config.num_quantizers
                              for k in range(1, config.num_quantizers + 1)],
        "decoder": (f"Vocos backbone {config.backbone_dim}/{config.backbone_intermediate_dim} x "
                    f"{config.backbone_layers}{' + attention pos_net' if config.pos_net else ''}, "
                    f"iSTFT n_fft {config.n_fft}"),
        "config_hash": config_hash(config.to_dict()),
    }
