"""Checkpoint conversion between the two published Higgs tokenizer formats, and model folder descriptions.

* :func:`convert_checkpoint` reads a folder in either format and writes it in the one asked for:
  ``"transformers"`` (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``, weight norm
  folded) or ``"original"`` (boson-multimodal ``config.json`` + ``model.pth``, a ``torch.save`` of a plain
  dict of tensors with ``weight_g``/``weight_v`` pairs). Every tensor is checked against the model the config
  describes before anything is written.
* :func:`describe_model_folder` says what a folder holds (format, files, tensor counts, dtypes, key config
  values, ``config_hash``) without building the model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal

import torch

from ...api import CheckpointError, config_hash
from .checkpoint import (
    config_from_dict,
    is_original_state,
    original_to_transformers,
    read_pth,
    read_state_dict,
    state_mismatch,
    transformers_to_original,
    write_transformers,
)
from .config import MODEL_TYPE, HiggsConfig, is_original_dict

__all__ = ["FORMATS", "convert_checkpoint", "describe_files", "describe_model_folder", "folder_format"]

FORMATS = ("transformers", "original")
# Files a checkpoint of either format consists of; on overwrite, those of the other format are removed.
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "model.pth")


def convert_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, to: Literal["transformers", "original"], *, overwrite: bool = False
) -> Path:
    """Write the model of folder ``src`` (either format) into folder ``dst`` in format ``to``.

    Args:
        src: a model folder, transformers or original format.
        dst: the folder to write; created if needed. It must not exist or be empty unless ``overwrite``.
        to: ``"transformers"`` or ``"original"``. Converting to the format ``src`` is already in is allowed
            and normalises the folder: the config is rewritten in canonical form and the weights are written
            as a plain state dict (original: ``src``'s tensors unchanged, ``masked_spec_embed`` included;
            transformers: float32 safetensors). From transformers to original, ``semantic_model.masked_spec_embed``
            is left out (see :func:`~tokenwave.codecs.higgs.checkpoint.transformers_to_original`).
        overwrite: write into a non-empty ``dst``. The checkpoint files there (``config.json``,
            ``model.safetensors``, ``model.pth``, ``preprocessor_config.json``) are replaced, those of the other
            format removed, so that ``dst`` holds exactly one checkpoint; other files are left alone.

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: ``to`` is not a format; ``src`` is missing, not a Higgs model folder, or its weights do
            not match its config exactly (missing, unexpected or mis-shaped tensors); ``dst`` is ``src``, a
            file, or a non-empty folder without ``overwrite``; the config cannot be expressed in the original
            layout.
    """
    if to not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {to!r}: choose one of {list(FORMATS)}")
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    config, data = _read_config(src)
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"destination {dst} is a file; give a folder")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"destination {dst} is the source folder; write the converted checkpoint elsewhere")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise CheckpointError(
            f"destination {dst} exists and is not empty (pass overwrite=True to replace its checkpoint)"
        )

    state, raw_original = _read_weights(src, config)
    _check_state(config, state, str(src))
    if to == "original":
        try:
            config_out = config.to_original_dict()
        except ValueError as e:
            raise CheckpointError(f"{src / 'config.json'}: {e}") from e
        if raw_original is not None:  # already original: keep its tensors (and masked_spec_embed) as they are
            weights = raw_original
        else:
            weights = transformers_to_original(state, config)
        weights = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    dst.mkdir(parents=True, exist_ok=True)
    for name in _CHECKPOINT_FILES:
        (dst / name).unlink(missing_ok=True)
    if to == "transformers":
        write_transformers(config, state, dst)
    else:
        _write_json(dst / "config.json", config_out)
        tmp = dst / "model.pth.tmp"
        torch.save(weights, tmp)
        tmp.replace(dst / "model.pth")
    return dst


def folder_format(path: str | os.PathLike) -> str:
    """``"transformers"`` or ``"original"``: the layout of the folder's ``config.json``."""
    _, data = _read_config(Path(path).expanduser())
    return "original" if is_original_dict(data) else "transformers"


def describe_model_folder(path: str | os.PathLike) -> dict:
    """What a model folder holds, read without building the model.

    Returns a JSON-serialisable dict:

    * ``path``, ``format`` (``"transformers"`` | ``"original"``, the layout of ``config.json``), ``model_type``;
    * ``files``: ``{name: bytes}`` of every file in the folder (not recursive);
    * ``weights``: the weight file a load reads (``model.safetensors`` preferred), or None;
      ``num_tensors``, ``num_parameters`` (scalars stored, buffers such as the codebooks and the original's
      ``weight_g``/``weight_v`` pairs included) and ``dtypes`` of that file (None without one). A safetensors
      header is read without loading tensors; ``model.pth`` is memory-mapped with ``weights_only=True``.
    * key config values: ``sample_rate``, ``frame_rate``, ``hop_length``, ``num_codebooks``, ``codebook_size``,
      ``codebook_dim``, ``target_bandwidths``, ``acoustic_hidden_size``, ``semantic_hidden_size``,
      ``semantic_num_layers``;
    * ``config_hash``: equal to ``load_tokenizer(path).config_hash``.

    Raises:
        CheckpointError: no such folder, no readable ``config.json``, or not a Higgs tokenizer config.
    """
    folder = Path(path).expanduser()
    config, data = _read_config(folder)
    return {
        "path": str(folder),
        "format": "original" if is_original_dict(data) else "transformers",
        "model_type": data.get("model_type", MODEL_TYPE),
        **describe_files(folder),
        "sample_rate": config.sample_rate,
        "frame_rate": config.frame_rate,
        "hop_length": config.hop_length,
        "num_codebooks": config.num_quantizers,
        "codebook_size": config.codebook_size,
        "codebook_dim": config.codebook_dim,
        "target_bandwidths": list(config.target_bandwidths),
        "acoustic_hidden_size": config.acoustic_hidden_size,
        "semantic_hidden_size": config.semantic.hidden_size,
        "semantic_num_layers": config.semantic.num_hidden_layers,
        "config_hash": config_hash(config.identity_dict()),
    }


def describe_files(folder: Path) -> dict:
    """The file part of :func:`describe_model_folder` (any codec's folder): ``files``, ``weights``,
    ``num_tensors``, ``num_parameters``, ``dtypes``, read without loading tensors."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    st, pth = folder / "model.safetensors", folder / "model.pth"
    weights, shapes, dtypes = None, None, None
    if st.is_file():
        weights, (shapes, dtypes) = st.name, _safetensors_summary(st)
    elif pth.is_file():
        weights, (shapes, dtypes) = pth.name, _pth_summary(pth)
    return {
        "files": files,
        "weights": weights,
        "num_tensors": None if shapes is None else len(shapes),
        "num_parameters": None if shapes is None else sum(math.prod(s) for s in shapes),
        "dtypes": dtypes,
    }


# ---- helpers -------------------------------------------------------------------------------------------
def _read_config(folder: Path) -> tuple[HiggsConfig, dict]:
    if not folder.exists():
        raise CheckpointError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; a model is a folder with config.json and model weights")
    from ...loading import read_config_json

    path = folder / "config.json"
    data = read_config_json(folder)
    model_type = data.get("model_type")
    if not (model_type == MODEL_TYPE or (model_type is None and is_original_dict(data))):
        raise CheckpointError(
            f"{path} is not a Higgs Audio v2 tokenizer config (model_type {model_type!r}, "
            f"expected {MODEL_TYPE!r} or the original boson-multimodal layout)"
        )
    return config_from_dict(data, str(path)), data


def _read_weights(folder: Path, config: HiggsConfig) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Transformers-keyed weights, and the raw original state dict when they come from an original model.pth."""
    pth = folder / "model.pth"
    if (folder / "model.safetensors").is_file() or not pth.is_file():
        return read_state_dict(folder, config), None  # read_state_dict's rule: safetensors first
    raw = read_pth(pth)
    if is_original_state(raw):
        return original_to_transformers(raw, num_blocks=len(config.downsampling_ratios)), raw
    return raw, None


def _check_state(config: HiggsConfig, state: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor the model of ``config`` has is in ``state`` with its shape, and nothing else."""
    from .model import HiggsAudioTokenizer

    with torch.device("meta"):
        expected = {k: v.shape for k, v in HiggsAudioTokenizer(config).state_dict().items()}
    parts = state_mismatch(expected, state)
    if parts:
        raise CheckpointError(f"checkpoint {source} does not match its config: " + "; ".join(parts))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _safetensors_summary(path: Path) -> tuple[list[tuple[int, ...]], list[str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            slices = [f.get_slice(k) for k in f.keys()]
            shapes = [tuple(s.get_shape()) for s in slices]
            dtypes = sorted({_SAFETENSORS_DTYPES.get(s.get_dtype(), s.get_dtype().lower()) for s in slices})
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {path}: {e}") from e
    return shapes, dtypes


def _pth_summary(path: Path) -> tuple[list[tuple[int, ...]], list[str]]:
    try:
        try:  # memory-mapped: only the tensor headers are touched
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (pre-zipfile) torch.save cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a non-tensor pickle is refused by weights_only, which is the point
        raise CheckpointError(f"cannot read {path} as a tensor-only state dict: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    return [tuple(t.shape) for t in tensors], sorted({str(t.dtype).removeprefix("torch.") for t in tensors})
