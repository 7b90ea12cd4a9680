"""Structured-config schemas of the search app: Hydra validates every YAML against them at start-up,
so a typo in a key fails before any work. Values are then checked (``validate``) before training."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from experiments.tracking import WandbConfig
from nas.models.space import SearchSpace
from nas.search.loop import SearchConfig
from nas.train.finetune import TrainConfig

BUDGET_METRICS = {"latency": "latency_s", "energy": "energy_j", "weight_bytes": "weight_bytes"}
BASELINES = ("none", "uniform", "random")


@dataclasses.dataclass
class DatasetConfig:
  name: str = "digits"                  # digits (bundled) | fashion_mnist | cifar10 | mnist (local folders)
  root: Optional[str] = None            # folder of a local dataset
  test_fraction: float = 0.3            # digits: held-out share
  split_seed: int = 0                   # digits: the split is fixed across a sweep
  limit: Optional[int] = None           # keep only this many train/test images
  augment: bool = False                 # random crop (pad 4) + horizontal flip on the device (CIFAR)


@dataclasses.dataclass
class ModelConfig:
  name: str = "digits_cnn"
  args: dict[str, Any] = dataclasses.field(default_factory=dict)  # keyword arguments of the model class


def schema_fields(cls, exclude=()) -> list[tuple[str, Any, dataclasses.Field]]:
  """The fields of a library dataclass (``SearchSpace``, ``SearchConfig``, ``TrainConfig``) as fields of a
  structured-config schema: the same names and defaults, tuples as lists and ``X | None`` as ``Optional[X]``
  (the types OmegaConf knows). The library's dataclass is the one place a field is written."""
  hints = typing.get_type_hints(cls)
  out = []
  for f in dataclasses.fields(cls):
    if f.name in exclude:
      continue
    t = hints[f.name]
    args = typing.get_args(t)
    if typing.get_origin(t) is tuple:
      t, default = list[args[0]], dataclasses.field(default_factory=lambda d=f.default: list(d))
    elif typing.get_origin(t) in (typing.Union, types.UnionType) and type(None) in args:
      t, default = Optional[next(a for a in args if a is not type(None))], dataclasses.field(default=f.default)
    else:
      default = dataclasses.field(default=f.default)
    out.append((f.name, t, default))
  return out


# App-only search settings. One supernet for every budget: its weights train once per (data, model, space,
# seed) on uniformly sampled sub-networks (shared_steps, shared by every job of a sweep through
# checkpoint.dir), then each budget's search trains only the architecture on the frozen weights (arch_steps,
# at shared_arch_lr and with shared_entropy_weight); steps / warmup_steps are then unused.
SHARED_FIELDS = [("shared", bool, dataclasses.field(default=False)),
                 ("shared_steps", int, dataclasses.field(default=1200)),
                 ("arch_steps", int, dataclasses.field(default=100)),
                 ("shared_arch_lr", float, dataclasses.field(default=1.0)),
                 ("shared_entropy_weight", float, dataclasses.field(default=3.0))]
# Set by the app, not by the search group: the dataset's augmentation, the job's seed, a shared search's mode.
APP_SET = ("augment", "seed", "frozen_weights", "quantize")

# The search group: the search space (nas.models.space.SearchSpace) and the recipe (nas.search.SearchConfig).
SearchGroupConfig = dataclasses.make_dataclass(
    "SearchGroupConfig", schema_fields(SearchSpace, APP_SET) + schema_fields(SearchConfig, APP_SET) + SHARED_FIELDS)


@dataclasses.dataclass
class ExtraConstraint:
  """A further bound: ``fraction`` of the reference network's cost, or an absolute ``limit`` in the metric's
  unit (seconds, joules, bytes: e.g. a core's memory, ``{metric: weight_bytes, limit: 524288}``); one of the two."""
  metric: str = MISSING
  fraction: Optional[float] = None
  limit: Optional[float] = None


@dataclasses.dataclass
class BudgetConfig:
  metric: str = "latency"               # latency | energy | weight_bytes, on the searched target
  # The budget, one of two ways (neither set: room 0.5). fraction: of the reference network's cost (every
  # layer W8A8 at base width). room: where it lies between the cheapest network of the search space on the
  # target (0) and the reference (1), so one value means the same on every target.
  fraction: Optional[float] = None
  room: Optional[float] = None
  extra: list[ExtraConstraint] = dataclasses.field(default_factory=list)  # more bounds, each its own multiplier


# The fine-tuning group: the recipe (nas.train.TrainConfig) and the app's own settings.
FinetuneConfig = dataclasses.make_dataclass("FinetuneConfig", schema_fields(TrainConfig, APP_SET) + [
    ("inherit", bool, dataclasses.field(default=True)),           # start from the supernet's weights (searched)
    ("teacher_steps", int, dataclasses.field(default=1000)),      # steps of the float teacher, if one is trained
    ("teacher_lr", Optional[float], dataclasses.field(default=None)),  # None: finetune.lr
])


def recipe(cls, group, **app_set):
  """``cls`` (SearchSpace, SearchConfig, TrainConfig) from the config group's fields of the same names."""
  names = {f.name for f in dataclasses.fields(cls)}
  values = {k: (tuple(v) if isinstance(v, (list, tuple)) or OmegaConf.is_list(v) else v)
            for k, v in group.items() if k in names}
  return cls(**{**values, **app_set})


@dataclasses.dataclass
class BaselineConfig:
  kind: str = "none"                    # none (search) | uniform | random
  w_bits: int = 8                       # uniform: weight bits of every searchable layer
  a_bits: int = 8                       # uniform: activation bits
  width_mult: float = 1.0               # uniform: width multiple of every layer (and of the heads)
  nm: Optional[str] = None              # uniform: N:M weight sparsity of every sparse-capable layer, e.g. "2:4"
  arch_seed: Optional[int] = None       # random: the draw of the architecture (None: seed), apart from training
  steps: Optional[int] = None           # training steps from scratch; None: search.steps + finetune.steps


@dataclasses.dataclass
class CheckpointConfig:
  dir: Optional[str] = "checkpoints"    # root; each job's folder is named by a hash of its config. None: off
  every: int = 200                      # save every this many steps


@dataclasses.dataclass
class AppConfig:
  dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  hardware: Any = None                  # a cost model: _target_ plus its constants (conf/hardware/*.yaml)
  search: SearchGroupConfig = dataclasses.field(default_factory=SearchGroupConfig)
  budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
  finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
  baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
  wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  seed: int = 0
  debug: bool = False                   # a smoke test: 30 search, 20 training steps, 256 images (~1 CPU-minute)
  # JAX's persistent compilation cache: the jobs of a sweep compile the same steps, and each one after the
  # first loads them (a digits job: about half its CPU time). null: off. JAX_COMPILATION_CACHE_DIR wins.
  compile_cache: Optional[str] = "~/.cache/hwnas/jax"
  # What the job returns to a sweeper (Optuna): e.g. [accuracy, latency_s]; costs are on the searched target.
  objectives: list[str] = dataclasses.field(default_factory=list)


_SCHEMAS = {cls.__name__: cls for cls in (DatasetConfig, ModelConfig, SearchGroupConfig, BudgetConfig,
                                          FinetuneConfig, BaselineConfig, CheckpointConfig, WandbConfig)}


def register() -> None:
  cs = ConfigStore.instance()
  cs.store(name="app_schema", node=AppConfig)


# Numbers that must be > 0 (rates, temperatures, sizes) or >= 0 (decays, weights of loss terms), by field.
POSITIVE = ("search.lr", "search.arch_lr", "search.tau_start", "search.tau_end", "search.batch_size",
            "search.steps", "finetune.lr", "finetune.steps", "finetune.batch_size", "finetune.kd_temperature",
            "finetune.teacher_steps", "finetune.teacher_lr", "baseline.steps", "checkpoint.every",
            "dataset.limit", "search.channel_multiple", "search.shared_steps", "search.arch_steps",
            "search.shared_arch_lr", "search.shared_entropy_weight")
NON_NEGATIVE = ("search.weight_decay", "search.dual_lr", "search.penalty_strength", "search.target_rho",
                "search.entropy_weight", "search.warmup_steps", "finetune.weight_decay")
# Config nodes whose keys are free (a cost model's constants, a model's keyword arguments, wandb tags).
FREE_NODES = ("hardware", "model.args")


def unknown_keys(cfg, schema=AppConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
  """Keys of ``cfg`` that the schema does not have (added with Hydra's ``+``, e.g. a misspelt
  ``+budget.fracton=0.5``), each with the keys it could have meant; free nodes are not checked."""
  known = {f.name: f for f in dataclasses.fields(schema)}
  out = []
  for key in cfg.keys():
    path = f"{prefix}{key}"
    if path in FREE_NODES:
      continue
    if key not in known:
      out.append((path, [f"{prefix}{k}" for k in difflib.get_close_matches(str(key), known, n=2, cutoff=0.5)]))
      continue
    sub_type = known[key].type
    sub_schema = _SCHEMAS.get(sub_type if isinstance(sub_type, str) else getattr(sub_type, "__name__", ""))
    node = cfg[key]
    if sub_schema is not None and isinstance(node, DictConfig):
      out += unknown_keys(node, sub_schema, f"{path}.")
  return out


def validate(cfg) -> None:
  """Value checks Hydra's types cannot express; each error names the field and the fix."""
  unknown = unknown_keys(cfg)
  if unknown:
    key, close = unknown[0]
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see conf/config.yaml for the known keys."
    raise ValueError(f"{key} is not a setting of this app (added with '+', it would be ignored){hint}")
  for field in POSITIVE + NON_NEGATIVE:
    value = OmegaConf.select(cfg, field)
    if value is None:
      continue
    if field in POSITIVE and not value > 0:
      raise ValueError(f"{field}={value} must be > 0.")
    if field in NON_NEGATIVE and not value >= 0:
      raise ValueError(f"{field}={value} must be >= 0.")
  for field, use in (("seed", "the weights, the batches and the search"),
                     ("baseline.arch_seed", "a random baseline's architecture"),
                     ("dataset.split_seed", "the digits train/test split")):
    value = OmegaConf.select(cfg, field)
    if value is not None and not value >= 0:
      raise ValueError(f"{field}={value} must be a non-negative integer (it seeds {use}), e.g. {field}=0.")
  if cfg.budget.metric not in BUDGET_METRICS:
    raise ValueError(f"budget.metric={cfg.budget.metric!r} is unknown; use one of {sorted(BUDGET_METRICS)}.")
  if cfg.budget.fraction is not None and cfg.budget.room is not None:
    raise ValueError(f"budget.fraction={cfg.budget.fraction} and budget.room={cfg.budget.room} are both set; "
                     f"set one of them (a fraction of the reference, or a place between the cheapest network and "
                     f"the reference).")
  if cfg.budget.fraction is not None and not cfg.budget.fraction > 0:
    raise ValueError(f"budget.fraction={cfg.budget.fraction} must be > 0: it is a fraction of the reference "
                     f"network's {cfg.budget.metric} (all layers W8A8 at base width), e.g. 0.5.")
  if cfg.budget.room is not None and not 0.0 <= cfg.budget.room <= 1.0:
    raise ValueError(f"budget.room={cfg.budget.room} must be in [0, 1]: 0 is the cheapest network of the search "
                     f"space on the target, 1 the reference network (every layer W8A8 at base width).")
  for i, extra in enumerate(cfg.budget.extra):
    if extra.metric not in BUDGET_METRICS:
      raise ValueError(f"budget.extra[{i}].metric={extra.metric!r} is unknown; use one of {sorted(BUDGET_METRICS)}.")
    if (extra.fraction is None) == (extra.limit is None):
      raise ValueError(f"budget.extra[{i}] needs exactly one of fraction (of the reference's cost) and limit (in the "
                       f"metric's unit), e.g. {{metric: weight_bytes, limit: 524288}}.")
    field, value = ("fraction", extra.fraction) if extra.fraction is not None else ("limit", extra.limit)
    if not value > 0:
      raise ValueError(f"budget.extra[{i}].{field}={value} must be > 0.")
  for name in cfg.objectives:
    if name not in ("accuracy", "latency_s", "energy_j", "weight_bytes"):
      raise ValueError(f"objectives holds {name!r}; use accuracy, latency_s, energy_j or weight_bytes.")
  if cfg.baseline.kind not in BASELINES:
    raise ValueError(f"baseline.kind={cfg.baseline.kind!r} is unknown; use one of {BASELINES}.")
  if cfg.hardware is None or "_target_" not in cfg.hardware:
    raise ValueError("hardware is not set; choose a preset with hardware=<name> (see conf/hardware/).")
  for field in ("steps", "batch_size"):
    if getattr(cfg.finetune, field) < 1:
      raise ValueError(f"finetune.{field}={getattr(cfg.finetune, field)} must be >= 1.")
  if not 0.0 <= cfg.finetune.kd_alpha <= 1.0:
    raise ValueError(f"finetune.kd_alpha={cfg.finetune.kd_alpha} must be in [0, 1] (0 turns distillation off).")
  if cfg.finetune.optimizer not in ("adamw", "sgd"):
    raise ValueError(f"finetune.optimizer={cfg.finetune.optimizer!r}; use 'adamw' or 'sgd'.")
  if cfg.baseline.nm is not None:
    parts = str(cfg.baseline.nm).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 1 <= int(parts[0]) < int(parts[1]):
      raise ValueError(f"baseline.nm={cfg.baseline.nm!r} must be an N:M pattern 'N:M' with 1 <= N < M, e.g. '2:4', "
                       f"or null for dense.")
  if cfg.baseline.steps is not None and cfg.baseline.steps < 1:
    raise ValueError(f"baseline.steps={cfg.baseline.steps} must be >= 1, or null for search.steps + finetune.steps.")
  if cfg.search.batch_size < 1:
    raise ValueError(f"search.batch_size={cfg.search.batch_size} must be >= 1.")
