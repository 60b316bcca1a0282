"""Training configuration: the paper's defaults, overridable from a TOML/JSON file and flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from reference_model.errors import InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli is the same parser
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = ["TrainConfig", "load_config", "config_from_sources"]

ERR_CONFIG_SUFFIX = "config file {path}: use a .toml or .json file"
ERR_CONFIG_PARSE = "config file {path}: cannot parse it ({reason}); fix the syntax"
ERR_CONFIG_UNKNOWN = (
    "config file {path}: unknown option {key!r}; known options are: {known}"
)
ERR_CONFIG_TYPE = "config option {key!r}: expected {expected}, got {value!r}"


@dataclass
class TrainConfig:
    """Every knob of training, prediction and fine-tuning.

    Defaults are the paper's: smp U-Net with a densenet121 encoder, 512x512
    padded inputs, AdamW lr 1e-3, ExponentialLR, batch 8 with gradient
    accumulation 8, up to 200 epochs with early stopping on validation MRE
    (mm).
    """

    encoder: str = "densenet121"
    encoder_weights: str | None = None  # local state-dict file; nothing is downloaded
    encoder_depth: int = 5
    bn_momentum: float | None = None  # None keeps PyTorch's 0.1; short runs track weights better with more
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    image_size: int = 512
    batch_size: int = 8
    grad_accumulation: int = 8
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-2
    lr_gamma: float = 0.99  # ExponentialLR factor per epoch
    patience: int = 20  # epochs without validation-MRE improvement before stopping
    subpixel: bool = False
    augment: bool = True
    aug_rotation_deg: float = 5.0
    aug_scale: float = 0.05
    aug_translation: float = 0.03  # fraction of the image side
    aug_intensity: float = 0.1
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    bf16: bool = True  # autocast on cuda only
    channels_last: bool = True  # cuda only
    compile: bool = False
    num_workers: int = 0
    # GroupDRO fine-tuning (issue 7)
    dro_grouping: str = "keypoint_group"  # keypoint_group | group | keypoint
    dro_step_size: float = 0.01
    dro_adjustment: float = 0.0  # C in C / sqrt(n_g)
    dro_balanced_sampling: bool = False
    finetune_epochs: int = 20
    finetune_lr: float = 1e-4
    max_steps_per_epoch: int | None = None  # cap on optimizer steps, for quick runs

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied and checked."""
        return _checked(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }


def _checked(config: TrainConfig) -> TrainConfig:
    """Coerce and check the types of a config's fields; raise InputError."""
    for f in fields(config):
        value = getattr(config, f.name)
        default = getattr(TrainConfig(), f.name)
        if value is None or f.name in ("encoder_weights", "max_steps_per_epoch", "bn_momentum"):
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(ERR_CONFIG_TYPE.format(key=f.name, expected="true/false", value=value))
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(ERR_CONFIG_TYPE.format(key=f.name, expected="an integer", value=value))
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(ERR_CONFIG_TYPE.format(key=f.name, expected="a number", value=value))
            setattr(config, f.name, float(value))
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
                raise InputError(ERR_CONFIG_TYPE.format(key=f.name, expected="a list of integers", value=value))
            setattr(config, f.name, tuple(value))
        elif isinstance(default, str) and not isinstance(value, str):
            raise InputError(ERR_CONFIG_TYPE.format(key=f.name, expected="a string", value=value))
    if config.dro_grouping not in ("keypoint_group", "group", "keypoint"):
        raise InputError(
            ERR_CONFIG_TYPE.format(key="dro_grouping", expected="keypoint_group, group or keypoint",
                                   value=config.dro_grouping)
        )
    if len(config.decoder_channels) != config.encoder_depth:
        raise InputError(
            f"config: decoder_channels has {len(config.decoder_channels)} entries but encoder_depth "
            f"is {config.encoder_depth}; give one decoder width per encoder stage"
        )
    return config


def load_config(path: str | Path) -> dict:
    """Read a TOML or JSON config file into a dict of known options.

    A TOML file may put the options at top level or in a ``[train]`` table.
    """
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".json"):
        raise InputError(ERR_CONFIG_SUFFIX.format(path=path))
    if not path.is_file():
        raise InputError(f"config file {path}: not found; check the path")
    is_toml = path.suffix.lower() == ".toml"
    if is_toml and tomllib is None:
        raise InputError(f"config file {path}: TOML needs Python 3.11+ or `pip install tomli`; or use a .json file")
    toml_error = tomllib.TOMLDecodeError if tomllib is not None else ValueError
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if is_toml else json.loads(text)
    except (toml_error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(ERR_CONFIG_PARSE.format(path=path, reason=exc)) from None
    if isinstance(raw.get("train"), dict):
        raw = raw["train"]
    known = {f.name for f in fields(TrainConfig)}
    for key in raw:
        if key not in known:
            raise InputError(ERR_CONFIG_UNKNOWN.format(path=path, key=key, known=", ".join(sorted(known))))
    return raw


def config_from_sources(*, config_file: str | Path | None = None, overrides: dict | None = None,
                        base: TrainConfig | None = None) -> TrainConfig:
    """Defaults, then the config file, then the flags that were given (not None)."""
    values = dataclasses.asdict(base or TrainConfig())
    if config_file is not None:
        values.update(load_config(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _checked(TrainConfig(**values))
