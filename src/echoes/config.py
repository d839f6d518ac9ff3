"""Typed experiment configuration: YAML files plus dotted ``KEY=VALUE`` overrides.

Shorthands: ``model=lstm`` sets ``model.name``, ``data=uea:BasicMotions`` sets
``data.source``, ``learner=ridge`` sets ``learner.name``, ``tracking=false`` sets
``tracking.enabled``. Model, learner and data sections accept the options of the
chosen builder (checked against its signature when it is built); ``train`` and
``tracking`` are fixed schemas.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import EchoesError, did_you_mean


def _shorthand(field: str):
    def convert(cls, value: Any) -> Any:  # noqa: ARG001
        if isinstance(value, str | bool):
            return {field: value}
        return value

    return model_validator(mode="before")(classmethod(convert))


class ModelConfig(BaseModel):
    """``name`` plus the builder's hyperparameters (e.g. ``hidden_size``)."""

    model_config = ConfigDict(extra="allow")
    name: str = "lstm"
    _short = _shorthand("name")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LearnerConfig(BaseModel):
    """``name`` (default: the model's own learner) plus the learner's options."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    _short = _shorthand("name")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(BaseModel):
    """``source`` as KIND:NAME, the split and scaling, plus source options."""

    model_config = ConfigDict(extra="allow")
    source: str = "synthetic:motion"
    # 0: train on the whole training split (learners that select by leave-one-out only, e.g. ridge)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    standardize: bool = True
    seed: int = 0  # generation and split seed: the same for every model and run seed
    _short = _shorthand("source")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


Auto = Literal["auto"]


class TrainConfig(BaseModel):
    """Settings shared by iterative learners (gradient, e-prop).

    ``auto`` values (the defaults) adapt to the training set's size when the fit starts
    (:meth:`resolved`); a number given by the user is used exactly as given.
    """

    model_config = ConfigDict(extra="forbid")
    # auto: enough epochs for `min_steps` optimizer steps, at least 30 and at most AUTO_MAX_EPOCHS
    epochs: Annotated[int, Field(ge=1)] | Auto = "auto"
    min_steps: int = Field(1000, ge=1)  # epochs=auto: optimizer steps a small training set still gets
    batch_size: Annotated[int, Field(ge=1)] | Auto = "auto"  # auto: about 1/8 of the training set, 8 to 64
    lr: Annotated[float, Field(gt=0)] | Auto = "auto"  # auto: the model's own (3e-3; the LSTM's 1e-3)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    restart_epochs: int | None = Field(None, ge=1)  # cosine: epochs between warm restarts; None: one decay to the end
    warmup_steps: Annotated[int, Field(ge=0)] | Auto = "auto"  # linear lr warm-up; auto: 5% of the planned steps
    clip_grad_norm: float | None = 1.0
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    head_weights: list[float] | None = None  # several label heads: the weight of each one's loss (None: 1 each)
    # early stopping on validation accuracy; None: off; auto: off on fewer than AUTO_MIN_VAL validation
    # series (a few of them would decide it), else a quarter of the planned epochs, at least 10
    patience: Annotated[int, Field(ge=1)] | Auto | None = "auto"
    amp: bool = True  # mixed precision, used only on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_batch_size: int = Field(256, ge=1)
    # epochs between resumable checkpoints; 0: none; auto: about AUTO_CHECKPOINTS a run (every epoch up to that many)
    checkpoint_every: Annotated[int, Field(ge=0)] | Auto = "auto"
    keep_checkpoints: int = Field(1, ge=1)  # how many of the latest checkpoints stay on disk
    nproc: int = Field(1, ge=1)  # data-parallel processes on this machine: >1 re-launches `echoes train` under torchrun

    def resolved(self, n_train: int, n_val: int, world_size: int = 1, model_lr: float = 3e-3) -> TrainConfig:
        """These settings with every ``auto`` replaced by its value for ``n_train`` training sequences
        split over ``world_size`` data-parallel processes and ``n_val`` validation sequences, and a model
        whose own learning rate is ``model_lr``."""
        per_rank = max(math.ceil(n_train / world_size), 1)
        batch = self.batch_size if self.batch_size != "auto" else min(max(round(per_rank / 8), 8), 64)
        steps_per_epoch = math.ceil(per_rank / batch)
        epochs = self.epochs if self.epochs != "auto" else min(
            max(math.ceil(self.min_steps / steps_per_epoch), AUTO_MIN_EPOCHS), AUTO_MAX_EPOCHS)
        patience = self.patience if self.patience != "auto" else None if n_val < AUTO_MIN_VAL else max(10, epochs // 4)
        warmup = self.warmup_steps if self.warmup_steps != "auto" else round(0.05 * epochs * steps_per_epoch)
        every = self.checkpoint_every if self.checkpoint_every != "auto" else max(1, epochs // AUTO_CHECKPOINTS)
        return self.model_copy(update={"epochs": epochs, "batch_size": batch, "patience": patience,
                                       "warmup_steps": warmup, "checkpoint_every": every,
                                       "lr": model_lr if self.lr == "auto" else self.lr})


AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 30, 300  # epochs=auto: large sets get 30 epochs, tiny ones at most 300
AUTO_CHECKPOINTS = 20  # checkpoint_every=auto: a checkpoint costs ~50 ms, a tiny set's epoch less
AUTO_MIN_VAL = 100  # patience=auto: validation series needed before early stopping may end a run


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite in results_dir
    experiment: str = "echoes"
    results_dir: str = "echoes-runs"
    log_weights: bool = True
    tensorboard: bool = False
    _short = _shorthand("enabled")


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    learner: LearnerConfig = LearnerConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    seed: int = 0
    name: str | None = None  # a label for this row in comparisons

    def flat(self) -> dict[str, Any]:
        """Dotted key → value, e.g. ``{'model.name': 'lstm', 'train.lr': 0.003}``."""
        return flatten(self.model_dump())


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "learner": LearnerConfig,
    "train": TrainConfig,
    "tracking": TrackingConfig,
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_value(text: str) -> Any:
    """YAML scalars: 50 → int, 1e-3 → float, true → bool, [1,2] → list."""
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # PyYAML reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = d
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str | bool):  # model: lstm → model: {name: lstm}
            section = SECTIONS.get(part)
            child = {_short_field(section): child} if section else {}
        node[part] = child if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value


def _short_field(section: type[BaseModel] | None) -> str:
    return {ModelConfig: "name", DataConfig: "source", LearnerConfig: "name", TrackingConfig: "enabled"}.get(
        section, "name"
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise EchoesError(f"override '{item}' must look like KEY=VALUE, e.g. train.epochs=50")
        key, text = item.split("=", 1)
        if not key:
            raise EchoesError(f"override '{item}' has an empty key — write KEY=VALUE, e.g. train.epochs=50")
        set_dotted(out, key.strip(), parse_value(text))
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), str | bool) and k in SECTIONS:
            out[k] = deep_merge({_short_field(SECTIONS[k]): out[k]}, v)
        elif isinstance(out.get(k), dict) and isinstance(v, str | bool) and k in SECTIONS:
            out[k] = deep_merge(out[k], {_short_field(SECTIONS[k]): v})
        else:
            out[k] = copy.deepcopy(v)
    return out


class DuplicateKeyError(yaml.constructor.ConstructorError):
    def __init__(self, key: Any, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"key '{key}' is given twice", mark)
        self.key = key


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise DuplicateKeyError(key, key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise EchoesError(f"config file '{path}' is a directory — give the YAML file inside it")
    if not p.is_file():
        raise EchoesError(f"config file '{path}' not found — check the path")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise EchoesError(f"config file '{path}' is not a text file (not UTF-8) — give a YAML file") from None
    except DuplicateKeyError as e:
        raise EchoesError(f"config file '{path}': {e.problem} (line {e.problem_mark.line + 1}) "
                          "— keep one of them") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EchoesError(f"config file '{path}' is not valid YAML{where} — fix its syntax") from None
    except OSError as e:
        raise EchoesError(f"config file '{path}' cannot be read ({e.strerror}) — check its permissions") from None
    if not isinstance(data, dict):
        raise EchoesError(f"config file '{path}' must hold a mapping of keys to values")
    return data


def build_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a nested dict; errors become one line naming the key."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise config_error(e) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> ExperimentConfig:
    raw = copy.deepcopy(base or {})
    if path:
        raw = deep_merge(raw, read_yaml(path))
    raw = deep_merge(raw, parse_overrides(overrides or []))
    return build_config(raw)


def config_error(e: ValidationError) -> EchoesError:
    err = e.errors()[0]
    loc = [str(p) for p in err["loc"] if not _union_member(str(p))]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        parent = _section_fields(loc[:-1])
        return EchoesError(f"unknown config key '{key}' — {did_you_mean(loc[-1], parent)}")
    value = err.get("input")
    auto = any(x["type"] == "literal_error" and "'auto'" in x["msg"] for x in e.errors()[1:])  # e.g. epochs
    return EchoesError(f"config key '{key}': {err['msg'].lower()}{' or auto' if auto else ''} (got {value!r})")


def _union_member(part: str) -> bool:
    """pydantic's names of a union's members in an error's location (``constrained-int``, ``literal['auto']``)."""
    return part.startswith(("function-", "constrained-", "literal[")) or part in ("int", "float", "str", "bool", "none")


def _section_fields(loc: list[str]) -> list[str]:
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return list(model.model_fields)


def read_config_file(kind: str, name: str, keys: Iterable[str]) -> tuple[Path, dict[str, Any]]:
    """A suite or sweep file (``kind`` "suites" or "sweeps") found by :func:`~echoes.utils.find_config`
    and read; a missing file or a top-level key not in ``keys`` is a one-line error."""
    from .utils import find_config, packaged_configs

    what = kind.removesuffix("s")
    path = find_config(kind, name)
    if not path.is_file():
        raise EchoesError(f"{what} '{name}' not found — give a YAML path or one of: "
                          + ", ".join(packaged_configs(kind)))
    raw = read_yaml(path)
    unknown_keys = sorted(set(raw) - set(keys))
    if unknown_keys:
        raise EchoesError(f"{what} {path}: unknown key '{unknown_keys[0]}' — {did_you_mean(unknown_keys[0], keys)}")
    return path, raw
