"""Reading and writing Higgs tokenizer checkpoints in both published formats.

* transformers: ``config.json`` + ``model.safetensors`` (527 tensors, weight norm folded). Our module
  names are transformers', so this is a plain strict load.
* original (boson-multimodal): ``config.json`` (constructor kwargs) + ``model.pth`` (a pickled
  state dict, read with ``torch.load(weights_only=True)``: tensors only, no code is run). Keys are
  renamed by the rules of spec section 4.3 and every ``weight_g``/``weight_v`` pair is folded into
  ``weight = g * v / ||v||`` with the same op the original applies at each forward.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ...api import CheckpointError
from .config import HiggsConfig, is_original_dict

# (pattern on original keys, replacement) applied in order; first match wins.
_ORIGINAL_TO_TRANSFORMERS = [
    (r"^encoder\.block\.0\.", "acoustic_encoder.conv1."),
    (r"^encoder\.block\.(\d+)\.block\.([0-2])\.block\.0\.", lambda m: _enc(m, "snake1")),
    (r"^encoder\.block\.(\d+)\.block\.([0-2])\.block\.1\.", lambda m: _enc(m, "conv1")),
    (r"^encoder\.block\.(\d+)\.block\.([0-2])\.block\.2\.", lambda m: _enc(m, "snake2")),
    (r"^encoder\.block\.(\d+)\.block\.([0-2])\.block\.3\.", lambda m: _enc(m, "conv2")),
    (r"^encoder\.block\.(\d+)\.block\.3\.", lambda m: f"acoustic_encoder.block.{int(m[1]) - 1}.snake1."),
    (r"^encoder\.block\.(\d+)\.block\.4\.", lambda m: f"acoustic_encoder.block.{int(m[1]) - 1}.conv1."),
    (r"^decoder_2\.model\.0\.", "acoustic_decoder.conv1."),
    (r"^decoder_2\.model\.(\d+)\.block\.0\.", lambda m: f"acoustic_decoder.block.{int(m[1]) - 1}.snake1."),
    (r"^decoder_2\.model\.(\d+)\.block\.1\.", lambda m: f"acoustic_decoder.block.{int(m[1]) - 1}.conv_t1."),
    (r"^decoder_2\.model\.(\d+)\.block\.([2-4])\.block\.0\.", lambda m: _dec(m, "snake1")),
    (r"^decoder_2\.model\.(\d+)\.block\.([2-4])\.block\.1\.", lambda m: _dec(m, "conv1")),
    (r"^decoder_2\.model\.(\d+)\.block\.([2-4])\.block\.2\.", lambda m: _dec(m, "snake2")),
    (r"^decoder_2\.model\.(\d+)\.block\.([2-4])\.block\.3\.", lambda m: _dec(m, "conv2")),
    (r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.quantizers.\1.codebook."),
    (r"^quantizer\.vq\.layers\.(\d+)\.", r"quantizer.quantizers.\1."),
    (r"^fc_prior\.", "fc."),
    (r"^fc_post1\.", "fc1."),
    (r"^fc_post2\.", "fc2."),
    (r"^((?:en|de)coder_semantic\.(?:.*\.)?(?:conv|conv1|conv2))\.conv\.", r"\1."),
]
_DROPPED = {"semantic_model.masked_spec_embed"}


def _enc(m: re.Match, name: str) -> str:
    return f"acoustic_encoder.block.{int(m[1]) - 1}.res_unit{int(m[2]) + 1}.{name}."


def _dec(m: re.Match, name: str) -> str:
    return f"acoustic_decoder.block.{int(m[1]) - 1}.res_unit{int(m[2]) - 1}.{name}."


def _rename_original(key: str) -> str:
    for pattern, repl in _ORIGINAL_TO_TRANSFORMERS:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            return new
    return key


def _tail_keys(num_blocks: int) -> tuple[dict[str, str], dict[str, str]]:
    """Original -> transformers names of the DAC stacks' last Snake (whole keys) and last conv (prefixes),
    whose original index depends on the number of blocks."""
    tails = {
        f"encoder.block.{num_blocks + 1}.alpha": "acoustic_encoder.snake1.alpha",
        f"decoder_2.model.{num_blocks + 1}.alpha": "acoustic_decoder.snake1.alpha",
    }
    conv_tails = {f"encoder.block.{num_blocks + 2}.": "acoustic_encoder.conv2.",
                  f"decoder_2.model.{num_blocks + 2}.": "acoustic_decoder.conv2."}
    return tails, conv_tails


def original_to_transformers(state: dict[str, torch.Tensor], num_blocks: int = 5) -> dict[str, torch.Tensor]:
    """Rename an original-format state dict to transformers keys and fold weight norm."""
    tails, conv_tails = _tail_keys(num_blocks)
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _DROPPED:
            continue
        if key in tails:
            new = tails[key]
        else:
            prefix = next((p for p in conv_tails if key.startswith(p)), None)
            new = conv_tails[prefix] + key[len(prefix):] if prefix else _rename_original(key)
        if new.endswith(".weight_g") or new.endswith(".weight_v"):
            pending.setdefault(new[: -len("_g")], {})[new[-1]] = value
        else:
            out[new] = value
    for name, pair in pending.items():
        if set(pair) != {"g", "v"}:
            raise CheckpointError(f"original checkpoint has an incomplete weight-norm pair for {name}: {sorted(pair)}")
        out[name] = fold_weight_norm(pair["g"], pair["v"])
    return out


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||`` with the norm over every dim but 0, exactly as ``torch.nn.utils.weight_norm`` computes it."""
    return torch._weight_norm(v.float(), g.float(), 0)


def config_from_dict(data: dict, source: str) -> HiggsConfig:
    """A :class:`HiggsConfig` from a ``config.json`` in either published layout."""
    try:
        if is_original_dict(data):
            return HiggsConfig.from_original_dict(data)
        return HiggsConfig.from_transformers_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from e


def read_state_dict(folder: Path, config: HiggsConfig) -> dict[str, torch.Tensor]:
    """Weights of a folder as a transformers-keyed state dict (safetensors preferred when both exist)."""
    st, pth = folder / "model.safetensors", folder / "model.pth"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"cannot read {st}: {e}") from e
    if pth.is_file():
        state = read_pth(pth)
        if is_original_state(state):
            return original_to_transformers(state, num_blocks=len(config.downsampling_ratios))
        return state
    raise CheckpointError(f"{folder} has neither model.safetensors nor model.pth")


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """A ``model.pth`` state dict, read with ``torch.load(weights_only=True)``: tensors only, no code run."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a non-tensor pickle is refused by weights_only, which is the point
        raise CheckpointError(f"cannot read {path} as a tensor-only state dict: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def is_original_state(state: dict[str, torch.Tensor]) -> bool:
    """True for a state dict with the original (boson-multimodal) key names."""
    return any(k.endswith("weight_g") for k in state) or any(k.startswith("decoder_2.") for k in state)


def state_mismatch(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from matching the tensor shapes ``expected``: one text per kind (missing,
    unexpected, wrong shape), each listing up to 20 names; empty when it matches exactly."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k]
    )
    return [
        f"{len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        if items
    ]


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, *,
                      assign: bool = False) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error naming them.

    ``assign=True`` makes the checkpoint's tensors the model's (for a model built on the meta device: no
    second copy of the weights in memory)."""
    parts = state_mismatch({k: v.shape for k, v in model.state_dict().items()}, state)
    if parts:
        raise CheckpointError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=assign)
    if assign:
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise CheckpointError(f"checkpoint {source} left tensors unset: {', '.join(left[:20])}")


def save_transformers(model, folder: str | Path) -> Path:
    """Write ``model`` as ``config.json`` + ``model.safetensors`` (+ ``preprocessor_config.json``) that
    transformers' ``HiggsAudioV2TokenizerModel.from_pretrained`` loads."""
    return write_transformers(model.config, model.state_dict(), folder)


def write_transformers(config: HiggsConfig, state: dict[str, torch.Tensor], folder: str | Path) -> Path:
    """Write a transformers-keyed ``state`` of the model of ``config`` as :func:`save_transformers` does
    (``config.json``, ``preprocessor_config.json``, ``model.safetensors`` with every tensor as float32)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_transformers_dict(), indent=2) + "\n")
    preprocessor = {
        "feature_extractor_type": "DacFeatureExtractor",
        "feature_size": 1,
        "hop_length": config.hop_length,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "sampling_rate": config.sample_rate,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# ---- transformers -> original ------------------------------------------------------------------------
_UNIT_PARTS = ("snake1", "conv1", "snake2", "conv2")  # original ResidualUnit.block.{0..3}

# Inverse of _ORIGINAL_TO_TRANSFORMERS (pattern on transformers keys, replacement); first match wins.
_TRANSFORMERS_TO_ORIGINAL = [
    (r"^acoustic_encoder\.conv1\.", "encoder.block.0."),
    (r"^acoustic_encoder\.block\.(\d+)\.res_unit([1-3])\.(snake1|conv1|snake2|conv2)\.",
     lambda m: f"encoder.block.{int(m[1]) + 1}.block.{int(m[2]) - 1}.block.{_UNIT_PARTS.index(m[3])}."),
    (r"^acoustic_encoder\.block\.(\d+)\.snake1\.", lambda m: f"encoder.block.{int(m[1]) + 1}.block.3."),
    (r"^acoustic_encoder\.block\.(\d+)\.conv1\.", lambda m: f"encoder.block.{int(m[1]) + 1}.block.4."),
    (r"^acoustic_decoder\.conv1\.", "decoder_2.model.0."),
    (r"^acoustic_decoder\.block\.(\d+)\.snake1\.", lambda m: f"decoder_2.model.{int(m[1]) + 1}.block.0."),
    (r"^acoustic_decoder\.block\.(\d+)\.conv_t1\.", lambda m: f"decoder_2.model.{int(m[1]) + 1}.block.1."),
    (r"^acoustic_decoder\.block\.(\d+)\.res_unit([1-3])\.(snake1|conv1|snake2|conv2)\.",
     lambda m: f"decoder_2.model.{int(m[1]) + 1}.block.{int(m[2]) + 1}.block.{_UNIT_PARTS.index(m[3])}."),
    (r"^quantizer\.quantizers\.(\d+)\.codebook\.", r"quantizer.vq.layers.\1._codebook."),
    (r"^quantizer\.quantizers\.(\d+)\.", r"quantizer.vq.layers.\1."),
    (r"^fc\.", "fc_prior."),
    (r"^fc1\.", "fc_post1."),
    (r"^fc2\.", "fc_post2."),
    # The semantic residual units' second conv is a bare Conv1d in the original too: unchanged.
    (r"^((?:en|de)coder_semantic\..*res_units\.\d+\.conv2\.)", r"\1"),
    (r"^((?:en|de)coder_semantic\.(?:.*\.)?(?:conv|conv1|conv2))\.(?=(?:weight|bias)$)", r"\1.conv."),
]
MASKED_SPEC_EMBED = "semantic_model.masked_spec_embed"


def is_weight_normed(key: str) -> bool:
    """True for the transformers keys the original stores as a ``weight_g``/``weight_v`` pair: the weight of
    every conv (and transposed conv) of the DAC acoustic encoder and decoder; nothing else."""
    return key.startswith(("acoustic_encoder.", "acoustic_decoder.")) and key.endswith(".weight")


def unfold_weight_norm(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, v)`` with ``fold_weight_norm(g, v) == weight`` up to float rounding: ``v = weight`` and
    ``g = ||weight||`` over every dim but 0 (shape ``[C, 1, ..., 1]``, the shape ``torch.nn.utils.weight_norm``
    gives ``weight_g``). Dim 0 is the output channel of a Conv1d and the input channel of a ConvTranspose1d,
    as in the original. A row of zeros gets ``g = 0`` and ``v = 1`` so that folding gives 0, not NaN."""
    w = weight.detach().float()
    g = torch.norm_except_dim(w, 2, 0)
    v = torch.where(g == 0, torch.ones_like(w), w)
    return g.to(weight.dtype), v.to(weight.dtype)


def _rename_transformers(key: str) -> str:
    for pattern, repl in _TRANSFORMERS_TO_ORIGINAL:
        new, n = re.subn(pattern, repl, key, count=1)
        if n:
            return new
    return key


def transformers_to_original(
    state: dict[str, torch.Tensor], config: HiggsConfig, *, masked_spec_embed: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """A transformers-keyed state dict in the original (boson-multimodal) layout: the exact inverse of
    :func:`original_to_transformers`'s renaming, with every acoustic conv weight unfolded into a
    ``weight_g``/``weight_v`` pair (:func:`unfold_weight_norm`). Re-folding gives the weights back within float
    rounding (max abs difference ~1e-7 on O(1) weights), not bitwise: the original ``v`` are not recoverable
    and any positive rescaling of ``v`` is equivalent.

    ``semantic_model.masked_spec_embed`` (HuBERT's SpecAugment vector, ``[hidden]``), which the transformers
    format does not carry, is written only when given (e.g. taken from an original checkpoint); otherwise it
    is left out rather than made up: the original loader builds its teacher with ``from_pretrained`` and then
    loads ``model.pth`` with ``strict=False``, so a missing entry keeps the teacher's own value (the one the
    published checkpoint holds, the teacher being frozen), whereas zeros would overwrite it. The vector is
    only used by HuBERT's time masking in training mode, never at inference.
    """
    tails, conv_tails = (({v: k for k, v in m.items()}) for m in _tail_keys(len(config.downsampling_ratios)))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in tails:
            new = tails[key]
        else:
            prefix = next((p for p in conv_tails if key.startswith(p)), None)
            new = conv_tails[prefix] + key[len(prefix):] if prefix else _rename_transformers(key)
        if is_weight_normed(key):
            out[new + "_g"], out[new + "_v"] = unfold_weight_norm(value)
        else:
            out[new] = value
    if masked_spec_embed is not None:
        out[MASKED_SPEC_EMBED] = masked_spec_embed
    return out
