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
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas import cost as costlib
from nas.choices import ArchParam
from nas.augment import random_crop_flip
from nas.checkpoint import LoopCheckpointer
from nas.data import Dataset, batches
from nas.models.base import mean_max_prob
from nas.parallel import DataParallel
from nas.train import calibrate, cross_entropy, weights_optimizer


@dataclasses.dataclass(frozen=True)
class Constraint:
  """Expected ``metric`` (one of nas.cost.METRICS) must stay at or below ``limit`` (its unit)."""
  metric: str
  limit: float

  def __post_init__(self):
    if self.metric not in costlib.METRICS:
      raise ValueError(f"budget metric {self.metric!r} is unknown; use one of {costlib.METRICS}.")
    if not self.limit > 0:
      raise ValueError(f"budget limit for {self.metric} must be > 0, got {self.limit}.")


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


@nnx.jit(static_argnames=("tables", "metrics", "penalty", "augment", "update_weights"))
def _search_step(model, w_opt, a_opt, x, y, key, tau, lam, arch_on, arrays, limits, two_sided, tables, metrics,
                 penalty, strength, rho, dual_lr, entropy_weight, augment=False, update_weights=True):
  if augment:
    key, aug_key = jax.random.split(key)
    x = random_crop_flip(aug_key, x)

  def loss_fn(model):
    logits = model(x, mode="sample", key=key, tau=tau)
    ce = cross_entropy(logits, y)
    probs = model.probs()
    expected = costlib.expected_costs(tables, arrays, probs)
    excess = jnp.stack([expected[m] for m in metrics]) / limits - 1.0
    weight = strength * jnp.ones_like(lam) if penalty == "hinge" else lam
    # An upper bound enters as lambda * max(0, g). A target enters as lambda * g + (rho / 2) g^2, lambda of
    # either sign (the method of multipliers): the multiplier lags behind the cost, and under Adam, which
    # follows the sign of the gradient, a lagging positive multiplier alone kept shrinking the network long
    # after it was under budget; lambda + rho g flips sign as soon as the cost crosses the budget.
    budget_loss = jnp.sum(jnp.where(two_sided, lam * excess + 0.5 * rho * excess ** 2,
                                    weight * jax.nn.relu(excess)))
    entropy = jnp.mean(jnp.stack([-jnp.mean(jnp.sum(p * jnp.log(p + 1e-12), -1)) for n, p in probs.items()
                                  if p.shape[-1] > 1] or [jnp.zeros(())]))
    loss = ce + arch_on * (budget_loss + entropy_weight * entropy)
    return loss, (ce, logits, expected, excess)

  wrt = nnx.Any(nnx.Param, ArchParam) if update_weights else ArchParam  # frozen weights: no weight gradients
  grads, (ce, logits, expected, excess) = nnx.grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
  if update_weights:
    w_opt.update(model, grads.filter(nnx.Param))
  a_opt.update(model, jax.tree.map(lambda g: g * arch_on, grads.filter(ArchParam)))
  model.project()
  lam = lam + arch_on * dual_lr * excess
  lam = jnp.where(two_sided, lam, jnp.maximum(0.0, lam))
  acc = jnp.mean(jnp.argmax(logits, -1) == y)
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
  step_fn = nnx.cached_partial(_supernet_step, model, w_opt)
  tau = jnp.float32(cfg.tau_start)
  history = []
  for step in range(start, steps):
    x, y = dp.batch(*next(stream))
    ce, acc = step_fn(x, y, jax.random.fold_in(base_key, step), tau, cfg.augment)
    ckpt.maybe_save(step, {"model": model, "w_opt": w_opt}, last=step == steps - 1)
    if step % 25 == 0 or step == steps - 1:
      ce = float(ce)
      if not math.isfinite(ce):
        raise FloatingPointError(f"supernet loss became {ce} at step {step}; lower search.lr (now {cfg.lr}).")
      record = {"supernet/step": step, "supernet/ce": ce, "supernet/train_acc": float(acc)}
      history.append(record)
      if callback is not None:
        callback(step, record)
  ckpt.close()
  return {"steps": steps, "start": start, "history": history}


def search(model, data: Dataset, cost_model, constraints: Sequence[Constraint], cfg: SearchConfig,
           callback: Callable[[int, dict], None] | None = None, checkpoint_dir=None,
           checkpoint_every: int = 100, frozen_weights: bool = False) -> SearchResult:
  """Trains the supernet's weights and architecture under ``constraints`` on ``cost_model``; derives.

  With ``checkpoint_dir`` the loop saves its state every ``checkpoint_every`` steps and, if a checkpoint is
  there, resumes from it (same trajectory as an uninterrupted run). With ``frozen_weights`` (a supernet
  trained by :func:`train_supernet`) only the architecture parameters train: no weight warm-up, no
  weight update, the quantisers' steps kept as trained.

  Raises:
    ValueError: if even the cheapest network of the space exceeds a budget (before any training).
    FloatingPointError: if the loss becomes NaN or infinite.
  """
  tables = costlib.build_cost_tables(model, cost_model)
  metrics = tuple(c.metric for c in constraints)
  limits = np.asarray([c.limit for c in constraints], np.float32)
  two_sided = np.asarray([cfg.penalty == "target" and i == 0 for i in range(len(constraints))])
  check_feasible(model, tables, constraints)
  dp = DataParallel(cfg.batch_size, "search.batch_size")
  arrays = dp.value(costlib.table_arrays(tables, metrics))
  hashable_tables = _HashableTables(tables)

  stream = batches(data.x_train, data.y_train, cfg.batch_size, cfg.seed)
  x0, _ = next(stream)
  ckpt = LoopCheckpointer(checkpoint_dir, checkpoint_every)
  schedule = optax.cosine_decay_schedule(cfg.lr, cfg.steps)
  w_opt = weights_optimizer(model, schedule, cfg.weight_decay)
  a_opt = arch_optimizer(model, cfg.arch_lr)
  state = {"model": model, "w_opt": w_opt, "a_opt": a_opt, "lam": jnp.zeros((len(constraints),), jnp.float32)}
  start = ckpt.restore(state)
  if start == 0 and not frozen_weights:
    calibrate(model, x0, mode="expected")
  for _ in range(start):  # the batch stream is a function of (seed, step): skip what was consumed
    next(stream)
  lam = dp.value(state["lam"])
  limits_device = dp.value(jnp.asarray(limits))
  two_sided_device = dp.value(jnp.asarray(two_sided))
  dp.replicate(model, w_opt, a_opt)
  base_key = jax.random.key(cfg.seed)
  model.train()
  # The graph traversal of model and optimisers is done once, not at every step (a third of a small step).
  step_fn = nnx.cached_partial(_search_step, model, w_opt, a_opt)
  history = []
  for step in range(start, cfg.steps):
    x, y = dp.batch(*next(stream))
    arch_on = jnp.float32(step >= cfg.warmup_steps)
    tau = jnp.float32(cfg.tau(step))
    ce, acc, expected, excess, lam = step_fn(
        x, y, jax.random.fold_in(base_key, step), tau, lam,
        arch_on, arrays, limits_device, two_sided_device, hashable_tables, metrics, cfg.penalty,
        cfg.penalty_strength, jnp.float32(cfg.target_rho), jnp.float32(cfg.dual_lr),
        jnp.float32(cfg.entropy_ramp(step)), cfg.augment, not frozen_weights)
    ckpt.maybe_save(step, {"model": model, "w_opt": w_opt, "a_opt": a_opt, "lam": lam}, last=step == cfg.steps - 1)
    if step % 25 == 0 or step == cfg.steps - 1:
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
      history.append(record)
      if callback is not None:
        callback(step, record)
  ckpt.close()
  probs = {k: np.asarray(v) for k, v in model.probs().items()}
  expected = costlib.expected_costs(tables, costlib.table_arrays(tables, costlib.METRICS), model.probs())
  choices, repairs = fit_to_budget(model, tables, constraints, probs)
  fills = 0
  if cfg.fill_budget:
    choices, fills = fill_budget(model, tables, constraints, probs, choices)
  return SearchResult(choices=choices, expected_cost={k: float(v) for k, v in expected.items()},
                      multipliers={m: float(lam[i]) for i, m in enumerate(metrics)},
                      max_probs=model.max_probs(), repairs=repairs, fills=fills, history=history)


class _HashableTables(tuple):
  """The cost tables as a static (hashable by identity) argument of the jitted step."""

  def __new__(cls, tables):
    return super().__new__(cls, tables)

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other


def onehot_probs(model, choices: Mapping) -> dict[str, np.ndarray]:
  """The degenerate distributions of one discrete assignment (per-channel choices: one row per channel; one
  value for a per-channel choice, as the reference gives, holds for every row)."""
  out = {}
  for n, c in model.choices.items():
    v = choices[n]
    if not isinstance(v, (tuple, list)) and getattr(c, "per_channel", False):
      v = (v,) * c.logits[...].shape[0]
    rows = v if isinstance(v, (tuple, list)) else [v]
    p = np.asarray([[float(x == r) for x in c.values] for r in rows], np.float32)
    out[n] = p if isinstance(v, (tuple, list)) else p[0]
  return out


def discrete_costs(tables, choices: Mapping, model, metrics) -> dict[str, float]:
  """Cost of one discrete choice assignment, read from the grids (NumPy, one-hot probabilities)."""
  arrays = [{m: t.grids[m] for m in metrics} for t in tables]
  return {m: float(v) for m, v in costlib.expected_costs(tables, arrays, onehot_probs(model, choices), xp=np).items()}


def cheapest_choices(model) -> dict:
  out = {}
  for n, c in model.choices.items():
    per_channel = getattr(c, "per_channel", False)
    out[n] = (min(c.values),) * c.logits[...].shape[0] if per_channel else min(c.values)
  return out


def cost_lower_bound(tables, metrics) -> dict[str, float]:
  """Sum over layers of each layer's cheapest grid entry (0 for an op that can be left out, ``OpAxes.dead_if``):
  no network of the space costs less.

  (Costs need not fall with bits or widths, e.g. a CPU whose narrow convolutions take a slow path, so the
  network of smallest candidates is not always the cheapest.)
  """
  def least(t, m):  # an op that can be left out (``OpAxes.dead_if``) can cost nothing
    return 0.0 if (t.keys is not None and t.keys.dead_if) else float(np.min(t.grids[m]))
  return {m: float(sum(least(t, m) for t in tables)) for m in metrics}


def cheapest_network(model, tables, metric: str) -> tuple[dict, float]:
  """A network of the space at (or near) the least cost on ``metric``: (choices, its cost).

  The per-layer bound (``cost_lower_bound``) need not be reached by any network: a width is both one layer's
  output and the next one's input, and a target whose narrow layers take a slow path has each layer's minimum
  at a different width. This descends coordinate-wise (every candidate of one choice at a time, per-channel
  choices kept uniform, until no single change lowers the cost) from the all-smallest and the all-largest
  networks and keeps the cheaper end point: a real network, so a budget at its cost is always feasible.
  """
  def uniform(c, v):
    return (v,) * c.logits[...].shape[0] if getattr(c, "per_channel", False) else v

  def cost(choices):
    return discrete_costs(tables, choices, model, [metric])[metric]

  best = None
  for pick in (min, max):
    choices = {n: uniform(c, pick(c.values)) for n, c in model.choices.items()}
    current = cost(choices)
    improved = True
    while improved:
      improved = False
      for n, c in model.choices.items():
        for v in c.values:
          trial = dict(choices, **{n: uniform(c, v)})
          tc = cost(trial)
          if tc < current * (1 - 1e-12):
            choices, current, improved = trial, tc, True
    if best is None or current < best[1]:
      best = (choices, current)
  return best


def check_feasible(model, tables, constraints: Sequence[Constraint]) -> None:
  """Raises before training if a budget is below what any network of the space can cost."""
  bound = cost_lower_bound(tables, [c.metric for c in constraints])
  for c in constraints:
    if bound[c.metric] > c.limit:
      raise ValueError(f"budget on {c.metric} ({c.limit:.4g}) is below the cheapest network of the search space "
                       f"({bound[c.metric]:.4g}); raise budget.fraction or add smaller candidates (search.w_bits, "
                       f"search.a_bits, search.width_mults).")


def _argmax_choices(model, probs) -> dict:
  out = {}
  for n, c in model.choices.items():
    idx = np.argmax(probs[n], axis=-1)
    out[n] = c.values[int(idx)] if np.ndim(idx) == 0 else tuple(c.values[int(i)] for i in idx)
  return out


def _moves(model, choices, probs, step: int, frozen=frozenset()):
  """Candidate moves one candidate down (step=-1) or up (step=+1): (trial choices, log-probability given up).

  Per-channel choices offer, per current bit-width, the one channel that gives up least probability:
  channels at one bit-width cost the same. Choices named in ``frozen`` do not move.
  """
  for name, choice in model.choices.items():
    if name in frozen:
      continue
    value = choices[name]
    p = probs[name]
    last = len(choice.values) - 1
    if isinstance(value, tuple):
      best = {}
      for ch, v in enumerate(value):
        i = choice.values.index(v)
        if not 0 <= i + step <= last:
          continue
        lost = math.log(max(p[ch, i], 1e-12)) - math.log(max(p[ch, i + step], 1e-12))
        if v not in best or lost < best[v][1]:
          best[v] = (ch, lost)
      for v, (ch, lost) in best.items():
        new = list(value)
        new[ch] = choice.values[choice.values.index(v) + step]
        yield dict(choices, **{name: tuple(new)}), lost
    else:
      i = choice.values.index(value)
      if 0 <= i + step <= last:
        yield dict(choices, **{name: choice.values[i + step]}), (
            math.log(max(p[i], 1e-12)) - math.log(max(p[i + step], 1e-12)))


def fill_budget(model, tables, constraints: Sequence[Constraint], probs: Mapping[str, np.ndarray],
                choices: Mapping) -> tuple[dict, int]:
  """Greedy moves to costlier candidates while every budget still holds.

  The argmax network is often well under budget: the expected cost that met the budget is pulled up by the
  costly tail of each distribution. Each move takes one choice (or one channel) one candidate up; among the
  moves that keep every budget, it takes the one the search rated closest to the current choice (least
  log-probability given up), so the network grows where the search was least sure it should be small.

  N:M choices (candidates in ascending density, dense last) move up only where the denser pattern costs
  nothing more: budget left over is not spent undoing a pattern the search chose on a target that rewards it
  (2:4 on sparse tensor cores), while a pattern that buys nothing on the target (riscv) goes dense. A skipped
  layer's own choices do not move (``_skipped_layer_choices``).

  Returns:
    (choices, number of moves).
  """
  metrics = [c.metric for c in constraints]
  limits = {c.metric: c.limit for c in constraints}
  nm_names = {layer.keys.nm for layer in model.qlayers() if getattr(layer.keys, "nm", None)}
  choices = dict(choices)
  moves = 0
  while True:
    best, best_lost = None, math.inf
    now = discrete_costs(tables, choices, model, metrics) if nm_names else None
    for trial, lost in _moves(model, choices, probs, +1, _skipped_layer_choices(model, choices)):
      if lost >= best_lost:
        continue
      tc = discrete_costs(tables, trial, model, metrics)
      if any(trial[n] != choices[n] for n in nm_names) and any(tc[m] > now[m] * (1 + 1e-12) for m in metrics):
        continue  # a denser N:M pattern that costs more
      if all(tc[m] <= limits[m] for m in metrics):
        best, best_lost = trial, lost
    if best is None:
      return choices, moves
    choices = best
    moves += 1


def _skipped_layer_choices(model, choices: Mapping) -> set[str]:
  """The bits and width choices of the layers ``choices`` skip (``Supernet.killers``): the budget left over is
  not spent on them. A skipped layer's bits cost nothing and do nothing, and its width above the channels it
  is handed only adds zero channels for the next layer to read."""
  out = set()
  for layer in model.qlayers():
    if model.skipped(layer.spec.name, choices):
      out.update(n for n in (layer.keys.w_bits, layer.keys.a_bits, layer.keys.cout) if n)
  return out


def fit_to_budget(model, tables, constraints: Sequence[Constraint], probs: Mapping[str, np.ndarray]):
  """Argmax choices, then greedy moves to cheaper candidates until every budget holds.

  Each move takes one choice (or one channel of a per-channel choice) one candidate down; among the moves
  that lower the cost, it takes the one that gives up the least log-probability per unit of relative cost
  saved. Where no such move lowers the cost (candidates on a plateau, e.g. channel counts a SIMD target pads
  to the same width), moves two candidates down are tried, then three, and so on.

  Returns:
    (choices, number of moves).
  """
  metrics = [c.metric for c in constraints]
  limits = {c.metric: c.limit for c in constraints}
  choices = _argmax_choices(model, probs)
  moves = 0
  while True:
    costs = discrete_costs(tables, choices, model, metrics)
    over = [m for m in metrics if costs[m] > limits[m]]
    if not over:
      return choices, moves
    best, best_score = None, math.inf
    for step in range(1, max(len(c.values) for c in model.choices.values())):
      for trial, lost in _moves(model, choices, probs, -step):
        tc = discrete_costs(tables, trial, model, metrics)
        saved = sum((costs[m] - tc[m]) / limits[m] for m in over)
        if saved <= 0:
          continue
        score = lost / saved
        if score < best_score:
          best, best_score = trial, score
      if best is not None:
        break
    if best is None:  # costs that do not fall with bits or widths can leave no improving move
      raise ValueError(f"the derived network exceeds its budget on {over} and no single cheaper choice helps; "
                       f"raise budget.fraction.")
    choices = best
    moves += 1
