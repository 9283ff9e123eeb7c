"""Reading and writing Higgs Audio v2 generation checkpoints in both published formats (spec 3.4, 3.5).

* transformers [T] (``model_type "higgs_audio_v2"``): ``config.json`` + ``model.safetensors`` or shards
  ``model-XXXXX-of-YYYYY.safetensors`` with ``model.safetensors.index.json``. Our parameter names are [T]'s:
  a plain strict load. 396 tensors, 397 with the optional ``text_lm_head.weight``.
* original [O] (``model_type "higgs_audio"``): ``config.json`` + bf16 shards + index, 397 tensors, renamed by
  the rules of spec 3.5 (:func:`original_to_ours`)::

      embed_tokens.* | layers.* | norm.*        ->  model.<same>
      audio_codebook_embeddings.weight          ->  model.embed_audio_tokens.embed_audio_tokens.weight
      audio_decoder_proj.{audio,text}_lm_head.* ->  {audio,text}_lm_head.*

  Training checkpoints of [O] may hold ``PartiallyFrozenEmbedding`` / ``PartiallyFrozenLinear`` halves
  (``X.embedding_frozen.weight`` + ``X.embedding_trainable.weight``, ``X.linear_frozen.weight`` +
  ``X.linear_trainable.weight``): they are concatenated, frozen rows first, into ``X.weight``. ``rotary_emb.inv_freq``
  entries are ignored. No tensor is reshaped, transposed or converted by the mapping.

Loading (:func:`load_pretrained`) checks names and shapes from the safetensors headers before reading any data,
builds the model on the meta device and assigns the tensors read (converted to the chosen dtype one at a time),
so the weights exist once in memory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from ..api import CheckpointError, ModelNotFoundError
from ..codecs.higgs.checkpoint import load_state_strict, state_mismatch
from .config import FORMATS, HiggsGenConfig, config_format
from .model import HiggsGenModel

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_SHARD_BYTES = 5_000_000_000  # transformers' default max_shard_size ("5GB"), which gives [O]'s 3 shards
_SPLIT = re.compile(r"^(?P<base>.+)\.(?P<kind>embedding|linear)_(?P<part>frozen|trainable)\.weight$")
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


# ---- key mapping -----------------------------------------------------------------------------------------------
def original_key_to_ours(key: str) -> str:
    """One [O] tensor name -> ours ([T]'s), by the rules of spec 3.5.

    Raises:
        KeyError: a name outside the [O] layout.
    """
    if key == "audio_codebook_embeddings.weight":
        return "model.embed_audio_tokens.embed_audio_tokens.weight"
    if key.startswith("audio_decoder_proj."):
        return key[len("audio_decoder_proj."):]
    if re.match(r"^(embed_tokens|layers|norm)\.", key):
        return "model." + key
    raise KeyError(key)


def our_key_to_original(key: str) -> str:
    """Inverse of :func:`original_key_to_ours`."""
    if key == "model.embed_audio_tokens.embed_audio_tokens.weight":
        return "audio_codebook_embeddings.weight"
    if key in ("audio_lm_head.weight", "text_lm_head.weight"):
        return "audio_decoder_proj." + key
    if key.startswith("model."):
        return key[len("model."):]
    raise KeyError(key)


def merge_split_keys(
    shapes: dict[str, tuple[int, ...]],
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[str, str]]]:
    """Names/shapes of an [O] state with frozen/trainable halves merged, and ``{merged: (frozen, trainable)}``.

    Raises:
        CheckpointError: a half without its other half, or halves that cannot be concatenated along dim 0.
    """
    out: dict[str, tuple[int, ...]] = {}
    halves: dict[str, dict[str, str]] = {}
    for key, shape in shapes.items():
        m = _SPLIT.match(key)
        if m:
            halves.setdefault(f"{m['base']}.weight", {})[m["part"]] = key
        elif not _IGNORED.search(key):
            out[key] = tuple(shape)
    pairs: dict[str, tuple[str, str]] = {}
    for merged, parts in sorted(halves.items()):
        if set(parts) != {"frozen", "trainable"}:
            raise CheckpointError(f"split tensor {merged} has only its {list(parts)} part: {list(parts.values())}")
        a, b = shapes[parts["frozen"]], shapes[parts["trainable"]]
        if len(a) != len(b) or tuple(a[1:]) != tuple(b[1:]):
            raise CheckpointError(
                f"split tensor {merged}: frozen {tuple(a)} and trainable {tuple(b)} do not concatenate")
        if merged in out:
            raise CheckpointError(f"checkpoint has both {merged} and its frozen/trainable parts")
        out[merged] = (a[0] + b[0], *a[1:])
        pairs[merged] = (parts["frozen"], parts["trainable"])
    return out, pairs


def original_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An [O] state dict with our names (split halves concatenated, ``rotary_emb.inv_freq`` dropped).

    Raises:
        KeyError: a tensor name outside the [O] layout.
        CheckpointError: an incomplete frozen/trainable pair.
    """
    shapes, pairs = merge_split_keys({k: tuple(v.shape) for k, v in state.items()})
    out = {}
    for key in shapes:
        value = torch.cat([state[p] for p in pairs[key]]) if key in pairs else state[key]
        out[original_key_to_ours(key)] = value
    return out


def ours_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict with [O] names (no tensor changes)."""
    return {our_key_to_original(k): v for k, v in state.items()}


# ---- files -----------------------------------------------------------------------------------------------------
def weight_files(folder: Path) -> dict[str, Path]:
    """``{tensor name: safetensors file}`` of a folder (sharded with an index, or one ``model.safetensors``).

    The index must list exactly the tensors its shards hold.

    Raises:
        CheckpointError: no weights, a missing shard, or an index that disagrees with its shards.
    """
    from safetensors import safe_open

    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index (no weight_map): {e}") from e
        out = {k: folder / v for k, v in weight_map.items()}
        missing = sorted({p.name for p in out.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{index} names shard(s) that are not in {folder}: {missing}")
        for shard in sorted(set(out.values())):
            with _open(shard, safe_open) as f:
                held = set(f.keys())
            listed = {k for k, p in out.items() if p == shard}
            if held != listed:
                raise CheckpointError(
                    f"{index} disagrees with {shard.name}: listed but not stored {sorted(listed - held)[:20]}, "
                    f"stored but not listed {sorted(held - listed)[:20]}")
        return out
    single = folder / SINGLE_FILE
    if single.is_file():
        with _open(single, safe_open) as f:
            return dict.fromkeys(f.keys(), single)
    raise CheckpointError(f"{folder} has neither {INDEX_FILE} nor {SINGLE_FILE}")


def _open(path: Path, safe_open, device: str = "cpu"):
    try:
        return safe_open(str(path), framework="pt", device=device)
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"cannot read {path}: {e}") from e


def _shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from the safetensors headers (no data read)."""
    from safetensors import safe_open

    out = {}
    by_file: dict[Path, list[str]] = {}
    for key, path in files.items():
        by_file.setdefault(path, []).append(key)
    for path, keys in by_file.items():
        with _open(path, safe_open) as f:
            for key in keys:
                out[key] = tuple(f.get_slice(key).get_shape())
    return out


def read_config(folder: Path) -> tuple[HiggsGenConfig, str, dict[str, Path]]:
    """The config, format (``"original"`` / ``"transformers"``) and weight files of a checkpoint folder.

    [T]: ``use_text_head`` is whether the weights hold ``text_lm_head.weight``.

    Raises:
        CheckpointError: no or invalid ``config.json``, another model type, unknown fields, no weights.
    """
    from ..loading import read_config_json

    path = folder / "config.json"
    data = read_config_json(folder)
    try:
        fmt = config_format(data)
        files = weight_files(folder)
        if fmt == "original":
            config = HiggsGenConfig.from_original_dict(data)
        else:
            config = HiggsGenConfig.from_transformers_dict(data, use_text_head="text_lm_head.weight" in files)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return config, fmt, files


def resolve_folder(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local folder holding the checkpoint: an existing path as it is, else a hub id (``owner/name``) taken
    from the Hugging Face cache or downloaded (config, index and safetensors files only).

    Uses :func:`tokenwave.loading.resolve_model_dir` for local paths; hub repositories of this model are sharded,
    which that function does not fetch, hence the ``snapshot_download`` here.

    Raises:
        ModelNotFoundError: neither an existing folder nor a reachable / cached hub id.
    """
    from .. import loading

    path = Path(name_or_path).expanduser()
    if path.exists():
        return loading.resolve_model_dir(path)
    name = str(name_or_path)
    if not loading._HUB_ID.match(name):
        raise ModelNotFoundError(f"model {name!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download

    offline = loading._hub_unreachable()
    try:
        folder = Path(snapshot_download(name, revision=revision, local_files_only=offline is not None,
                                        allow_patterns=["config.json", INDEX_FILE, "*.safetensors"]))
    except Exception as e:  # offline, cache miss, unknown or gated repository
        why = offline or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise ModelNotFoundError(
            f"model {name!r} is not in the local Hugging Face cache and could not be downloaded ({why}). "
            + loading.how_to_get(name)) from e
    return folder


# ---- loading ---------------------------------------------------------------------------------------------------
def load_pretrained(name_or_path: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
                    device: torch.device | str | None = None, text_head: bool | None = None,
                    revision: str | None = None) -> HiggsGenModel:
    """Load a Higgs Audio v2 generation model in either format (detected from ``config.json``'s ``model_type``).

    Args:
        name_or_path: a checkpoint folder or a hub id (see :func:`resolve_folder`). The published repository
            :data:`~tokenwave.tts.config.PUBLISHED_REPO` holds [T] on ``main`` and [O] at
            :data:`~tokenwave.tts.config.ORIGINAL_REVISION`.
        dtype: parameter dtype; default the checkpoint's (that of the text embedding: bf16 for the published one).
        device: where the tensors are read to (default CPU).
        text_head: True: require the text head; False: leave it out (its tensor is skipped, as [T] does without
            ``use_text_head``); None: as the checkpoint has it.
        revision: hub revision for hub ids.

    Returns:
        The model in eval mode; ``model.config`` is the checkpoint's config and ``model.checkpoint_format`` its
        format.

    Raises:
        ModelNotFoundError: see :func:`resolve_folder`.
        CheckpointError: invalid config, unknown fields, or weights that do not match the config exactly
            (every missing, unexpected or mis-shaped tensor is named, with the checkpoint's own names).
    """
    folder = resolve_folder(name_or_path, revision=revision)
    config, fmt, files = read_config(folder)
    has_head = config.use_text_head
    if text_head is True and not has_head:
        raise CheckpointError(f"{folder} has no text head (text_lm_head.weight) but text_head=True was asked")
    if text_head is False:
        config = config.replace(use_text_head=False)
    with torch.device("meta"):
        model = HiggsGenModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    to_ours = original_key_to_ours if fmt == "original" else (lambda k: k)
    to_file = our_key_to_original if fmt == "original" else (lambda k: k)

    shapes = _shapes(files)
    pairs: dict[str, tuple[str, str]] = {}
    if fmt == "original":
        shapes, pairs = merge_split_keys(shapes)
    if text_head is False and has_head:  # skipped, not an unexpected tensor
        shapes.pop(to_file("text_lm_head.weight"), None)
    problems = state_mismatch({to_file(k): torch.Size(v) for k, v in expected.items()},
                              {k: torch.empty(v, device="meta") for k, v in shapes.items()})
    if problems:
        raise CheckpointError(f"checkpoint {folder} ({fmt} format) does not match its config: " + "; ".join(problems))

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        embed = pairs.get("embed_tokens.weight", ("embed_tokens.weight",))[0] if fmt == "original" else \
            "model.embed_tokens.weight"
        dtype = _stored_dtype(files[embed], embed)
    dev = str(torch.device(device or "cpu"))
    state = {}
    for key, tensor in _read(files, dev, dtype, [p for k in shapes for p in pairs.get(k, (k,))]):
        state[key] = tensor
    for merged, (frozen, trainable) in pairs.items():
        state[merged] = torch.cat([state.pop(frozen), state.pop(trainable)])
    state = {to_ours(k): state[k] for k in shapes}
    load_state_strict(model, state, str(folder), assign=True)
    model.checkpoint_format = fmt
    return model.eval()


def _stored_dtype(path: Path, key: str) -> torch.dtype:
    from safetensors import safe_open

    with _open(path, safe_open) as f:
        name = f.get_slice(key).get_dtype()
    if name not in _DTYPES:
        raise CheckpointError(f"{path}: {key} is stored as {name}, not a floating-point dtype tokenwave loads")
    return _DTYPES[name]


_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}


def _read(files: dict[str, Path], device: str, dtype: torch.dtype, keys: Iterable[str]):
    """Yield ``(key, tensor)`` for ``keys``, one shard open at a time, each converted to ``dtype`` as read."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for key in keys:
        by_file.setdefault(files[key], []).append(key)
    for path, names in by_file.items():
        with _open(path, safe_open, device) as f:
            for key in names:
                yield key, f.get_tensor(key).to(dtype)


# ---- saving ----------------------------------------------------------------------------------------------------
def save_pretrained(model: HiggsGenModel, folder: str | os.PathLike, *, format: str = "transformers",
                    dtype: torch.dtype | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write ``model`` in one of the published formats: ``config.json`` and safetensors weights, one
    ``model.safetensors`` when they fit in ``max_shard_bytes``, else shards ``model-XXXXX-of-YYYYY.safetensors``
    (filled greedily in state-dict order) with ``model.safetensors.index.json``.

    ``format="transformers"`` is what ``HiggsAudioV2ForConditionalGeneration.from_pretrained`` loads (pass it
    ``use_text_head=True`` to get the text head); ``format="original"`` is the layout of the published
    ``higgs_audio`` checkpoint (names by spec 3.5) and needs the text head.

    Args:
        dtype: tensor dtype in the files (default the model's).

    Raises:
        ValueError: an unknown format, or a config the format cannot express.
    """
    from safetensors.torch import save_file

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    config: HiggsGenConfig = model.config
    state = {k: v.detach() for k, v in model.state_dict().items()}
    dtype = dtype or next(iter(state.values())).dtype
    dtype_name = str(dtype).removeprefix("torch.")
    data = config.to_original_dict(dtype_name) if format == "original" else config.to_transformers_dict(dtype_name)
    if format == "original":
        state = ours_to_original(state)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [folder / SINGLE_FILE, folder / INDEX_FILE, *folder.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)
    (folder / "config.json").write_text(json.dumps(data, indent=2) + "\n")

    shards: list[list[str]] = [[]]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    names = ([SINGLE_FILE] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map = {}
    for name, keys in zip(names, shards):
        save_file({k: state[k].to("cpu", dtype).contiguous() for k in keys}, str(folder / name),
                  metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    if len(shards) > 1:
        total = sum(v.numel() for v in state.values()) * dtype.itemsize
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return folder
