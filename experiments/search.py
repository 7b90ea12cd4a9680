"""One search, one budget, one target: supernet -> search -> derive -> fine-tune -> result.json + wandb run.

  python -m experiments.search                                         # the bundled default (digits, RISC-V)
  python -m experiments.search -m budget.fraction=0.2,0.4,0.6,0.8      # a budget sweep
  python -m experiments.search debug=true                              # a smoke test (tests use it)

Each job writes ``result.json`` in its run folder (see README, "result.json"); a job that fails writes
``error.json`` instead, and in a sweep the other jobs go on.
"""
from __future__ import annotations

if __name__ == "__main__":  # first, before the heavy imports: restart on a caching allocator
  from nas import allocator as _allocator  # where one is installed (nas/allocator.py)
  _allocator.reexec()

import dataclasses
import errno
import hashlib
import json
import logging
import os
import pathlib
import sys
import tempfile
import time

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import config as appconfig
from experiments import preflight, xla_env
from experiments.baselines import baseline_choices
from experiments.tracking import Tracker, WandbConfig
from hardware.host import host_mismatch
from nas import allocator
from nas.search import cost as costlib
from nas.search.budget import unbound_budget
from nas.train.checkpoint import code_fingerprint, module_source_hash, save_network
from nas.train import datasets
from nas.train.data import Dataset
from nas.models import build_model
from nas.search import (Constraint, SearchConfig, check_room, cheapest_network, resolve_budget, search,
                        train_supernet)
from nas.models.space import SearchSpace
from nas.train.finetune import TrainConfig, calibrate, evaluate, finetune, inherit_weights

log = logging.getLogger("experiments.search")
NETWORK_FILE = "network.npz"  # the fine-tuned network's NNX state, beside result.json (nas.train.checkpoint.save_network)
CONF_DIR = pathlib.Path(__file__).resolve().parent.parent / "conf"
appconfig.register()


def write_json_atomic(path: pathlib.Path, obj) -> None:
  """Writes JSON so that a reader never sees a half-written file (temp file + rename)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(fd, "w") as f:
    json.dump(obj, f, indent=1, default=float)
  os.replace(tmp, path)


def apply_debug(cfg: DictConfig) -> None:
  """Shrinks any run to a smoke test (big_vision's runlocal): few steps, few images. What remains is mostly
  XLA compiling the steps: about one CPU-minute (59 s of user time measured for the digits default).
  """
  with open_dict(cfg):
    cfg.search.steps = min(cfg.search.steps, 30)
    cfg.search.warmup_steps = min(cfg.search.warmup_steps, 10)
    cfg.search.shared_steps = min(cfg.search.shared_steps, 30)
    cfg.search.arch_steps = min(cfg.search.arch_steps, 20)
    cfg.finetune.steps = min(cfg.finetune.steps, 20)
    cfg.finetune.teacher_steps = min(cfg.finetune.teacher_steps, 20)
    if cfg.baseline.steps is not None:
      cfg.baseline.steps = min(cfg.baseline.steps, 50)
    cfg.dataset.limit = min(cfg.dataset.limit or 10**9, 256)


def load_dataset(cfg: DictConfig) -> Dataset:
  """The dataset of ``cfg.dataset`` from the registry (``nas.train.datasets``). The jobs of a sweep that run in
  one process (Hydra's basic launcher) and read the same dataset config share one load (``datasets.load_shared``:
  read-only arrays, so no job can change what the next one reads)."""
  fields = OmegaConf.to_container(cfg.dataset, resolve=True)
  return datasets.load_shared(fields.pop("name"), **fields)


def search_space(cfg: DictConfig) -> SearchSpace:
  return appconfig.recipe(SearchSpace, cfg.search)


def config_hash(node) -> str:
  """A short stable hash of a config subtree: names the checkpoint folder of a job (same command, same folder)."""
  text = json.dumps(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node,
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_dirs(cfg: DictConfig) -> dict:
  """Checkpoint folders of this job's loops, keyed by what determines their results: the config and the code
  (None: off)."""
  if cfg.checkpoint.dir is None:
    return {"search": None, "finetune": None, "teacher": None, "supernet": None}
  root = pathlib.Path(cfg.checkpoint.dir)
  job = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in
         ("dataset", "model", "hardware", "search", "budget", "finetune", "baseline")}
  # The code: this repository's packages, and the module of the cost model (a user's plugin lives elsewhere).
  job.update(seed=cfg.seed, debug=cfg.debug, code=code_fingerprint(("nas", "hardware", "experiments")),
             hardware_code=module_source_hash(str(cfg.hardware.get("_target_", ""))))
  teacher = {"dataset": job["dataset"], "model": job["model"], "seed": cfg.seed, "debug": cfg.debug,
             "code": job["code"],
             "steps": cfg.finetune.teacher_steps, "lr": cfg.finetune.teacher_lr or cfg.finetune.lr,
             "optimizer": cfg.finetune.optimizer, "batch": cfg.finetune.batch_size}
  h = config_hash(job)
  # The search depends on neither the fine-tuning nor the baseline settings: jobs that differ only there
  # (inherited weights or from scratch, fine-tuning steps) share one search.
  search_key = config_hash({k: v for k, v in job.items() if k not in ("finetune", "baseline")})
  # The shared supernet (search.shared) depends on the data, the model, the space and its own recipe: not on
  # the target, the budget or the per-budget search.
  supernet = {"dataset": job["dataset"], "model": job["model"], "seed": cfg.seed, "debug": cfg.debug,
              "code": job["code"], "search": {k: v for k, v in job["search"].items() if k not in PER_BUDGET_KEYS}}
  return {"search": root / "searches" / search_key, "finetune": root / h / "finetune",
          "teacher": root / "teachers" / config_hash(teacher), "supernet": root / "supernets" / config_hash(supernet)}


# Search settings that do not change a shared supernet's weights (only the per-budget search or derivation).
PER_BUDGET_KEYS = ("steps", "warmup_steps", "arch_lr", "tau_end", "dual_lr", "penalty", "penalty_strength",
                   "target_rho", "entropy_weight", "fill_budget", "shared", "arch_steps", "shared_arch_lr",
                   "shared_entropy_weight")


def search_config(cfg: DictConfig) -> SearchConfig:
  return appconfig.recipe(SearchConfig, cfg.search, augment=cfg.dataset.augment, seed=cfg.seed)


def train_config(cfg: DictConfig) -> TrainConfig:
  return appconfig.recipe(TrainConfig, cfg.finetune, augment=cfg.dataset.augment, seed=cfg.seed)


def instantiate_hardware(node) -> object:
  hw = hydra.utils.instantiate(node, _convert_="all")
  for attr in ("name", "cost", "check_bits"):
    if not hasattr(hw, attr):
      raise ValueError(f"hardware._target_={node['_target_']} has no `{attr}`; a cost model implements the "
                       f"CostModel protocol of hardware/base.py (name, check_bits, cost).")
  return hw


def all_presets(selected) -> dict[str, object]:
  """Every preset under conf/hardware, plus the selected model (which may come from a user's folder)."""
  models = {}
  for path in sorted((CONF_DIR / "hardware").glob("*.yaml")):
    try:
      hw = instantiate_hardware(OmegaConf.load(path))
    except Exception as e:  # a broken preset must not sink a search on another target
      log.warning("skipping hardware preset %s: %s", path.name, e)
      continue
    models[hw.name] = hw
  models[selected.name] = selected
  return models


def costs_everywhere(arch, models: dict) -> dict:
  out = {}
  for name, hw in models.items():
    try:
      out[name] = costlib.architecture_cost(arch, hw)
    except ValueError as e:  # e.g. a bit-width this part cannot run
      out[name] = {"error": str(e)}
  return out


def check_writable(cfg: DictConfig, out_dir: pathlib.Path) -> None:
  """One sentence before any work when the run folder or checkpoint.dir cannot be written."""
  reason = preflight.unwritable(out_dir)
  if reason:
    raise ValueError(f"the run folder {out_dir} cannot be written ({reason}); choose a writable one with "
                     f"hydra.run.dir=... (a sweep: hydra.sweep.dir=...), or make it writable.")
  if cfg.checkpoint.dir is not None:
    reason = preflight.unwritable(cfg.checkpoint.dir)
    if reason:
      raise ValueError(f"checkpoint.dir={cfg.checkpoint.dir} cannot be written ({reason}); set checkpoint.dir to a "
                       f"writable folder, or checkpoint.dir=null to run without checkpoints.")


class _Progress:
  """A rich progress bar over a loop that reports every few steps through a callback."""

  def __init__(self, total: int, label: str, tracker: Tracker):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    self.tracker = tracker
    self.bar = Progress(TextColumn(f"{label:<9}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), transient=False, disable=not sys.stderr.isatty())
    self.task = self.bar.add_task(label, total=total, info="")
    self.done = 0

  def __enter__(self):
    self.bar.__enter__()
    return self

  def __exit__(self, *exc):
    self.bar.__exit__(*exc)

  def __call__(self, step: int, record: dict) -> None:
    self.bar.update(self.task, completed=step + 1, info=" ".join(
        f"{k.split('/')[-1]}={v:.3g}" for k, v in record.items() if k.endswith(("ce", "acc", "loss"))))
    self.tracker.log(record, step=None)


def _budgets(cfg: DictConfig, supernet, tables, target):
  """The job's budgets: (Budget, constraints, the reference network's costs, warnings). A searched job stops
  here when a budget is below every network of the space, and warns when one does not bind."""
  reference = supernet.reference_architecture()
  ref_cost = {**costlib.architecture_cost(reference, target), **costlib.architecture_metrics(reference)}
  metric = appconfig.BUDGET_METRICS[cfg.budget.metric]
  extra = [(appconfig.BUDGET_METRICS[e.metric], e) for e in cfg.budget.extra]
  cheapest = {m: cheapest_network(supernet, tables, m)[1] for m in {metric, *(m for m, _ in extra)}}
  budget = resolve_budget(cheapest[metric], metric, ref_cost[metric], cfg.budget.fraction, cfg.budget.room)
  constraints = [Constraint(metric, budget.value)] + [
      Constraint(m, e.fraction * ref_cost[m] if e.fraction is not None else float(e.limit)) for m, e in extra]
  warnings = []
  if cfg.baseline.kind != "none":
    return budget, constraints, ref_cost, warnings
  log.info("budget: %s", budget.text)
  if budget.cheapest > 0.9:
    log.warning("on %s the cheapest network of the search space costs %.2f x the reference %s: little to trade "
                "(fixed per-layer costs dominate this network); see hardware/README.md, 'room to search'.",
                target.name, budget.cheapest, metric)
  check_room(cheapest, constraints, ref_cost, target.name, batch_hint=hasattr(target, "batch_size"))
  fields = [f"budget.fraction={cfg.budget.fraction:g}" if cfg.budget.fraction is not None else
            f"budget.room={budget.room:g}"] + [f"budget.extra[{i}].fraction={e.fraction:g}" if e.fraction is not None
                                               else f"budget.extra[{i}].limit={e.limit:g}"
                                               for i, e in enumerate(cfg.budget.extra)]
  for c, field in zip(constraints, fields):
    loose = unbound_budget(supernet, tables, c, ref_cost[c.metric], target.name, field)
    if loose:
      log.warning(loose)
      warnings.append(loose)
  return budget, constraints, ref_cost, warnings


def run(cfg: DictConfig, out_dir: pathlib.Path, group: str | None = None) -> dict:
  """The whole pipeline for one job; returns (and writes) the result."""
  t_start = time.time()
  if cfg.debug:
    apply_debug(cfg)
  # Everything that can be wrong with the input is checked before any training.
  appconfig.validate(cfg)
  check_writable(cfg, out_dir)
  space = search_space(cfg)
  scfg = search_config(cfg)
  tcfg = train_config(cfg)
  target = instantiate_hardware(cfg.hardware)
  target.check_bits(np.asarray(space.w_bits), np.asarray(space.a_bits))
  # A preset calibrated on another machine: say so loudly (log, result.json, wandb summary), with the fix.
  mismatch = host_mismatch(target)
  if mismatch:
    log.warning(mismatch)
  data = load_dataset(cfg)
  supernet = build_model(cfg.model.name, space, seed=cfg.seed, **_model_args(cfg, data))
  if cfg.baseline.kind != "none":
    baseline_choices(supernet, cfg)  # a baseline the model cannot build stops here, before any training
  tables = costlib.build_cost_tables(supernet, target)  # once per job: the budget and the search use them
  budget, constraints, ref_cost, warnings = _budgets(cfg, supernet, tables, target)
  warnings = ([mismatch] if mismatch else []) + warnings
  metric = constraints[0].metric
  presets = all_presets(target)

  kind = "searched" if cfg.baseline.kind == "none" else f"baseline:{cfg.baseline.kind}"
  name = (f"{target.name}-{cfg.budget.metric}-{budget.fraction:.3g}" if kind == "searched"
          else f"{target.name}-{kind.split(':')[1]}" + (f"-w{cfg.baseline.w_bits}a{cfg.baseline.a_bits}"
                                                         + (f"-{cfg.baseline.nm}" if cfg.baseline.get("nm") else "")
                                                         if cfg.baseline.kind == "uniform" else f"-s{cfg.seed}"))
  tracker = Tracker(WandbConfig(**OmegaConf.to_container(cfg.wandb)), out_dir, name,
                    cfg.wandb.group or group, "search", OmegaConf.to_container(cfg, resolve=True))
  try:
    result = _search_and_finetune(cfg, kind, (supernet, tables), data, constraints, (scfg, tcfg), space, tracker)
    arch = result.pop("_arch")
    # The fine-tuned network itself, before result.json: a folder with a result has its network
    # (experiments.export reads both).
    save_network(result.pop("_network"), out_dir / NETWORK_FILE)
    result.update({
        "kind": kind, "label": name, "target": target.name, "model": cfg.model.name, "dataset": data.name,
        "num_classes": data.num_classes, "method": space.method, "quantizer": space.quantizer, "seed": cfg.seed,
        "budget": {"metric": metric, "fraction": budget.fraction, "room": budget.room,
                   "value": constraints[0].limit, "reference": ref_cost[metric],
                   "cheapest": budget.cheapest} if kind == "searched" else
                  {"metric": metric, "fraction": None, "value": None, "reference": ref_cost[metric]},
        "constraints": [{"metric": c.metric, "limit": c.limit} for c in constraints],
        "cost": costs_everywhere(arch, presets),
        "metrics": costlib.architecture_metrics(arch),
        "reference": ref_cost,
        "architecture": arch.to_dict(),
        "warnings": warnings,
    })
    result["weight_bytes"] = result["metrics"]["weight_bytes"]
    result["time_s"]["total"] = time.time() - t_start
    write_json_atomic(out_dir / "result.json", result)
    tracker.table("architecture", list(arch.table()[0].keys()), [list(r.values()) for r in arch.table()])
    own = result["cost"][target.name]
    max_prob = (result["search"] or {}).get("max_prob", {})  # per choice: which ones the search left undecided
    undecided = {f"search/max_prob/{k}": v for k, v in max_prob.items()}
    tracker.summary({"accuracy": result["accuracy"], "weight_bytes": result["weight_bytes"], **undecided,
                     **{f"cost/{target.name}/{k}": v for k, v in own.items()},
                     "budget/fraction": budget.fraction, "budget/value": constraints[0].limit,
                     **({"warnings/host_mismatch": mismatch} if mismatch else {})})
    tracker.finish()
    return result
  except BaseException:
    tracker.finish(exit_code=1)
    raise


def _exclusive(checkpoint_dir):
  """A file lock on a shared checkpoint folder (none without one): parallel jobs of a sweep that need the same
  teacher or shared supernet queue here; the first trains it, the others then find it finished and load it."""
  import contextlib
  import fcntl
  if checkpoint_dir is None:
    return contextlib.nullcontext()
  pathlib.Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
  lock = open(pathlib.Path(checkpoint_dir) / ".lock", "w")
  fcntl.flock(lock, fcntl.LOCK_EX)
  return lock  # closing the file releases the lock


def train_teacher(cfg, data, tcfg: TrainConfig, tracker, checkpoint_dir) -> tuple[object, float]:
  """The float network at base width, trained with the fine-tuning recipe (resumed or reused from its
  checkpoint folder, which is shared by every job of a sweep with the same data, model and seed)."""
  space = SearchSpace(quantize=False, width_mults=(1.0,))
  teacher = build_model(cfg.model.name, space, seed=cfg.seed + 7, **_model_args(cfg, data))
  teacher_cfg = TrainConfig(**{**tcfg.__dict__, "steps": cfg.finetune.teacher_steps, "kd_alpha": 0.0,
                               "lr": cfg.finetune.teacher_lr or tcfg.lr})
  with _exclusive(checkpoint_dir), _Progress(teacher_cfg.steps, "teacher", tracker) as progress:
    out = finetune(teacher, data, teacher_cfg, callback=progress, checkpoint_dir=checkpoint_dir,
                   checkpoint_every=cfg.checkpoint.every)
  return teacher, out["test_accuracy"]


def train_shared_supernet(cfg, supernet, data, scfg: SearchConfig, tracker, checkpoint_dir) -> dict:
  """The budget-agnostic supernet of ``search.shared``: trained here, resumed, or loaded when another job has
  trained it (its checkpoint folder is keyed by data, model, space, recipe and seed; concurrent jobs take a
  file lock, so one trains and the others wait, then load it). Without checkpoint.dir every job trains its own.
  """
  with _exclusive(checkpoint_dir), _Progress(cfg.search.shared_steps, "supernet", tracker) as progress:
    return train_supernet(supernet, data, scfg, cfg.search.shared_steps, callback=progress,
                          checkpoint_dir=checkpoint_dir, checkpoint_every=cfg.checkpoint.every)


def _search_and_finetune(cfg, kind, supernet_tables, data, constraints, recipes, space, tracker) -> dict:
  """Search (or a baseline's choices), derive, fine-tune. ``supernet_tables``: (supernet, its cost tables on the
  target); ``recipes``: (SearchConfig, TrainConfig)."""
  supernet, tables = supernet_tables
  scfg, tcfg = recipes
  times = {}
  search_info = None
  expected = None
  dirs = checkpoint_dirs(cfg)
  shared = None
  if kind == "searched":
    if cfg.search.shared:
      t0 = time.time()
      shared = train_shared_supernet(cfg, supernet, data, scfg, tracker, dirs["supernet"])
      times["supernet"] = time.time() - t0
      scfg = dataclasses.replace(scfg, steps=cfg.search.arch_steps, warmup_steps=0, frozen_weights=True,
                                 arch_lr=cfg.search.shared_arch_lr, entropy_weight=cfg.search.shared_entropy_weight)
    t0 = time.time()
    with _Progress(scfg.steps, "search", tracker) as progress:
      res = search(supernet, data, tables, constraints, scfg, callback=progress,
                   checkpoint_dir=dirs["search"], checkpoint_every=cfg.checkpoint.every)
    times["search"] = time.time() - t0
    choices = res.choices
    expected = res.expected_cost
    search_info = {"mean_max_prob": res.mean_max_prob, "max_prob": res.max_probs, "repairs": res.repairs,
                   "fills": res.fills, "multipliers": res.multipliers,
                   "supernet_argmax_accuracy": evaluate(supernet, data.x_test, data.y_test),
                   # steps this job ran: a shared supernet's training counts only in the job that trained it
                   "steps": {"supernet": shared["steps"] - min(shared["start"], shared["steps"]) if shared else 0,
                             "arch": scfg.steps},
                   "shared": {"steps": shared["steps"], "trained_here": shared["start"] < shared["steps"]}
                   if shared else None}
  else:
    choices = baseline_choices(supernet, cfg)
    # From scratch; by default as many steps as a searched network gets in search and fine-tuning together.
    steps = cfg.baseline.steps if cfg.baseline.steps is not None else tcfg.steps + scfg.steps
    tcfg = TrainConfig(**{**tcfg.__dict__, "steps": steps})
  teacher, teacher_acc = None, None
  if tcfg.kd_alpha > 0:
    t0 = time.time()
    teacher, teacher_acc = train_teacher(cfg, data, tcfg, tracker, dirs["teacher"])
    times["teacher"] = time.time() - t0
  arch = supernet.architecture(choices)
  derived = build_model(cfg.model.name, space, seed=cfg.seed, arch=arch, **_model_args(cfg, data))
  if kind == "searched" and cfg.finetune.inherit:
    inherit_weights(derived, supernet)
  calibrate(derived, data.x_train[:tcfg.batch_size], mode="argmax")
  t0 = time.time()
  with _Progress(tcfg.steps, "finetune", tracker) as progress:
    ft = finetune(derived, data, tcfg, callback=progress, teacher=teacher, checkpoint_dir=dirs["finetune"],
                  checkpoint_every=cfg.checkpoint.every)
  times["finetune"] = time.time() - t0
  return {"accuracy": ft["test_accuracy"], "expected_cost": expected, "search": search_info,
          "teacher_accuracy": teacher_acc, "time_s": times, "_arch": arch, "_network": derived}


def _quiet_event_loop_noise() -> None:
  """After a failed restore (a damaged checkpoint) Orbax leaves coroutines whose collection reports "Event loop
  is closed" with a traceback around the one-sentence error: the app drops that report and keeps every other."""
  previous = sys.unraisablehook
  if getattr(previous, "quiets_event_loop", False):  # installed by an earlier job of this process
    return

  def hook(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
      return
    previous(unraisable)
  hook.quiets_event_loop = True
  sys.unraisablehook = hook


def use_compile_cache(folder: str | None) -> None:
  """Turns on JAX's persistent compilation cache in ``folder`` (unless JAX_COMPILATION_CACHE_DIR is set, or
  ``folder`` is None). Programs that take more than 0.2 s to compile are kept; the cache is keyed by the
  program, the JAX/XLA version and the device, so a stale entry is never used."""
  import jax
  if folder is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(str(folder)))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _model_args(cfg, data) -> dict:
  args = dict(cfg.model.args)
  args.setdefault("num_classes", data.num_classes)
  args.setdefault("input_shape", data.input_shape)
  return args


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" noise on every start
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax INFO lines on every checkpoint
  hc = HydraConfig.get()
  if xla_env.share_cores(hc):  # before this worker's first JAX computation: XLA reads its flags once
    log.info("jobs at once fill the cores: this job runs its convolutions on one thread each (YNNPACK; "
             "nas/runtime.py)")
  log.info("memory allocator: %s", allocator.describe())
  _quiet_event_loop_noise()
  use_compile_cache(cfg.compile_cache)
  out_dir = pathlib.Path(hc.runtime.output_dir)
  multirun = hc.mode == RunMode.MULTIRUN
  group = pathlib.Path(hc.sweep.dir).name if multirun else None
  try:
    result = run(cfg, out_dir, group)
  except Exception as e:
    import traceback
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"  # Hydra's switch for full tracebacks
    disk = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)
    if disk:  # a full or read-only folder mid-run: one sentence; the checkpoints written so far resume
      e = ValueError(f"cannot write {e.filename or out_dir} ({e.strerror}); free space or choose writable folders "
                     f"(hydra.run.dir, checkpoint.dir), then run the same command again to resume.")
    user_error = isinstance(e, (ValueError, FileNotFoundError, FloatingPointError)) and not full
    try:
      write_json_atomic(out_dir / "error.json", {"error": str(e), "type": type(e).__name__,
                                                 "traceback": None if user_error else traceback.format_exc()})
    except OSError:  # e.g. the run folder cannot be written: the sentence says so
      pass
    if not multirun and not user_error:
      raise  # a bug (or asked for): the full traceback, not one sentence
    if multirun:  # a failed job does not sink the sweep; the aggregator lists it
      log.error("job %s failed: %s", OmegaConf.select(hc, "job.num", default="?"), e)
      if cfg.objectives:  # Optuna needs a value: the worst possible one
        return [0.0 if k == "accuracy" else float("inf") for k in cfg.objectives]
      return None
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  acc = result["accuracy"]
  own = result["cost"][result["target"]]
  if cfg.objectives:  # a sweeper (Optuna) optimises these values
    values = {"accuracy": acc, "weight_bytes": result["weight_bytes"], **own}
    print(f"[{result['label']}] objectives " + " ".join(f"{k}={values[k]:.4g}" for k in cfg.objectives))
    return [float(values[k]) for k in cfg.objectives]
  print(f"[{result['label']}] accuracy {acc:.4f}  latency {own['latency_s'] * 1e3:.4g} ms  energy "
        f"{own['energy_j'] * 1e6:.4g} uJ  weights {result['weight_bytes'] / 1024:.3g} KiB  -> {out_dir / 'result.json'}")
  return result


def cli() -> None:
  """``python -m experiments.search``: :func:`preflight`, then Hydra (a full traceback with HYDRA_FULL_ERROR=1)."""
  if os.environ.get("HYDRA_FULL_ERROR") != "1":
    error = preflight.preflight(sys.argv[1:])
    if error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(2)
  main()


if __name__ == "__main__":
  cli()
