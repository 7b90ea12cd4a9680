"""The search: weights and architecture parameters trained together under budget constraints.

Loss = cross-entropy + lambda_0 * g_0 + sum_{k>0} lambda_k * max(0, g_k), with g_k = E[C_k] / T_k - 1 the
relative excess of the expected cost over budget k. The first budget is a target (``penalty="target"``): its
multiplier follows dual ascent lambda_0 <- lambda_0 + eta * g_0 with either sign, so the expected cost is
pulled down when over the budget and up when under it. Further budgets are upper bounds whose multipliers
rise by projected dual ascent, lambda_k <- max(0, lambda_k + eta * g_k), while they are exceeded. No penalty
strength is hand-tuned. (``penalty="lagrange"`` treats every budget as an upper bound.)
Weights and architecture parameters step on the same mini-batch (EdMIPS) with their own optimisers, after a
warm-up in which only the weights train (on uniformly sampled architectures). The Gumbel-softmax
temperature anneals exponentially. Deriving takes the argmax, then checks the hard cost and, if a budget is
still exceeded, moves the choices that cost least probability per unit of cost saved (a greedy projection;
HardCoRe-NAS shows that argmax alone can break a constraint).

References:
  Cai & Vasconcelos, EdMIPS, CVPR 2020. Wu et al., FBNet, CVPR 2019. Nayman et al., HardCoRe-NAS, ICML 2021.
  Risso et al., PLiNIO DUCCIO regulariser (arXiv 2206.00302) for hinge-form cost constraints.
  Bender et al., TuNAS, CVPR 2020 (an absolute-value cost reward: a target reached from both sides).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas.models.base import mean_max_prob
from nas.ops.choices import ArchParam
from nas.search import cost as costlib
from nas.search.budget import Constraint, check_feasible
from nas.search.derive import fill_budget, fit_to_budget
from nas.train.augment import random_crop_flip
from nas.train.checkpoint import LoopCheckpointer
from nas.train.data import Dataset, batches
from nas.train.finetune import calibrate, cross_entropy, weights_optimizer
from nas.train.parallel import DataParallel
from nas.train.staged import StagedStep


PENALTIES = ("target", "lagrange", "hinge")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Search recipe.

  Attributes:
    steps: total steps, warm-up included.
    warmup_steps: steps that train only the weights, on uniformly sampled architectures.
    batch_size: images per step.
    lr: weights' learning rate (AdamW, cosine decay).
    weight_decay: weights' decoupled weight decay (architecture parameters never decay).
    arch_lr: architecture parameters' learning rate (Adam).
    tau_start: Gumbel-softmax temperature at the end of warm-up.
    tau_end: temperature at the last step (exponential annealing).
    dual_lr: step of the multipliers' dual ascent (per unit of relative excess).
    penalty: ``target`` (default: the first budget is a target reached from both sides, its multiplier free
      in sign; further budgets are upper bounds), ``lagrange`` (every budget an upper bound, multipliers >= 0
      by dual ascent) or ``hinge`` (fixed strength ``penalty_strength``). With upper bounds only, nothing
      pulls the expected cost back up once it is under budget, and it keeps falling as the entropy term
      sharpens the choices (their costly tails fade): on Fashion-MNIST the derived networks used 61-67 % of
      their budgets. A target keeps it at the budget (an equality constraint, as TuNAS's absolute-value
      reward does), so the derived network spends what it was given.
    penalty_strength: the hinge penalty's fixed strength.
    target_rho: the quadratic term of the target budget (augmented Lagrangian, ``penalty="target"``).
    entropy_weight: final weight of the mean choice entropy in the loss, ramped up linearly from zero over
      the search phase so that the choices end close to one-hot and the argmax network is the one whose
      expected cost met the budget.
    fill_budget: after the argmax (and the projection onto the budget), move choices up while every budget
      holds (``fill_budget``), so that the derived network spends the budget it was given.
    augment: random crop (pad 4) and horizontal flip of each batch, on the device (CIFAR-style data).
    frozen_weights: train only the architecture parameters of a supernet trained by :func:`train_supernet`
      (``search.shared``): no weight warm-up, no weight update.
    seed: batch order and Gumbel noise.
  """
  steps: int = 800
  warmup_steps: int = 200
  batch_size: int = 64
  lr: float = 3e-3
  weight_decay: float = 1e-4
  arch_lr: float = 2e-2
  tau_start: float = 3.0
  tau_end: float = 0.3
  dual_lr: float = 0.05
  penalty: str = "target"
  penalty_strength: float = 1.0
  target_rho: float = 10.0
  entropy_weight: float = 0.3
  fill_budget: bool = True
  augment: bool = False
  frozen_weights: bool = False
  seed: int = 0

  def __post_init__(self):
    if self.steps < 1 or not 0 <= self.warmup_steps < self.steps:
      raise ValueError(f"search.steps={self.steps} must be >= 1 and search.warmup_steps={self.warmup_steps} in "
                       f"[0, steps).")
    if self.penalty not in PENALTIES:
      raise ValueError(f"search.penalty={self.penalty!r}; use one of {PENALTIES}.")
    if not 0 < self.tau_end <= self.tau_start:
      raise ValueError(f"search.tau_end={self.tau_end} must be in (0, tau_start={self.tau_start}].")

  def tau(self, step: int) -> float:
    span = max(self.steps - self.warmup_steps - 1, 1)
    t = min(max(step - self.warmup_steps, 0) / span, 1.0)
    return self.tau_start * (self.tau_end / self.tau_start) ** t

  def entropy_ramp(self, step: int) -> float:
    span = max(self.steps - self.warmup_steps - 1, 1)
    return self.entropy_weight * min(max(step - self.warmup_steps, 0) / span, 1.0)


def arch_optimizer(model, lr) -> nnx.Optimizer:
  """Adam over the architecture parameters, flattened into one vector: the same update as Adam leaf by leaf
  (it is elementwise), in a few kernels instead of a few per choice (a step's many tiny ops cost time)."""
  return nnx.Optimizer(model, optax.flatten(optax.adam(lr)), wrt=ArchParam)


class _ByIdentity(tuple):
  """The cost tables as static data of the jitted step: hashed by identity (one object per search)."""

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=("arrays", "limits", "two_sided", "strength", "rho", "dual_lr"),
                   meta_fields=("tables", "metrics", "penalty", "augment", "update_weights"))
@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Everything a search step needs that does not change from step to step, built once per search.

  A pytree: the arrays and rates are traced leaves (as the positional arguments they replace were), the
  rest is static (part of the compiled step's key; ``tables`` compares by identity, so one search compiles
  its step once and a new search with new tables compiles its own).

  Attributes:
    arrays: per cost table, the grids of the constrained metrics (``nas.search.cost.table_arrays``).
    limits: per constraint, its limit (float32 vector).
    two_sided: per constraint, whether it is a target (the first budget under ``penalty="target"``).
    strength: the hinge penalty's fixed strength.
    rho: the target's quadratic term (augmented Lagrangian).
    dual_lr: the multipliers' dual-ascent step.
    tables: the cost tables (``nas.search.cost.build_cost_tables``), wrapped by :func:`step_config`.
    metrics: the constrained metrics, in the order of ``limits``.
    penalty: ``target``, ``lagrange`` or ``hinge`` (``SearchConfig.penalty``).
    augment: random crop and flip of each batch on the device.
    update_weights: False for an architecture-only search of a trained (shared) supernet.
  """
  arrays: object
  limits: jax.Array
  two_sided: jax.Array
  strength: float
  rho: jax.Array
  dual_lr: jax.Array
  tables: tuple
  metrics: tuple
  penalty: str
  augment: bool
  update_weights: bool


def step_config(tables, constraints: Sequence[Constraint], cfg: SearchConfig, update_weights: bool = True,
                place=lambda v: v) -> StepConfig:
  """The :class:`StepConfig` of a search with ``constraints`` under ``cfg``; ``place`` puts arrays on the
  devices (``DataParallel.value``)."""
  metrics = tuple(c.metric for c in constraints)
  two_sided = np.asarray([cfg.penalty == "target" and i == 0 for i in range(len(constraints))])
  return StepConfig(
      arrays=place(costlib.table_arrays(tables, metrics)),
      limits=place(jnp.asarray(np.asarray([c.limit for c in constraints], np.float32))),
      two_sided=place(jnp.asarray(two_sided)), strength=cfg.penalty_strength,
      rho=jnp.float32(cfg.target_rho), dual_lr=jnp.float32(cfg.dual_lr), tables=_ByIdentity(tables),
      metrics=metrics, penalty=cfg.penalty, augment=cfg.augment, update_weights=update_weights)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=("x", "y", "key", "tau", "arch_on", "entropy_weight"), meta_fields=())
@dataclasses.dataclass(frozen=True)
class StepInputs:
  """What changes every step: the batch, the step's random key, the temperature, whether the architecture
  trains yet (0/1, after warm-up) and the entropy term's weight (ramped up)."""
  x: jax.Array
  y: jax.Array
  key: jax.Array
  tau: jax.Array
  arch_on: jax.Array
  entropy_weight: jax.Array


@nnx.jit
def _search_step(model, w_opt, a_opt, lam, inputs: StepInputs, config: StepConfig):
  """One step of weights, architecture and multipliers on one batch; returns (ce, accuracy, expected costs,
  relative excess per constraint, new multipliers)."""
  x, key = inputs.x, inputs.key
  if config.augment:
    key, aug_key = jax.random.split(key)
    x = random_crop_flip(aug_key, x)

  def loss_fn(model):
    logits = model(x, mode="sample", key=key, tau=inputs.tau)
    ce = cross_entropy(logits, inputs.y)
    probs = model.probs()
    expected = costlib.expected_costs(config.tables, config.arrays, probs)
    excess = jnp.stack([expected[m] for m in config.metrics]) / config.limits - 1.0
    weight = config.strength * jnp.ones_like(lam) if config.penalty == "hinge" else lam
    # An upper bound enters as lambda * max(0, g). A target enters as lambda * g + (rho / 2) g^2, lambda of
    # either sign (the method of multipliers): the multiplier lags behind the cost, and under Adam, which
    # follows the sign of the gradient, a lagging positive multiplier alone kept shrinking the network long
    # after it was under budget; lambda + rho g flips sign as soon as the cost crosses the budget.
    budget_loss = jnp.sum(jnp.where(config.two_sided, lam * excess + 0.5 * config.rho * excess ** 2,
                                    weight * jax.nn.relu(excess)))
    entropy = jnp.mean(jnp.stack([-jnp.mean(jnp.sum(p * jnp.log(p + 1e-12), -1)) for n, p in probs.items()
                                  if p.shape[-1] > 1] or [jnp.zeros(())]))
    loss = ce + inputs.arch_on * (budget_loss + inputs.entropy_weight * entropy)
    return loss, (ce, logits, expected, excess)

  # frozen weights: no weight gradients
  wrt = nnx.Any(nnx.Param, ArchParam) if config.update_weights else ArchParam
  grads, (ce, logits, expected, excess) = nnx.grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
  if config.update_weights:
    w_opt.update(model, grads.filter(nnx.Param))
  a_opt.update(model, jax.tree.map(lambda g: g * inputs.arch_on, grads.filter(ArchParam)))
  model.project()
  lam = lam + inputs.arch_on * config.dual_lr * excess
  lam = jnp.where(config.two_sided, lam, jnp.maximum(0.0, lam))
  acc = jnp.mean(jnp.argmax(logits, -1) == inputs.y)
  return ce, acc, expected, excess, lam


@dataclasses.dataclass
class SearchResult:
  """What a search leaves: the derived choices and the numbers that describe how it got there."""
  choices: dict
  expected_cost: dict          # at the end of the search, under the soft probabilities
  multipliers: dict            # final lambda per constrained metric
  max_probs: dict              # per choice: its largest probability (which choices stayed undecided)
  repairs: int                 # choices moved by the budget projection after the argmax
  fills: int = 0               # choices moved up by the budget filling (SearchConfig.fill_budget)
  history: list = dataclasses.field(default_factory=list)

  @property
  def mean_max_prob(self) -> float:
    """1.0 = every choice one-hot."""
    return mean_max_prob(self.max_probs)


@nnx.jit(static_argnames=("augment",))
def _supernet_step(model, w_opt, x, y, key, tau, augment=False):
  if augment:
    key, aug_key = jax.random.split(key)
    x = random_crop_flip(aug_key, x)

  def loss_fn(model):
    logits = model(x, mode="sample", key=key, tau=tau)
    return cross_entropy(logits, y), logits

  (ce, logits), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)(model)
  w_opt.update(model, grads)
  return ce, jnp.mean(jnp.argmax(logits, -1) == y)


def train_supernet(model, data: Dataset, cfg: SearchConfig, steps: int,
                   callback: Callable[[int, dict], None] | None = None, checkpoint_dir=None,
                   checkpoint_every: int = 100) -> dict:
  """Trains the supernet's weights for every budget at once: each step one sub-network drawn uniformly from the
  whole space (every bit-width and width candidate of every choice, as straight-through one-hot samples with
  the architecture parameters left at their start: uniform, but P(keep) = ``keep_init`` for a skippable
  layer), AdamW with cosine decay over ``steps``.

  This is single-path one-shot training (Guo et al., "Single Path One-Shot Neural Architecture Search with
  Uniform Sampling", ECCV 2020): the search's own weight warm-up run longer, with no budget. A step costs
  what a search step does (one forward and backward pass), so shared and independent searches compare in
  steps. Checkpointed like the search; a finished checkpoint is loaded, not retrained.

  Returns:
    {"steps": steps, "start": the step it resumed from (``steps``: it was already trained), "history": [...]}.
  """
  dp = DataParallel(cfg.batch_size, "search.batch_size")
  stream = batches(data.x_train, data.y_train, cfg.batch_size, cfg.seed)
  x0, _ = next(stream)
  ckpt = LoopCheckpointer(checkpoint_dir, checkpoint_every)
  w_opt = weights_optimizer(model, optax.cosine_decay_schedule(cfg.lr, steps), cfg.weight_decay)
  start = ckpt.restore({"model": model, "w_opt": w_opt})
  if start == 0:
    calibrate(model, x0, mode="expected")
  for _ in range(min(start, steps)):
    next(stream)
  dp.replicate(model, w_opt)
  base_key = jax.random.key(cfg.seed)
  model.train()
  step_fn = StagedStep(_supernet_step, model, w_opt, static_argnames=("augment",))
  tau = jnp.float32(cfg.tau_start)
  history = []
  try:
    for step in range(start, steps):
      x, y = dp.batch(*next(stream))
      ce, acc = step_fn(x, y, jax.random.fold_in(base_key, step), tau, augment=cfg.augment)
      last = step == steps - 1
      if ckpt.due(step, last):
        step_fn.sync()
        ckpt.maybe_save(step, {"model": model, "w_opt": w_opt}, last=last)
      if step % 25 == 0 or last:
        ce = float(ce)
        if not math.isfinite(ce):
          raise FloatingPointError(f"supernet loss became {ce} at step {step}; lower search.lr (now {cfg.lr}).")
        record = {"supernet/step": step, "supernet/ce": ce, "supernet/train_acc": float(acc)}
        history.append(record)
        if callback is not None:
          callback(step, record)
  finally:
    step_fn.sync()
  ckpt.close()
  return {"steps": steps, "start": start, "history": history}


def search(model, data: Dataset, tables, constraints: Sequence[Constraint], cfg: SearchConfig,
           callback: Callable[[int, dict], None] | None = None, checkpoint_dir=None,
           checkpoint_every: int = 100) -> SearchResult:
  """Trains the supernet's weights and architecture under ``constraints``; derives one network.

  Args:
    model: the supernet.
    data: the dataset (its training split is used).
    tables: the supernet's cost tables on the target (``nas.search.cost.build_cost_tables``), built once by
      the caller, who also uses them for the budget.
    constraints: the budgets; the first is a target under ``cfg.penalty="target"``.
    cfg: the recipe. With ``cfg.frozen_weights`` (a supernet trained by :func:`train_supernet`) only the
      architecture parameters train: no weight warm-up, no weight update, the quantisers' steps as trained.
    callback: called every 25 steps with (step, record).
    checkpoint_dir, checkpoint_every: the loop saves its state every ``checkpoint_every`` steps and, if a
      checkpoint is there, resumes from it (same trajectory as an uninterrupted run).

  Raises:
    ValueError: if even the cheapest network of the space exceeds a budget (before any training).
    FloatingPointError: if the loss becomes NaN or infinite.
  """
  check_feasible(model, tables, constraints)
  dp = DataParallel(cfg.batch_size, "search.batch_size")
  config = step_config(tables, constraints, cfg, update_weights=not cfg.frozen_weights, place=dp.value)
  stream = batches(data.x_train, data.y_train, cfg.batch_size, cfg.seed)
  x0, _ = next(stream)
  ckpt = LoopCheckpointer(checkpoint_dir, checkpoint_every)
  w_opt = weights_optimizer(model, optax.cosine_decay_schedule(cfg.lr, cfg.steps), cfg.weight_decay)
  a_opt = arch_optimizer(model, cfg.arch_lr)
  state = {"model": model, "w_opt": w_opt, "a_opt": a_opt, "lam": jnp.zeros((len(constraints),), jnp.float32)}
  start = ckpt.restore(state)
  if start == 0 and not cfg.frozen_weights:
    calibrate(model, x0, mode="expected")
  for _ in range(start):  # the batch stream is a function of (seed, step): skip what was consumed
    next(stream)
  lam = dp.value(state["lam"])
  dp.replicate(model, w_opt, a_opt)
  base_key = jax.random.key(cfg.seed)
  model.train()
  # One jitted function of the model's and optimisers' flat state (nas.train.staged): no graph traversal
  # per step. The objects are written back before they are read (records, checkpoints) and at the end.
  step_fn = StagedStep(_search_step, model, w_opt, a_opt)
  history = []
  try:
    for step in range(start, cfg.steps):
      x, y = dp.batch(*next(stream))
      inputs = StepInputs(x=x, y=y, key=jax.random.fold_in(base_key, step), tau=jnp.float32(cfg.tau(step)),
                          arch_on=jnp.float32(step >= cfg.warmup_steps),
                          entropy_weight=jnp.float32(cfg.entropy_ramp(step)))
      ce, acc, expected, excess, lam = step_fn(lam, inputs, config)
      last = step == cfg.steps - 1
      if ckpt.due(step, last):
        step_fn.sync()
        ckpt.maybe_save(step, {"model": model, "w_opt": w_opt, "a_opt": a_opt, "lam": lam}, last=last)
      if step % 25 == 0 or last:
        step_fn.sync()
        record = _record(model, step, cfg, inputs.tau, (ce, acc, expected, excess, lam), config.metrics)
        history.append(record)
        if callback is not None:
          callback(step, record)
  finally:
    step_fn.sync()
  ckpt.close()
  return _derive(model, tables, constraints, cfg, lam, history)


def _record(model, step: int, cfg: SearchConfig, tau, outputs, metrics) -> dict:
  """The logged record of one step (a host sync: every 25 steps only); raises on a NaN or infinite loss."""
  ce, acc, expected, excess, lam = outputs
  ce = float(ce)
  if not math.isfinite(ce):
    raise FloatingPointError(f"search loss became {ce} at step {step}; lower search.lr (now {cfg.lr}) "
                             f"or search.arch_lr (now {cfg.arch_lr}).")
  record = {"search/step": step, "search/ce": ce, "search/train_acc": float(acc), "search/tau": float(tau),
            "search/mean_max_prob": model.mean_max_prob()}
  for i, m in enumerate(metrics):
    record[f"search/expected_{m}"] = float(expected[m])
    record[f"search/excess_{m}"] = float(excess[i])
    record[f"search/lambda_{m}"] = float(lam[i])
  return record


def _derive(model, tables, constraints, cfg: SearchConfig, lam, history) -> SearchResult:
  """Argmax, projection onto the budgets, budget filling (``nas.search.derive``)."""
  probs = {k: np.asarray(v) for k, v in model.probs().items()}
  expected = costlib.expected_costs(tables, costlib.table_arrays(tables, costlib.METRICS), model.probs())
  choices, repairs = fit_to_budget(model, tables, constraints, probs)
  fills = 0
  if cfg.fill_budget:
    choices, fills = fill_budget(model, tables, constraints, probs, choices)
  return SearchResult(choices=choices, expected_cost={k: float(v) for k, v in expected.items()},
                      multipliers={c.metric: float(lam[i]) for i, c in enumerate(constraints)},
                      max_probs=model.max_probs(), repairs=repairs, fills=fills, history=history)

