"""Training recipes: typed dataclasses read from YAML files that override a base, plus ``key=value`` overrides.

A recipe file may name a ``base`` (a shipped recipe such as ``wavtokenizer-75`` or a path, relative to the
file); the file's mapping is merged over the base's, recursively, and ``key.sub=value`` overrides from the
command line are applied last (values parsed as YAML: ``train.max_steps=100``, ``optim.betas=[0.8,0.9]``).
Unknown keys anywhere are errors that name the key and the file, so a typo never trains silently with a
default. The resolved recipe travels with every checkpoint (``recipe.json``)::

    recipe = load_recipe("my.yaml", ["train.max_steps=2000", "data.batch_size=8"])
    recipe.to_dict()   # the full, resolved recipe
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Recipe", "RecipeError", "load_recipe", "shipped_recipes", "apply_overrides"]


class RecipeError(ValueError):
    """A recipe that cannot be read: unknown key, wrong type, missing base, bad override."""


@dataclass
class ModelSection:
    #: codec family: "wavtokenizer" or "higgs"
    family: str = "wavtokenizer"
    #: a preset of the family (e.g. "wavtokenizer-75"); ``config`` entries override its fields
    preset: str | None = None
    config: dict = field(default_factory=dict)
    #: start from these weights (a model folder, .ckpt or hub id tokenwave loads); None = from scratch
    init_from: str | None = None
    #: submodules whose parameters stay frozen (e.g. ["semantic_model"])
    freeze: list = field(default_factory=list)


@dataclass
class DataSection:
    #: folder that relative source paths are resolved against (None: the current directory)
    root: str | None = None
    #: training sources: folders or manifest CSVs, or mappings ``{path, weight, split, categories}``
    train: list = field(default_factory=list)
    #: validation sources (default: none)
    valid: list = field(default_factory=list)
    #: samples per training crop at the model's rate
    num_samples: int = 72000
    batch_size: int = 8
    num_workers: int = 2
    #: "tile" (WavTokenizer) or "pad" for clips shorter than a crop
    short: str = "tile"
    #: loudness normalisation of each crop: "peak", "lufs" (needs pyloudnorm) or "none"
    loudness: str = "peak"
    #: peak normalisation to a random level in this dBFS range (train); validation uses its midpoint
    peak_db: list = field(default_factory=lambda: [-6.0, -1.0])
    #: loudness="lufs": random integrated loudness in this range (LUFS)
    lufs: list = field(default_factory=lambda: [-23.0, -23.0])
    #: stream files instead of indexing the whole corpus up front
    streaming: bool = False
    #: validation clips and the longest piece of each (seconds)
    valid_clips: int = 8
    valid_seconds: float = 10.0
    #: validation clips whose reconstructions are written as audio samples (wav + TensorBoard)
    valid_audio: int = 3


@dataclass
class QuantizerSection:
    decay: float = 0.99
    #: k-means initialisation: clusters (None = codebook size) and Lloyd iterations
    kmeans_clusters: int | None = None
    kmeans_iters: int = 50
    #: codes whose EMA count falls below this are replaced by batch vectors
    dead_threshold: float = 2.0
    #: RVQ only: number of active codebooks per step drawn from this list (None = all)
    num_quantizers_choices: list | None = None


@dataclass
class LossSection:
    """Loss weights; 0 turns a term off."""

    mel: float = 45.0
    #: "single" (WavTokenizer: n_fft 1024, hop 256, 100 mels) or "multiscale" (DAC)
    mel_kind: str = "single"
    stft: float = 0.0
    waveform: float = 0.0
    commitment: float = 1000.0
    adversarial: float = 1.0
    feature_matching: float = 1.0
    #: "hinge" or "least_squares"
    adversarial_kind: str = "hinge"
    semantic: float = 0.0


@dataclass
class OptimSection:
    lr: float = 2e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    #: gradient-norm clipping (None: off)
    grad_clip: float | None = None
    #: discriminator learning rate (None: same as lr)
    disc_lr: float | None = None


@dataclass
class ScheduleSection:
    #: "constant", "cosine" or "exponential"
    name: str = "cosine"
    warmup_steps: int = 0
    #: cosine: steps to reach 0 (None: train.max_steps); exponential: per-step decay factor ``gamma``
    total_steps: int | None = None
    gamma: float = 0.999996


@dataclass
class TrainSection:
    max_steps: int = 1000
    seed: int = 3407
    #: steps before the discriminators' adversarial terms enter the generator loss (they train from step 0)
    disc_warmup_steps: int = 0
    #: "no", "bf16" or "fp16"
    mixed_precision: str = "no"
    log_every: int = 50
    checkpoint_every: int = 1000
    valid_every: int = 1000
    #: step-tagged checkpoints kept besides latest and best (0: none)
    keep_steps: int = 0
    #: metric that selects ``best`` (lower is better)
    best_metric: str = "valid/mel_distance"
    #: "auto" (CUDA when there is one), "cpu", "cuda", "cuda:1" ...; under torchrun each process takes its
    #: LOCAL_RANK's CUDA device
    device: str = "auto"
    #: stop (saving ``latest``, after a last validation) once this much wall time has passed; None: no limit
    max_minutes: float | None = None


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    quantizer: QuantizerSection = field(default_factory=QuantizerSection)
    losses: LossSection = field(default_factory=LossSection)
    #: discriminators by name with their options, e.g. [{"name": "mpd"}, {"name": "mrd"}]
    discriminators: list = field(default_factory=list)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    #: free text: what this recipe is for
    description: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = "recipe") -> Recipe:
        return _build(cls, data, source, "")


# ---- loading ---------------------------------------------------------------------------------------------
def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with tokenwave (``tokenwave/training/recipes/*.yaml``)."""
    folder = resources.files("tokenwave.training") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe from a shipped name, a YAML path or a mapping, with ``key=value`` ``overrides`` applied."""
    data = _resolve(source, seen=())
    data = apply_overrides(data, overrides)
    return Recipe.from_dict(data, str(source) if not isinstance(source, dict) else "recipe")


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """``data`` with each ``dotted.key=value`` set (value parsed as YAML; ``key=`` sets None)."""
    import yaml

    data = json.loads(json.dumps(data))  # deep copy
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise RecipeError(f"override {item!r}: value is not valid YAML ({e})") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _resolve(source, seen: tuple) -> dict:
    if isinstance(source, dict):
        data, where = dict(source), None
    else:
        data, where = _read_yaml(source)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{where or 'recipe'}: base must be a recipe name or a path, got {base!r}")
    if where is not None and not base.endswith((".yaml", ".yml")):
        pass  # a shipped name
    elif where is not None:
        base = str((Path(where).parent / base).resolve())
    if base in seen:
        raise RecipeError(f"recipe bases form a cycle: {' -> '.join((*seen, base))}")
    return _merge(_resolve(base, (*seen, base)), data)


def _read_yaml(source) -> tuple[dict, str]:
    import yaml

    text_source = str(source)
    path = Path(text_source).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        text, where = path.read_text(), str(path)
    else:
        ref = resources.files("tokenwave.training") / "recipes" / f"{text_source}.yaml"
        if not ref.is_file():
            raise RecipeError(f"unknown recipe {text_source!r}: not a file, and not one of {shipped_recipes()}")
        text, where = ref.read_text(), f"recipe {text_source}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{where} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must hold a mapping, got {type(data).__name__}")
    return data, where


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "config":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _build(cls, data, source: str, path: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: {path or 'recipe'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" in {path}" if path else ""
        raise RecipeError(f"{source}: unknown key(s){where}: {', '.join(unknown)} (known: {', '.join(known)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, source, f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _coerce(hint, value, source: str, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, path)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is list or origin is list:
        if isinstance(value, list):
            return value
    elif hint is dict or origin is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise RecipeError(f"{source}: {path} must be {name}, got {value!r}")
