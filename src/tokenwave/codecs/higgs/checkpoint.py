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


def original_to_transformers(state: dict[str, torch.Tensor], num_blocks: int = 5) -> dict[str, torch.Tensor]:
    """Rename an original-format state dict to transformers keys and fold weight norm."""
    tails = {
        f"encoder.block.{num_blocks + 1}.alpha": "acoustic_encoder.snake1.alpha",
        f"decoder_2.model.{num_blocks + 1}.alpha": "acoustic_decoder.snake1.alpha",
    }
    conv_tails = {f"encoder.block.{num_blocks + 2}.": "acoustic_encoder.conv2.",
                  f"decoder_2.model.{num_blocks + 2}.": "acoustic_decoder.conv2."}
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
        try:
            state = torch.load(str(pth), map_location="cpu", weights_only=True)
        except Exception as e:  # a non-tensor pickle is refused by weights_only, which is the point
            raise CheckpointError(f"cannot read {pth} as a tensor-only state dict: {e}") from e
        if not isinstance(state, dict):
            raise CheckpointError(f"{pth} does not hold a state dict")
        if any(k.endswith("weight_g") for k in state) or any(k.startswith("decoder_2.") for k in state):
            return original_to_transformers(state, num_blocks=len(config.downsampling_ratios))
        return state
    raise CheckpointError(f"{folder} has neither model.safetensors nor model.pth")


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error naming them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def save_transformers(model, folder: str | Path) -> Path:
    """Write ``model`` as ``config.json`` + ``model.safetensors`` (+ ``preprocessor_config.json``) that
    transformers' ``HiggsAudioV2TokenizerModel.from_pretrained`` loads."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
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
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
