"""Training checkpoints: weights as safetensors + JSON, the rest of the training state in a separate file.

Layout of ``RUN/checkpoints/TAG/`` (TAG = ``latest``, ``best`` or ``step-000123``)::

    model/                     the generator as the codec's save_pretrained writes it (loads with load_tokenizer)
    discriminators.safetensors discriminator weights
    training_state.pt          optimizer and scheduler states, step, RNG states (tensors, numbers and lists only:
                               read back with torch.load(weights_only=True))
    recipe.json                the fully resolved recipe
    metrics.json               the step's latest metrics (what "best" was chosen on)

A tag is written into a temporary folder and renamed into place, so a crash never leaves a half-written
``latest``. Resuming restores every piece, so a resumed run continues exactly as an uninterrupted one
(tested: same losses for the following steps with a fixed seed).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..api import CheckpointError

STATE_FILE = "training_state.pt"
DISC_FILE = "discriminators.safetensors"


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) generator states as weights-only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "python": _listify(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tupleify(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tupleify(x):
    return tuple(_tupleify(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(folder: str | Path, *, generator, discriminators: torch.nn.Module | None, state: dict,
                    recipe_json: str, metrics: dict | None = None) -> Path:
    """Write one tag folder atomically (see the module docstring). ``state`` holds plain objects/tensors."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    generator.save_pretrained(tmp / "model")
    if discriminators is not None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in discriminators.state_dict().items()}
        save_file(tensors, str(tmp / DISC_FILE), metadata={"format": "pt"})
    torch.save(state, tmp / STATE_FILE)
    (tmp / "recipe.json").write_text(recipe_json + "\n")
    (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=2, sort_keys=True) + "\n")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def read_checkpoint(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor] | None, dict]:
    """``(training state, discriminator tensors or None, recipe dict)`` of a tag folder; the generator is
    read by :func:`tokenwave.load_tokenizer` from ``folder / "model"``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder} is not a training checkpoint: it has no {STATE_FILE}")
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # refused pickles or a damaged file
        raise CheckpointError(f"{folder / STATE_FILE} cannot be read as a weights-only file: {e}") from e
    discs = load_file(str(folder / DISC_FILE)) if (folder / DISC_FILE).is_file() else None
    try:
        recipe = json.loads((folder / "recipe.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / 'recipe.json'} cannot be read: {e}") from e
    return state, discs, recipe
