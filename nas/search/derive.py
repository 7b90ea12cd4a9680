"""Deriving one network from the searched distributions: argmax, a greedy projection onto the budgets, and a
greedy fill that spends what budget is left.

Argmax alone can break a constraint (HardCoRe-NAS), so :func:`fit_to_budget` moves the choices that cost least
probability per unit of cost saved until every budget holds; :func:`fill_budget` then moves choices up while
every budget still holds, so the derived network spends the budget it was given.

References:
  Nayman et al., HardCoRe-NAS, ICML 2021.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from nas.search import cost as costlib

if TYPE_CHECKING:
  from nas.search.budget import Constraint


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
