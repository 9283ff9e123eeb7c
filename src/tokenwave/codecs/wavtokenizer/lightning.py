"""Reading the published WavTokenizer checkpoints: PyTorch-Lightning ``.ckpt`` files and LightningCLI yamls.

A published ``.ckpt`` (spec section 4.2) is a pickled dict whose ``state_dict`` holds the whole training
module, 1091 tensors for either frame rate. Only 289 of them are the inference model; this module maps
those to our names and drops the rest (the unused SEANet decoder, the discriminators, the mel loss)::

    feature_extractor.encodec.encoder.model.i[...].conv.conv.{weight_g,weight_v,bias}
                                                 -> encoder.model.i[...].conv.{weight,bias}   (weight norm folded)
    feature_extractor.encodec.encoder.model.13.lstm.*  -> encoder.model.13.lstm.*
    feature_extractor.encodec.quantizer.vq.layers.0._codebook.*  -> quantizer.codebook.*
    backbone.*, head.*                                 -> unchanged
    feature_extractor.encodec.decoder.*, multiperioddisc.*, multiresddisc.*, dac.*,
    dacdiscriminator.*, melspec_loss.*, anything else  -> dropped (counts logged at debug level)

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a pickle that
names any other object is refused and nothing in it is run. The architecture is not in the ``.ckpt``
(``hyper_parameters`` holds only training scalars); it comes from the yaml the model was trained with
(:func:`config_from_yaml`), from a preset, or from the tensor shapes (:func:`infer_config`).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import NoReturn

import torch

from ...api import CheckpointError
from ...nn.seanet import fold_encodec_state_dict
from ..higgs.checkpoint import load_state_strict
from .config import PRESETS, WavTokenizerConfig

logger = logging.getLogger("tokenwave.codecs.wavtokenizer")

_ENCODER = "feature_extractor.encodec.encoder."
_QUANTIZER = "feature_extractor.encodec.quantizer."
_CODEBOOK = _QUANTIZER + "vq.layers.0._codebook."
_VQ_LAYER = re.compile(re.escape(_QUANTIZER) + r"vq\.layers\.(\d+)\.")
_INFERENCE_PREFIXES = ("feature_extractor.", "backbone.", "head.")

# The encoder of EncodecFeatures is built with these, whatever the yaml says (spec 2.2).
_ENCODER_FIXED = dict(encoder_filters=32, latent_dim=512, encoder_lstm_layers=2)

__all__ = ["config_from_yaml", "infer_config", "lightning_to_tokenwave", "load_lightning",
           "read_lightning_checkpoint"]


# ---- yaml ----------------------------------------------------------------------------------------------
def config_from_yaml(path_or_text: str | os.PathLike) -> WavTokenizerConfig:
    """The :class:`WavTokenizerConfig` of a WavTokenizer LightningCLI yaml (a path, or the yaml text itself).

    Reads ``model.init_args.{feature_extractor, backbone, head}.init_args`` (and ``model.init_args.sample_rate``
    when present). ``dowmsamples`` are listed in decoder order; the encoder applies them reversed, which is
    our ``strides``. The encoder's width (32 filters, latent 512, 2 LSTM layers) is fixed by the repository
    code, not the yaml. Numbers may be strings: PyYAML reads ``2e-4`` as one (YAML 1.1 needs a dot and a
    signed exponent for a float, spec 8.7).

    Raises:
        CheckpointError: unreadable yaml, a missing section or field, or inconsistent values; the message
            names the file and the field.
    """
    import yaml

    text, source = _yaml_source(path_or_text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CheckpointError(f"{source} is not valid yaml: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{source} is not a LightningCLI config: its top level is not a mapping")
    read = _YamlReader(source)
    model = read.mapping(read.mapping(data, "model"), "init_args", "model")
    fe = read.component(model, "feature_extractor", "EncodecFeatures")
    bb = read.component(model, "backbone", "VocosBackbone")
    hd = read.component(model, "head", "ISTFTHead")
    where_fe = "model.init_args.feature_extractor.init_args"
    where_bb = "model.init_args.backbone.init_args"
    where_hd = "model.init_args.head.init_args"

    num_quantizers = read.integer(fe, "num_quantizers", where_fe)
    if num_quantizers != 1:
        read.fail(f"{where_fe}.num_quantizers", f"is {num_quantizers}; WavTokenizer has exactly one codebook")
    dowmsamples = read.int_list(fe, "dowmsamples", where_fe)
    bandwidths = read.float_list(fe, "bandwidths", where_fe)
    codebook_size = read.integer(fe, "vq_bins", where_fe)

    input_channels = read.integer(bb, "input_channels", where_bb)
    if input_channels != _ENCODER_FIXED["latent_dim"]:
        read.fail(f"{where_bb}.input_channels",
                  f"is {input_channels}; the EncodecFeatures latent is {_ENCODER_FIXED['latent_dim']}")
    dim = read.integer(bb, "dim", where_bb)
    adanorm = read.integer(bb, "adanorm_num_embeddings", where_bb, default=0)
    if adanorm and adanorm != len(bandwidths):
        read.fail(f"{where_bb}.adanorm_num_embeddings",
                  f"is {adanorm} but {where_fe}.bandwidths has {len(bandwidths)} entries (one row per bandwidth)")

    head_dim = read.integer(hd, "dim", where_hd)
    if head_dim != dim:
        read.fail(f"{where_hd}.dim", f"is {head_dim} but {where_bb}.dim is {dim}")
    hop_length = read.integer(hd, "hop_length", where_hd)
    if hop_length != math.prod(dowmsamples):
        read.fail(f"{where_hd}.hop_length",
                  f"is {hop_length} but {where_fe}.dowmsamples {dowmsamples} multiply to {math.prod(dowmsamples)}")
    padding = hd.get("padding", "same")
    if padding != "same":
        read.fail(f"{where_hd}.padding", f"is {padding!r}; WavTokenizer's head uses 'same'")

    fields = dict(
        strides=tuple(reversed(dowmsamples)), codebook_size=codebook_size, backbone_dim=dim,
        backbone_intermediate_dim=read.integer(bb, "intermediate_dim", where_bb),
        backbone_layers=read.integer(bb, "num_layers", where_bb), adanorm_num_embeddings=adanorm,
        n_fft=read.integer(hd, "n_fft", where_hd), pos_net=True, **_ENCODER_FIXED,
    )
    if "sample_rate" in model:
        fields["sample_rate"] = read.integer(model, "sample_rate", "model.init_args")
    try:
        return WavTokenizerConfig(**fields)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e


def _yaml_source(path_or_text: str | os.PathLike) -> tuple[str, str]:
    """(text, name for messages): a path-like or a one-line string is a file; other strings are yaml text."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return path_or_text, "<yaml text>"
    path = Path(path_or_text)
    try:
        return path.read_text(), str(path)
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read the WavTokenizer yaml {path}: {e}") from e


class _YamlReader:
    """Typed field access on a parsed yaml; every error names the file and the dotted field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, problem: str) -> NoReturn:
        raise CheckpointError(f"{self.source}: {field} {problem}")

    def mapping(self, section: dict, name: str, where: str = "") -> dict:
        field = f"{where}.{name}" if where else name
        if name not in section:
            self.fail(field, "is missing")
        if not isinstance(section[name], dict):
            self.fail(field, f"must be a mapping, got {type(section[name]).__name__}")
        return section[name]

    def component(self, model: dict, name: str, class_name: str) -> dict:
        """``init_args`` of ``model.init_args.<name>`` after checking its ``class_path`` ends in ``class_name``."""
        where = f"model.init_args.{name}"
        section = self.mapping(model, name, "model.init_args")
        class_path = section.get("class_path")
        if not isinstance(class_path, str) or class_path.rsplit(".", 1)[-1] != class_name:
            self.fail(f"{where}.class_path", f"is {class_path!r}; expected a class named {class_name}")
        return self.mapping(section, "init_args", where)

    def _value(self, section: dict, name: str, where: str, default):
        if name not in section or section[name] is None:
            if default is None:
                self.fail(f"{where}.{name}", "is missing")
            return default
        return section[name]

    def _number(self, value, field: str, kind: type):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(field, f"must be a number, got {value!r}")
        if isinstance(value, int):
            return value if kind is int else float(value)
        try:
            number = float(value)  # also reads YAML 1.1 strings such as "2e-4"
        except ValueError:
            self.fail(field, f"must be a number, got {value!r}")
        if kind is int:
            if not number.is_integer():
                self.fail(field, f"must be an integer, got {value!r}")
            return int(number)
        return number

    def integer(self, section: dict, name: str, where: str, default: int | None = None) -> int:
        return self._number(self._value(section, name, where, default), f"{where}.{name}", int)

    def _list(self, section: dict, name: str, where: str, kind: type) -> list:
        value = self._value(section, name, where, None)
        field = f"{where}.{name}"
        if not isinstance(value, list) or not value:
            self.fail(field, f"must be a non-empty list, got {value!r}")
        return [self._number(v, f"{field}[{i}]", kind) for i, v in enumerate(value)]

    def int_list(self, section: dict, name: str, where: str) -> list[int]:
        values = self._list(section, name, where, int)
        if any(v < 1 for v in values):
            self.fail(f"{where}.{name}", f"must be positive, got {values}")
        return values

    def float_list(self, section: dict, name: str, where: str) -> list[float]:
        return self._list(section, name, where, float)


# ---- checkpoint ---------------------------------------------------------------------------------------
def read_lightning_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The inference weights of a WavTokenizer ``.ckpt`` in our names, and the checkpoint keys left out.

    Uses ``torch.load(weights_only=True)`` (memory-mapped for zip-format files, so that the discriminators and
    optimizer state are never read into memory).

    Accepts a Lightning checkpoint (a dict with ``state_dict``) or a bare state dict of the repository's
    inference module (keys ``feature_extractor.*``, ``backbone.*``, ``head.*``). See the module docstring
    for the mapping.

    Raises:
        CheckpointError: no such file, not a torch file, a pickle that needs more than ``weights_only``
            loading (never executed), no WavTokenizer state dict, or more than one quantizer layer.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no WavTokenizer checkpoint file {path}")
    try:
        # mmap: only the kept tensors are read (a published file is ~1.75 GB, mostly optimizer state);
        # the legacy non-zip format cannot be mapped
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            raise CheckpointError(f"{path} is not a readable torch checkpoint "
                                  f"({detail[1].strip() if detail else str(e).splitlines()[0]})") from e
        raise CheckpointError(
            f"{path} needs more than torch.load(weights_only=True): it pickles {found[1]}, not only tensors and "
            f"plain containers, and tokenwave never executes untrusted pickles. If you trust the file, load it "
            f"yourself and re-save its 'state_dict' alone."
        ) from e
    except Exception as e:  # torch raises RuntimeError/EOFError/... for files that are not torch archives
        raise CheckpointError(f"cannot read {path} as a torch checkpoint: {e}") from e
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        state = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and any(isinstance(k, str) and k.startswith(_INFERENCE_PREFIXES) for k in ckpt):
        state = ckpt
    else:
        raise CheckpointError(f"{path} holds neither a Lightning checkpoint (no 'state_dict') nor a WavTokenizer "
                              "state dict (no feature_extractor./backbone./head. keys)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {bad[:10]}")
    ours, dropped = lightning_to_tokenwave(state, source=str(path))
    return {k: v.clone() for k, v in ours.items()}, dropped  # copies: nothing stays mapped to the file


def lightning_to_tokenwave(state: dict[str, torch.Tensor], source: str = "state dict"
                           ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a published (training or inference) state dict to our names; returns ``(state, dropped keys)``.

    Works on meta tensors too (nothing is read but shapes when folding weight norm).
    """
    encoder: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key.startswith(_ENCODER):
            encoder[key[len(_ENCODER):]] = value
        elif key.startswith(_CODEBOOK):
            out["quantizer.codebook." + key[len(_CODEBOOK):]] = value
        elif key.startswith(_QUANTIZER):
            layer = _VQ_LAYER.match(key)
            if layer and layer[1] != "0":
                raise CheckpointError(f"{source} has more than one quantizer layer ({key}); WavTokenizer has "
                                      "exactly one codebook (num_quantizers: 1)")
            raise CheckpointError(f"{source}: unsupported quantizer entry {key} (expected only {_CODEBOOK}*)")
        elif key.startswith(("backbone.", "head.")):
            out[key] = value
        else:
            dropped.append(key)
    try:
        folded = fold_encodec_state_dict(encoder)
    except KeyError as e:
        raise CheckpointError(f"{source}: encoder {e.args[0]}") from e
    out.update({"encoder." + k: v for k, v in folded.items()})
    if dropped:
        counts = Counter(_group(k) for k in dropped)
        logger.debug("%s: dropped %d entries not used for inference: %s", source, len(dropped),
                     ", ".join(f"{prefix}.* {n}" for prefix, n in counts.items()))
    return out, dropped


def _group(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:3] if parts[0] == "feature_extractor" else parts[:1])


# ---- config from shapes -------------------------------------------------------------------------------
_DOWN_CONV = re.compile(r"^encoder\.model\.(\d+)\.conv\.weight$")
_LSTM_LAYER = re.compile(r"^encoder\.model\.\d+\.lstm\.weight_ih_l(\d+)$")
_CONVNEXT = re.compile(r"^backbone\.convnext\.(\d+)\.")


def infer_config(state: dict[str, torch.Tensor], source: str = "state dict") -> WavTokenizerConfig:
    """The configuration implied by the tensor shapes of a state dict in our names (meta tensors suffice).

    ``head.out.weight`` has ``n_fft + 2`` rows; the encoder's top-level convs are the input conv, one
    down-sampling conv per stride (kernel ``2 * stride``) and the output conv, in the order applied; the
    codebook gives ``codebook_size x latent_dim``; the backbone gives its widths, block count and adaptive
    LayerNorm rows. ``sample_rate`` and ``bandwidth_id`` are not in the weights: defaults (24 kHz, row 0).
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"{source}: cannot infer the WavTokenizer geometry without {key}")
        return tuple(state[key].shape)

    convs = sorted((int(m[1]), shape(k)) for k in state if (m := _DOWN_CONV.match(k)))
    if len(convs) < 3:
        raise CheckpointError(f"{source}: found {len(convs)} top-level encoder convs, expected input, "
                              "down-sampling and output convs")
    strides = []
    for index, (c_out, c_in, kernel) in convs[1:-1]:
        if kernel % 2 or c_out != 2 * c_in:
            raise CheckpointError(f"{source}: encoder.model.{index}.conv.weight {(c_out, c_in, kernel)} is not a "
                                  "SEANet down-sampling conv (C -> 2C, kernel 2 x stride)")
        strides.append(kernel // 2)
    codebook_size, latent_dim = shape("quantizer.codebook.embed")
    head_rows, head_dim = shape("head.out.weight")
    adanorm = shape("backbone.norm.scale.weight")[0] if "backbone.norm.scale.weight" in state else 0
    try:
        return WavTokenizerConfig(
            strides=tuple(strides), encoder_filters=convs[0][1][0], latent_dim=latent_dim,
            encoder_lstm_layers=len({m[1] for k in state if (m := _LSTM_LAYER.match(k))}),
            codebook_size=codebook_size, backbone_dim=head_dim,
            backbone_intermediate_dim=shape("backbone.convnext.0.pwconv1.weight")[0],
            backbone_layers=len({m[1] for k in state if (m := _CONVNEXT.match(k))}),
            adanorm_num_embeddings=adanorm, pos_net=any(k.startswith("backbone.pos_net.") for k in state),
            n_fft=head_rows - 2,
        )
    except ValueError as e:
        raise CheckpointError(f"{source}: the tensor shapes give no valid WavTokenizer geometry: {e}") from e


# ---- loading ------------------------------------------------------------------------------------------
def load_lightning(ckpt_path: str | os.PathLike, config: str | os.PathLike | WavTokenizerConfig | None = None,
                   *, batching: str = "auto"):
    """A :class:`WavTokenizer` (eval mode, CPU) from a published ``.ckpt``.

    Args:
        ckpt_path: the Lightning checkpoint (or a bare state dict of the repository's inference module).
        config: a yaml path (:func:`config_from_yaml`), a preset name (``"wavtokenizer-75"``), a
            :class:`WavTokenizerConfig`, or ``None`` to use :func:`infer_config`. A yaml lying next to the
            checkpoint is *not* picked up implicitly: explicit beats guessing. A given config must agree with
            what the tensor shapes imply; a mismatch is an error naming both.
        batching: passed to :class:`WavTokenizer`.

    Raises:
        CheckpointError: see :func:`read_lightning_checkpoint`; a config that disagrees with the weights;
            missing, unexpected or mis-shaped tensors (all listed).
    """
    from .model import WavTokenizer

    ckpt_path = Path(ckpt_path)
    state, _ = read_lightning_checkpoint(ckpt_path)
    inferred = infer_config(state, source=str(ckpt_path))
    if config is None:
        chosen = inferred
    else:
        chosen, what = _resolve_config(config)
        _check_agrees(chosen, what, inferred, ckpt_path)
    with torch.device("meta"):
        model = WavTokenizer(chosen, batching=batching)
    load_state_strict(model, state, str(ckpt_path), assign=True)
    return model.eval()


def _resolve_config(config) -> tuple[WavTokenizerConfig, str]:
    if isinstance(config, WavTokenizerConfig):
        return config, "the given config"
    if isinstance(config, str) and config in PRESETS:
        return PRESETS[config], f"preset {config!r}"
    if isinstance(config, (str, os.PathLike)):
        return config_from_yaml(Path(config)), str(config)
    raise TypeError(f"config must be a yaml path, a preset name, a WavTokenizerConfig or None, got {type(config)}")


def _check_agrees(config: WavTokenizerConfig, what: str, inferred: WavTokenizerConfig, ckpt_path: Path) -> None:
    """``config`` and the geometry the weights imply agree on every field the weights determine."""
    inferred = inferred.replace(sample_rate=config.sample_rate, bandwidth_id=config.bandwidth_id)
    if inferred == config:
        return
    given, implied = config.to_dict(), inferred.to_dict()
    diffs = ", ".join(f"{k}: {given[k]} vs {implied[k]}" for k in given if given[k] != implied[k])
    raise CheckpointError(f"{what} does not match the checkpoint {ckpt_path} (config vs weights: {diffs})")
