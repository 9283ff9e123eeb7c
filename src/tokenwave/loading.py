"""Find a model (local folder or hub id) and load it as a tokenizer."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from .api import AudioTokenizer, CheckpointError, ModelNotFoundError

#: the model shipped inside the package (trained by us, docs/tokenwave_small.md): works offline
SHIPPED_MODEL = "tokenwave-small"
DEFAULT_MODEL = SHIPPED_MODEL
#: the published Higgs Audio v2 tokenizer (hub id)
HIGGS_MODEL = "bosonai/higgs-audio-v2-tokenizer"
MODEL_ENV = "TOKENWAVE_MODEL"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_FILES = ("model.safetensors", "model.pth")


def default_model() -> str:
    """The model used when none is named: ``$TOKENWAVE_MODEL``, else the shipped ``tokenwave-small``.

    A model that is named (argument, ``--model`` or the variable) and cannot be found is an error; it is
    never replaced by the shipped one."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def shipped_models() -> dict[str, Path]:
    """Models inside the package: name -> folder (``tokenwave/assets/models/NAME`` with config.json)."""
    from importlib import resources

    root = Path(str(resources.files("tokenwave") / "assets" / "models"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def how_to_get(model_id: str) -> str:
    return (
        f"Get the weights on a machine with network access, e.g. `hf download {model_id} --local-dir DIR` "
        f"(huggingface_hub's CLI), copy DIR here, and pass it with --model DIR or {MODEL_ENV}=DIR."
    )


def resolve_model_dir(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local folder holding ``config.json`` and the weights of ``name_or_path``.

    A path that exists is used as it is. Otherwise ``name_or_path`` must be a hub id (``owner/name``):
    it is taken from the local Hugging Face cache, or downloaded where a network exists (only
    ``config.json`` and one weight file, safetensors preferred).
    """
    path = Path(name_or_path).expanduser()
    shipped = shipped_models()
    if not path.exists() and str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; a model is a folder with config.json and model weights")
        return path
    name = str(name_or_path)
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(f"model {name!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelNotFoundError(f"{name!r} is not a local folder and huggingface_hub is not installed") from e
    cached = _from_cache(name, revision)
    if cached is not None:
        return cached
    offline = _hub_unreachable()
    if offline:
        raise ModelNotFoundError(
            f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached ({offline}). "
            + how_to_get(name)
        )
    try:
        config = Path(hf_hub_download(name, "config.json", revision=revision))
        for filename in _WEIGHT_FILES:
            try:
                hf_hub_download(name, filename, revision=revision)
                break
            except EntryNotFoundError:
                continue
        else:
            raise ModelNotFoundError(f"hub repository {name!r} has none of {_WEIGHT_FILES}")
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"unknown model {name!r}: no such hub repository (or it is private)") from e
    except ModelNotFoundError:
        raise
    except Exception as e:  # offline, cache miss, gated repo, ...
        raise ModelNotFoundError(
            f"model {name!r} is not in the local Hugging Face cache and could not be downloaded "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). " + how_to_get(name)
        ) from e
    return config.parent


def _from_cache(name: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of a hub model, if config and weights are already there."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(name, "config.json", revision=revision)
    if not isinstance(config, str):
        return None
    for filename in _WEIGHT_FILES:
        if isinstance(try_to_load_from_cache(name, filename, revision=revision), str):
            return Path(config).parent
    return None


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (offline mode, DNS failure), or None when it may be."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        return f"cannot resolve {host}: {e}"
    return None


def load_tokenizer(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    alignment: str = "original",
    batching: str = "auto",
    revision: str | None = None,
    config=None,
) -> AudioTokenizer:
    """Load a tokenizer from a folder, a file or a hub id, in any format tokenwave reads.

    Args:
        name_or_path: a model folder (Higgs in either published layout, or tokenwave's own format), a
            WavTokenizer Lightning ``.ckpt`` file, a hub id, a published WavTokenizer name (see
            :mod:`tokenwave.codecs.wavtokenizer.published`) or a shipped model's name (``"tokenwave-small"``);
            default :func:`default_model` (``$TOKENWAVE_MODEL``, else the shipped ``tokenwave-small``).
        device: where to put the model (default CPU).
        dtype: parameter dtype (default float32; quantizer distances are always float32).
        alignment: Higgs padding rule, ``"original"`` (default) or ``"transformers"``.
        batching: ``"auto"`` (default), ``"padded"`` or ``"per_item"`` (see :class:`HiggsAudioTokenizer`).
        revision: hub revision (branch, tag or commit) for hub ids.
        config: for a WavTokenizer ``.ckpt``: its LightningCLI yaml, a preset name or a
            :class:`~tokenwave.codecs.wavtokenizer.WavTokenizerConfig` (default: read from the tensor shapes;
            a given config must agree with them).

    Raises:
        ModelNotFoundError: no such folder and the hub id cannot be found or fetched.
        CheckpointError: a config of another model type, or weights that do not match it exactly.
    """
    name = str(name_or_path or default_model())
    model = _load_wavtokenizer_checkpoint(name, config, batching, revision)
    if model is not None:
        return _finish(model, name, device, dtype)
    if config is not None:
        raise ValueError("config= applies to WavTokenizer .ckpt files only; a model folder carries its config.json")
    folder = resolve_model_dir(name, revision=revision)
    data = read_config_json(folder)
    model_type = data.get("model_type")
    from .codecs.higgs.config import MODEL_TYPE, is_original_dict
    from .codecs.wavtokenizer.config import MODEL_TYPE as WAVTOKENIZER

    if model_type == MODEL_TYPE or (model_type is None and is_original_dict(data)):
        from .codecs.higgs.checkpoint import config_from_dict, load_state_strict, read_state_dict
        from .codecs.higgs.model import HiggsAudioTokenizer

        config = config_from_dict(data, str(folder / "config.json"))
        with torch.device("meta"):
            model = HiggsAudioTokenizer(config, alignment=alignment, batching=batching)
        state = read_state_dict(folder, config)
        load_state_strict(model, state, str(folder), assign=True)  # no second copy of the weights
    elif model_type == WAVTOKENIZER:
        from .codecs.wavtokenizer.checkpoint import load_pretrained

        model = load_pretrained(folder, data, batching=batching)
    else:
        raise CheckpointError(
            f"{folder / 'config.json'} describes model_type {model_type!r}, which tokenwave cannot load "
            f"(supported: {MODEL_TYPE!r} in the transformers or the original boson-multimodal layout, "
            f"{WAVTOKENIZER!r})"
        )
    return _finish(model, name, device, dtype)


def _finish(model, name: str, device, dtype) -> AudioTokenizer:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model.to(device=device or "cpu", dtype=dtype or torch.float32)
    model.quantizer.float()  # nearest-codeword search stays float32 whatever the model dtype (both codecs)
    model.model_id = name
    return model.eval()


def _load_wavtokenizer_checkpoint(name: str, config, batching: str, revision: str | None):
    """A WavTokenizer from a Lightning ``.ckpt`` path or a published name (None when ``name`` is neither)."""
    from .codecs.wavtokenizer.lightning import load_lightning

    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        return load_lightning(path, config, batching=batching)
    if path.exists():
        return None
    from .codecs.wavtokenizer.published import fetch, published_entry

    entry = published_entry(name)
    if entry is None:
        return None
    repo, filename, preset = entry
    return load_lightning(fetch(repo, filename, revision=revision), config or preset, batching=batching)


def read_config_json(folder: Path) -> dict:
    """``folder/config.json`` as a dict; :class:`CheckpointError` naming the problem when it is missing,
    unreadable, not JSON or not an object (every model family's loader reads its config through this)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data
